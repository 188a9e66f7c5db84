"""The option table of train.py (one definition per option) and the checks that follow from it: finite
floats, bounds, --outdir, --freezed, --max-classes, and expected failures as one ``Error:`` line.

Property-based tests (hypothesis) run numeric values through the same command line a user types.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import click
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sg2_training_support.data import REPO, make_shapes, tiny_args

from stylegan2_ada.augment import DEFAULT_ADA_KIMG, DEFAULT_ADA_TARGET, RESUME_ADA_KIMG
from stylegan2_ada.training import cli, options
from stylegan2_ada.training.options import (
    CLI_DEFAULTS,
    OPTION_SPECS,
    SPECS,
    DatasetInfo,
    OptionsError,
    TrainingOptions,
    check_cli,
    freezable_layers,
    resolve_options,
)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_shapes(tmp_path_factory.mktemp("data") / "shapes", n=4)


def dry_run(outdir: Path, data: Path, *extra: str) -> TrainingOptions:
    base = ["--outdir", str(outdir), "--data", str(data), "--device", "cpu", "--workers", "0", "-n"]
    return cli.main([*base, *extra], standalone_mode=False)


# ------------------------------------------------------------------------------------- the option table


def test_click_options_defaults_and_fields_all_follow_the_table() -> None:
    params = {p.name: p for p in cli.core_options()}
    assert list(params) == [s.name for s in OPTION_SPECS]
    assert CLI_DEFAULTS == {s.name: s.default for s in OPTION_SPECS}
    fields = {f.name: f for f in dataclasses.fields(TrainingOptions)}
    for spec in OPTION_SPECS:
        param = params[spec.name]
        assert spec.flag_name in param.opts
        assert param.default == spec.default or (spec.multiple and tuple(param.default or ()) == spec.default)
        if spec.fallback is not None:  # --help says where an unset value comes from
            assert f"[default: {spec.fallback.doc}]" in param.help
        stored = {"plugin": "plugins"}.get(spec.name, spec.name)
        if spec.name != "desc":
            # The resolved value lives in a field of the same name that has no default of its own.
            assert stored in fields, spec.name
            assert fields[stored].default is dataclasses.MISSING, spec.name
            assert fields[stored].default_factory is dataclasses.MISSING, spec.name


def test_augment_constants_are_the_defaults_not_copies(tmp_path: Path, shapes: Path) -> None:
    assert SPECS["target"].fallback.doc == str(DEFAULT_ADA_TARGET)
    o = dry_run(tmp_path / "o", shapes)
    assert (o.target, o.ada_kimg, o.cmax) == (DEFAULT_ADA_TARGET, DEFAULT_ADA_KIMG, options.DEFAULT_CMAX)
    assert o.max_classes == options.DEFAULT_MAX_CLASSES and o.max_bad_images == options.DEFAULT_MAX_BAD_IMAGES
    resumed = resolve_options(
        dict(outdir="o", data="d"),
        DatasetInfo("d", 16, 1, 0, False, 4),
        resume=options.ResumeInfo("net.pkl", "weights", 16, 1, 0),
        device="cpu",
    )
    assert resumed.ada_kimg == RESUME_ADA_KIMG and resumed.ema_rampup is None


# ------------------------------------------------------------------------------------------ finite floats

FLOAT_SPECS = [s for s in OPTION_SPECS if s.type is float]
# Options that only apply together with another one.
NEEDS = {"p": ["--aug", "fixed"]}


def test_every_float_option_is_checked_for_finiteness() -> None:
    assert {s.name for s in FLOAT_SPECS} == {"kimg", "tick", "gamma", "glr", "dlr", "p", "target", "ada_kimg"}
    for spec in FLOAT_SPECS:
        for bad in (math.nan, math.inf, -math.inf):
            with pytest.raises(OptionsError, match=f"{spec.flag_name} must be a finite number"):
                check_cli(
                    {
                        "outdir": "o",
                        "data": "d",
                        spec.name: bad,
                        **({"aug": "fixed"} if spec.name == "p" else {}),
                    }
                )


@pytest.mark.parametrize("spec", FLOAT_SPECS, ids=lambda s: s.name)
@pytest.mark.parametrize("text", ["nan", "inf", "-inf"])
def test_non_finite_floats_are_usage_errors_before_any_folder_exists(
    tmp_path: Path, shapes: Path, spec, text: str
) -> None:
    outdir = tmp_path / "runs"
    with pytest.raises(click.UsageError, match=f"{spec.flag_name} must be a finite number"):
        dry_run(outdir, shapes, *NEEDS.get(spec.name, []), spec.flag_name, text)
    assert not outdir.exists()


def test_plugin_float_options_are_checked_too(tmp_path: Path, shapes: Path, monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(REPO / "tests"))
    plugin = "sg2_training_support.extra_loss"
    with pytest.raises(click.UsageError, match="--extra-weight must be a finite number, got nan"):
        dry_run(tmp_path / "o", shapes, "--plugin", plugin, "--extra-weight", "nan")


def test_repro_commands_exit_with_one_error_line_and_no_run_folder(tmp_path: Path, shapes: Path) -> None:
    """Issue 8: `--kimg nan` / `--tick nan` used to crash after creating an empty run folder; `--outdir afile`
    gave a traceback."""
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    cases = [
        (["--kimg", "nan"], tmp_path / "runs", "Error: --kimg must be a finite number, got nan"),
        ([], afile, f"Error: --outdir {afile} is a file, not a folder"),
    ]
    for extra, outdir, message in cases:
        out = subprocess.run(
            [sys.executable, "train.py", *tiny_args(outdir, shapes, *extra)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 2, out.stderr
        assert message in out.stderr and "Traceback" not in out.stderr
        assert not (tmp_path / "runs").exists()
    assert afile.read_text() == "not a folder"


# ------------------------------------------------------------------------------- property-based checks

# What a user may give, independent of the table: (predicate on a finite value, extra arguments).
VALID = {
    "kimg": lambda v: 0 < v <= 1e9,
    "tick": lambda v: 0 < v <= 1e9,
    "gamma": lambda v: v >= 0,
    "glr": lambda v: v > 0,
    "dlr": lambda v: v > 0,
    "p": lambda v: 0 <= v <= 1,
    "target": lambda v: 0 <= v <= 1,
    "ada_kimg": lambda v: v > 0,
}
NUMBERS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 1.0, -1.0, 0.5, 1e9, 1e9 + 1e3, 5e-324, 1e-300]),
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(sorted(VALID)), value=NUMBERS)
def test_float_options_on_the_command_line(shapes: Path, name: str, value: float) -> None:
    """Valid values are accepted and kept; NaN, inf and out-of-range values are usage errors naming the
    option; never another exception, never a folder."""
    spec = SPECS[name]
    with tempfile.TemporaryDirectory() as tmp:
        outdir = Path(tmp) / "runs"
        args = [*NEEDS.get(name, []), spec.flag_name, repr(value)]
        if math.isfinite(value) and VALID[name](value):
            o = dry_run(outdir, shapes, *args)
            assert getattr(o, name) == value
        else:
            with pytest.raises(click.UsageError) as err:
                dry_run(outdir, shapes, *args)
            assert spec.flag_name in err.value.message
        assert not outdir.exists()


INT_VALID = {
    "gpus": lambda v: v >= 1,
    "batch": lambda v: v >= 1,
    "batch_gpu": lambda v: v >= 1,
    "snap": lambda v: v >= 1,
    "cbase": lambda v: v >= 1,
    "cmax": lambda v: v >= 1,
    "map_depth": lambda v: v >= 1,
    "mbstd_group": lambda v: v >= 1,
    "subset": lambda v: v >= 1,
    "freezed": lambda v: v >= 0,
    "seed": lambda v: 0 <= v < 2**32,
    "workers": lambda v: v >= 0,
    "max_classes": lambda v: v >= 1,
    "max_bad_images": lambda v: v >= 0,
    "metrics_num": lambda v: v >= 2,
}
# What an option needs beside it to be checked alone (it only applies together with those).
INT_ALONE_NEEDS = {"metrics_num": {"metrics": "fid50k_full", "detector": __file__}}


# Integer options without a combination rule in a dry run on 4 images (no --batch/--gpus/--subset/--freezed
# interplay), so that a valid value alone must be accepted on the command line.
INT_ALONE = ["snap", "cbase", "cmax", "map_depth", "seed", "workers", "max_classes", "max_bad_images"]


@settings(max_examples=80, deadline=None)
@given(
    name=st.sampled_from(INT_ALONE), value=st.integers(-(2**40), 2**40) | st.sampled_from([0, 1, -1, 2**32])
)
def test_int_options_on_the_command_line(shapes: Path, name: str, value: int) -> None:
    spec = SPECS[name]
    with tempfile.TemporaryDirectory() as tmp:
        outdir = Path(tmp) / "runs"
        # with the 16x16 test images, --cbase below 16 would give zero-width layers (check_capacity)
        valid = INT_VALID[name](value) and not (name == "cbase" and value < 16)
        if valid:
            assert getattr(dry_run(outdir, shapes, spec.flag_name, str(value)), name) == value
        else:
            with pytest.raises(click.UsageError) as err:
                dry_run(outdir, shapes, spec.flag_name, str(value))
            assert spec.flag_name in err.value.message
        assert not outdir.exists()


def test_every_numeric_option_has_a_property_test() -> None:
    numeric = {s.name for s in OPTION_SPECS if s.type in (int, float)}
    assert numeric == set(VALID) | set(INT_VALID)


@settings(max_examples=150, deadline=None)
@given(
    name=st.sampled_from(sorted(INT_VALID)), value=st.integers(-(2**40), 2**40) | st.sampled_from([0, 1, -1])
)
def test_int_options_alone(name: str, value: int) -> None:
    """Each integer option alone: in range passes the command-line checks, else an OptionsError naming it."""
    raw = {"outdir": "o", "data": "d", **INT_ALONE_NEEDS.get(name, {}), name: value}
    if INT_VALID[name](value):
        check_cli(raw)
    else:
        with pytest.raises(OptionsError, match=SPECS[name].flag_name):
            check_cli(raw)


# ------------------------------------------------------------------------------------------- --outdir


def test_outdir_that_is_a_file_or_under_a_file(tmp_path: Path, shapes: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(click.UsageError, match="is a file, not a folder"):
        dry_run(afile, shapes)
    with pytest.raises(click.UsageError, match=f"{afile} is a file, not a folder"):
        dry_run(afile / "sub", shapes)


def test_read_only_outdir_is_a_usage_error(tmp_path: Path, shapes: Path, monkeypatch) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == ro else real_access(p, mode))
    with pytest.raises(click.UsageError, match=f"cannot create folders in {ro} \\(permission denied\\)"):
        dry_run(ro / "runs", shapes)


@pytest.mark.skipif(
    os.geteuid() == 0, reason="root may write into a read-only folder; the check above covers it"
)
def test_read_only_outdir_for_real(tmp_path: Path, shapes: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(click.UsageError, match="permission denied"):
            dry_run(ro, shapes)
    finally:
        ro.chmod(0o755)


def test_os_errors_during_a_run_are_one_error_line(tmp_path: Path, shapes: Path, monkeypatch, capsys) -> None:
    """Any OSError (a disk that fills up, a folder made read-only mid-run) ends train.py with one line."""
    from stylegan2_ada.training import loop

    def failing_run_dir(outdir, desc):
        raise PermissionError(13, "Permission denied", str(outdir))

    monkeypatch.setattr(loop, "next_run_dir", failing_run_dir)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(tiny_args(tmp_path / "runs", shapes))
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert err == f"Error: {tmp_path / 'runs'}: Permission denied\n"


def test_unexpected_errors_keep_their_traceback(tmp_path: Path, shapes: Path, monkeypatch) -> None:
    from stylegan2_ada.training import loop

    def bug(*args, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(loop, "setup_run", bug)
    with pytest.raises(ZeroDivisionError):
        cli.main(tiny_args(tmp_path / "runs", shapes))
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert "ZeroDivisionError: a bug" in (run_dir / "log.txt").read_text()  # the traceback is in log.txt


# ------------------------------------------------------------------------------ --freezed, --max-classes


def test_freezed_beyond_the_layers_of_d_is_refused(tmp_path: Path, shapes: Path) -> None:
    layers = freezable_layers(16, 1, "resnet")
    assert layers == 7  # 16x16: b16 (fromrgb, conv0, conv1, skip) + b8 (conv0, conv1, skip)
    assert dry_run(tmp_path, shapes, "--freezed", str(layers)).freezed == layers
    with pytest.raises(click.UsageError, match=r"--freezed=99: D has 7 layers that can be frozen at 16x16"):
        dry_run(tmp_path, shapes, "--freezed", "99")
    assert freezable_layers(16, 1, "orig") == 5  # --cfg cifar: no skip layers


def test_cbase_below_the_resolution_is_refused(tmp_path: Path, shapes: Path) -> None:
    assert dry_run(tmp_path, shapes, "--cbase", "16").cbase == 16  # one feature map at 16x16
    with pytest.raises(click.UsageError, match=r"--cbase=8 is smaller than the resolution 16"):
        dry_run(tmp_path, shapes, "--cbase", "8")  # was a ZeroDivisionError while building the networks


def _labels(folder: Path, labels: list[int]) -> None:
    entries = [[f"img{i:04d}.png", c] for i, c in enumerate(labels)]
    (folder / "dataset.json").write_text(json.dumps({"labels": entries}))


def test_a_stray_huge_class_id_is_refused(tmp_path: Path) -> None:
    data = make_shapes(tmp_path / "shapes", n=4)
    _labels(data, [0, 1, 0, 999_999])  # one typo: would be a million-class G
    with pytest.raises(click.UsageError, match="more than the limit of 1000") as err:
        dry_run(tmp_path / "o", data, "--cond=1")
    assert "label 999999 for 'img0003.png' means 1000000 classes" in err.value.message
    assert "--max-classes" in err.value.message
    _labels(data, [0, 1, 0, 5])
    with pytest.raises(click.UsageError, match="means 6 classes, more than the limit of 3"):
        dry_run(tmp_path / "o", data, "--cond=1", "--max-classes", "3")
    assert dry_run(tmp_path / "o", data, "--cond=1", "--max-classes", "6").c_dim == 6
    assert dry_run(tmp_path / "o", data, "--cond=0", "--max-classes", "1").c_dim == 0
    assert not (tmp_path / "o").exists()


def test_new_options_in_training_options_json(tmp_path: Path, shapes: Path, capsys) -> None:
    o = dry_run(tmp_path, shapes, "--max-bad-images", "3", "--max-classes", "10")
    printed = json.loads(capsys.readouterr().out)
    assert printed["max_bad_images"] == o.max_bad_images == 3 and printed["max_classes"] == 10
