"""Labels CSVs -> one class per image, with every oddity reported.

Two formats, told apart by the header (column names are matched case-insensitively, surrounding
spaces ignored; a UTF-8 byte-order mark is fine):

VinDr-SpineXR annotations (``image_id``, ``lesion_type``; other columns such as ``study_id``,
``rad_id``, ``xmin`` ... are ignored). One row per finding (bounding box); an image with no finding
has one row ``No finding``.
    * binary (default): class 1 "abnormal" iff *any* row of the image is not "No finding", else class 0
      "normal". (The original SpineGAN code called an image abnormal iff it had more than one row -- a
      bug: a single lesion row made it "normal", and two "No finding" rows from two readers made it
      "abnormal".)
    * ``multiclass=True``: class ids are :data:`VINDR_CLASSES` in that order (0 = "No finding"), then
      any unknown lesion types in alphabetical order. An image with several *distinct* lesion types
      gets the one that comes first in :data:`MULTICLASS_PRIORITY` (unknown types last, alphabetically);
      "No finding" rows next to lesion rows are ignored. Nothing is dropped or deleted: the full list
      of findings goes to the conversion report, and the choice is listed as a ``multiple-lesion-types``
      note.

Simple (``image_id``, ``label``): one row per image. Either every label is an integer or every label
is text; a file that mixes the two is refused (:class:`LabelsError` listing the odd rows), because
either reading would silently change what some rows mean. Integer labels (``3``, ``+3``, ``3.0``;
ASCII digits) are class ids as given; a negative one, or one above :data:`MAX_CLASS_ID`, excludes its
image (``invalid-label``). Text labels become classes: ``normal``/``abnormal`` -> 0/1; VinDr
lesion-type names -> their :data:`VINDR_CLASSES` ids; anything else -> ids in alphabetical order (of
the exact, case-sensitive text), so the same set of labels always gives the same ids whatever the row
order. A repeated image id with the same label is a ``duplicate-id`` note; with different labels the
image is excluded (``conflicting-labels``).

Image ids are compared without a ``.dcm``/``.dicom``/``.dic`` extension, so ``abc`` and ``abc.dicom``
name the same image.
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections import Counter, OrderedDict
from dataclasses import dataclass, field

__all__ = [
    "VINDR_CLASSES",
    "MULTICLASS_PRIORITY",
    "NO_FINDING",
    "BINARY_CLASSES",
    "MAX_CLASS_ID",
    "LabelsError",
    "LabelIssue",
    "LabelTable",
    "read_labels",
    "parse_labels",
    "image_id_from_filename",
]

NO_FINDING = "No finding"
#: Multi-class ids, in this order (the VinDr-SpineXR lesion types).
VINDR_CLASSES: tuple[str, ...] = (
    NO_FINDING,
    "Disc space narrowing",
    "Foraminal stenosis",
    "Osteophytes",
    "Spondylolysthesis",
    "Surgical implant",
    "Vertebral collapse",
    "Other lesions",
)
#: Which lesion type labels an image that has several: the first of these it has. Roughly "most
#: conspicuous / most severe first": hardware and structural failure dominate the image, specific
#: degenerative findings next, the catch-all "Other lesions" last.
MULTICLASS_PRIORITY: tuple[str, ...] = (
    "Surgical implant",
    "Vertebral collapse",
    "Spondylolysthesis",
    "Foraminal stenosis",
    "Disc space narrowing",
    "Osteophytes",
    "Other lesions",
)
BINARY_CLASSES: tuple[str, ...] = ("normal", "abnormal")
#: The largest integer label accepted as a class id (int32, what the training code indexes with); larger
#: ones exclude their image. A sanity bound against typos, not a class-count limit (training has its own).
MAX_CLASS_ID = 2**31 - 1
_INTEGER_LABEL = re.compile(r"[+-]?([0-9]+)(?:\.0*)?", re.ASCII)  # 3, +3, -3, 3.0, 3.
_LIST_MAX = 5  # rows quoted in an error message
_DICOM_EXTENSIONS = (".dcm", ".dicom", ".dic")
_CANONICAL = {name.lower(): name for name in VINDR_CLASSES}


class LabelsError(ValueError):
    """The labels CSV cannot be used at all; the message names the file and the problem."""


@dataclass(frozen=True)
class LabelIssue:
    """Something in the labels worth a line in ``label_issues.csv``.

    ``kind``: ``duplicate-id``, ``conflicting-labels``, ``blank-row``, ``invalid-label``,
    ``unknown-lesion-type``, ``multiple-lesion-types`` (notes, except the ones that exclude an image:
    ``conflicting-labels`` and an image whose only rows are invalid), and, added by the conversion,
    ``label-without-image``, ``image-without-label``, ``duplicate-image-id``.
    """

    kind: str
    image_id: str
    detail: str
    row: int | None = None  # 1-based CSV line number (the header is line 1)


@dataclass
class LabelTable:
    """Parsed labels: ``labels`` image id -> class id; ``excluded`` image id -> why it has no usable label."""

    format: str  # "vindr" or "simple"
    labels: dict[str, int]
    class_names: list[str] | None
    findings: dict[str, list[str]] = field(default_factory=dict)  # VinDr: distinct findings per image
    excluded: dict[str, str] = field(default_factory=dict)
    issues: list[LabelIssue] = field(default_factory=list)
    source: str = ""

    def class_name(self, label: int) -> str:
        if self.class_names and 0 <= label < len(self.class_names):
            return self.class_names[label]
        return str(label)

    def counts(self) -> dict[int, int]:
        return dict(sorted(Counter(self.labels.values()).items()))


def image_id_from_filename(name: str) -> str:
    """The image id of a file or CSV entry: the base name without a DICOM extension."""
    base = os.path.basename(name.strip())
    root, ext = os.path.splitext(base)
    return root if ext.lower() in _DICOM_EXTENSIONS else base


def read_labels(path: str | os.PathLike[str], *, multiclass: bool = False) -> LabelTable:
    """Read a labels CSV (format detected from the header; see the module docstring)."""
    where = os.fspath(path)
    try:
        with open(where, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise LabelsError(f"{where}: cannot read the labels CSV: {exc}") from None
    return parse_labels(data, where, multiclass=multiclass)


def parse_labels(data: bytes | str, where: str = "<labels>", *, multiclass: bool = False) -> LabelTable:
    """Parse labels CSV content (bytes or text); ``where`` names it in messages."""
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise LabelsError(f"{where}: the labels CSV is not UTF-8 text") from None
    else:
        text = data.lstrip("\ufeff")
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
        rows = [(i + 2, row) for i, row in enumerate(reader)]
    except StopIteration:
        raise LabelsError(f"{where}: the labels CSV is empty (expected a header row)") from None
    except csv.Error as exc:  # e.g. a field beyond the csv module's size limit (not a labels file)
        raise LabelsError(f"{where}: line {reader.line_num}: not a readable CSV file ({exc})") from None
    columns = [h.strip().lower() for h in header]
    if "image_id" not in columns:
        raise LabelsError(
            f"{where}: unrecognised labels CSV header {header!r}: expected the columns image_id and lesion_type "
            "(VinDr-SpineXR annotations) or image_id and label"
        )
    id_col = columns.index("image_id")
    if "lesion_type" in columns:
        table = _parse_vindr(rows, id_col, columns.index("lesion_type"), multiclass)
    elif "label" in columns:
        table = _parse_simple(rows, id_col, columns.index("label"), where)
    else:
        raise LabelsError(
            f"{where}: the labels CSV has image_id but neither a lesion_type column (VinDr-SpineXR annotations) nor a "
            f"label column; its columns are {header!r}"
        )
    table.source = where
    if not table.labels and not table.excluded:
        raise LabelsError(f"{where}: the labels CSV has no usable rows")
    return table


def _cell(row: list[str], col: int) -> str:
    return row[col].strip() if col < len(row) else ""


def _parse_vindr(
    rows: list[tuple[int, list[str]]], id_col: int, type_col: int, multiclass: bool
) -> LabelTable:
    issues: list[LabelIssue] = []
    per_image: OrderedDict[str, list[str]] = OrderedDict()
    unknown: set[str] = set()
    for line, row in rows:
        if not any(c.strip() for c in row):
            continue
        image_id = image_id_from_filename(_cell(row, id_col))
        lesion = " ".join(_cell(row, type_col).split())
        if not image_id or not lesion:
            issues.append(
                LabelIssue("blank-row", image_id, "row without an image_id or lesion_type: ignored", line)
            )
            if image_id:  # an image whose rows are all blank is excluded below, not lost silently
                per_image.setdefault(image_id, [])
            continue
        canonical = _CANONICAL.get(lesion.lower(), lesion)
        if canonical not in VINDR_CLASSES and canonical not in unknown:
            unknown.add(canonical)
            issues.append(
                LabelIssue(
                    "unknown-lesion-type",
                    image_id,
                    f"lesion type {canonical!r} is not a VinDr-SpineXR type",
                    line,
                )
            )
        per_image.setdefault(image_id, []).append(canonical)

    if multiclass:
        class_names = list(VINDR_CLASSES) + sorted(unknown)
        priority = list(MULTICLASS_PRIORITY) + sorted(unknown)
    else:
        class_names = list(BINARY_CLASSES)
        priority = []
    ids = {name: i for i, name in enumerate(class_names)}
    labels: dict[str, int] = {}
    findings: dict[str, list[str]] = {}
    excluded: dict[str, str] = {}
    for image_id, types in per_image.items():
        distinct = list(dict.fromkeys(types))
        findings[image_id] = distinct
        if not distinct:
            excluded[image_id] = "all its label rows are blank"
            continue
        lesions = [t for t in distinct if t != NO_FINDING]
        if not multiclass:
            labels[image_id] = 1 if lesions else 0
        elif not lesions:
            labels[image_id] = ids[NO_FINDING]
        else:
            chosen = min(lesions, key=priority.index)
            labels[image_id] = ids[chosen]
            if len(lesions) > 1:
                issues.append(
                    LabelIssue(
                        "multiple-lesion-types",
                        image_id,
                        f"findings {lesions}: class {chosen!r} by the priority rule",
                    )
                )
    return LabelTable("vindr", labels, class_names, findings, excluded, issues)


def _parse_simple(rows: list[tuple[int, list[str]]], id_col: int, label_col: int, where: str) -> LabelTable:
    issues: list[LabelIssue] = []
    raw: OrderedDict[str, list[tuple[int, str]]] = OrderedDict()  # image id -> [(line, label)]
    for line, row in rows:
        if not any(c.strip() for c in row):
            continue
        image_id, label = image_id_from_filename(_cell(row, id_col)), _cell(row, label_col)
        if not image_id or not label:
            issues.append(
                LabelIssue("blank-row", image_id, "row without an image_id or label: ignored", line)
            )
            continue
        raw.setdefault(image_id, []).append((line, label))
    mapping, class_names = _simple_classes([entry for entries in raw.values() for entry in entries], where)
    labels: dict[str, int] = {}
    excluded: dict[str, str] = {}
    for image_id, entries in raw.items():
        classes = {mapping[label] for _, label in entries}
        bad = [label for _, label in entries if class_names is None and _invalid_class_id(mapping[label])]
        if bad:
            why = f"{_invalid_class_id(mapping[bad[0]])} {bad[0]!r}"
            excluded[image_id] = why
            issues.append(LabelIssue("invalid-label", image_id, f"{why}: image excluded", entries[0][0]))
            continue
        if len(entries) > 1:
            lines = ", ".join(str(line) for line, _ in entries)
            if len(classes) > 1:
                excluded[image_id] = f"conflicting labels on lines {lines}"
                issues.append(
                    LabelIssue(
                        "conflicting-labels",
                        image_id,
                        f"different labels on lines {lines}: image excluded",
                        entries[1][0],
                    )
                )
                continue
            issues.append(
                LabelIssue(
                    "duplicate-id", image_id, f"listed on lines {lines} with the same label", entries[1][0]
                )
            )
        labels[image_id] = classes.pop()
    return LabelTable("simple", labels, class_names, {}, excluded, issues)


def _simple_classes(entries: list[tuple[int, str]], where: str) -> tuple[dict[str, int], list[str] | None]:
    """Class id of every label text of a simple CSV, and the class names (None for integer labels).

    ``entries``: (line, label) of every labelled row. Raises :class:`LabelsError` when integer and
    text labels are mixed.
    """
    integers = [(line, label) for line, label in entries if _INTEGER_LABEL.fullmatch(label)]
    texts = [(line, label) for line, label in entries if not _INTEGER_LABEL.fullmatch(label)]
    if integers and texts:
        raise LabelsError(_mixed_labels_message(where, integers, texts))
    values = {label for _, label in entries}
    if integers:
        return {v: _integer_label(v) for v in values}, None
    lowered = {v.lower() for v in values}
    if lowered <= set(BINARY_CLASSES):
        class_names = list(BINARY_CLASSES)
        return {v: class_names.index(v.lower()) for v in values}, class_names
    if all(v.lower() in _CANONICAL for v in values):
        class_names = list(VINDR_CLASSES)
        return {v: class_names.index(_CANONICAL[v.lower()]) for v in values}, class_names
    class_names = sorted(values)
    return {v: i for i, v in enumerate(class_names)}, class_names


def _mixed_labels_message(where: str, integers: list[tuple[int, str]], texts: list[tuple[int, str]]) -> str:
    """Why a simple CSV with both integer and text labels is refused, quoting the rarer kind's rows."""
    odd, kind = (texts, "text") if len(texts) <= len(integers) else (integers, "integer")
    quoted = ", ".join(f"line {line} {label!r}" for line, label in odd[:_LIST_MAX])
    more = f" and {len(odd) - _LIST_MAX} more" if len(odd) > _LIST_MAX else ""
    return (
        f"{where}: the label column mixes integer class ids ({_rows(len(integers))}) and text labels "
        f"({_rows(len(texts))}); integer labels are class ids and text labels are class names, so the two "
        f"cannot be combined without changing what some rows mean. The {kind} ones: {quoted}{more}. "
        "Correct those rows (or write every label as text)"
    )


def _rows(n: int) -> str:
    return f"{n} row" if n == 1 else f"{n} rows"


def _integer_label(text: str) -> int:
    """The value of an integer label (``_INTEGER_LABEL``); beyond 10**12 only "too large" matters."""
    match = _INTEGER_LABEL.fullmatch(text)
    assert match is not None
    digits = match.group(1).lstrip("0") or "0"
    value = int(digits) if len(digits) <= 12 else 10**12  # no million-digit ints from a hostile CSV
    return -value if text.startswith("-") else value


def _invalid_class_id(value: int) -> str:
    """Why an integer label cannot be a class id ("" when it can)."""
    if value < 0:
        return "negative label"
    if value > MAX_CLASS_ID:
        return f"label above the largest class id {MAX_CLASS_ID}:"
    return ""
