"""The conversion command, its report and dataset.json, resuming, and the legacy wrappers."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from dicom_helpers import (
    REPO_ROOT,
    crash_on_named_crash,
    cspine_cr,
    dicom_file,
    make_dicom,
    ramp,
    tree_hashes,
)
from PIL import Image

from data_processing.cli import main as cli_main
from data_processing.convert import ConversionError, ConvertConfig, convert_folder, run_render_tasks
from data_processing.image_main import main as image_main
from data_processing.pngio import read_png, write_png
from data_processing.render import RenderOptions
from data_processing.scale import scale_16_to_8

VINDR = """image_id,rad_id,lesion_type
ok1,r1,No finding
ok2,r1,Osteophytes
ok3,r1,Surgical implant
ok3,r2,Osteophytes
notdicom,r1,No finding
rtplan,r1,No finding
cut,r1,No finding
ghost,r1,No finding
"""


@pytest.fixture()
def export(tmp_path):
    """A small 'PACS export': good films, broken files, a DICOMDIR, a readme, and a VinDr CSV."""
    src = tmp_path / "export"
    (src / "a").mkdir(parents=True)
    (src / "b").mkdir()
    make_dicom(
        src / "a" / "ok1.dcm",
        ramp(96, 48, 0, 4095),
        bits_stored=12,
        window=(2048, 4096),
        photometric="MONOCHROME1",
    )
    make_dicom(src / "a" / "ok2.dcm", ramp(40, 40, 100, 900))  # no window: percentile fallback
    shutil.copy(cspine_cr(1), src / "b" / "ok3")  # no extension, as PACS exports often have
    (src / "notdicom.dcm").write_text("not an image")
    shutil.copy(dicom_file("rtplan.dcm"), src / "rtplan.dcm")
    data = open(dicom_file("CT_small.dcm"), "rb").read()
    (src / "cut.dcm").write_bytes(data[:-3000])
    shutil.copy(
        os.path.join(os.path.dirname(dicom_file("CT_small.dcm")), "dicomdirtests", "DICOMDIR"),
        src / "DICOMDIR",
    )
    (src / "README.txt").write_text("export notes")
    labels = tmp_path / "labels.csv"
    labels.write_text(VINDR)
    return src, labels


def report_rows(outdir) -> dict[str, dict[str, str]]:
    with open(os.path.join(outdir, "conversion_report.csv"), newline="") as fh:
        return {row["source"]: row for row in csv.DictReader(fh)}


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=REPO_ROOT, timeout=300)


def test_convert_command_end_to_end(export, tmp_path) -> None:
    src, labels = export
    before = tree_hashes(src)
    out = tmp_path / "dataset"
    proc = run_cli(
        "-m",
        "data_processing",
        "convert",
        "--dicom",
        str(src),
        "--labels",
        str(labels),
        "--outdir",
        str(out),
        "--resolution",
        "64",
        "--workers",
        "2",
        "--no-progress",
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr  # some files failed
    assert tree_hashes(src) == before  # inputs untouched
    assert "DICOM decoders: uncompressed: native; RLE:" in proc.stderr  # the start-up decoder check
    assert "3 converted" in proc.stdout and "3 failed" in proc.stdout

    dataset = json.loads((out / "dataset.json").read_text())
    assert dataset == {
        "labels": [["a/ok1.png", 0], ["a/ok2.png", 1], ["b/ok3.png", 1]],
        "class_names": ["normal", "abnormal"],
    }
    rows = report_rows(out)
    assert set(rows) == set(before)  # one row per input file
    status = {k: (r["status"], r["reason_code"]) for k, r in rows.items()}
    assert status["notdicom.dcm"] == ("failed", "not-dicom")
    assert status["rtplan.dcm"] == ("failed", "no-pixel-data")
    assert status["cut.dcm"] == ("failed", "truncated-pixel-data")
    assert status["DICOMDIR"][0] == status["README.txt"][0] == "ignored"
    assert rows["a/ok1.dcm"]["inverted"] == "yes" and rows["a/ok1.dcm"]["source_window"] == "C=2048 W=4096"
    assert rows["a/ok2.dcm"]["fallback"].startswith("percentile") and rows["a/ok2.dcm"]["inverted"] == "no"
    assert (
        rows["b/ok3"]["output"] == "b/ok3.png"
        and rows["b/ok3"]["findings"] == "Surgical implant; Osteophytes"
    )
    assert "cut.dcm" in rows["cut.dcm"]["reason"] and "truncated" in rows["cut.dcm"]["reason"]
    issues = (out / "label_issues.csv").read_text()
    assert "label-without-image,ghost" in issues
    for rel in ("a/ok1.png", "a/ok2.png", "b/ok3.png"):
        with Image.open(out / rel) as im:
            assert im.mode == "L" and im.size == (64, 64)
    assert not [f for _, _, files in os.walk(out) for f in files if f.startswith(".")]  # no temp files left

    from stylegan2_ada.dataset import open_image_dataset

    ds = open_image_dataset(str(out), use_labels=True)
    assert len(ds) == 3 and ds.label_dim == 2 and ds.resolution == 64 and ds.num_channels == 1
    assert ds.class_names == ["normal", "abnormal"]


def test_resume_overwrite_settings_and_stale_outputs(export, tmp_path) -> None:
    src, labels = export
    before = tree_hashes(src)
    out = str(tmp_path / "ds")
    config = ConvertConfig(
        str(src), out, str(labels), RenderOptions(resolution=32), workers=0, progress=False
    )
    first = convert_folder(config)
    assert first.exit_code == 1 and first.counts["converted"] == 3
    png = os.path.join(out, "a", "ok1.png")
    stamp = os.stat(png).st_mtime_ns

    second = convert_folder(config)
    assert second.counts["existing"] == 3 and second.counts["converted"] == 0
    assert os.stat(png).st_mtime_ns == stamp  # not rewritten
    assert report_rows(out)["a/ok1.dcm"]["inverted"] == "yes"  # carried over from the first report

    os.utime(src / "a" / "ok2.dcm", ns=(stamp + 10**9, stamp + 10**9))  # the DICOM changed since
    third = convert_folder(config)
    assert {r.source for r in third.rows if r.status == "converted"} == {"a/ok2.dcm"}

    forced = convert_folder(
        ConvertConfig(
            str(src),
            out,
            str(labels),
            RenderOptions(resolution=32),
            workers=0,
            overwrite=True,
            progress=False,
        )
    )
    assert forced.counts["converted"] == 3

    with pytest.raises(ConversionError, match="resolution: 32 -> 64"):
        convert_folder(
            ConvertConfig(str(src), out, str(labels), RenderOptions(resolution=64), workers=0, progress=False)
        )

    fewer = tmp_path / "fewer.csv"
    fewer.write_text("image_id,label\nok1,0\nok3,1\n")
    after = convert_folder(
        ConvertConfig(str(src), out, str(fewer), RenderOptions(resolution=32), workers=0, progress=False)
    )
    assert after.removed_stale == ["a/ok2.png"] and not os.path.exists(os.path.join(out, "a", "ok2.png"))
    assert json.loads(open(os.path.join(out, "dataset.json")).read())["labels"] == [
        ["a/ok1.png", 0],
        ["b/ok3.png", 1],
    ]
    assert after.exit_code == 0  # the unlabelled broken files are reported, not failed
    assert after.counts["unlabelled"] == 4
    assert tree_hashes(src) == before  # bytes untouched (the test itself changed one mtime)


def test_without_labels_everything_is_converted_and_all_good_exits_zero(tmp_path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    make_dicom(src / "x.dcm", ramp(32, 32, 0, 255, np.uint8), window=(128, 256))
    make_dicom(src / "y.dcm", ramp(32, 64, 0, 4095), bits_stored=12)
    out = tmp_path / "out"
    summary = convert_folder(
        ConvertConfig(
            str(src), str(out), None, RenderOptions(resolution=16, bits=16), workers=0, progress=False
        )
    )
    assert summary.exit_code == 0 and summary.counts["converted"] == 2
    assert json.loads((out / "dataset.json").read_text()) == {"labels": None}
    assert read_png(out / "y.png").dtype == np.uint16


def test_multiclass_and_duplicate_ids(tmp_path) -> None:
    src = tmp_path / "in"
    (src / "p").mkdir(parents=True)
    (src / "q").mkdir()
    for name in ("p/one.dcm", "q/one.dcm", "p/two.dcm", "p/three.dcm"):
        make_dicom(src / name, ramp(16, 16, 0, 1000), window=(500, 1000))
    labels = tmp_path / "l.csv"
    labels.write_text(
        "image_id,lesion_type\none,No finding\ntwo,Vertebral collapse\ntwo,Osteophytes\nthree,No finding\n"
    )
    out = tmp_path / "out"
    summary = convert_folder(
        ConvertConfig(
            str(src),
            str(out),
            str(labels),
            RenderOptions(resolution=16),
            multiclass=True,
            workers=0,
            progress=False,
            strict=True,
        )
    )
    dataset = json.loads((out / "dataset.json").read_text())
    assert dataset["labels"] == [
        ["p/three.png", 0],
        ["p/two.png", 6],
    ]  # Vertebral collapse outranks Osteophytes
    assert dataset["class_names"][6] == "Vertebral collapse"
    statuses = {r.source: r.status for r in summary.rows}
    assert statuses["p/one.dcm"] == statuses["q/one.dcm"] == "excluded"  # ambiguous id: never guessed
    assert summary.exit_code == 1  # --strict: label problems fail the run


def test_outdir_inside_the_input_folder_is_refused(tmp_path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    make_dicom(src / "x.dcm", ramp(8, 8, 0, 100), window=(50, 100))
    with pytest.raises(ConversionError, match="inside the input folder"):
        convert_folder(
            ConvertConfig(
                str(src), str(src / "out"), None, RenderOptions(resolution=8), workers=0, progress=False
            )
        )
    proc = run_cli(
        "-m", "data_processing", "convert", "--dicom", str(src), "--outdir", str(src / "out"), "--no-progress"
    )
    assert proc.returncode == 2 and "inside the input folder" in proc.stderr
    assert not (src / "out").exists()


def test_legacy_image_main_writes_class_folders(export, tmp_path) -> None:
    src, labels = export
    before = tree_hashes(src)
    normal, abnormal = tmp_path / "normal", tmp_path / "abnormal"
    proc = run_cli(
        "data_processing/image_main.py",
        "--DICOM",
        str(src),
        "--labels",
        str(labels),
        "--save_0",
        str(normal),
        "--save_1",
        str(abnormal),
        "--resolution",
        "32",
    )
    assert proc.returncode == 1, proc.stderr  # the broken files are reported
    assert "3 failed" in proc.stderr and "notdicom.dcm" in proc.stderr
    assert sorted(os.listdir(normal)) == ["ok1.png"] and sorted(os.listdir(abnormal)) == [
        "ok2.png",
        "ok3.png",
    ]
    assert read_png(normal / "ok1.png").dtype == np.uint16  # 16-bit, as the original wrote
    assert tree_hashes(src) == before


def test_legacy_scale_png_copies_unless_in_place(tmp_path) -> None:
    folder = tmp_path / "pngs"
    image = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000).astype(np.uint16)
    write_png(folder / "a.png", image)
    write_png(folder / "sub" / "b.png", np.zeros((4, 4), np.uint16))
    write_png(folder / "c.png", np.full((4, 4), 9, np.uint8))
    before = tree_hashes(folder)
    proc = run_cli("data_processing/scale_png.py", "--directory", str(folder))
    assert proc.returncode == 0, proc.stderr
    assert tree_hashes(folder) == before  # inputs untouched without --in-place
    copy = read_png(tmp_path / "pngs_8bit" / "a.png")
    assert copy.dtype == np.uint8 and np.array_equal(
        copy, ((image.astype(int) + 128) // 257).astype(np.uint8)
    )
    assert read_png(tmp_path / "pngs_8bit" / "sub" / "b.png").max() == 0
    proc = run_cli("data_processing/scale_png.py", "--directory", str(folder), "--in-place", "--scale", "max")
    assert proc.returncode == 0, proc.stderr
    replaced = read_png(folder / "a.png")
    assert replaced.dtype == np.uint8 and replaced.max() == 255 and replaced.min() == 0
    assert read_png(folder / "c.png").max() == 9  # 8-bit files are left alone


def test_scaling_has_no_overflow_or_division_by_zero() -> None:
    edge = np.array([[0, 256, 512]], np.uint16)  # max a multiple of 256: the original wrapped to 0
    assert scale_16_to_8(edge, "max").tolist() == [[0, 128, 255]]
    assert scale_16_to_8(np.zeros((2, 2), np.uint16), "max").max() == 0  # the original divided by zero
    assert scale_16_to_8(np.array([[65535, 0, 32768]], np.uint16), "full").tolist() == [[255, 0, 128]]


def test_a_worker_crash_costs_only_the_file_that_caused_it(tmp_path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    tasks = []
    for name in ("a.dcm", "crash.dcm", "b.dcm", "c.dcm"):
        make_dicom(src / name, ramp(16, 16, 0, 1000), window=(500, 1000))
        tasks.append((str(src / name), str(tmp_path / "out" / (name + ".png")), RenderOptions(resolution=8)))
    results = {
        os.path.basename(r[0]): r for r in run_render_tasks(tasks, 2, False, func=crash_on_named_crash)
    }
    assert set(results) == {"a.dcm", "crash.dcm", "b.dcm", "c.dcm"}
    assert results["crash.dcm"][1] is None and results["crash.dcm"][2] == "worker-crashed"
    assert all(results[n][1] is not None for n in ("a.dcm", "b.dcm", "c.dcm"))


@pytest.mark.parametrize("dtype, top", [(np.uint8, 255), (np.uint16, 65535)])
def test_png_encoder_round_trips_through_pillow_and_the_dataset_reader(tmp_path, dtype, top) -> None:
    from stylegan2_ada.dataset import decode_image

    rng = np.random.default_rng(0)
    image = rng.integers(0, top + 1, (37, 53)).astype(dtype)
    image[0, 0], image[-1, -1] = 0, top
    write_png(tmp_path / "x.png", image)
    with Image.open(tmp_path / "x.png") as im:
        assert im.size == (53, 37) and im.mode == ("L" if dtype == np.uint8 else "I;16")
    assert np.array_equal(read_png(tmp_path / "x.png"), image)
    decoded = decode_image((tmp_path / "x.png").read_bytes(), "x.png", keep_16bit=True)
    assert np.array_equal(np.squeeze(decoded), image)


# --------------------------------------------------------------------------------------------------
# Silent acceptances and file-system errors (issue 8): each gets a report row or one `Error:` line


def small_export(folder, names=("a", "b", "c", "d")):
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        make_dicom(folder / f"{name}.dcm", ramp(16, 16, 0, 4095), bits_stored=12, window=(2048, 4096))
    return folder


def error_lines(stderr: str) -> list[str]:
    assert "Traceback" not in stderr, stderr
    return [line for line in stderr.splitlines() if line.startswith("Error:")]


def test_mixed_integer_and_text_labels_are_refused_before_any_work(tmp_path) -> None:
    src = small_export(tmp_path / "in")
    labels = tmp_path / "labels.csv"
    labels.write_text("image_id,label\na,1\nb,2\nc,1\nd,oops\n")  # once: classes "1", "2", "oops", exit 0
    out = tmp_path / "out"
    args = ["convert", "--dicom", str(src), "--labels", str(labels), "--outdir", str(out), "--workers", "0"]
    result = CliRunner().invoke(cli_main, [*args, "--no-progress"])
    assert result.exit_code == 2
    (line,) = error_lines(result.stderr)
    assert "mixes integer class ids (3 rows) and text labels (1 row)" in line and "line 5 'oops'" in line
    assert not out.exists()


def test_negative_worker_counts_are_refused(tmp_path, capsys) -> None:
    src = small_export(tmp_path / "in", ["a"])
    args = ["convert", "--dicom", str(src), "--outdir", str(tmp_path / "o"), "--workers", "-1"]
    result = CliRunner().invoke(cli_main, args)
    assert result.exit_code == 2
    assert "Invalid value for '--workers': -1 is not in the range x>=0" in result.stderr
    with pytest.raises(ConversionError, match="workers must be >= 0"):
        convert_folder(ConvertConfig(str(src), str(tmp_path / "o"), workers=-1, progress=False))
    with pytest.raises(ValueError, match="workers must be >= 0"):
        list(run_render_tasks([], -1, False))
    (tmp_path / "x.csv").write_text("image_id,label\na,1\n")
    legacy = ["--DICOM", str(src), "--labels", str(tmp_path / "x.csv"), "--save_0", "n", "--save_1", "a"]
    with pytest.raises(SystemExit) as exit_info:
        image_main([*legacy, "--workers", "-1"])
    assert exit_info.value.code == 2 and "--workers: must be >= 0, not -1" in capsys.readouterr().err


def test_broken_links_special_files_and_linked_folders_get_report_rows(tmp_path) -> None:
    src = small_export(tmp_path / "in", ["a", "b"])
    os.symlink(tmp_path / "gone.dcm", src / "dangling.dcm")  # once: no row at all, exit 0
    os.symlink(tmp_path / "gone_notes.txt", src / "notes.txt")  # a side file: ignored even when broken
    os.mkfifo(src / "pipe.dcm")  # would block a reader forever
    elsewhere = small_export(tmp_path / "elsewhere", ["z"])
    os.symlink(elsewhere, src / "linked")
    labels = tmp_path / "labels.csv"
    labels.write_text("image_id,label\na,0\nb,1\ndangling,1\n")
    summary = convert_folder(
        ConvertConfig(str(src), str(tmp_path / "out"), str(labels), RenderOptions(resolution=8), workers=0,
                      progress=False)
    )  # fmt: skip
    rows = {r.source: r for r in summary.rows}
    assert (rows["dangling.dcm"].status, rows["dangling.dcm"].reason_code) == ("failed", "broken-link")
    assert "symbolic link to a file that does not exist" in rows["dangling.dcm"].reason
    assert (rows["notes.txt"].status, rows["pipe.dcm"].status) == ("ignored", "ignored")
    assert rows["pipe.dcm"].reason_code == "not-a-file"
    assert (rows["linked"].status, rows["linked"].reason_code) == ("ignored", "linked-folder")
    assert [rows[n].status for n in ("a.dcm", "b.dcm")] == ["converted", "converted"]
    assert summary.exit_code == 1 and "broken-link x1" in summary.format()
    assert not [i for i in summary.issues if i.kind == "label-without-image"]  # the link is its image
    assert set(report_rows(tmp_path / "out")) == set(rows)


def test_output_folder_below_a_file_is_one_error_line(tmp_path) -> None:
    src = small_export(tmp_path / "in", ["a"])
    (tmp_path / "afile").write_text("x")
    out = tmp_path / "afile" / "sub"
    result = CliRunner().invoke(
        cli_main, ["convert", "--dicom", str(src), "--outdir", str(out), "--workers", "0"]
    )
    assert result.exit_code == 2
    (line,) = error_lines(result.stderr)
    assert line == f"Error: {out}: cannot write to the output folder: Not a directory ({str(out)!r})"


@pytest.mark.skipif(
    os.geteuid() == 0, reason="root writes into read-only folders; the simulated test below covers it"
)
def test_read_only_output_folder_is_one_error_line(tmp_path) -> None:
    src = small_export(tmp_path / "in", ["a"])
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o555)
    try:
        proc = run_cli(
            "-m", "data_processing", "convert", "--dicom", str(src), "--outdir", str(out), "--no-progress",
        )  # fmt: skip
    finally:
        out.chmod(0o755)
    assert proc.returncode == 2
    (line,) = error_lines(proc.stderr)
    assert "cannot write to the output folder: Permission denied" in line
    assert os.listdir(out) == []


def test_unwritable_output_is_one_error_line_before_and_after_rendering(tmp_path, monkeypatch) -> None:
    """Read-only file system at the start, disk full at the end: one `Error:` line, exit 2, inputs untouched."""
    import errno

    from data_processing import convert as convert_module

    src = small_export(tmp_path / "in", ["a", "b"])
    before = tree_hashes(src)
    out = tmp_path / "out"
    args = ["convert", "--dicom", str(src), "--outdir", str(out), "--workers", "0", "--no-progress"]

    def read_only(*_a, **_k):
        raise OSError(errno.EROFS, "Read-only file system", str(out))

    with monkeypatch.context() as m:
        m.setattr(convert_module.tempfile, "TemporaryFile", read_only)
        result = CliRunner().invoke(cli_main, args)
    assert result.exit_code == 2
    (line,) = error_lines(result.stderr)
    assert line == f"Error: {out}: cannot write to the output folder: Read-only file system ({str(out)!r})"

    def disk_full(path, *_a):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    with monkeypatch.context() as m:
        m.setattr(convert_module, "write_report", disk_full)
        result = CliRunner().invoke(cli_main, args)
    assert result.exit_code == 2
    (line,) = error_lines(result.stderr)
    assert "cannot write the conversion results: No space left on device" in line
    assert tree_hashes(src) == before


def test_a_png_that_cannot_be_written_is_a_failed_row(tmp_path, monkeypatch) -> None:
    import errno

    from data_processing import convert as convert_module

    src = small_export(tmp_path / "in", ["a"])

    def disk_full(path, image):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(convert_module, "write_png", disk_full)
    summary = convert_folder(ConvertConfig(str(src), str(tmp_path / "out"), workers=0, progress=False))
    (row,) = summary.rows
    assert (row.status, row.reason_code) == ("failed", "write-failed")
    png = str(tmp_path / "out" / "a.png")
    assert row.reason.endswith(f"its PNG cannot be written: No space left on device ({png!r})")
    assert summary.exit_code == 1
