"""Tests of the plugin seam (stylegan2_ada.plugins): finding, checking and calling plugins.

The plugins used here live in tests/plugin_pkgs: ``spinegan_test_plugins`` (modules named by dotted path)
and ``spinegan_example_plugin`` (a real third-party project, pip-installed offline into a temporary folder).
"""

from __future__ import annotations

import copy
import importlib.metadata
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest
import torch

from stylegan2_ada.hookspecs import hookimpl
from stylegan2_ada.plugin_api import PhaseData, TrainingContext
from stylegan2_ada.plugins import (
    ENTRY_POINT_GROUP,
    InvalidPluginError,
    PluginError,
    PluginLoadError,
    PluginNotFoundError,
    available_plugins,
    call_loss_terms,
    collect_plugin_options,
    collect_tick_statistics,
    create_plugin_manager,
    plugin_names_from_args,
    plugin_states,
    restore_plugin_states,
)

REPO = Path(__file__).resolve().parents[1]
PLUGIN_PKGS = Path(__file__).resolve().parent / "plugin_pkgs"
TEST_PKG = "spinegan_test_plugins"
SCALED_NORM = f"{TEST_PKG}.scaled_norm"


@pytest.fixture(autouse=True)
def _test_plugins_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(PLUGIN_PKGS))


def make_context(options: dict) -> TrainingContext:
    """A tiny CPU context: G maps z [N, 4] to 12 values, read as images [N, 3, 2, 2]."""
    G = torch.nn.Linear(4, 12)
    return TrainingContext(
        G=G,
        D=torch.nn.Linear(12, 1),
        G_ema=copy.deepcopy(G),
        augment_pipe=None,
        dataset=None,
        device=torch.device("cpu"),
        run_dir=None,
        options=options,
    )


def test_loss_term_is_keyed_by_plugin_and_changes_gradients() -> None:
    pm = create_plugin_manager([SCALED_NORM])
    assert pm.plugin_sources == {SCALED_NORM: f"module {SCALED_NORM}"}
    torch.manual_seed(0)
    ctx = make_context({"norm_weight": 0.5})
    pm.hook.training_setup(context=ctx)
    z = torch.randn(2, 4)

    def weight_grad(with_plugins: bool) -> torch.Tensor:
        ctx.G.zero_grad(set_to_none=True)
        img = ctx.G(z).reshape(2, 3, 2, 2)  # [N, C, H, W]
        loss = img.mean()
        if with_plugins:
            terms = call_loss_terms(pm, "Gmain", ctx, PhaseData(phase="Gmain", gen_z=z, gen_img=img))
            assert list(terms) == [f"Loss/{SCALED_NORM}/mean_square"]
            torch.testing.assert_close(terms[f"Loss/{SCALED_NORM}/mean_square"], 0.5 * img.square().mean())
            loss = loss + sum(terms.values())
        loss.backward()
        return ctx.G.weight.grad.clone()

    plain, with_term = weight_grad(False), weight_grad(True)
    (expected,) = torch.autograd.grad(0.5 * ctx.G(z).square().mean(), [ctx.G.weight])
    assert not torch.allclose(plain, with_term)
    torch.testing.assert_close(with_term - plain, expected)
    assert ctx.extras["scaled_norm"]["calls"] == 1
    # The plugin adds nothing to the other phases.
    real = torch.zeros(2, 3, 2, 2)
    assert call_loss_terms(pm, "Dreg", ctx, PhaseData(phase="Dreg", real_img=real)) == {}


