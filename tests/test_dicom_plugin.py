"""The dicom plugin's hooks: options, validation, and dataset_readers converting once into a cache."""

from __future__ import annotations

import os

import click
import numpy as np
import pluggy
import pytest
from dicom_helpers import make_dicom, ramp, tree_hashes

import plugins.dicom as dicom_plugin
from stylegan2_ada import hookspecs


@pytest.fixture()
def dicom_folder(tmp_path):
    src = tmp_path / "films"
    src.mkdir()
    for i in range(4):
        make_dicom(
            src / f"f{i}.dcm",
            ramp(48, 32, 10 * i, 3000 + i),
            bits_stored=12,
            window=(1500, 3000),
            photometric="MONOCHROME1",
        )
    labels = tmp_path / "labels.csv"
    labels.write_text(
        "image_id,lesion_type\nf0,No finding\nf1,Osteophytes\nf2,No finding\nf3,Vertebral collapse\n"
    )
    return src, labels


def options(**kw):
    base = {
        "labels": None,
        "resolution": 32,
        "crop": "pad",
        "window": "auto",
        "multiclass": False,
        "dicom_workers": 0,
        "cond": False,
        "mirror": False,
        "subset": None,
        "seed": 0,
        "data": None,
    }
    base.update(kw)
    return base


def test_registers_as_a_module_with_the_core_hookspecs() -> None:
    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    pm.register(dicom_plugin, name="dicom")
    pm.check_pending()
    names = {
        impl.function.__name__ for hook in pm.get_hookcallers(dicom_plugin) for impl in hook.get_hookimpls()
    }
    assert names == {"plugin_options", "validate_options", "dataset_readers"}
    from stylegan2_ada.plugins import create_plugin_manager

    assert create_plugin_manager(["dicom"]).get_plugin("dicom") is not None


def test_plugin_options() -> None:
    opts = {o.name: o for o in dicom_plugin.plugin_options()}
    assert set(opts) == {"labels", "resolution", "crop", "window", "multiclass", "dicom_workers"}
    assert all(isinstance(o, click.Option) for o in opts.values())
    assert opts["resolution"].default == 256 and opts["crop"].default == "pad"


def test_validate_options(dicom_folder, tmp_path) -> None:
    src, labels = dicom_folder
    dicom_plugin.validate_options(options(data=str(src), labels=str(labels), cond=True))
    with pytest.raises(click.UsageError, match="needs --labels"):
        dicom_plugin.validate_options(options(data=str(src), cond=True))
    with pytest.raises(click.UsageError, match="power of two"):
        dicom_plugin.validate_options(options(data=str(src), resolution=300))
    other = tmp_path / "pngs"
    other.mkdir()
    with pytest.raises(click.UsageError, match="holds no DICOM files"):
        dicom_plugin.validate_options(options(data=str(other), labels=str(labels)))
    with pytest.raises(click.UsageError, match="--multiclass needs --labels"):
        dicom_plugin.validate_options(options(data=str(src), multiclass=True))


def test_dataset_readers_converts_once_and_reuses_the_cache(dicom_folder, tmp_path) -> None:
    src, labels = dicom_folder
    before = tree_hashes(src)
    cache = tmp_path / "run" / ".cache"
    opts = options(data=str(src), labels=str(labels), cond=True)
    ds = dicom_plugin.dataset_readers(path=str(src), options=opts, cache_dir=str(cache))
    assert (
        len(ds) == 4 and ds.has_labels and ds.label_dim == 2 and ds.resolution == 32 and ds.num_channels == 1
    )
    assert sorted(int(np.argmax(ds.get_label(i))) for i in range(4)) == [0, 0, 1, 1]
    image, label = ds[0]
    assert image.dtype == np.uint8 and image.shape == (1, 32, 32) and label.shape == (2,)
    folders = [d for d in os.listdir(cache) if d.startswith("dicom-")]
    assert len(folders) == 1
    converted = os.path.join(cache, folders[0])
    assert {"dataset.json", "conversion_report.csv", "COMPLETE"} <= set(os.listdir(converted))
    stamps = {f: os.stat(os.path.join(converted, f)).st_mtime_ns for f in os.listdir(converted)}

    again = dicom_plugin.dataset_readers(
        path=str(src), options=opts, cache_dir=str(cache)
    )  # reused, not redone
    assert len(again) == 4
    assert {f: os.stat(os.path.join(converted, f)).st_mtime_ns for f in os.listdir(converted)} == stamps

    multiclass = dicom_plugin.dataset_readers(
        path=str(src), options=dict(opts, multiclass=True), cache_dir=str(cache)
    )
    assert multiclass.label_dim == 8  # other settings -> a second cache entry
    assert len([d for d in os.listdir(cache) if d.startswith("dicom-")]) == 2
    assert tree_hashes(src) == before


