"""Classifier model files: our safetensors + JSON format, and safe loading of the files users bring.

Our format (everything :func:`save_classifier` writes): ONE ``.safetensors`` file.

* Tensors: the network's ``state_dict()`` under its own keys (``features.0.weight``, ``head.bias``,
  torchvision's keys for torchvision archs), stored bit-exactly.
* The safetensors header's ``__metadata__`` holds one key, :data:`METADATA_KEY` (``"classifier"``),
  whose value is a JSON document::

      {"format": "spinegan-classifier", "format_version": 1,
       "arch": "small", "arch_kwargs": {"width": 16}, "num_outputs": 1,
       "input_size": 64, "in_channels": 1, "mean": [0.21], "std": [0.33], "center_crop": 1.0,
       "class_names": ["normal", "abnormal"],
       "eval_transform": {"name": "spinegan-eval-v1", "steps": [...]},
       "training_data": {...}, "training": {...}, "validation": {...},
       "provenance": {"created": ..., "spinegan": ..., "torch": ..., "torchvision": ..., "python": ...}}

  ``training_data``: sources (path, kind, image count, class counts, SHA-256 fingerprint), train and
  validation counts per class, how the split was made. ``training``: settings, seed, device, time.
  ``validation``: AUC, loss, accuracy and (binary) the Youden threshold on the validation split, and
  the per-epoch history. See docs/classification.md.

Loading (:func:`load_classifier`) recognises the file by its content, never its name:

* our safetensors file -> the architecture is rebuilt by name from the allow-list of
  :mod:`classification.models` and filled with ``load_state_dict(strict=True)``;
* a TorchScript archive (``torch.jit.save``) or a ``torch.export`` archive (``torch.export.save``,
  ``.pt2``) -> only its weights are read (the program in it is never run) into the allow-listed
  architecture named by its metadata: an embedded extra file ``classifier.json`` or a side-car JSON
  ``<file>.json``, overridden by ``overrides``; a ``.pt2`` holding pickled payloads is refused;
* a ``torch.save``'d state dict (or a checkpoint dict holding one) or a safetensors file without our
  metadata -> read with ``torch.load(weights_only=True)`` / safetensors, metadata as above;
* a whole pickled model -> refused with :class:`ClassifierFileError` giving the exact conversion
  command; ``python -m classification import --trust-pickle`` is the only code path that unpickles.

Metadata documents (side-car, embedded, ``overrides``) use the keys of the JSON document above;
``arch`` and ``class_names`` are required, the rest has defaults per architecture (torchvision archs:
224 px, 3 channels, ImageNet mean/std; ``small``: channels from the weights).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import functools
import io
import json
import math
import os
import pickle
import platform
import re
import shlex
import struct
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from classification.models import (
    ARCHITECTURES,
    IMAGENET_MEAN,
    IMAGENET_STD,
    arch_spec,
    build_network,
    penultimate_features,
)
from classification.state_dicts import canonical_state_dict, unwrap_state_dict
from classification.transform import TRANSFORM_NAME, EvalTransform, images_uint8_to_float
from stylegan2_ada.atomic import atomic_path
from stylegan2_ada.checkpoint import package_version

__all__ = [
    "EMBEDDED_NAME",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "METADATA_KEY",
    "META_KEYS",
    "Classifier",
    "ClassifierFileError",
    "ClassifierMeta",
    "PickledModelError",
    "classifier_from_state",
    "conversion_command",
    "detect_file_kind",
    "images_uint8_to_float",
    "load_classifier",
    "meta_from_document",
    "metadata_document",
    "read_embedded_metadata",
    "read_state_dict",
    "save_classifier",
    "sidecar_path",
]

METADATA_KEY = "classifier"
FORMAT_NAME = "spinegan-classifier"
FORMAT_VERSION = 1
#: Name of the metadata file inside TorchScript / torch.export archives (their "extra files").
EMBEDDED_NAME = "classifier.json"
#: Keys a metadata document may hold (beyond these, only our file's bookkeeping keys are accepted).
META_KEYS = (
    "arch",
    "arch_kwargs",
    "input_size",
    "in_channels",
    "mean",
    "std",
    "center_crop",
    "class_names",
    "training_data",
    "training",
    "validation",
)
_BOOKKEEPING_KEYS = ("format", "format_version", "num_outputs", "eval_transform", "provenance")
_MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024


class ClassifierFileError(Exception):
    """A classifier file cannot be used; the one-line message names the file and the problem."""


class PickledModelError(ClassifierFileError):
    """The file is a whole pickled Python model: refused (the message gives the conversion command)."""


# --------------------------------------------------------------------------------------------------
# Metadata.


@dataclass(frozen=True)
class ClassifierMeta:
    """What a model file says about its network (see the module docstring for the JSON form).

    ``class_names``: binary models have two, index 1 the positive class (``logits`` is its logit).
    ``center_crop``: fraction of each side kept (centred) before resizing, 1.0 for models we train.
    ``training_data`` / ``training`` / ``validation``: free-form JSON-able summaries.
    """

    arch: str
    input_size: int
    in_channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: tuple[str, ...]
    center_crop: float = 1.0
    # Dicts take part in == but not in hash() (which they would make fail).
    arch_kwargs: Mapping[str, Any] = field(default_factory=dict, hash=False)
    training_data: Mapping[str, Any] = field(default_factory=dict, hash=False)
    training: Mapping[str, Any] = field(default_factory=dict, hash=False)
    validation: Mapping[str, Any] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        for name in ("mean", "std", "class_names"):  # lists given by callers become tuples
            object.__setattr__(self, name, tuple(getattr(self, name)))
        arch_spec(self.arch)  # ValueError for anything outside the allow-list
        if len(self.class_names) < 2 or len(set(self.class_names)) != len(self.class_names):
            raise ValueError(f"class_names must be at least two distinct names, got {list(self.class_names)}")
        if not all(isinstance(n, str) and n for n in self.class_names):
            raise ValueError(f"class_names must be non-empty strings, got {list(self.class_names)}")
        _ = self.eval_transform  # validates sizes, channels, mean/std, crop

    @property
    def num_outputs(self) -> int:
        """1 for two classes (the logit of ``class_names[1]``), else the number of classes."""
        return 1 if len(self.class_names) == 2 else len(self.class_names)

    @property
    def eval_transform(self) -> EvalTransform:
        return EvalTransform(self.input_size, self.in_channels, self.mean, self.std, self.center_crop)

    def to_document(self) -> dict[str, Any]:
        """The JSON document of our file format (without provenance)."""
        return {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "arch": self.arch,
            "arch_kwargs": dict(self.arch_kwargs),
            "num_outputs": self.num_outputs,
            "input_size": self.input_size,
            "in_channels": self.in_channels,
            "mean": list(self.mean),
            "std": list(self.std),
            "center_crop": self.center_crop,
            "class_names": list(self.class_names),
            "eval_transform": self.eval_transform.describe(),
            "training_data": dict(self.training_data),
            "training": dict(self.training),
            "validation": dict(self.validation),
        }


def _require(cond: bool, where: str, message: str) -> None:
    if not cond:
        raise ClassifierFileError(f"{where}: {message}")


def _number_list(value: Any, key: str, where: str) -> tuple[float, ...]:
    ok = isinstance(value, (list, tuple)) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value
    )
    _require(ok, where, f'"{key}" must be a list of numbers, got {value!r}')
    return tuple(float(v) for v in value)


def meta_from_document(
    doc: Mapping[str, Any], where: str, *, from_weights: Mapping[str, Any] | None = None
) -> ClassifierMeta:
    """A :class:`ClassifierMeta` from a metadata document (ours, a side-car, embedded, or overrides).

    Missing optional keys get the architecture's defaults (torchvision: 224 px, 3 channels, ImageNet
    mean/std; ``small``: ``in_channels`` and ``arch_kwargs`` from ``from_weights``, what the weights'
    shapes say). Raises :class:`ClassifierFileError` naming ``where`` for unknown keys, wrong types or
    missing values.
    """
    _require(isinstance(doc, Mapping), where, f"metadata must be a JSON object, got {type(doc).__name__}")
    unknown = sorted(set(doc) - set(META_KEYS) - set(_BOOKKEEPING_KEYS))
    _require(
        not unknown, where, f"unknown metadata key(s) {', '.join(unknown)} (known: {', '.join(META_KEYS)})"
    )
    if "format" in doc:
        _require(
            doc["format"] == FORMAT_NAME, where, f"metadata format {doc['format']!r} is not {FORMAT_NAME!r}"
        )
        version = doc.get("format_version")
        _require(
            isinstance(version, int) and 1 <= version <= FORMAT_VERSION,
            where,
            f"classifier format version {version!r}; this version reads version {FORMAT_VERSION} "
            "(written by a newer release?)",
        )
    transform = doc.get("eval_transform")
    if isinstance(transform, Mapping) and "name" in transform:
        _require(
            transform["name"] == TRANSFORM_NAME,
            where,
            f"eval transform {transform['name']!r} is unknown here (this version applies {TRANSFORM_NAME!r})",
        )
    arch = doc.get("arch")
    _require(
        isinstance(arch, str) and arch in ARCHITECTURES,
        where,
        f'"arch" must be one of {", ".join(ARCHITECTURES)}, got {arch!r}'
        + ("" if "arch" in doc else " (missing: give it in a side-car JSON or with --arch)"),
    )
    spec = ARCHITECTURES[arch]
    names = doc.get("class_names")
    _require(
        isinstance(names, (list, tuple)) and all(isinstance(n, str) for n in names),
        where,
        '"class_names" must be a list of strings'
        + (
            f", got {names!r}"
            if "class_names" in doc
            else " (missing: give it in a side-car JSON or with --class-names)"
        ),
    )
    inferred = {} if spec.torchvision else dict(from_weights or {})
    in_channels = doc.get("in_channels", 3 if spec.torchvision else inferred.get("in_channels"))
    input_size = doc.get("input_size", spec.default_input_size)
    for key, value in (("in_channels", in_channels), ("input_size", input_size)):
        _require(
            isinstance(value, int) and not isinstance(value, bool),
            where,
            f'"{key}" must be an integer, got {value!r}'
            + ("" if key in doc else f" (missing: needed for {arch})"),
        )
    default_norm = (IMAGENET_MEAN, IMAGENET_STD) if spec.torchvision else (None, None)
    mean = doc.get("mean", default_norm[0])
    std = doc.get("std", default_norm[1])
    _require(mean is not None and std is not None, where, f'"mean" and "std" are required for {arch}')
    center_crop = doc.get("center_crop", 1.0)
    _require(
        isinstance(center_crop, (int, float)) and not isinstance(center_crop, bool),
        where,
        f'"center_crop" must be a number, got {center_crop!r}',
    )
    free = {}
    for key in ("arch_kwargs", "training_data", "training", "validation"):
        value = doc.get(key, inferred.get(key, {}))
        _require(isinstance(value, Mapping), where, f'"{key}" must be a JSON object, got {value!r}')
        free[key] = dict(value)
    try:
        return ClassifierMeta(
            arch=arch,
            input_size=input_size,
            in_channels=in_channels,
            mean=_number_list(mean, "mean", where),
            std=_number_list(std, "std", where),
            class_names=tuple(names),
            center_crop=float(center_crop),
            **free,
        )
    except ValueError as exc:
        raise ClassifierFileError(f"{where}: {exc}") from None


# --------------------------------------------------------------------------------------------------
# The classifier.


@dataclass(frozen=True)
class Classifier:
    """A frozen classifier: ``net`` in eval mode with ``requires_grad=False``, and its metadata.

    All methods take images ``[N, C, H, W]`` float in [-1, 1] (the generator's range; ``C`` = 1 or 3;
    any size) on the network's device and are differentiable with respect to them (gradients reach the
    images, never the frozen weights).
    """

    meta: ClassifierMeta
    net: nn.Module

    def __post_init__(self) -> None:
        self.net.eval().requires_grad_(False)

    @functools.cached_property
    def transform(self) -> EvalTransform:
        """The eval transform (:attr:`ClassifierMeta.eval_transform`)."""
        return self.meta.eval_transform

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """``[N, C, H, W]`` in [-1, 1] -> network input ``[N, in_channels, input_size, input_size]``:
        the eval transform of :mod:`classification.transform` (``(x + 1) / 2``, centre crop if any,
        bilinear antialiased resize, channels replicated / averaged, ``(x - mean) / std``)."""
        return self.transform(images)

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """``[N, K]``: ``K = 1`` for two classes (the logit of ``class_names[1]``), else one per class."""
        return self.net(self.preprocess(images))

    def scores(self, images: torch.Tensor) -> torch.Tensor:
        """Binary: ``sigmoid(logits)[:, 0]`` -> ``[N]``; more classes: softmax -> ``[N, K]``."""
        logits = self.logits(images).float()
        return torch.sigmoid(logits[:, 0]) if self.meta.num_outputs == 1 else torch.softmax(logits, dim=1)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Penultimate features ``[N, F]`` (the head's input), e.g. for FID-style metrics."""
        return penultimate_features(self.meta.arch, self.net, self.preprocess(images))

    def to(self, device: str | torch.device) -> Classifier:
        """Move the network to ``device`` (in place) and return this classifier."""
        self.net.to(device)
        return self