def test_builtin_package_fallback_and_listing() -> None:
    pm = create_plugin_manager(["scaled_norm"], builtin_package=TEST_PKG)
    assert pm.plugin_sources == {"scaled_norm": f"built-in module {TEST_PKG}.scaled_norm"}
    ctx = make_context({"norm_weight": 1.0})
    pm.hook.training_setup(context=ctx)
    img = torch.ones(1, 3, 2, 2)
    assert list(call_loss_terms(pm, "Gmain", ctx, PhaseData(phase="Gmain", gen_img=img))) == [
        "Loss/scaled_norm/mean_square"
    ]
    listed = available_plugins(builtin_package=TEST_PKG)
    modules = sorted(p.stem for p in (PLUGIN_PKGS / TEST_PKG).glob("*.py") if not p.stem.startswith("_"))
    assert set(modules) <= set(listed)
    assert listed["scaled_norm"] == f"built-in module {TEST_PKG}.scaled_norm"


def test_unknown_name_lists_available_plugins() -> None:
    with pytest.raises(PluginNotFoundError) as info:
        create_plugin_manager(["scaled_nrom"], builtin_package=TEST_PKG)
    message = str(info.value)
    assert isinstance(info.value, click.UsageError)
    assert "unknown plugin 'scaled_nrom'" in message and "Did you mean 'scaled_norm'?" in message
    for name in available_plugins(builtin_package=TEST_PKG):
        assert f"\n  {name} " in message
    assert ENTRY_POINT_GROUP in message and "pip install" in message
    # With the real built-in package: every available plugin is listed.
    with pytest.raises(PluginNotFoundError) as info:
        create_plugin_manager(["no_such_plugin_xyz"])
    for name in available_plugins():
        assert f"\n  {name} " in str(info.value)
    # A dotted path to a missing module is unknown too (not a load error).
    with pytest.raises(PluginNotFoundError):
        create_plugin_manager([f"{TEST_PKG}.no_such_module"])


def test_import_error_inside_a_plugin_is_a_load_error() -> None:
    with pytest.raises(PluginLoadError) as info:
        create_plugin_manager([f"{TEST_PKG}.broken_import"])
    message = str(info.value)
    assert "failed to load" in message and "spinegan_test_plugins_missing_dependency" in message
    assert "broken_import.py" in message


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (f"{TEST_PKG}.misspelt", "implements unknown hook 'loss_term' (did you mean 'loss_terms'?)"),
        (f"{TEST_PKG}.undecorated", "defines tick_statistics() without @hookimpl"),
        (f"{TEST_PKG}.bad_argument", "Argument(s) {'ctx'} are declared in the hookimpl"),
        ("json.decoder", "implements no hooks"),
    ],
)
def test_hook_mistakes_are_caught(name: str, expected: str) -> None:
    with pytest.raises(InvalidPluginError) as info:
        create_plugin_manager([name])
    assert f"plugin {name!r}" in str(info.value) and expected in str(info.value)


def test_names_given_twice_or_twice_the_same_module() -> None:
    with pytest.raises(PluginError, match="named twice"):
        create_plugin_manager([SCALED_NORM, SCALED_NORM])
    with pytest.raises(PluginError, match="same module"):
        create_plugin_manager(["scaled_norm", SCALED_NORM], builtin_package=TEST_PKG)
    with pytest.raises(PluginError, match="invalid plugin name"):
        create_plugin_manager(["a/b"])


def test_option_clashes_are_detected() -> None:
    pm = create_plugin_manager([SCALED_NORM])
    (option,) = collect_plugin_options(pm, reserved=[click.Option(["--batch"]), "gpus"])
    assert option.name == "norm_weight" and option.opts == ["--norm-weight"]
    for reserved in ([click.Option(["--norm-weight"])], ["--norm-weight"], ["norm_weight"]):
        with pytest.raises(InvalidPluginError, match="of the core"):
            collect_plugin_options(pm, reserved=reserved)
    pm = create_plugin_manager([SCALED_NORM, f"{TEST_PKG}.clashing_options"])
    with pytest.raises(InvalidPluginError) as info:
        collect_plugin_options(pm)
    assert str(info.value) == (
        f"option --norm-weight of plugin '{TEST_PKG}.clashing_options' clashes with option --norm-weight "
        f"of plugin '{SCALED_NORM}'"
    )