def test_dataset_readers_leaves_other_data_to_the_core(tmp_path) -> None:
    folder = tmp_path / "pngs"
    folder.mkdir()
    (folder / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    assert (
        dicom_plugin.dataset_readers(path=str(folder), options=options(), cache_dir=str(tmp_path / "c"))
        is None
    )
    assert (
        dicom_plugin.dataset_readers(
            path=str(tmp_path / "x.zip"), options=options(), cache_dir=str(tmp_path / "c")
        )
        is None
    )


def test_dataset_readers_without_any_usable_image_is_a_usage_error(tmp_path) -> None:
    src = tmp_path / "bad"
    src.mkdir()
    make_dicom(src / "flat.dcm", np.full((8, 8), 5, np.uint16), window=(5, 10))
    with pytest.raises(click.UsageError, match="conversion_report.csv"):
        dicom_plugin.dataset_readers(
            path=str(src), options=options(data=str(src)), cache_dir=str(tmp_path / "c")
        )


def test_train_py_trains_straight_from_dicom(dicom_folder, tmp_path) -> None:
    """``train.py --plugin dicom --data DICOM_DIR --labels CSV --resolution R --cond 1`` end to end."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    src, labels = dicom_folder
    before = tree_hashes(src)
    outdir = tmp_path / "runs"
    cmd = [
        sys.executable,
        str(repo / "train.py"),
        "--plugin",
        "dicom",
        "--data",
        str(src),
        "--labels",
        str(labels),
        "--resolution",
        "16",
        "--cond",
        "1",
        "--outdir",
        str(outdir),
        "--device",
        "cpu",
        "--kimg",
        "0.008",
        "--tick",
        "0.004",
        "--snap",
        "1",
        "--batch",
        "4",
        "--cbase",
        "128",
        "--cmax",
        "16",
        "--map-depth",
        "2",
        "--workers",
        "0",
        "--aug",
        "noaug",
        "--mbstd-group",
        "2",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    run_dirs = [d for d in outdir.iterdir() if d.is_dir() and not d.name.startswith(".")]
    assert len(run_dirs) == 1
    opts = json.loads((run_dirs[0] / "training_options.json").read_text())
    assert opts["resolution"] == 16 and opts["cond"]
    assert list(run_dirs[0].glob("network-snapshot-*.safetensors"))
    assert tree_hashes(src) == before  # inputs untouched


def test_unusable_options_and_cache_folders_are_usage_errors(dicom_folder, tmp_path) -> None:
    src, labels = dicom_folder
    with pytest.raises(click.UsageError, match="from 4 to 8192"):
        dicom_plugin.validate_options(options(data=str(src), resolution=2**20))
    with pytest.raises(click.UsageError, match="--dicom-workers must be >= 0"):
        dicom_plugin.validate_options(options(data=str(src), dicom_workers=-1))
    (tmp_path / "afile").write_text("x")
    with pytest.raises(click.UsageError, match=r"dicom plugin: cannot convert .* Not a directory"):
        dicom_plugin.dataset_readers(
            path=str(src), options=options(data=str(src)), cache_dir=str(tmp_path / "afile" / ".cache")
        )
