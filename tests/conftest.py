"""Shared test helpers: tiny network configurations and the upstream reference fixtures."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
FIXTURES = REPO_ROOT.parent / "shared" / "fixtures"
FIXTURE_PKL = FIXTURES / "upstream-c2-32px.pkl"
FIXTURE_NPZ = FIXTURES / "upstream-c2-32px.npz"


def in_ci(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether the tests run in CI (the environment variable ``CI`` set to anything but ''/0/false/no)."""
    return environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def require_files(*paths: Path, environ: Mapping[str, str] = os.environ) -> None:
    """Skip the calling test when a reference file is missing, with a reason naming it; in CI, fail.

    The strongest tests compare with upstream's outputs, which live beside the project (``../shared``);
    a developer checkout may lack them, but a CI run without them would prove nothing, so there a missing
    file is a test failure.
    """
    missing = [str(p) for p in paths if not p.is_file()]
    if not missing:
        return
    reason = (
        f"upstream reference fixture(s) missing: {', '.join(missing)} (they live beside the project, in "
        f"{FIXTURES}; see ../shared/fixtures/README.md)"
    )
    if in_ci(environ):
        pytest.fail(f"{reason}. CI is set, so a missing fixture is an error, not a skip.", pytrace=False)
    pytest.skip(reason)


@pytest.fixture()
def upstream_fixture_files() -> None:
    """Both upstream fixture files (skip without them; fail in CI)."""
    require_files(FIXTURE_PKL, FIXTURE_NPZ)


# Mark for tests that read FIXTURE_PKL / FIXTURE_NPZ directly: skip without them, fail in CI.
needs_fixture = pytest.mark.usefixtures("upstream_fixture_files")


@pytest.fixture(scope="session")
def upstream_npz() -> dict[str, np.ndarray]:
    """Reference outputs of NVIDIA's stylegan2-ada-pytorch (see ../shared/fixtures/README.md)."""
    require_files(FIXTURE_NPZ)
    with np.load(FIXTURE_NPZ) as data:
        return {k: data[k] for k in data.files}


@pytest.fixture(scope="session")
def upstream_pkl_path() -> Path:
    require_files(FIXTURE_PKL)
    return FIXTURE_PKL


# The configuration of the upstream fixture (../shared/fixtures/README.md).
FIXTURE_G_KWARGS = dict(
    z_dim=64,
    c_dim=2,
    w_dim=64,
    img_resolution=32,
    img_channels=1,
    mapping_kwargs=dict(num_layers=2),
    synthesis_kwargs=dict(channel_base=512, channel_max=64, num_fp16_res=0, conv_clamp=256),
)
FIXTURE_D_KWARGS = dict(
    c_dim=2,
    img_resolution=32,
    img_channels=1,
    channel_base=512,
    channel_max=64,
    num_fp16_res=0,
    conv_clamp=256,
    epilogue_kwargs=dict(mbstd_group_size=4),
)


def tiny_g_kwargs(res: int = 16, c_dim: int = 2, channels: int = 1, architecture: str = "skip") -> dict:
    return dict(
        z_dim=16,
        c_dim=c_dim,
        w_dim=16,
        img_resolution=res,
        img_channels=channels,
        mapping_kwargs=dict(num_layers=2),
        synthesis_kwargs=dict(channel_base=128, channel_max=16, architecture=architecture, conv_clamp=256),
    )


def tiny_d_kwargs(
    res: int = 16, c_dim: int = 2, channels: int = 1, architecture: str = "resnet", mbstd: int = 2
) -> dict:
    return dict(
        c_dim=c_dim,
        img_resolution=res,
        img_channels=channels,
        architecture=architecture,
        channel_base=128,
        channel_max=16,
        conv_clamp=256,
        mapping_kwargs=dict(num_layers=2),
        epilogue_kwargs=dict(mbstd_group_size=mbstd),
    )


@pytest.fixture
def one_torch_thread():
    """Run the test with one torch thread (tiny networks are faster that way and CI has 2 cores)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(autouse=True)
def _deterministic_seed() -> None:
    torch.manual_seed(0)