def test_hooks_run_in_the_order_plugins_are_named() -> None:
    ordered = f"{TEST_PKG}.ordered"
    img = torch.ones(1, 3, 2, 2)
    for names in ([ordered, SCALED_NORM], [SCALED_NORM, ordered]):
        pm = create_plugin_manager(names)
        ctx = make_context({"norm_weight": 1.0})
        pm.hook.training_setup(context=ctx)
        terms = call_loss_terms(pm, "Gmain", ctx, PhaseData(phase="Gmain", gen_img=img))
        assert [key.split("/")[1] for key in terms] == names
        assert list(collect_tick_statistics(pm, ctx)) == [
            {ordered: "Ordered/value", SCALED_NORM: "ScaledNorm/calls"}[name] for name in names
        ]
    assert collect_tick_statistics(pm, ctx) == {"Ordered/value": 2.5, "ScaledNorm/calls": 1.0}


def test_each_plugin_gets_its_own_state_back() -> None:
    pm = create_plugin_manager([SCALED_NORM, f"{TEST_PKG}.ordered"])
    ctx = make_context({"norm_weight": 1.0})
    pm.hook.training_setup(context=ctx)
    for _ in range(3):
        call_loss_terms(pm, "Gmain", ctx, PhaseData(phase="Gmain", gen_img=torch.ones(1, 3, 2, 2)))
    states = plugin_states(pm, ctx)
    assert states == {SCALED_NORM: {"calls": 3}}  # 'ordered' keeps no state
    resumed = make_context({"norm_weight": 1.0})
    pm.hook.training_setup(context=resumed)
    assert restore_plugin_states(pm, resumed, {**states, "gone": {"x": 1}}) == ["gone"]
    assert resumed.extras["scaled_norm"] == {"calls": 3}


class _Returns:
    """A plugin object whose hooks return fixed values, to check the helpers' validation."""

    def __init__(self, terms: object = None, stats: object = None, state: object = None) -> None:
        self.terms, self.stats, self.state = terms, stats, state

    @hookimpl
    def loss_terms(self):
        return self.terms

    @hookimpl
    def tick_statistics(self):
        return self.stats

    @hookimpl
    def plugin_state(self):
        return self.state


@pytest.mark.parametrize(
    ("terms", "expected"),
    [
        ([torch.tensor(1.0)], "must return {name: scalar tensor} or None, not list"),
        ({"a/b": torch.tensor(1.0)}, "loss term name 'a/b'"),
        ({"": torch.tensor(1.0)}, "loss term name ''"),
        ({"vec": torch.ones(2)}, "not a torch.float32 tensor of shape [2]"),
        ({"int": torch.tensor(3)}, "not a torch.int64 tensor of shape []"),
        ({"num": 1.0}, "not float"),
    ],
)
def test_bad_loss_terms_are_rejected(terms: object, expected: str) -> None:
    pm = create_plugin_manager([])
    pm.register(_Returns(terms=terms), name="bad")
    with pytest.raises(InvalidPluginError) as info:
        call_loss_terms(pm, "Gmain", make_context({}), PhaseData(phase="Gmain"))
    assert str(info.value).startswith("plugin 'bad': ") and expected in str(info.value)
    with pytest.raises(ValueError, match="unknown phase"):
        call_loss_terms(pm, "Gboth", make_context({}), PhaseData(phase="Gboth"))


def test_bad_statistics_and_states_are_rejected() -> None:
    pm = create_plugin_manager([])
    pm.register(_Returns(stats={"Shared/x": 1.0}), name="one")
    pm.register(_Returns(stats={"Shared/x": 2.0}), name="two")
    # Registered by hand, so pluggy's order: the latest registered runs first.
    with pytest.raises(InvalidPluginError, match="reported by both plugin 'two' and plugin 'one'"):
        collect_tick_statistics(pm, make_context({}))
    pm = create_plugin_manager([])
    pm.register(_Returns(stats={"Bad/x": "high"}, state={"tensor": torch.ones(1)}), name="bad")
    with pytest.raises(InvalidPluginError, match="statistic 'Bad/x' is not a number"):
        collect_tick_statistics(pm, make_context({}))
    with pytest.raises(InvalidPluginError, match="not JSON-serialisable"):
        plugin_states(pm, make_context({}))


