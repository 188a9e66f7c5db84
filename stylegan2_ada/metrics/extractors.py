"""Feature extractors ("detectors") for the GAN metrics, loaded from a local file given as ``--detector``.

The protocol (:class:`FeatureExtractor`): an object with

* ``__call__(images)``: uint8 images ``[N, C, H, W]`` (C = 1 or 3, any device) -> float32 features
  ``[N, F]`` on the extractor's device. Grayscale images are replicated to 3 channels (and RGB averaged to 1)
  where the network needs it; resizing and value scaling are the extractor's business.
* ``name``: short name, used in cache file names and logs (e.g. ``"densenet121"``).
* ``feature_dim``: F.
* ``content_hash``: a hex string that changes whenever the features could change (the file's SHA-256
  plus the input preprocessing); cached real-data statistics are keyed by it.
* ``describe()``: a JSON-able dict for logs and the metric files (kind, path, preprocessing, ...).

:func:`load_extractor` recognises the file by its content, never by its extension. In order:

1. Plugins named with ``--plugin``: the ``feature_extractors(path, device)`` hook (first non-``None``
   result wins).
   Then **extractor providers** of installed distributions, found without naming anything: entry points
   in the group :data:`PROVIDER_GROUP` (``name = "package.module:function"``), each a function
   ``(path: str, device: torch.device) -> extractor or None`` with the hook's contract, asked in name
   order (e.g. the classifier model files of ``classification/``: ``classification.features``).
2. **TorchScript** (``torch.jit.save``; NVIDIA's ``inception-2015-12-05.pt`` is one). Loaded with
   ``torch.jit.load``: the file's TorchScript code runs. TorchScript is not Python (it cannot import
   modules or call Python functions) but it is code that comes from the file, so use files you trust; the
   loader says so in the log. A network whose ``forward`` has a ``return_features`` argument (NVIDIA's
   detectors) is called as upstream calls it: ``net(uint8 [N, 3, H, W], return_features=True)`` at the
   images' own size (the network resizes internally).
3. **torch.export** programs (``torch.export.save``, ``.pt2``). ``torch.export.load`` can unpickle data,
   load compiled native code and evaluate strings, so the archive is checked first and refused unless:
   it holds no pickled weights, constants or objects, no AOTInductor code, no guard code; its sample
   inputs load with ``torch.load(weights_only=True)``; every graph operator is an ``aten``/``prims``/
   ``higher_order`` operator (or a plain ``_operator``/``math``/``torch.sym_*`` function); and every
   symbolic-shape expression uses only known names. Static batch sizes are handled (the batch is padded).
4. **A torchvision backbone's weights**: a state dict saved with ``torch.save`` (read with
   ``weights_only=True``) or a ``.safetensors`` file. The architecture is given (``arch``) or inferred by
   matching the keys and shapes against :data:`TORCHVISION_ARCHS`; the classifier head is replaced by an
   identity so the features are the penultimate activations (resnet: 512/2048, densenet121: 1024,
   vgg16: 4096, inception_v3: 2048). Inputs: bilinear (antialiased) resize to 224 (299 for inception_v3),
   values in [0, 1] normalised with the ImageNet mean and std. Wrappers ``{"state_dict": ...}``
   (``"model"``, ``"model_state_dict"``) and a ``module.`` prefix (DataParallel) are accepted.

A whole pickled model (``torch.save(model)``) is refused: loading it would run code from the file.

Input description of TorchScript and torch.export files: an embedded extra file ``feature_extractor.json``
(``torch.jit.save(..., _extra_files=...)`` / ``torch.export.save(..., extra_files=...)``) or a side-car
file ``PATH.json`` beside the detector, with the keys of :class:`InputSpec` plus an optional ``name``::

    {"name": "my-net", "input_size": 224, "input_channels": 3, "input_range": "0-1",
     "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}

Without one, the upstream convention is used: uint8-range values, 3 channels, the images' own size. For a
torch.export program the defaults come from its input: a fixed size and channel count, and float32 values
0..255 for a float input; the metadata overrides them key by key.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import io
import json
import os
import re
import struct
import sys
import warnings
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import nn

from stylegan2_ada.checkpoint import sha256_file

__all__ = [
    "DetectorError",
    "EXTRA_FILE",
    "FeatureExtractor",
    "InputSpec",
    "ModuleExtractor",
    "PROVIDER_GROUP",
    "TORCHVISION_ARCHS",
    "detect_kind",
    "extractor_providers",
    "load_extractor",
    "prepare_images",
]

#: Entry-point group of feature-extractor providers (module docstring; docs/plugins.md).
PROVIDER_GROUP = "stylegan2_ada.feature_extractors"
#: Name of the embedded metadata file (TorchScript ``_extra_files`` / torch.export ``extra_files``).
EXTRA_FILE = "feature_extractor.json"
VALUE_RANGES = ("uint8", "0-255", "0-1", "-1-1")
#: Part of every content hash: raise it when :func:`prepare_images` changes what a network sees.
PREPROCESSING_VERSION = 1
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class DetectorError(ValueError):
    """A feature-extractor file cannot be used; the message names the file and the problem."""


def _summary(exc: BaseException) -> str:
    """One line of a foreign error: the first, or the last for TorchScript (whose first line only says
    that the interpreter failed)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return ""
    return lines[-1] if "TorchScript interpreter" in lines[0] else lines[0]