# --------------------------------------------------------------------------------------------------
# Saving.


def _provenance() -> dict[str, Any]:
    import torchvision

    return {
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "spinegan": package_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "python": platform.python_version(),
    }


def save_classifier(path: str | os.PathLike[str], classifier: Classifier) -> None:
    """Write ``classifier`` to ``path`` in our safetensors + JSON format, atomically (a temporary file in
    the same folder, fsynced, renamed over ``path``). Raises :class:`ClassifierFileError`."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ClassifierFileError(f"{path}: output folder {folder} does not exist")
    document = {**classifier.meta.to_document(), "provenance": _provenance()}
    try:
        header = {METADATA_KEY: json.dumps(document)}
    except (TypeError, ValueError) as exc:
        raise ClassifierFileError(f"{path}: metadata cannot be stored as JSON: {exc}") from exc
    # Private contiguous CPU copies: safetensors refuses views and tensors sharing memory.
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in classifier.net.state_dict().items()}
    from safetensors.torch import save_file

    try:
        with atomic_path(path) as tmp:
            save_file(tensors, tmp, metadata=header)
    except OSError as exc:
        raise ClassifierFileError(f"{path}: cannot write model file: {exc.strerror or exc}") from exc


# --------------------------------------------------------------------------------------------------
# Recognising files.


def detect_file_kind(path: str) -> str:
    """``'safetensors'``, ``'torchscript'``, ``'torch-export'`` or ``'torch-save'``, from the content.

    Raises :class:`ClassifierFileError` for missing, unreadable, empty or unrecognised files.
    """
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as file:
            head = file.read(16)
    except FileNotFoundError:
        raise ClassifierFileError(f"{path}: classifier file not found") from None
    except IsADirectoryError:
        raise ClassifierFileError(f"{path}: is a folder, not a classifier file") from None
    except OSError as exc:
        raise ClassifierFileError(f"{path}: cannot read classifier file: {exc.strerror or exc}") from exc
    if not head:
        raise ClassifierFileError(f"{path}: file is empty")
    if len(head) >= 9 and head[8:9] == b"{":
        (header_len,) = struct.unpack("<Q", head[:8])
        if 0 < header_len <= _MAX_SAFETENSORS_HEADER:
            _require(8 + header_len <= size, path, "truncated safetensors file (header runs past the end)")
            return "safetensors"
    if head.startswith(b"PK\x03\x04"):
        return _zip_kind(path)
    if head[0] == 0x80 and len(head) >= 2 and 2 <= head[1] <= 5:
        return "torch-save"  # torch.save's legacy (non-zip) format starts with a pickle
    raise ClassifierFileError(
        f"{path}: unrecognised file format (not safetensors, TorchScript, torch.export or torch.save)"
    )


def _zip_kind(path: str) -> str:
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            format_names = [n for n in names if n.endswith("archive_format")]
            if format_names and archive.read(format_names[0]).strip() == b"pt2":
                return "torch-export"
    except (OSError, zipfile.BadZipFile) as exc:
        raise ClassifierFileError(f"{path}: a corrupt zip archive: {exc}") from exc
    if any("/code/" in n or n.endswith("constants.pkl") for n in names):
        return "torchscript"
    if any(n == "data.pkl" or n.endswith("/data.pkl") for n in names):
        return "torch-save"
    raise ClassifierFileError(
        f"{path}: a zip archive, but not a TorchScript, torch.export or torch.save file"
    )


def read_embedded_metadata(path: str) -> dict[str, Any] | None:
    """The ``extra/classifier.json`` of a TorchScript / torch.export archive (parsed), if it has one."""
    with zipfile.ZipFile(path) as archive:
        found = [n for n in archive.namelist() if n.endswith(f"extra/{EMBEDDED_NAME}")]
        if not found:
            return None
        return _parse_json(archive.read(found[0]), f"{path} ({found[0]})")


def _parse_json(data: bytes, where: str) -> Any:
    try:
        return json.loads(data.decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ClassifierFileError(f"{where}: metadata is not valid JSON: {exc}") from None


def sidecar_path(path: str | os.PathLike[str]) -> str:
    """The side-car metadata file looked for beside ``path``: ``<path>.json`` (``model.pt.json``)."""
    return os.fspath(path) + ".json"


def conversion_command(path: str) -> str:
    """The command that converts the whole pickled model ``path`` (to be run only for trusted files)."""
    out = shlex.quote(os.path.splitext(path)[0] + ".safetensors")
    return (
        f"python -m classification import --trust-pickle {shlex.quote(path)} --out {out} "
        "--class-names NAME0,NAME1 [--arch ARCH --input-size N --center-crop F]"
    )


# --------------------------------------------------------------------------------------------------
# Reading weights (never unpickling Python objects).

_GLOBAL_RE = re.compile(r"GLOBAL ([\w.]+)")


def _torch_load_weights(source: str | io.BytesIO, where: str) -> Any:
    try:
        return torch.load(source, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        match = _GLOBAL_RE.search(str(exc))
        needs = f" (it names {match.group(1)})" if match else ""
        raise PickledModelError(
            f"{where}: a whole pickled Python model or other pickled Python objects{needs}; loading it would "
            f"run code stored in the file, so it is refused. If you trust the file, convert it once with: "
            f"{conversion_command(where)}"
        ) from None
    except (RuntimeError, OSError, EOFError, ValueError) as exc:
        raise ClassifierFileError(f"{where}: cannot read (corrupt or truncated?): {exc}") from None


def _read_safetensors(path: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import safe_open

    try:
        with safe_open(path, framework="pt", device="cpu") as file:
            header = file.metadata() or {}
            return {key: file.get_tensor(key) for key in file.keys()}, header
    except OSError as exc:
        raise ClassifierFileError(f"{path}: cannot read model file: {exc.strerror or exc}") from exc
    except Exception as exc:  # safetensors raises its own SafetensorError for bad headers and sizes
        raise ClassifierFileError(
            f"{path}: not a readable safetensors file (truncated or corrupt?): {exc}"
        ) from exc


def _read_torchscript(path: str) -> dict[str, torch.Tensor]:
    # Loading compiles the archive's TorchScript; nothing runs. Only the weights are kept.
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # "torch.jit is deprecated": not the user's doing
            module = torch.jit.load(path, map_location="cpu")
    except Exception as exc:  # TorchScript raises RuntimeError and friends for corrupt archives
        raise ClassifierFileError(f"{path}: not a loadable TorchScript archive: {exc}") from exc
    return dict(module.state_dict())


def _read_torch_export(path: str) -> dict[str, torch.Tensor]:
    """The weights of a ``.pt2`` archive, without ``torch.export.load``: that would unpickle payloads
    (``torch.load(weights_only=False)``) and deserialise the program, neither of which we need."""
    from torch.export.pt2_archive import PT2ArchiveReader
    from torch.export.pt2_archive._package import _load_state_dict  # weights only; see the check below

    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        models = sorted({m.group(1) for n in names if (m := re.search(r"(?:^|/)models/([^/]+)\.json$", n))})
        _require(len(models) == 1, path, f"expected one exported program, found {len(models)}: {models}")
        configs = [n for n in names if n.endswith(f"data/weights/{models[0]}_weights_config.json")]
        _require(len(configs) == 1, path, "torch.export archive without its weights config")
        config = _parse_json(archive.read(configs[0]), f"{path} ({configs[0]})").get("config", {})
    pickled = sorted(k for k, meta in config.items() if meta.get("use_pickle"))
    _require(
        not pickled,
        path,
        f"torch.export archive with pickled weights ({', '.join(pickled[:3])}); they would run code on "
        "loading. Export plain tensors instead",
    )
    try:
        state = _load_state_dict(PT2ArchiveReader(path), models[0])
    except Exception as exc:
        raise ClassifierFileError(
            f"{path}: cannot read the weights of the torch.export archive: {exc}"
        ) from exc
    if isinstance(state, bytes):  # an old archive keeping its weights as one torch.save'd dict
        state = _torch_load_weights(io.BytesIO(state), path)
    return {k: v.detach() for k, v in state.items()}


# --------------------------------------------------------------------------------------------------
# Loading.


def metadata_document(
    path: str, embedded: Mapping | None, sidecar: str | os.PathLike[str] | None, overrides: Mapping | None
) -> tuple[dict[str, Any], list[str]]:
    """The metadata document for a file without ours: its embedded metadata, updated by the side-car's
    (``sidecar``, or ``<path>.json`` when it exists), updated by ``overrides`` (``None`` values skipped).
    Returns ``(document, [where each part came from])``."""
    doc: dict[str, Any] = {}
    origins = []
    if embedded is not None:
        _require(isinstance(embedded, Mapping), path, "embedded classifier.json is not a JSON object")
        doc.update(embedded)
        origins.append(f"embedded {EMBEDDED_NAME}")
    side = os.fspath(sidecar) if sidecar is not None else sidecar_path(path)
    if sidecar is not None or os.path.isfile(side):
        try:
            with open(side, "rb") as file:
                data = _parse_json(file.read(), side)
        except OSError as exc:
            raise ClassifierFileError(
                f"{side}: cannot read side-car metadata: {exc.strerror or exc}"
            ) from exc
        _require(isinstance(data, Mapping), side, "side-car metadata is not a JSON object")
        doc.update(data)
        origins.append(f"side-car {side}")
    if overrides:
        doc.update({k: v for k, v in overrides.items() if v is not None})
        origins.append("overrides")
    return doc, origins


def _small_shape(state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """What the stem of ``small`` weights says: input channels and width."""
    stem = state.get("features.0.weight")
    if stem is None or stem.ndim != 4:
        return {}
    return {"in_channels": int(stem.shape[1]), "arch_kwargs": {"width": int(stem.shape[0])}}


def classifier_from_state(
    state: Mapping[str, torch.Tensor], doc: Mapping[str, Any], where: str, *, notes: list[str] | None = None
) -> Classifier:
    """Rebuild the allow-listed architecture named by ``doc`` and load ``state`` into it (strict), after
    the layout conversions of :mod:`classification.state_dicts`. Used by every loader and by
    ``import``. Raises :class:`ClassifierFileError` naming ``where``."""
    meta = meta_from_document(doc, where, from_weights=_small_shape(state))
    try:
        state, more = canonical_state_dict(meta.arch, state, len(meta.class_names), where)
    except ValueError as exc:
        raise ClassifierFileError(str(exc)) from None
    notes = [*(notes or []), *more]
    if notes:
        meta = dataclasses.replace(meta, training={**meta.training, "conversion_notes": notes})
    try:
        with torch.random.fork_rng(devices=[]):  # fresh weights are overwritten; keep the caller's RNG
            net = build_network(
                meta.arch, meta.num_outputs, meta.in_channels, meta.input_size, meta.arch_kwargs
            )
    except ValueError as exc:
        raise ClassifierFileError(f"{where}: {exc}") from None
    own = net.state_dict()
    counters = [k for k in own if k.endswith("num_batches_tracked") and k not in state]
    state = {**state, **{k: own[k] for k in counters}}  # BatchNorm counters: absent from older files, unused
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())[:600]
        raise ClassifierFileError(f"{where}: the weights do not fit {meta.arch}: {detail}") from None
    return Classifier(meta, net.float())


def load_classifier(
    path: str | os.PathLike[str],
    *,
    device: str | torch.device = "cpu",
    sidecar: str | os.PathLike[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Classifier:
    """Load a classifier file of any supported kind (module docstring), on ``device``.

    Args:
        sidecar: metadata JSON for files without ours; default ``<path>.json`` when it exists.
        overrides: metadata keys (:data:`META_KEYS`) that win over embedded and side-car metadata
            (``None`` values are ignored). Not accepted for our own format, whose metadata is complete.
    Raises:
        ClassifierFileError: with a one-line message naming the file; for a whole pickled model it
            gives the ``python -m classification import --trust-pickle`` command.
    """
    path = os.fspath(path)
    kind = detect_file_kind(path)
    if kind == "safetensors":
        state, header = _read_safetensors(path)
        if METADATA_KEY in header:
            _require(
                not overrides and sidecar is None,
                path,
                "our model files carry complete metadata; overrides and side-car files apply only to other formats",
            )
            document = _parse_json(header[METADATA_KEY].encode("utf-8"), path)
            _require(isinstance(document, Mapping), path, "classifier metadata is not a JSON object")
            _require("format" in document, path, f'classifier metadata without "format": {FORMAT_NAME!r}')
            return classifier_from_state(state, document, path).to(device)
    state, notes = read_state_dict(path, kind)
    embedded = read_embedded_metadata(path) if kind in ("torchscript", "torch-export") else None
    doc, origins = metadata_document(path, embedded, sidecar, overrides)
    notes.append("metadata from " + (", ".join(origins) or "nowhere"))
    return classifier_from_state(state, doc, path, notes=notes).to(device)


def read_state_dict(
    path: str | os.PathLike[str], kind: str | None = None
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The weights in any supported file (safetensors, TorchScript, torch.export, torch.save'd state dict
    or checkpoint dict), as ``({name: tensor}, notes)``, never unpickling Python objects. Also reads
    local pretrained (e.g. ImageNet) weights. ``kind``: :func:`detect_file_kind`'s answer if known."""
    path = os.fspath(path)
    kind = kind or detect_file_kind(path)
    if kind == "safetensors":
        return _read_safetensors(path)[0], ["weights read from a safetensors file"]
    if kind in ("torchscript", "torch-export"):
        state = _read_torchscript(path) if kind == "torchscript" else _read_torch_export(path)
        return state, [f"weights read from a {kind} archive (its program is not used)"]
    try:
        state, notes = unwrap_state_dict(_torch_load_weights(path, path), path)
    except ValueError as exc:
        raise ClassifierFileError(str(exc)) from None
    return state, ["weights read from a torch.save file (weights_only=True)", *notes]
