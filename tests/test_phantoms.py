"""The phantom cohort: determinism, every DICOM encoding through our converter, labels, boxes, folders."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
from collections import defaultdict
from pathlib import Path

import numpy as np
import pydicom
import pytest
from click.testing import CliRunner
from dicom_helpers import tree_hashes
from PIL import Image
from pydicom.uid import ExplicitVRLittleEndian

from data_processing import phantom_anatomy as anatomy
from data_processing import phantoms
from data_processing.cli import main as dp_cli
from data_processing.convert import ConvertConfig, convert_folder
from data_processing.labels import NO_FINDING
from data_processing.phantom_dicom import DEVICES, DX_STORAGE, Identity, dicom_bytes, encode_film
from data_processing.render import RenderOptions

SMALL = (96, 80)  # rows, cols of the films in the encoding tests


def _identity(n: int, facing_right: bool = False) -> Identity:
    return Identity(
        patient_id="PH-T", patient_name="PHANTOM^T", patient_sex="F", birth_date="19600101",
        study_uid="2.25.1", series_uid="2.25.2", sop_uid=f"2.25.{100 + n}", study_date="20200101",
        study_time="120000", accession="A1", study_id="1", series_number=1, instance_number=n,
        facing_right=facing_right,
    )  # fmt: skip


def _film(seed: int, rows: int, cols: int, lesions=()) -> anatomy.Film:
    rng = np.random.default_rng(seed)
    spine = anatomy.with_lesions(anatomy.sample_spine(rng), lesions)
    return anatomy.render_film(spine, anatomy.sample_view(rng, rows, cols), rng)


def _png(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image).astype(np.int64)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cohort") / "phantoms"
    phantoms.write_cohort(out, phantoms.PhantomSettings(count=14, seed=7))
    return out


def test_same_seed_gives_byte_identical_files_and_a_smaller_count_a_prefix(tmp_path, cohort):
    again = tmp_path / "again"
    phantoms.write_cohort(again, phantoms.PhantomSettings(count=14, seed=7))
    assert tree_hashes(again) == tree_hashes(cohort)
    small = tmp_path / "small"
    phantoms.write_cohort(small, phantoms.PhantomSettings(count=5, seed=7))
    hashes, full = tree_hashes(small / "dicom"), tree_hashes(cohort / "dicom")
    assert len(hashes) == 5 and all(full[name] == digest for name, digest in hashes.items())
    small_rows = (small / "annotations.csv").read_text().splitlines()
    assert (cohort / "annotations.csv").read_text().splitlines()[: len(small_rows)] == small_rows


def test_different_seeds_differ(tmp_path, cohort):
    other = tmp_path / "other"
    phantoms.write_cohort(other, phantoms.PhantomSettings(count=3, seed=8))
    a = sorted((cohort / "dicom").iterdir())[0]
    b = sorted((other / "dicom").iterdir())[0]
    assert a.name != b.name
    da, db = pydicom.dcmread(a), pydicom.dcmread(b)
    assert da.StudyInstanceUID != db.StudyInstanceUID and da.SOPInstanceUID != db.SOPInstanceUID
    if da.pixel_array.shape == db.pixel_array.shape:
        assert not np.array_equal(da.pixel_array, db.pixel_array)


def test_dicom_headers_are_complete_and_deterministic(cohort):
    manifest = json.loads((cohort / "phantoms.json").read_text())
    for record in manifest["images"]:
        ds = pydicom.dcmread(cohort / record["file"])
        assert ds.file_meta.TransferSyntaxUID == record["transfer_syntax"]
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID == record["sop_uid"]
        assert ds.SOPInstanceUID.startswith("2.25.") and ds.StudyInstanceUID == record["study_uid"]
        assert ds.PatientID == record["patient_id"] and ds.Modality == record["modality"]
        assert (ds.Rows, ds.Columns) == (record["rows"], record["cols"])
        assert (
            ds.PhotometricInterpretation == record["photometric"] and ds.BitsStored == record["bits_stored"]
        )
        assert ds.PixelRepresentation == int(record["signed"]) and ds.BitsAllocated == 16
        assert ("WindowCenter" in ds) == (record["window"] is not None)
        assert ("RescaleSlope" in ds) == (record["rescale"] is not None)
        if ds.SOPClassUID == DX_STORAGE:
            expected = "INVERSE" if ds.PhotometricInterpretation == "MONOCHROME1" else "IDENTITY"
            assert ds.PresentationLUTShape == expected and ds.PresentationIntentType == "FOR PRESENTATION"
        assert "phantom" in ds.ImageComments.lower()
        lo, hi = int(ds.pixel_array.min()), int(ds.pixel_array.max())
        bits = ds.BitsStored
        low = -(2 ** (bits - 1)) if record["signed"] else 0
        assert low <= lo < hi <= low + 2**bits - 1  # within Bits Stored
    patients = defaultdict(set)
    for record in manifest["images"]:
        patients[record["patient_id"]].add(record["study_uid"])
    assert max(len(studies) for studies in patients.values()) >= 2  # patients with several studies
    assert len({r["image_id"] for r in manifest["images"]}) == len(manifest["images"])


def _write(folder: Path, name: str, image: np.ndarray, device, window) -> None:
    ds = encode_film(image, device, _identity(len(os.listdir(folder)) + 1), window)
    (folder / f"{name}.dcm").write_bytes(dicom_bytes(ds))


def test_every_encoding_converts_to_the_expected_pixels(tmp_path):
    """Each device's encoding, its uncompressed twin and its other-photometric twin, through convert_folder."""
    src = tmp_path / "dicom"
    src.mkdir()
    film = _film(11, *SMALL)
    window = (0.05, 0.95)
    for device in DEVICES:
        small = dataclasses.replace(device, rows=SMALL[0], cols=SMALL[1])
        other = "MONOCHROME2" if device.photometric == "MONOCHROME1" else "MONOCHROME1"
        _write(src, f"{device.name}", film.image, small, window)
        _write(
            src,
            f"{device.name}-plain",
            film.image,
            dataclasses.replace(small, transfer_syntax=ExplicitVRLittleEndian),
            window,
        )
        _write(src, f"{device.name}-flip", film.image, dataclasses.replace(small, photometric=other), window)
    summary = convert_folder(
        ConvertConfig(
            str(src), str(tmp_path / "png"), render=RenderOptions(resolution=None), workers=0, progress=False
        )
    )
    assert summary.exit_code == 0 and summary.counts["converted"] == 3 * len(DEVICES)
    report = {row.source: row for row in summary.rows}
    expected = np.clip((film.image.astype(np.float64) - window[0]) / (window[1] - window[0]), 0, 1) * 255
    syntaxes = set()
    for device in DEVICES:
        out = _png(tmp_path / "png" / f"{device.name}.png")
        syntaxes.add(report[f"{device.name}.dcm"].transfer_syntax)
        np.testing.assert_array_equal(
            out, _png(tmp_path / "png" / f"{device.name}-plain.png")
        )  # lossless twin
        assert np.abs(out - _png(tmp_path / "png" / f"{device.name}-flip.png")).max() <= 1  # MONOCHROME1 == 2
        if device.window:
            assert report[f"{device.name}.dcm"].window_source == "window"
            assert np.abs(out - expected).max() <= 1.0, device.name
        else:  # the converter's percentile window: a linear map of the film, clipped
            inside = (out > 2) & (out < 253)
            slope, offset = np.polyfit(film.image[inside], out[inside], 1)
            assert slope > 0 and np.abs(film.image[inside] * slope + offset - out[inside]).max() <= 1.0
        assert (report[f"{device.name}.dcm"].inverted == "yes") == (device.photometric == "MONOCHROME1")
    assert len(syntaxes) == 4  # explicit, implicit, RLE and JPEG 2000 all went through the converter
    bits = {(d.bits_stored, d.signed) for d in DEVICES}
    assert {b for b, _ in bits} == {10, 12, 14, 16} and {s for _, s in bits} == {False, True}


