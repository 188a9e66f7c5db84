"""``python demo.py``: the stage runner (markers, resuming, refusing other settings), the split by patient,
the command line, and the ``ci`` preset end to end (slow: a few minutes on 2 cores)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import REPO_ROOT
from demo_helpers import ci_demo

from showcase import cli
from showcase.presets import PRESETS
from showcase.report import SECTIONS
from showcase.stages import MARKER, STAGES, Demo, DemoError, Stage, run_demo
from stylegan2_ada.atomic import write_json_atomic, write_png_atomic


def _demo(outdir: Path, preset: str = "ci") -> Demo:
    return Demo(outdir, PRESETS[preset], "cpu", progress=False, say=lambda _: None)


def test_runner_resumes_only_unfinished_stages(tmp_path):
    calls: list[str] = []
    fail = {"b": True}

    def stage_a(demo: Demo) -> dict:
        calls.append("a")
        (demo.folder("01-a") / "a.txt").write_text("a")
        return {"file": str(demo.folder("01-a") / "a.txt")}

    def stage_b(demo: Demo) -> dict:
        calls.append("b")
        assert not (demo.folder("02-b") / "partial.txt").exists()  # an interrupted attempt is cleared
        assert demo.outputs("01-a")["file"].endswith("a.txt")
        (demo.folder("02-b") / "partial.txt").write_text("b")
        if fail["b"]:
            raise DemoError("boom")
        return {}

    stages = (Stage("01-a", "A", stage_a), Stage("02-b", "B", stage_b))
    with pytest.raises(DemoError, match=r"stage 02-b \(B\) failed: boom"):
        run_demo(_demo(tmp_path / "d"), stages)
    assert (tmp_path / "d/01-a" / MARKER).is_file() and not (tmp_path / "d/02-b" / MARKER).exists()
    fail["b"] = False
    done = run_demo(_demo(tmp_path / "d"), stages)
    assert calls == ["a", "b", "b"]
    assert [m["skipped"] for m in done] == [True, False]
    assert all(m["seconds"] >= 0 and m["cpu_seconds"] >= 0 for m in done)
    run_demo(_demo(tmp_path / "d"), stages)
    assert calls == ["a", "b", "b"]


def test_other_settings_and_foreign_folders_are_refused(tmp_path):
    stages = (Stage("01-a", "A", lambda demo: {}),)
    run_demo(_demo(tmp_path / "d"), stages)
    with pytest.raises(DemoError, match="other settings .preset ci"):
        run_demo(_demo(tmp_path / "d", "full"), stages)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("not ours")
    with pytest.raises(DemoError, match="not a demo folder"):
        run_demo(_demo(tmp_path / "other"), stages)
    assert (tmp_path / "other" / "keep.txt").read_text() == "not ours"


def _marker(demo: Demo, stage: str, outputs: dict) -> None:
    record = {"stage": stage, "title": stage, "seconds": 0.0, "cpu_seconds": 0.0, "load_average": 0.0}
    write_json_atomic(demo.folder(stage) / MARKER, {**record, "outputs": outputs})


def test_split_by_patient(tmp_path):
    """Patients, not films, go to one side; the training set carries the patient groups."""
    demo = _demo(tmp_path / "d")
    run_demo(demo, ())  # claims the folder
    rng = np.random.default_rng(0)
    dataset = demo.folder("02-dataset") / "images"
    annotations, report, labels = [], [], []
    for p in range(24):
        abnormal = p % 3 == 0
        for s in range(1 + p % 3):
            image_id = f"P{p:02d}-{s}"
            rel = f"{image_id}.png"
            write_png_atomic(dataset / rel, rng.integers(0, 256, (16, 16), dtype=np.uint8))
            annotations.append({"image_id": image_id, "patient_id": f"P{p:02d}", "lesion_type": "No finding"})
            report.append({"output": rel, "image_id": image_id, "status": "converted"})
            labels.append([rel, int(abnormal)])
    write_json_atomic(dataset / "dataset.json", {"labels": labels, "class_names": ["normal", "abnormal"]})
    for name, rows in (("annotations.csv", annotations), ("conversion_report.csv", report)):
        path = (demo.folder("01-phantoms") if name == "annotations.csv" else dataset) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    _marker(demo, "01-phantoms", {"annotations": str(demo.folder("01-phantoms") / "annotations.csv")})
    _marker(demo, "02-dataset", {"dataset": str(dataset)})

    done = run_demo(demo, STAGES[:3])
    assert [m["skipped"] for m in done] == [True, True, False]
    out = done[2]["outputs"]
    docs = {part: json.loads((Path(out[part]) / "dataset.json").read_text()) for part in ("train", "test")}
    patients = {part: {rel.split("-")[0] for rel, _ in doc["labels"]} for part, doc in docs.items()}
    assert not patients["train"] & patients["test"]
    assert len(patients["test"]) == out["test_patients"] == 6  # 1 of round(1 / 0.25) = 4 folds of 24
    assert sorted(rel for doc in docs.values() for rel, _ in doc["labels"]) == sorted(
        rel for rel, _ in labels
    )
    assert docs["train"]["groups"] == {rel: rel.split("-")[0] for rel, _ in docs["train"]["labels"]}
    for part, doc in docs.items():
        assert {label for _, label in doc["labels"]} == {0, 1}  # stratified: both classes on both sides
        counts = out[f"{part}_counts"]
        assert counts["abnormal"] == sum(label for _, label in doc["labels"])
        for rel, _ in doc["labels"]:
            assert (Path(out[part]) / rel).read_bytes() == (dataset / rel).read_bytes()


def test_command_line_errors(tmp_path):
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("x")
    result = CliRunner().invoke(cli.main, ["--outdir", str(tmp_path / "other"), "--preset", "ci"])
    assert result.exit_code == 1
    assert (
        result.output.strip().splitlines()[-1].startswith("Error: ") and "not a demo folder" in result.output
    )
    if not torch.cuda.is_available():
        result = CliRunner().invoke(cli.main, ["--outdir", str(tmp_path / "g"), "--preset", "gpu"])
        assert result.exit_code == 2 and "--device" in result.output and "preset gpu" in result.output
        assert not (tmp_path / "g").exists()


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.sections: list[str] = []
        self.sources: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "section":
            self.sections.append(attrs["id"])
        if tag in ("img", "video") or (tag == "a" and not attrs.get("href", "#").startswith("#")):
            self.sources.append(attrs.get("src") or attrs["href"])


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_ci_preset_end_to_end_and_resume():
    outdir, result = ci_demo()
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for stage in STAGES:
        marker = json.loads((outdir / stage.name / MARKER).read_text())
        assert marker["stage"] == stage.name and marker["seconds"] > 0
    assert "total" in result.stdout and "report.html" in result.stdout

    links = _Links()
    links.feed((outdir / "report.html").read_text(encoding="utf-8"))
    assert links.sections == [sid for sid, _ in SECTIONS]
    assert links.sources and all((outdir / src).is_file() for src in links.sources), links.sources
    assert any(src.endswith(".mp4") for src in links.sources)
    summary = (outdir / "09-experiment" / "summary.csv").read_text().splitlines()
    assert len(summary) == 1 + 5  # real only; standard GAN and SpineGAN, synthetic only and mixed

    stamp = (outdir / "report.html").stat().st_mtime_ns
    started = time.perf_counter()
    again = subprocess.run(
        [sys.executable, "demo.py", "--outdir", str(outdir), "--preset", "ci", "--quiet"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("finished earlier") == len(STAGES)
    assert (outdir / "report.html").stat().st_mtime_ns == stamp
    assert time.perf_counter() - started < 120
