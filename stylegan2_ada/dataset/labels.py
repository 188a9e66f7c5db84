"""``dataset.json``: the labels of a dataset's images.

Formats (at the root of the folder or zip):
    * upstream: ``{"labels": [["sub/a.png", 1], ...]}``; ``"labels": null`` means no labels;
    * flat (the original SpineGAN fork's): ``{"sub/a.png": 1, ...}``;
    * optional ``"class_names": ["normal", "abnormal"]`` in either format.

A label is an integer class index (``label_dim = max + 1``, or ``len(class_names)`` if that is larger)
or a list of numbers (a float vector; all of the same length, ``label_dim`` = that length). Scalar
floats are accepted when integral (``1.0``). A ``null`` label counts as missing. Paths are relative to
the dataset root; ``\\`` is read as ``/``.

``label_dim`` sizes the conditioning input of the networks, so one mistyped label (``1000000``) would
silently build a generator of hundreds of millions of parameters: :func:`parse_dataset_json` refuses a
``label_dim`` over ``max_classes`` (the dataset's default is :data:`DEFAULT_MAX_CLASSES`).

Anything else (invalid JSON or UTF-8, wrong types, nesting, NaN, values beyond float32) is a
:class:`~stylegan2_ada.dataset.errors.DatasetError` naming the file and the entry.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import DatasetError
from .sources import normalize_relpath

__all__ = ["DEFAULT_MAX_CLASSES", "DatasetLabels", "parse_dataset_json"]

DEFAULT_MAX_CLASSES = 1000
_REPR_MAX = 80  # characters of a bad value quoted in a message
_FLOAT32_MAX = float(np.finfo(np.float32).max)

Label = int | tuple[float, ...]


@dataclass(frozen=True)
class DatasetLabels:
    """A parsed ``dataset.json``.

    ``labels`` maps normalized relative paths to an ``int`` class index or a ``tuple`` of floats; it
    is ``None`` for ``"labels": null``. Entries whose label is ``null`` are left out. ``kind`` is
    ``'int'``, ``'vector'`` or ``None`` (no labelled entries). ``label_dim`` is the length of the
    label vector the dataset yields (one-hot for ``'int'``; 0 without labelled entries).
    """

    labels: dict[str, Label] | None
    class_names: list[str] | None
    format: str  # 'upstream' or 'flat'
    kind: str | None
    where: str
    label_dim: int = 0


def _brief(value: Any) -> str:
    """``repr(value)``, cut to a readable length."""
    try:
        text = repr(value)
    except ValueError:  # an int of more digits than Python converts to text (sys.get_int_max_str_digits)
        return f"<{type(value).__name__} too long to show>"
    return text if len(text) <= _REPR_MAX else text[: _REPR_MAX - 3] + "..."


def _check_label(value: Any, key: str, where: str) -> Label | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise DatasetError(f"{where}: label for {_brief(key)} is a boolean ({value}); use 0/1 class indices")
    if isinstance(value, int):
        if value < 0:
            raise DatasetError(
                f"{where}: label for {_brief(key)} is {_brief(value)}; class indices must be >= 0"
            )
        return value
    if isinstance(value, float):
        if not math.isfinite(value) or value != int(value) or value < 0:
            raise DatasetError(
                f"{where}: label for {_brief(key)} is {value}; a single label must be a non-negative "
                "integer class index (use a list of numbers for a float vector label)"
            )
        return int(value)
    if isinstance(value, list):
        if not value:
            raise DatasetError(f"{where}: label for {_brief(key)} is an empty list")
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            raise DatasetError(
                f"{where}: label for {_brief(key)} must be a list of numbers, got {_brief(value)}"
            )
        if any(isinstance(v, float) and not math.isfinite(v) for v in value):
            raise DatasetError(f"{where}: label for {_brief(key)} contains NaN or infinity: {_brief(value)}")
        if not all(abs(v) <= _FLOAT32_MAX for v in value):  # exact for ints of any size
            raise DatasetError(  # labels are float32 arrays: these would silently become infinity
                f"{where}: label for {_brief(key)} has a value beyond the float32 range "
                f"(+-{_FLOAT32_MAX:.4g}): {_brief(value)}"
            )
        return tuple(float(v) for v in value)
    raise DatasetError(
        f"{where}: label for {_brief(key)} must be an integer class index, a list of numbers or null, "
        f"got {type(value).__name__} {_brief(value)}"
    )


def _load_json(data: bytes | str, where: str) -> Any:
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8-sig")
        except UnicodeDecodeError as err:
            raise DatasetError(f"{where}: not UTF-8 text: {err}") from err
    try:
        return json.loads(data)
    except json.JSONDecodeError as err:
        raise DatasetError(
            f"{where}: invalid JSON at line {err.lineno}, column {err.colno}: {err.msg}"
        ) from err
    except ValueError as err:  # an integer literal longer than Python's int conversion limit
        raise DatasetError(f"{where}: unreadable JSON: {err}") from err
    except RecursionError:
        raise DatasetError(f"{where}: JSON nested too deeply to read") from None


def _class_names(obj: dict[str, Any], where: str) -> list[str] | None:
    class_names = obj.get("class_names")
    if class_names is None:
        return None
    if not isinstance(class_names, list) or not all(isinstance(n, str) for n in class_names):
        raise DatasetError(f'{where}: "class_names" must be a list of strings, got {_brief(class_names)}')
    if len(set(class_names)) != len(class_names):
        dup = [n for n, c in Counter(class_names).items() if c > 1]
        raise DatasetError(f'{where}: "class_names" has duplicates: {_brief(dup)}')
    return class_names


def _pairs(obj: dict[str, Any], where: str) -> tuple[str, list[tuple[str, Any]] | None]:
    """``(format, [(path, raw label), ...])``; the list is ``None`` for ``"labels": null``."""
    if "labels" not in obj:
        return "flat", [(k, v) for k, v in obj.items() if k != "class_names"]
    entries = obj["labels"]
    if entries is None:
        return "upstream", None
    if not isinstance(entries, list):
        raise DatasetError(
            f'{where}: "labels" must be a list of [path, label] pairs or null, got {type(entries).__name__}'
        )
    pairs = []
    for i, entry in enumerate(entries):
        if not (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], str)):
            raise DatasetError(
                f'{where}: "labels" entry {i} must be a [path, label] pair, got {_brief(entry)}'
            )
        pairs.append((entry[0], entry[1]))
    return "upstream", pairs


def _label_dim(
    labels: dict[str, Label], class_names: list[str] | None, where: str
) -> tuple[str | None, int, str]:
    """``(kind, label_dim, why)`` of checked labels: one kind, one vector length, every class named.

    ``why`` says in words where ``label_dim`` comes from (for the ``max_classes`` message).
    """
    ints = [k for k, v in labels.items() if isinstance(v, int)]
    vecs = [k for k, v in labels.items() if not isinstance(v, int)]
    names = len(class_names) if class_names is not None else 0
    names_why = f'"class_names" lists {names} classes'
    if ints and vecs:
        raise DatasetError(
            f"{where}: labels mix integer classes (e.g. {_brief(ints[0])}) and float vectors "
            f"(e.g. {_brief(vecs[0])})"
        )
    if vecs:
        first, dim = vecs[0], len(labels[vecs[0]])
        for k in vecs:
            if len(labels[k]) != dim:
                raise DatasetError(
                    f"{where}: vector labels differ in length: {_brief(first)} has {dim}, "
                    f"{_brief(k)} has {len(labels[k])}"
                )
        if class_names is not None and names != dim:
            raise DatasetError(
                f'{where}: "class_names" has {names} names but vector labels have {dim} values'
            )
        return "vector", dim, f"vector labels have {dim} values (e.g. {_brief(first)})"
    if not ints:
        return None, names, names_why
    worst = max(ints, key=lambda k: labels[k])
    top = labels[worst]
    if class_names is not None and top >= names:
        raise DatasetError(
            f'{where}: label {_brief(top)} for {_brief(worst)} has no name: "class_names" lists only '
            f"{names} classes"
        )
    if names > top:
        return "int", names, names_why
    return "int", top + 1, f"label {_brief(top)} for {_brief(worst)} means {_brief(top + 1)} classes"


def parse_dataset_json(data: bytes | str, where: str, *, max_classes: int | None = None) -> DatasetLabels:
    """Parse and validate ``dataset.json`` text (either format, see the module docstring).

    ``where`` names the file in messages. ``max_classes``: the largest ``label_dim`` accepted (``None``:
    no limit). Raises :class:`DatasetError` naming ``where`` for invalid JSON (with line and column),
    a wrong structure or too many classes; never another exception.
    """
    obj = _load_json(data, where)
    if not isinstance(obj, dict):
        raise DatasetError(
            f'{where}: expected a JSON object ({{"labels": [[path, label], ...]}} or '
            f"{{path: label, ...}}), got {type(obj).__name__}"
        )
    class_names = _class_names(obj, where)
    fmt, pairs = _pairs(obj, where)
    if pairs is None:
        dim = len(class_names or [])
        _check_max_classes(dim, f'"class_names" lists {dim} classes', max_classes, where)
        return DatasetLabels(None, class_names, fmt, None, where, dim)
    labels: dict[str, Label] = {}
    for key, value in pairs:
        label = _check_label(value, key, where)
        if label is None:
            continue
        rel = normalize_relpath(key)
        if rel in labels and labels[rel] != label:
            raise DatasetError(
                f"{where}: {_brief(key)} is listed twice with different labels "
                f"({_brief(labels[rel])} and {_brief(label)})"
            )
        labels[rel] = label
    kind, dim, why = _label_dim(labels, class_names, where)
    _check_max_classes(dim, why, max_classes, where)
    return DatasetLabels(labels, class_names, fmt, kind, where, dim)


def _check_max_classes(dim: int, why: str, max_classes: int | None, where: str) -> None:
    """Refuse a ``label_dim`` over ``max_classes``; ``why`` says where it comes from."""
    if max_classes is not None and dim > max_classes:
        raise DatasetError(
            f"{where}: {why}, more than the limit of {max_classes} (a typo?); if the dataset really has "
            "that many, raise the limit (max_classes=N, train.py --max-classes N)"
        )