@runtime_checkable
class FeatureExtractor(Protocol):
    """What the metrics need from a feature extractor (see the module docstring)."""

    name: str
    feature_dim: int
    content_hash: str

    def __call__(self, images: torch.Tensor) -> torch.Tensor: ...

    def describe(self) -> dict[str, Any]: ...


# ----------------------------------------------------------------------------------------------------
# Input preprocessing.


@dataclass(frozen=True)
class InputSpec:
    """How images are turned into a network's input.

    Attributes:
        input_size: side the images are resized to (bilinear, antialiased, on values 0..255); ``None`` keeps
            the images' own size.
        input_channels: 1 or 3 (grayscale is replicated to 3, RGB averaged to 1).
        input_range: ``"uint8"`` (a uint8 tensor), ``"0-255"``, ``"0-1"`` or ``"-1-1"`` (float32).
        mean, std: per-channel normalisation ``(x - mean) / std`` applied after scaling to ``input_range``.
    """

    input_size: int | None = None
    input_channels: int = 3
    input_range: str = "uint8"
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.input_size is not None and (not isinstance(self.input_size, int) or self.input_size < 1):
            raise ValueError(f"input_size must be a positive integer or null, got {self.input_size!r}")
        if self.input_channels not in (1, 3):
            raise ValueError(f"input_channels must be 1 or 3, got {self.input_channels!r}")
        if self.input_range not in VALUE_RANGES:
            raise ValueError(
                f"input_range must be one of {', '.join(VALUE_RANGES)}, got {self.input_range!r}"
            )
        if (self.mean is None) != (self.std is None):
            raise ValueError("give both mean and std, or neither")
        if self.mean is not None:
            if self.input_range == "uint8":
                raise ValueError("mean/std need a float input_range ('0-255', '0-1' or '-1-1'), not 'uint8'")
            for key, values in (("mean", self.mean), ("std", self.std)):
                if len(values) != self.input_channels:
                    raise ValueError(f"{key} needs {self.input_channels} values, got {len(values)}")
            if any(s <= 0 for s in self.std):
                raise ValueError("std values must be positive")

    @classmethod
    def from_json(cls, doc: Mapping[str, Any], where: str) -> tuple[InputSpec, str | None]:
        """(spec, name) from a metadata document; unknown keys are an error (they are usually typos)."""
        if not isinstance(doc, Mapping):
            raise DetectorError(f"{where}: the metadata must be a JSON object")
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(doc) - fields - {"name"})
        if unknown:
            raise DetectorError(
                f"{where}: unknown metadata keys {', '.join(unknown)} (known: name, {', '.join(sorted(fields))})"
            )
        kwargs = {k: doc[k] for k in fields if k in doc}
        for key in ("mean", "std"):
            if kwargs.get(key) is not None:
                kwargs[key] = tuple(float(v) for v in kwargs[key])
        name = doc.get("name")
        if name is not None and not isinstance(name, str):
            raise DetectorError(f"{where}: 'name' must be a string")
        try:
            return cls(**kwargs), name
        except (ValueError, TypeError) as exc:
            raise DetectorError(f"{where}: {exc}") from None

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def prepare_images(images: torch.Tensor, spec: InputSpec, device: torch.device) -> torch.Tensor:
    """uint8 ``[N, C, H, W]`` (C = 1 or 3) -> the network input described by ``spec``, on ``device``."""
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must be uint8 [N, 1 or 3, H, W], got {images.dtype} {tuple(images.shape)}")
    x = images.to(device)
    if x.shape[1] != spec.input_channels:
        x = x.repeat(1, 3, 1, 1) if spec.input_channels == 3 else x.float().mean(1, keepdim=True)
    resize = spec.input_size is not None and tuple(x.shape[2:]) != (spec.input_size, spec.input_size)
    if resize:
        size = (spec.input_size, spec.input_size)
        x = F.interpolate(x.float(), size=size, mode="bilinear", align_corners=False, antialias=True)
    if spec.input_range == "uint8":
        return x.round().clamp(0, 255).to(torch.uint8) if x.is_floating_point() else x
    x = x.float()
    if spec.input_range == "0-1":
        x = x / 255
    elif spec.input_range == "-1-1":
        x = x / 127.5 - 1
    if spec.mean is not None:
        mean = torch.tensor(spec.mean, device=device).view(1, -1, 1, 1)
        std = torch.tensor(spec.std, device=device).view(1, -1, 1, 1)
        x = (x - mean) / std
    return x