def test_entry_points_take_precedence_and_ambiguity_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    declared = [
        importlib.metadata.EntryPoint("norm", SCALED_NORM, ENTRY_POINT_GROUP),
        importlib.metadata.EntryPoint("norm", SCALED_NORM, ENTRY_POINT_GROUP),  # seen twice: counts once
        importlib.metadata.EntryPoint("scaled_norm", f"{TEST_PKG}.ordered", ENTRY_POINT_GROUP),
    ]
    monkeypatch.setattr(
        importlib.metadata, "entry_points", lambda group: [e for e in declared if e.group == group]
    )
    pm = create_plugin_manager(["norm", "scaled_norm"], builtin_package=TEST_PKG)
    assert pm.plugin_sources == {
        "norm": f"entry point '{SCALED_NORM}'",
        "scaled_norm": f"entry point '{TEST_PKG}.ordered'",  # the entry point wins over the built-in
    }
    assert pm.get_plugin("scaled_norm") is sys.modules[f"{TEST_PKG}.ordered"]
    declared.append(importlib.metadata.EntryPoint("norm", f"{TEST_PKG}.misspelt", ENTRY_POINT_GROUP))
    with pytest.raises(PluginError, match="declared by several installed packages"):
        create_plugin_manager(["norm"])


def test_plugin_names_from_args() -> None:
    args = [
        "--data",
        "x.zip",
        "--plugin",
        "spinegan",
        "--plugin=dp",
        "--gpus",
        "1",
        "--plugin",
        "a.b",
        "--",
        "--plugin",
        "ignored",
    ]
    assert plugin_names_from_args(args) == ["spinegan", "dp", "a.b"]
    assert plugin_names_from_args(["--plugin"]) == []


_DISCOVER = """
import json, torch
from stylegan2_ada.plugins import available_plugins, call_loss_terms, collect_plugin_options, create_plugin_manager
from stylegan2_ada.plugin_api import PhaseData, TrainingContext
pm = create_plugin_manager(["example"])
net = torch.nn.Identity()
ctx = TrainingContext(G=net, D=net, G_ema=net, augment_pipe=None, dataset=None, device=torch.device("cpu"),
                      run_dir=None, options={"tv_weight": 1.0})
img = torch.linspace(-1, 1, 32).reshape(2, 1, 4, 4)  # [N, C, H, W]
terms = call_loss_terms(pm, "Gmain", ctx, PhaseData(phase="Gmain", gen_img=img))
print(json.dumps({
    "source": pm.plugin_sources["example"], "file": pm.get_plugin("example").__file__,
    "listed": available_plugins().get("example"), "options": [o.name for o in collect_plugin_options(pm)],
    "terms": {key: value.item() for key, value in terms.items()},
}))
"""


