"""Property-based tests (hypothesis) of labels CSV parsing: meaning is kept, mixing is refused, no tracebacks."""

from __future__ import annotations

import csv
import io

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from data_processing.labels import (
    BINARY_CLASSES,
    MAX_CLASS_ID,
    VINDR_CLASSES,
    LabelsError,
    LabelTable,
    parse_labels,
)

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

image_ids = st.from_regex(r"[A-Za-z0-9_]{1,12}", fullmatch=True)
class_ids = st.integers(min_value=0, max_value=MAX_CLASS_ID)
# text labels: at least one letter, so never an integer; inner spaces and punctuation allowed
text_labels = st.from_regex(r"[A-Za-z][A-Za-z0-9 _\-/.]{0,15}", fullmatch=True).map(str.strip)


def integer_spelling(value: int, style: int) -> str:
    """Ways an integer class id is written in real CSVs: 3, +3, 003, 3.0, ' 3 '."""
    return [str(value), f"+{value}", f"00{value}", f"{value}.0", f" {value} "][style]


def simple_csv(rows: list[tuple[str, str]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["image_id", "label"])
    writer.writerows(rows)
    return out.getvalue()


@SETTINGS
@given(
    labels=st.dictionaries(image_ids, class_ids, min_size=1, max_size=20),
    styles=st.lists(st.integers(0, 4), min_size=20, max_size=20),
    order=st.randoms(use_true_random=False),
)
def test_integer_labels_stay_class_ids(labels: dict[str, int], styles: list[int], order) -> None:
    rows = [
        (image_id, integer_spelling(value, style)) for (image_id, value), style in zip(labels.items(), styles)
    ]
    order.shuffle(rows)
    table = parse_labels(simple_csv(rows), "int.csv")
    assert table.labels == labels
    assert table.class_names is None and not table.excluded and not table.issues


@SETTINGS
@given(
    labels=st.dictionaries(image_ids, text_labels, min_size=1, max_size=20),
    order=st.randoms(use_true_random=False),
)
def test_text_labels_map_deterministically_whatever_the_row_order(labels: dict[str, str], order) -> None:
    rows = list(labels.items())
    first = parse_labels(simple_csv(rows), "a.csv")
    order.shuffle(rows)
    second = parse_labels(simple_csv(rows), "b.csv")
    assert first.labels == second.labels and first.class_names == second.class_names
    assert set(first.labels) == set(labels) and not first.excluded
    names = first.class_names
    assert names is not None
    for image_id, text in labels.items():  # each image's class is named by its own label
        assert first.class_name(first.labels[image_id]).lower() == text.lower()
    known = {n.lower() for n in BINARY_CLASSES}, {n.lower() for n in VINDR_CLASSES}
    if not any({t.lower() for t in labels.values()} <= k for k in known):
        assert names == sorted(set(labels.values()))  # other text: alphabetical ids


@SETTINGS
@given(
    integers=st.dictionaries(image_ids, class_ids, min_size=1, max_size=10),
    texts=st.dictionaries(image_ids.map(lambda s: "t" + s), text_labels, min_size=1, max_size=10),
    order=st.randoms(use_true_random=False),
)
def test_mixed_integer_and_text_labels_are_refused(integers: dict, texts: dict, order) -> None:
    rows = [(k, str(v)) for k, v in integers.items()] + list(texts.items())
    order.shuffle(rows)
    with pytest.raises(LabelsError, match="mixes integer class ids") as info:
        parse_labels(simple_csv(rows), "mixed.csv")
    message = str(info.value)
    assert message.startswith("mixed.csv: ") and "line " in message


def outcome(data: bytes | str) -> LabelTable | None:
    """parse_labels' result, or None for a LabelsError; any other exception fails the test."""
    try:
        table = parse_labels(data, "fuzz.csv")
    except LabelsError as exc:
        assert str(exc).startswith("fuzz.csv: ")
        return None
    assert table.labels or table.excluded
    assert all(isinstance(v, int) and 0 <= v <= MAX_CLASS_ID for v in table.labels.values())
    return table


@SETTINGS
@given(data=st.one_of(st.binary(max_size=300), st.text(max_size=300)))
def test_any_content_gives_a_table_or_a_labels_error(data) -> None:
    outcome(data)


csv_cells = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)


@SETTINGS
@given(
    header=st.sampled_from(
        ["image_id,label", "IMAGE_ID , Label", "image_id,rad_id,lesion_type", "label,image_id"]
    ),
    body=st.lists(st.lists(csv_cells, max_size=4), max_size=12),
    raw_tail=st.text(max_size=40),
)
def test_any_rows_under_a_valid_header_give_a_table_or_a_labels_error(header, body, raw_tail) -> None:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(body)
    outcome(header + "\n" + out.getvalue() + raw_tail)


def test_the_reported_repro_is_refused_naming_the_text_row() -> None:
    with pytest.raises(LabelsError, match=r"line 5 'oops'"):
        parse_labels("image_id,label\na,1\nb,2\nc,1\nd,oops\n", "labels.csv")


def test_out_of_range_integer_labels_exclude_their_image() -> None:
    table = parse_labels(
        f"image_id,label\na,{MAX_CLASS_ID}\nb,{MAX_CLASS_ID + 1}\nc,{'9' * 5000}\nd,-3\n", "x.csv"
    )
    assert table.labels == {"a": MAX_CLASS_ID}
    assert set(table.excluded) == {"b", "c", "d"}
    assert "largest class id" in table.excluded["b"] and "negative" in table.excluded["d"]


def test_an_oversized_field_is_a_labels_error() -> None:
    with pytest.raises(LabelsError, match="not a readable CSV"):
        parse_labels("image_id,label\na," + "x" * 200_000 + "\n", "big.csv")