# ----------------------------------------------------------------------------------------------------
# The common extractor.


class ModuleExtractor:
    """An extractor around a callable network: ``prepare_images`` per ``spec``, the call, flattening.

    ``forward`` takes the prepared batch and returns ``[N, F]`` (or ``[N, F, 1, 1]``; a tuple or list gives
    its first element). ``static_batch``: the network only takes batches of exactly this size (the input is
    padded and cut into such batches). ``feature_dim`` is measured once with a probe batch at load time.
    """

    def __init__(
        self,
        forward: Callable[[torch.Tensor], Any],
        spec: InputSpec,
        *,
        name: str,
        kind: str,
        path: str,
        file_sha256: str,
        device: torch.device,
        static_batch: int | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        self._forward = forward
        self.spec = spec
        self.name = name
        self.kind = kind
        self.path = path
        self.device = torch.device(device)
        self.static_batch = static_batch
        self.details = dict(details or {})
        doc = {
            "preprocessing": PREPROCESSING_VERSION,
            "kind": kind,
            "file_sha256": file_sha256,
            "spec": spec.to_json(),
            **self.details,
        }
        self.content_hash = hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()
        self.file_sha256 = file_sha256
        probe = torch.zeros(
            [1, spec.input_channels, spec.input_size or 64, spec.input_size or 64], dtype=torch.uint8
        )
        try:
            self.feature_dim = int(self(probe).shape[1])
        except DetectorError as exc:
            raise DetectorError(
                f"{exc} (probe batch prepared as {spec.to_json()}). Describe its input in {path}.json "
                "(see docs/metrics.md)"
            ) from exc.__cause__

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = prepare_images(images, self.spec, self.device)
        n = x.shape[0]
        if self.static_batch is None:
            return self._run(x)
        pad = (-n) % self.static_batch
        if pad:
            x = torch.cat([x, x[-1:].expand(pad, *x.shape[1:])])
        return torch.cat([self._run(c) for c in x.split(self.static_batch)])[:n]

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        try:
            out = self._forward(x)
        except Exception as exc:  # noqa: BLE001 - a foreign network's failure, reported with the file named
            raise DetectorError(
                f"{self.path}: the {self.kind} network failed on a batch {list(x.shape)} {x.dtype}: "
                f"{type(exc).__name__}: {_summary(exc)}"
            ) from exc
        return self._flatten(out, x.shape[0])

    def _flatten(self, out: Any, n: int) -> torch.Tensor:
        if isinstance(out, (tuple, list)):
            out = out[0]
        if not isinstance(out, torch.Tensor) or out.shape[0] != n:
            raise DetectorError(f"{self.path}: the network must return a [N, F] tensor for N={n} images")
        return out.reshape(n, -1).to(torch.float32)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "path": self.path,
            "file_sha256": self.file_sha256,
            "content_hash": self.content_hash,
            "feature_dim": self.feature_dim,
            "input": self.spec.to_json(),
            **self.details,
        }

    def __repr__(self) -> str:
        return f"ModuleExtractor({self.name!r}, {self.kind}, {self.feature_dim} features, {self.path})"