def test_cohort_converts_with_the_labels_abnormal_iff_lesions(tmp_path, cohort):
    result = CliRunner().invoke(
        dp_cli,
        ["convert", "--dicom", str(cohort / "dicom"), "--labels", str(cohort / "annotations.csv"),
         "--outdir", str(tmp_path / "ds"), "--resolution", "64", "--workers", "0", "--no-progress"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    dataset = json.loads((tmp_path / "ds" / "dataset.json").read_text())
    assert dataset["class_names"] == ["normal", "abnormal"]
    labels = {Path(rel).stem: label for rel, label in dataset["labels"]}
    findings = defaultdict(list)
    with open(cohort / "annotations.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == list(phantoms.ANNOTATION_COLUMNS)
    for row in rows:
        findings[row["image_id"]].append(row["lesion_type"])
        assert (row["lesion_type"] == NO_FINDING) == (row["xmin"] == "")
    assert set(labels) == set(findings) and len(labels) == 14
    for image_id, types in findings.items():
        assert labels[image_id] == int(any(t != NO_FINDING for t in types))
    assert 0 < sum(labels.values()) < len(labels)
    manifest = json.loads((cohort / "phantoms.json").read_text())
    assert {r["image_id"]: r["label"] for r in manifest["images"]} == labels


def test_prevalence_patients_and_severity_in_the_plan():
    plan = phantoms.plan_cohort(phantoms.PhantomSettings(count=400, seed=1))
    share = np.mean([f.abnormal for f in plan])
    assert abs(share - 0.39) < 0.03
    by_patient = defaultdict(set)
    for film in plan:
        by_patient[film.identity.patient_id].add(film.abnormal)
    assert all(len(states) == 1 for states in by_patient.values())  # a patient's films agree
    assert len(by_patient) < 300  # several films per patient
    assert not any(
        f.abnormal for f in phantoms.plan_cohort(phantoms.PhantomSettings(count=40, abnormal_fraction=0))
    )
    assert all(
        f.abnormal for f in phantoms.plan_cohort(phantoms.PhantomSettings(count=40, abnormal_fraction=1))
    )
    mild = phantoms.plan_cohort(phantoms.PhantomSettings(count=200, seed=1, severity=0.5))
    strong = phantoms.plan_cohort(phantoms.PhantomSettings(count=200, seed=1, severity=2.0))
    magnitude = [np.mean([x.magnitude for f in p for x in f.spine.lesions]) for p in (mild, strong)]
    assert magnitude[0] < 0.6 * magnitude[1]
    kinds = {x.kind for f in plan for x in f.spine.lesions}
    assert kinds == set(anatomy.LESION_TYPES)
    assert len({f.device.name for f in plan}) == len(DEVICES)


@pytest.mark.parametrize(
    "lesion",
    [
        anatomy.Lesion(anatomy.COLLAPSE, 5, 0.35, "wedge"),
        anatomy.Lesion(anatomy.COLLAPSE, 4, 0.3, "biconcave"),
        anatomy.Lesion(anatomy.NARROWING, 1, 0.6),
        anatomy.Lesion(anatomy.NARROWING, 0, 0.5),
        anatomy.Lesion(anatomy.OSTEOPHYTES, 3, 0.3, "both"),
        anatomy.Lesion(anatomy.SLIP, 2, 0.25),
    ],
    ids=lambda x: f"{x.kind}-{x.site}",
)
def test_findings_box_the_pixels_the_lesion_changes(lesion):
    """The box holds what the lesion changes (up to the film's blur, 3 sigma <= 4.5 px); a narrowed disc or
    a slip also moves the column above it, so there the lowest changed row must lie in the box. Nothing
    else on the film changes (texture, soft tissue and crest do not move with a lesion)."""
    blur = 4.5
    for seed in (0, 1, 2):
        normal = _film(seed, 320, 256)
        sick = _film(seed, 320, 256, [lesion])
        (finding,) = sick.findings
        assert finding.lesion_type == lesion.kind and finding.site == lesion.site
        x0, y0, x1, y1 = finding.box
        assert 0 <= x0 < x1 <= 256 and 0 <= y0 < y1 <= 320
        diff = np.abs(sick.image - normal.image)
        if lesion.kind in (anatomy.NARROWING, anatomy.SLIP):
            lowest = np.nonzero((diff > 0.05).any(axis=1))[0].max()
            assert y0 - blur <= lowest <= y1 + blur
        else:
            rows = slice(max(0, int(y0 - blur)), int(np.ceil(y1 + blur)))
            cols = slice(max(0, int(x0 - blur)), int(np.ceil(x1 + blur)))
            # A collapsed body is boxed as it is now: the height it lost lies partly outside its box.
            share = 0.8 if lesion.kind == anatomy.COLLAPSE else 0.97
            assert diff[rows, cols].sum() > share * diff.sum() > 0


def test_boxes_stay_on_the_film_for_any_patient_and_view():
    for seed in range(40):
        rng = np.random.default_rng(seed)
        spine = anatomy.with_lesions(anatomy.sample_spine(rng), anatomy.sample_lesions(rng, 2.0))
        rows, cols = (480, 600) if seed % 2 else (640, 512)
        view = anatomy.sample_view(rng, rows, cols)
        film = anatomy.render_film(spine, view, rng)
        assert film.image.dtype == np.float32 and film.image.shape == (rows, cols)
        assert 0 <= film.image.min() and film.image.max() <= 1
        for f in film.findings:
            x0, y0, x1, y1 = f.box
            assert 0 <= x0 < x1 <= cols and 0 <= y0 < y1 <= rows
            assert x0 > 0 and y0 > 0 and x1 < cols and y1 < rows, (seed, f)  # not cut by the film's edge


def test_output_folder_rules(tmp_path):
    settings = phantoms.PhantomSettings(count=2, seed=3)
    out = tmp_path / "c"
    phantoms.write_cohort(out, settings)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    assert phantoms.write_cohort(out, settings)["reused"] is True
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before  # nothing rewritten
    other = phantoms.PhantomSettings(count=3, seed=3)
    with pytest.raises(phantoms.PhantomError, match="other settings.*--overwrite"):
        phantoms.write_cohort(out, other)
    phantoms.write_cohort(out, other, overwrite=True)
    assert len(list((out / "dicom").iterdir())) == 3
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(phantoms.PhantomError, match="not empty"):
        phantoms.write_cohort(foreign, settings, overwrite=True)
    assert (foreign / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c", "mine"]  # no staging folders left


def test_command_line(tmp_path):
    out = tmp_path / "cli"
    args = ["phantoms", "--out", str(out), "--count", "3", "--seed", "2", "--no-progress"]
    result = CliRunner().invoke(dp_cli, args)
    assert result.exit_code == 0, result.output
    assert "Wrote 3 films" in result.output and len(list((out / "dicom").iterdir())) == 3
    assert "Already complete" in CliRunner().invoke(dp_cli, args).output
    for bad in (["--count", "0"], ["--severity", "0"], ["--abnormal-fraction", "1.5"]):
        result = CliRunner().invoke(dp_cli, ["phantoms", "--out", str(tmp_path / "x"), *bad])
        assert result.exit_code == 2 and "Error" in result.output and "Traceback" not in result.output
    result = CliRunner().invoke(dp_cli, ["phantoms", "--out", str(out), "--count", "4", "--no-progress"])
    assert result.exit_code == 2 and "--overwrite" in result.output
