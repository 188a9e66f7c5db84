"""Labels CSVs: VinDr-SpineXR annotations (binary and multi-class) and simple image_id,label files."""

from __future__ import annotations

import pytest

from data_processing.labels import (
    MULTICLASS_PRIORITY,
    VINDR_CLASSES,
    LabelsError,
    image_id_from_filename,
    parse_labels,
    read_labels,
)

VINDR = """image_id,study_id,series_id,rad_id,lesion_type,xmin,ymin,xmax,ymax
normal_a,s1,x1,r1,No finding,,,,
normal_two_readers,s2,x2,r1,No finding,,,,
normal_two_readers,s2,x2,r2,No finding,,,,
single_lesion,s3,x3,r1,Osteophytes,1,2,3,4
multi_same,s4,x4,r1,Osteophytes,1,2,3,4
multi_same,s4,x4,r2,Osteophytes,5,6,7,8
mixed,s5,x5,r1,Disc space narrowing,1,2,3,4
mixed,s5,x5,r1,Surgical implant,1,2,3,4
mixed,s5,x5,r2,Osteophytes,1,2,3,4
lesion_and_nofinding,s6,x6,r1,No finding,,,,
lesion_and_nofinding,s6,x6,r2,foraminal  STENOSIS,1,2,3,4
"""


def test_vindr_binary_abnormal_iff_any_finding() -> None:
    table = parse_labels(VINDR, "vindr.csv")
    assert table.format == "vindr"
    assert table.class_names == ["normal", "abnormal"]
    assert table.labels == {
        "normal_a": 0,
        "normal_two_readers": 0,  # two rows, both "No finding": the original's >1-row rule said abnormal
        "single_lesion": 1,  # one lesion row: the original's rule said normal
        "multi_same": 1,
        "mixed": 1,
        "lesion_and_nofinding": 1,
    }
    assert table.findings["mixed"] == ["Disc space narrowing", "Surgical implant", "Osteophytes"]
    assert table.findings["lesion_and_nofinding"] == [
        "No finding",
        "Foraminal stenosis",
    ]  # case/space normalised
    assert table.counts() == {0: 2, 1: 4}


def test_vindr_multiclass_rule() -> None:
    table = parse_labels(VINDR, "vindr.csv", multiclass=True)
    assert table.class_names == list(VINDR_CLASSES)
    ids = {name: i for i, name in enumerate(VINDR_CLASSES)}
    assert table.labels["normal_a"] == ids["No finding"] == 0
    assert table.labels["single_lesion"] == ids["Osteophytes"]
    assert table.labels["multi_same"] == ids["Osteophytes"]  # one distinct type, several boxes
    assert table.labels["mixed"] == ids["Surgical implant"]  # highest in MULTICLASS_PRIORITY of the three
    assert table.labels["lesion_and_nofinding"] == ids["Foraminal stenosis"]
    notes = [i for i in table.issues if i.kind == "multiple-lesion-types"]
    assert [n.image_id for n in notes] == ["mixed"] and "Surgical implant" in notes[0].detail
    assert set(MULTICLASS_PRIORITY) == set(VINDR_CLASSES) - {"No finding"}


def test_vindr_unknown_lesion_types_get_classes_after_the_known_ones() -> None:
    text = "image_id,lesion_type\na,Scoliosis\na,Other lesions\nb,Scoliosis\n"
    table = parse_labels(text, "x.csv", multiclass=True)
    assert table.class_names == list(VINDR_CLASSES) + ["Scoliosis"]
    assert table.labels == {"a": VINDR_CLASSES.index("Other lesions"), "b": 8}  # known types outrank unknown
    assert any(i.kind == "unknown-lesion-type" for i in table.issues)


def test_blank_rows_are_reported_and_an_image_with_only_blank_rows_is_excluded() -> None:
    table = parse_labels("image_id,lesion_type\na,\nb,No finding\n,Osteophytes\n", "x.csv")
    assert table.labels == {"b": 0}
    assert "a" in table.excluded
    assert [i.row for i in table.issues if i.kind == "blank-row"] == [2, 4]


def test_simple_csv_integer_and_named_labels(tmp_path) -> None:
    path = tmp_path / "labels.csv"
    path.write_bytes("\ufeffimage_id,label\nA.dcm,0\nB,1\nC,1.0\n".encode())  # BOM, extension, 1.0
    table = read_labels(path)
    assert table.format == "simple" and table.labels == {"A": 0, "B": 1, "C": 1} and table.class_names is None
    named = parse_labels("image_id,label\na,abnormal\nb,Normal\n", "n.csv")
    assert named.class_names == ["normal", "abnormal"] and named.labels == {"a": 1, "b": 0}
    other = parse_labels("image_id,label\na,zebra\nb,cat\n", "o.csv")
    assert other.class_names == ["cat", "zebra"] and other.labels == {"a": 1, "b": 0}


def test_simple_csv_duplicates_and_conflicts() -> None:
    table = parse_labels("image_id,label\na,1\na,1\nb,0\nb,1\nc,-1\n", "d.csv")
    assert table.labels == {"a": 1}
    assert set(table.excluded) == {"b", "c"}
    kinds = {(i.kind, i.image_id) for i in table.issues}
    assert kinds == {("duplicate-id", "a"), ("conflicting-labels", "b"), ("invalid-label", "c")}


def test_bad_headers_are_explained(tmp_path) -> None:
    with pytest.raises(LabelsError, match="unrecognised labels CSV header"):
        parse_labels("file,class\na,1\n", "h.csv")
    with pytest.raises(LabelsError, match="neither a lesion_type column"):
        parse_labels("image_id,finding\na,1\n", "h.csv")
    with pytest.raises(LabelsError, match="empty"):
        parse_labels("", "h.csv")
    with pytest.raises(LabelsError, match="cannot read"):
        read_labels(tmp_path / "missing.csv")


def test_image_ids_ignore_dicom_extensions() -> None:
    assert image_id_from_filename("sub/abc.dicom") == "abc"
    assert image_id_from_filename("ABC.DCM") == "ABC"
    assert image_id_from_filename("1.2.840.5") == "1.2.840.5"  # UID-like names keep their dots
