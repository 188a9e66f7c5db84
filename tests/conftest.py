"""Shared test helpers: tiny network configurations and the upstream reference fixtures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
FIXTURES = REPO_ROOT.parent / "shared" / "fixtures"
FIXTURE_PKL = FIXTURES / "upstream-c2-32px.pkl"
FIXTURE_NPZ = FIXTURES / "upstream-c2-32px.npz"
needs_fixture = pytest.mark.skipif(
    not (FIXTURE_PKL.is_file() and FIXTURE_NPZ.is_file()),
    reason=f"upstream reference fixture not present at {FIXTURES} (only in the project's shared checkout)",
)


@pytest.fixture(scope="session")
def upstream_npz() -> dict[str, np.ndarray]:
    """Reference outputs of NVIDIA's stylegan2-ada-pytorch (see ../shared/fixtures/README.md)."""
    path = FIXTURE_NPZ
    if not path.exists():
        pytest.skip(
            f"upstream reference fixtures not found at {path} (they live beside the project, in ../shared)"
        )
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


@pytest.fixture(scope="session")
def upstream_pkl_path() -> Path:
    path = FIXTURE_PKL
    if not path.exists():
        pytest.skip(
            f"upstream reference snapshot not found at {path} (it lives beside the project, in ../shared)"
        )
    return path


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