# ----------------------------------------------------------------------------------------------------
# Recognising the file.


def _is_safetensors(head: bytes, size: int) -> bool:
    if len(head) < 10:
        return False
    (n,) = struct.unpack("<Q", head[:8])
    return 2 <= n <= size - 8 and head[8:9] == b"{"


def detect_kind(path: str) -> str:
    """``'torchscript'``, ``'torch-export'``, ``'state-dict'`` (torch.save zip or legacy pickle, to be read
    with ``weights_only=True``) or ``'safetensors'``, from the content. Raises :class:`DetectorError`."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(16)
    except FileNotFoundError:
        raise DetectorError(f"{path}: detector file not found") from None
    except IsADirectoryError:
        raise DetectorError(f"{path}: is a folder, not a detector file") from None
    except OSError as exc:
        raise DetectorError(f"{path}: cannot read detector file: {exc.strerror or exc}") from None
    if _is_safetensors(head, size):
        return "safetensors"
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
                fmt = next((n for n in names if n.count("/") == 1 and n.endswith("/archive_format")), None)
                if fmt is not None and z.read(fmt).strip() == b"pt2":
                    return "torch-export"
        except (zipfile.BadZipFile, OSError) as exc:
            raise DetectorError(f"{path}: unreadable zip archive: {exc}") from None
        parts = [n.split("/", 2) for n in names]
        if any(len(p) == 3 and p[1] == "code" for p in parts) or any(
            n.endswith("/constants.pkl") for n in names
        ):
            return "torchscript"
        if any(len(p) == 2 and p[1] == "data.pkl" for p in parts):
            return "state-dict"
        raise DetectorError(f"{path}: a zip archive that is neither TorchScript, torch.export nor torch.save")
    if head[:1] == b"\x80":  # a pickle: torch.save's legacy format
        return "state-dict"
    raise DetectorError(
        f"{path}: not a recognised detector file (TorchScript, torch.export .pt2, a state dict saved with "
        "torch.save, or .safetensors)"
    )


def _sidecar_metadata(path: str) -> tuple[dict[str, Any] | None, str]:
    side = path + ".json"
    if not os.path.isfile(side):
        return None, side
    try:
        with open(side, encoding="utf-8") as f:
            return json.load(f), side
    except (OSError, ValueError) as exc:
        raise DetectorError(f"{side}: cannot read the detector's metadata: {exc}") from None


def _metadata(path: str, embedded: str | bytes | None) -> tuple[dict[str, Any] | None, str]:
    """The embedded ``feature_extractor.json`` if present, else the side-car ``PATH.json``."""
    if embedded:
        where = f"{path} (embedded {EXTRA_FILE})"
        try:
            return json.loads(embedded), where
        except ValueError as exc:
            raise DetectorError(f"{where}: not valid JSON: {exc}") from None
    return _sidecar_metadata(path)


def _default_name(path: str) -> str:
    base = os.path.basename(path)
    return base.split(".")[0] or base


# ----------------------------------------------------------------------------------------------------
# TorchScript.


def _forward_arguments(module: Any) -> list[str]:
    try:
        return [a.name for a in module.forward.schema.arguments]
    except AttributeError:
        return []


def _load_torchscript(
    path: str, device: torch.device, file_sha: str, log: Callable[[str], None]
) -> ModuleExtractor:
    log(
        f"Loading TorchScript detector {path}: its TorchScript code will run (TorchScript cannot run Python, "
        "but it is code from the file: use detector files you trust)"
    )
    extra = {EXTRA_FILE: ""}
    try:
        with warnings.catch_warnings():  # torch.jit.load's deprecation notice says nothing about this file
            warnings.simplefilter("ignore", FutureWarning)
            module = torch.jit.load(path, map_location=device, _extra_files=extra)
    except Exception as exc:  # noqa: BLE001 - torch raises RuntimeError and friends for bad archives
        raise DetectorError(f"{path}: cannot load as TorchScript: {_summary(exc)}") from None
    module.eval()
    doc, where = _metadata(path, extra.get(EXTRA_FILE))
    spec, name = InputSpec.from_json(doc, where) if doc is not None else (InputSpec(), None)
    call: Callable[[torch.Tensor], Any]
    if "return_features" in _forward_arguments(module):

        def call(x: torch.Tensor) -> Any:
            return module(x, return_features=True)

        style = "net(x, return_features=True)"
    else:
        call, style = module, "net(x)"
    return ModuleExtractor(
        call,
        spec,
        name=name or _default_name(path),
        kind="torchscript",
        path=path,
        file_sha256=file_sha,
        device=device,
        details={"call": style, "note": "TorchScript code from the file runs"},
    )


# ----------------------------------------------------------------------------------------------------
# torch.export.

_EXPORT_TARGET = re.compile(
    r"torch\.ops\.(aten|prims|higher_order)\.[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)?"
    r"|_operator\.(getitem|add|sub|mul|truediv|floordiv|mod|pow|neg|pos|abs|eq|ne|lt|le|gt|ge|and_|or_|not_)"
    r"|math\.(ceil|floor|sqrt|trunc)"
    r"|torch\.(sym_float|sym_int|sym_max|sym_min|sym_not|sym_ite|sym_sum|_sym_sqrt)"
)
_EXPR_TOKEN = re.compile(
    r"\s+|'[A-Za-z0-9_]+'|[0-9]+(\.[0-9]+)?(e[+-]?[0-9]+)?|[A-Za-z_][A-Za-z0-9_]*|[-+*/%(),<>=!&|~^]"
)
_EXPR_SYMBOL = re.compile(r"[a-z]+[0-9]+")
_EXPR_NAMES = frozenset(
    """Symbol Integer Rational Float Add Mul Pow Min Max Mod FloorDiv CeilDiv PythonMod CleanDiv IntTrueDiv
    FloatTrueDiv ToFloat TruncToInt TruncToFloat RoundToInt RoundDecimal CeilToInt FloorToInt Abs Eq Ne Lt Le Gt
    Ge StrictLessThan LessThan GreaterThan StrictGreaterThan Equality Unequality And Or Not True False oo zoo
    nan PowByNatural FloatPow IntPow sqrt floor ceiling LShift RShift Identity Piecewise ITE
    BitwiseFn_bitwise_and BitwiseFn_bitwise_or BitwiseFn_bitwise_xor positive negative nonnegative nonpositive
    integer real finite zero even odd commutative""".split()
)


def _check_expression(expr: str, where: str) -> None:
    pos = 0
    while pos < len(expr):
        m = _EXPR_TOKEN.match(expr, pos)
        if m is None:
            raise DetectorError(
                f"{where}: refused: unexpected text in a shape expression: {expr[pos : pos + 30]!r}"
            )
        token = m.group(0)
        if (
            (token[0].isalpha() or token[0] == "_")
            and token not in _EXPR_NAMES
            and not _EXPR_SYMBOL.fullmatch(token)
        ):
            raise DetectorError(f"{where}: refused: unknown name {token!r} in a shape expression")
        pos = m.end()


def _check_program_json(doc: Any, where: str) -> None:
    """Walk a serialized program: operator targets and shape expressions must be harmless."""
    stack = [doc]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            target = node.get("target")
            if isinstance(target, str) and "inputs" in node:
                if "__" in target or not _EXPORT_TARGET.fullmatch(target):
                    raise DetectorError(
                        f"{where}: refused: the graph calls {target!r} (only aten/prims operators)"
                    )
            expr = node.get("expr_str")
            if isinstance(expr, str):
                _check_expression(expr, where)
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


def check_export_archive(path: str) -> None:
    """Refuse a torch.export archive that ``torch.export.load`` could not load without running foreign
    code (pickles, compiled code, guard code, non-aten calls, odd shape expressions); see the module docstring."""
    from torch.export.pt2_archive import constants as pt2

    with zipfile.ZipFile(path) as z:
        names = z.namelist()
        if "version" in names:  # the pre-2.8 layout, read through an unpickling fallback
            raise DetectorError(f"{path}: refused: an old torch.export layout that is loaded by unpickling")
        for name in names:
            prefix, _, rel = name.partition("/")
            if rel.startswith(pt2.AOTINDUCTOR_DIR):
                raise DetectorError(f"{path}: refused: it holds AOTInductor native code ({name})")
            if rel.endswith("_config.json") and rel.startswith((pt2.WEIGHTS_DIR, pt2.CONSTANTS_DIR)):
                config = json.loads(z.read(name)).get("config", {})
                for key, entry in config.items():
                    if entry.get("use_pickle") or not str(entry.get("path_name", "")).startswith(
                        ("weight_", pt2.TENSOR_CONSTANT_FILENAME_PREFIX)
                    ):
                        raise DetectorError(
                            f"{path}: refused: {key!r} is stored as a pickled object ({name})"
                        )
            elif rel.startswith(pt2.SAMPLE_INPUTS_DIR) and not name.endswith("/"):
                try:
                    torch.load(io.BytesIO(z.read(name)), weights_only=True)
                except Exception as exc:  # noqa: BLE001 - any failure means: not plain tensors
                    raise DetectorError(
                        f"{path}: refused: its sample inputs ({name}) are not plain tensors: {type(exc).__name__}"
                    ) from None
            elif rel.startswith(pt2.MODELS_DIR) and rel.endswith(".json"):
                program = json.loads(z.read(name))
                if program.get("guards_code"):
                    raise DetectorError(f"{path}: refused: it carries Python guard code ({name})")
                _check_program_json(program, f"{path} ({name})")


def _export_input_meta(program: Any) -> tuple[tuple[Any, ...], torch.dtype] | None:
    users = set(program.graph_signature.user_inputs)
    for node in program.graph.nodes:
        if node.op == "placeholder" and node.name in users and "val" in node.meta:
            return tuple(node.meta["val"].shape), node.meta["val"].dtype
    return None


def _load_export(
    path: str, device: torch.device, file_sha: str, log: Callable[[str], None]
) -> ModuleExtractor:
    try:
        check_export_archive(path)
    except (zipfile.BadZipFile, ValueError, KeyError, AttributeError) as exc:
        if isinstance(exc, DetectorError):
            raise
        raise DetectorError(f"{path}: malformed torch.export archive: {exc}") from None
    log(f"Loading torch.export detector {path} (checked: aten/prims operators only, no pickled data)")
    extra = {EXTRA_FILE: ""}
    try:
        with open(path, "rb") as f:
            program = torch.export.load(f, extra_files=extra)
        module = program.module().to(device)
    except Exception as exc:  # noqa: BLE001
        raise DetectorError(f"{path}: cannot load as torch.export: {_summary(exc)}") from None
    doc, where = _metadata(path, extra.get(EXTRA_FILE))
    meta = _export_input_meta(program)
    inferred: dict[str, Any] = {}  # from the program's input; the metadata overrides it
    static_batch = None
    if meta is not None and len(meta[0]) == 4:
        shape, dtype = meta
        if isinstance(shape[0], int):
            static_batch = shape[0]
        if isinstance(shape[1], int) and shape[1] in (1, 3):
            inferred["input_channels"] = shape[1]
        if isinstance(shape[2], int) and shape[2] == shape[3]:
            inferred["input_size"] = shape[2]
        inferred["input_range"] = "uint8" if dtype == torch.uint8 else "0-255"
    spec, name = InputSpec.from_json({**inferred, **(doc or {})}, where)
    return ModuleExtractor(
        module,
        spec,
        name=name or _default_name(path),
        kind="torch-export",
        path=path,
        file_sha256=file_sha,
        device=device,
        static_batch=static_batch,
    )


# ----------------------------------------------------------------------------------------------------
# torchvision backbones from a state dict.


@dataclass(frozen=True)
class _Arch:
    head: str  # attribute path of the classifier layer replaced by an identity
    input_size: int
    kwargs: tuple[tuple[str, Any], ...] = ()


#: Backbones recognised from their weights: name -> (head replaced by an identity, input size).
TORCHVISION_ARCHS: dict[str, _Arch] = {
    **{n: _Arch("fc", 224) for n in ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")},
    **{n: _Arch("classifier", 224) for n in ("densenet121", "densenet161", "densenet169", "densenet201")},
    "vgg16": _Arch("classifier.6", 224),
    "inception_v3": _Arch("fc", 299, (("aux_logits", True), ("init_weights", False))),
    "inception_v3_noaux": _Arch("fc", 299, (("aux_logits", False), ("init_weights", False))),
}


def _read_state_dict(path: str, kind: str) -> dict[str, torch.Tensor]:
    if kind == "safetensors":
        from safetensors.torch import load_file

        try:
            obj: Any = load_file(path)
        except Exception as exc:  # noqa: BLE001
            raise DetectorError(f"{path}: unreadable safetensors file: {exc}") from None
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - UnpicklingError for anything beyond plain tensors
            raise DetectorError(
                f"{path}: refused: it holds pickled Python objects (a whole model?), and loading those could run "
                f"code from the file ({type(exc).__name__}). Save the weights instead (torch.save(model.state_dict(), "
                "PATH)) or export the network with torch.jit.save / torch.export.save"
            ) from None
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise DetectorError(f"{path}: expected a state dict (parameter name -> tensor)")
    state = {str(k): v for k, v in obj.items()}
    if all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def _head_classes(state: Mapping[str, torch.Tensor], arch: _Arch) -> int | None:
    weight = state.get(f"{arch.head}.weight")
    return int(weight.shape[0]) if weight is not None and weight.ndim == 2 else None


def _build(name: str, num_classes: int | None, device: str | torch.device) -> nn.Module:
    import torchvision

    arch = TORCHVISION_ARCHS[name]
    kwargs = dict(arch.kwargs)
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    with torch.device(device):
        return getattr(torchvision.models, name.replace("_noaux", ""))(weights=None, **kwargs)


def _shapes(state: Mapping[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in state.items() if not k.endswith("num_batches_tracked")}


def _infer_arch(state: Mapping[str, torch.Tensor], path: str) -> str:
    wanted = _shapes(state)
    for name, arch in TORCHVISION_ARCHS.items():
        if _shapes(_build(name, _head_classes(state, arch), "meta").state_dict()) == wanted:
            return name
    raise DetectorError(
        f"{path}: the weights match none of the known torchvision backbones "
        f"({', '.join(a for a in TORCHVISION_ARCHS if not a.endswith('_noaux'))}); give the architecture "
        "(--detector-arch) or use a TorchScript / torch.export file"
    )


def _load_torchvision(
    path: str, kind: str, arch_name: str | None, device: torch.device, file_sha: str
) -> ModuleExtractor:
    state = _read_state_dict(path, kind)
    if arch_name is None:
        arch_name = _infer_arch(state, path)
    elif arch_name == "inception_v3" and not any(k.startswith("AuxLogits.") for k in state):
        arch_name = "inception_v3_noaux"
    if arch_name not in TORCHVISION_ARCHS:
        raise DetectorError(f"unknown architecture {arch_name!r}; known: {', '.join(TORCHVISION_ARCHS)}")
    arch = TORCHVISION_ARCHS[arch_name]
    net = _build(arch_name, _head_classes(state, arch), "cpu")
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise DetectorError(f"{path}: the weights do not fit {arch_name}: {_summary(exc)}") from None
    parent_name, _, leaf = arch.head.rpartition(".")
    parent = net.get_submodule(parent_name) if parent_name else net
    setattr(parent, leaf, nn.Identity())
    net = net.eval().requires_grad_(False).to(device)
    forward: Callable[[torch.Tensor], Any] = net
    if device.type == "cpu":  # oneDNN's convolutions run about 2x faster on NHWC tensors

        def forward(x: torch.Tensor) -> Any:
            return net(x.contiguous(memory_format=torch.channels_last))

        net.to(memory_format=torch.channels_last)
    spec = InputSpec(arch.input_size, 3, "0-1", IMAGENET_MEAN, IMAGENET_STD)
    display = arch_name.replace("_noaux", "")
    return ModuleExtractor(
        forward,
        spec,
        name=display,
        kind="torchvision-weights",
        path=path,
        file_sha256=file_sha,
        device=device,
        details={"arch": display, "features": f"penultimate ({arch.head} replaced by identity)"},
    )


# ----------------------------------------------------------------------------------------------------
# Entry point.


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


def extractor_providers(log: Callable[[str], None] = _stderr) -> list[tuple[str, Callable[..., Any]]]:
    """``[(name, provider)]``: the entry points of :data:`PROVIDER_GROUP` of every installed distribution,
    loaded, in name order. One that fails to load is reported through ``log`` and skipped (the other
    kinds still work)."""
    found = []
    for ep in sorted(importlib.metadata.entry_points(group=PROVIDER_GROUP), key=lambda e: e.name):
        try:
            found.append((ep.name, ep.load()))
        except Exception as exc:  # noqa: BLE001 - a broken third-party provider must not stop the others
            log(f"Warning: feature-extractor provider {ep.name!r} ({ep.value}) failed to load: {exc}")
    return found


def _checked(found: Any, path: str, source: str) -> FeatureExtractor:
    missing = [a for a in ("name", "feature_dim", "content_hash", "describe") if not hasattr(found, a)]
    if missing or not callable(found):
        raise DetectorError(
            f"{path}: {source} returned {type(found).__name__}, which lacks "
            f"{', '.join(missing) or '__call__'} of the feature-extractor protocol"
        )
    return found


def _from_providers(path: str, device: torch.device, log: Callable[[str], None]) -> FeatureExtractor | None:
    for name, provider in extractor_providers(log):
        try:
            found = provider(path, device)
        except DetectorError:
            raise
        except Exception as exc:  # noqa: BLE001 - a provider's failure, reported with the file named
            raise DetectorError(
                f"{path}: feature-extractor provider {name!r} failed: {type(exc).__name__}: {_summary(exc)}"
            ) from exc
        if found is not None:
            return _checked(found, path, f"feature-extractor provider {name!r}")
    return None


def load_extractor(
    path: str | os.PathLike[str],
    *,
    device: str | torch.device = "cpu",
    arch: str | None = None,
    pm: Any = None,
    log: Callable[[str], None] = _stderr,
) -> FeatureExtractor:
    """Load the feature extractor in ``path`` (see the module docstring for the kinds and their order).

    Args:
        device: where the network runs.
        arch: torchvision architecture for a state dict (default: inferred from the keys).
        pm: a plugin manager whose ``feature_extractors`` hook is asked first, or ``None``.
        log: where to say what is loaded (default: stderr).

    Raises:
        DetectorError: missing/unreadable/unsafe/unrecognised file, with the file and the problem named.
    """
    path = os.path.abspath(os.fspath(path))
    device = torch.device(device)
    if pm is not None:
        found = pm.hook.feature_extractors(path=path, device=device)
        if found is not None:
            return _checked(found, path, "a plugin")
    if arch is None:  # --detector-arch names a torchvision kind: no provider is asked
        found = _from_providers(path, device, log)
        if found is not None:
            return found
    kind = detect_kind(path)
    file_sha = sha256_file(path)
    if arch is not None and kind not in ("state-dict", "safetensors"):
        raise DetectorError(f"{path}: an architecture was given, but the file is {kind}, not a state dict")
    if kind == "torchscript":
        return _load_torchscript(path, device, file_sha, log)
    if kind == "torch-export":
        return _load_export(path, device, file_sha, log)
    return _load_torchvision(path, kind, arch, device, file_sha)