def test_third_party_plugin_installed_with_an_entry_point_is_discovered(tmp_path: Path) -> None:
    if importlib.util.find_spec("pip") is None or importlib.util.find_spec("setuptools") is None:
        pytest.skip("needs pip and setuptools in the test environment to build the example plugin offline")
    with pytest.raises(PluginNotFoundError):  # not installed in this environment
        create_plugin_manager(["example"])
    source = tmp_path / "src"  # build from a copy: setuptools writes build/ and *.egg-info beside the sources
    shutil.copytree(PLUGIN_PKGS / "spinegan_example_plugin", source)
    target = tmp_path / "target"
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--target",
            str(target),
            str(source),
        ],
        check=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    env["PYTHONPATH"] = os.pathsep.join([str(target), str(REPO)])
    done = subprocess.run(
        [sys.executable, "-c", _DISCOVER],
        check=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
        capture_output=True,
        text=True,
    )
    found = json.loads(done.stdout)
    assert found["source"] == "entry point 'spinegan_example_plugin' of spinegan-example-plugin 0.1.0"
    assert Path(found["file"]).resolve() == (target / "spinegan_example_plugin" / "__init__.py").resolve()
    assert found["listed"] == found["source"]
    assert found["options"] == ["tv_weight"]
    # TV of a ramp with step 2/31 along W and 4 * 2/31 along H, weight 1.
    assert found["terms"] == {"Loss/example/tv": pytest.approx(10 / 31)}


# ------------------------------------------------------------------------------------------------------
# check_run: refusing a run before its folder exists; the context a run hands to plugins

RUN_GUARD = f"{TEST_PKG}.run_guard"


def test_check_run_refuses_before_the_run_folder_exists(tmp_path: Path) -> None:
    from sg2_training_support.data import make_shapes, tiny_args
    from spinegan_test_plugins import run_guard

    from stylegan2_ada.training import cli

    data = make_shapes(tmp_path / "shapes", n=4)
    outdir = tmp_path / "runs"
    run_guard.CHECKED.clear()
    with pytest.raises(click.UsageError, match="at least 2 classes, got c_dim=0 \\(add --cond=1\\)"):
        cli.main(tiny_args(outdir, data, "--plugin", RUN_GUARD), standalone_mode=False)
    with pytest.raises(click.UsageError, match="at least 3 classes, got c_dim=2"):
        cli.main(
            tiny_args(outdir, data, "--plugin", RUN_GUARD, "--cond=1", "--guard-min-classes", "3"),
            standalone_mode=False,
        )
    assert not outdir.exists()  # no run folder, no empty outdir
    opts = cli.main(tiny_args(outdir, data, "--plugin", RUN_GUARD, "--cond=1", "-n"), standalone_mode=False)
    assert opts.c_dim == 2 and not outdir.exists()  # --dry-run is checked too
    # It saw the RESOLVED options (c_dim, not --cond) and the OPENED dataset.
    assert run_guard.CHECKED == [
        {"c_dim": 0, "label_dim": 0},
        {"c_dim": 2, "label_dim": 2},
        {"c_dim": 2, "label_dim": 2},
    ]
    # As train.py runs it: exit status 2 and one line.
    out = subprocess.run(
        [sys.executable, "train.py", *tiny_args(outdir, data, "--plugin", RUN_GUARD)],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(PLUGIN_PKGS), str(REPO / "tests")])},
        timeout=120,
    )
    assert out.returncode == 2 and "Error: run_guard needs a conditional run" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr and not outdir.exists()


@pytest.mark.usefixtures("one_torch_thread")
def test_context_holds_the_optimizers_and_the_current_tick(tmp_path: Path) -> None:
    from sg2_training_support.data import make_shapes, tiny_args

    from stylegan2_ada.training import cli

    data = make_shapes(tmp_path / "shapes", n=4)
    result = cli.main(
        tiny_args(tmp_path / "runs", data, "--plugin", RUN_GUARD, "--cond=1", "--glr", "0.005"),
        standalone_mode=False,
    )
    stats = [json.loads(line) for line in (result.run_dir / "stats.jsonl").read_text().splitlines()]
    assert len(stats) == 3
    for line in stats:
        assert line["RunGuard/cur_tick"]["mean"] == line["Progress/tick"]["mean"]
        # Adam's lr with lazy regularisation: lr * k / (k + 1), k = 4 for G and 16 for D.
        assert line["RunGuard/G_lr"]["mean"] == pytest.approx(0.005 * 4 / 5)
        assert line["RunGuard/D_lr"]["mean"] == pytest.approx(0.0025 * 16 / 17)
