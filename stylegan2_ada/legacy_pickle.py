"""Read stylegan2-ada-pytorch ``.pkl`` snapshots without executing anything stored in them.

Upstream snapshots are plain pickles of a dict ``{training_set_kwargs, G, D, G_ema, augment_pipe}``.
Every network object in them is stored as a call to
``torch_utils.persistence._reconstruct_persistent_obj(meta)`` whose ``meta['module_src']`` holds Python
source that upstream's loader ``exec()``s. Loading such a file with ``pickle.load`` therefore runs
whatever the file contains.

This module reads them with :class:`RestrictedUnpickler`, which

* resolves only an explicit allow-list of global names (:data:`ALLOWED_GLOBALS`), each mapped to a
  function *of ours* that builds plain data; every other name raises :class:`UnsafePickleError` naming
  it and saying why;
* turns each persistent network object into an inert :class:`PersistentRecord` (class name + state
  dict). ``module_src`` is dropped unread and never executed;
* loads each embedded tensor blob with ``torch.load(..., weights_only=True)`` and checks that it is a
  plain storage;
* refuses the ``BUILD`` opcode (``__setstate__``) on everything except our own inert numpy-dtype
  stand-in, and refuses persistent ids (``torch.save``'s storage references).

:func:`read_upstream_snapshot` then returns the records; :func:`record_state_dict` and
:func:`record_init_kwargs` extract a network's ``state_dict`` (names joined with ``'.'``, exactly as
``nn.Module.state_dict`` would name them, Freeze-D buffers included) and its constructor keywords as
plain JSON-able data. Building our own modules from them is done in :mod:`stylegan2_ada.checkpoint`.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import re
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import numpy as np
import torch

__all__ = [
    "ALLOWED_GLOBALS",
    "EasyDict",
    "LegacyPickleError",
    "PersistentRecord",
    "RestrictedUnpickler",
    "UnsafePickleError",
    "UpstreamSnapshot",
    "UPSTREAM_NETWORK_KEYS",
    "UPSTREAM_PERSISTENT_CLASSES",
    "read_upstream_snapshot",
    "record_init_kwargs",
    "record_state_dict",
    "restricted_load",
    "to_plain",
]

#: Version number of upstream's ``torch_utils.persistence`` format that we understand.
PERSISTENCE_FORMAT_VERSION = 6

#: Top-level keys of an upstream snapshot that hold networks, in upstream's order.
UPSTREAM_NETWORK_KEYS: tuple[str, ...] = ("G", "D", "G_ema", "augment_pipe")

#: Class names of persistent objects that stylegan2-ada-pytorch's networks.py and augment.py define.
#: A nested persistent object with any other class name is refused.
UPSTREAM_PERSISTENT_CLASSES: frozenset[str] = frozenset(
    {
        "Generator",
        "MappingNetwork",
        "SynthesisNetwork",
        "SynthesisBlock",
        "SynthesisLayer",
        "ToRGBLayer",
        "FullyConnectedLayer",
        "Conv2dLayer",
        "Discriminator",
        "DiscriminatorBlock",
        "DiscriminatorEpilogue",
        "MinibatchStdLayer",
        "AugmentPipe",
    }
)

_REFUSAL_REASON = (
    "not on the allow-list of names that stylegan2-ada-pytorch snapshots need; refusing to load to "
    "avoid executing code from the file"
)

# numpy dtype codes a pickled numpy scalar may use: plain booleans, integers, floats and complex only.
_NUMERIC_DTYPE_CODES: frozenset[str] = frozenset(
    {"b1", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8", "c8", "c16"}
)


class LegacyPickleError(ValueError):
    """An upstream ``.pkl`` snapshot could not be read (malformed, unsupported or unknown content)."""


class UnsafePickleError(LegacyPickleError, pickle.UnpicklingError):
    """The pickle asks for something that could execute code or is outside the allow-list."""


# --------------------------------------------------------------------------------------------------
# Inert stand-ins for the objects an upstream snapshot contains.


class EasyDict(dict):
    """Stand-in for ``dnnlib.util.EasyDict``: a plain ``dict`` with attribute access.

    Upstream pickles it as ``EasyDict.__new__(EasyDict)`` followed by ``SETITEMS``; it never needs
    ``__setstate__``, so state restoration is refused.
    """

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setstate__(self, state: Any) -> None:  # pragma: no cover - BUILD is refused before this
        raise UnsafePickleError("dnnlib.util.EasyDict: __setstate__ (BUILD) is not allowed")


@dataclass(frozen=True)
class PersistentRecord:
    """An upstream persistent object, kept as data: never instantiated, its source never executed.

    Attributes:
        class_name: upstream class name, e.g. ``"Generator"`` (one of :data:`UPSTREAM_PERSISTENT_CLASSES`).
        state: the object's ``__dict__`` as pickled: ``_parameters``, ``_buffers``, ``_modules``
            (children are records too), ``_init_args``, ``_init_kwargs`` and plain attributes.
        version: upstream persistence format version (always 6).
    """

    class_name: str
    state: dict = field(repr=False)
    version: int = PERSISTENCE_FORMAT_VERSION

    def __setstate__(self, state: Any) -> None:  # pragma: no cover - BUILD is refused before this
        raise UnsafePickleError("persistent objects: __setstate__ (BUILD) is not allowed")


class _DtypeSpec:
    """Inert stand-in for a pickled ``numpy.dtype``: a validated numeric dtype code and byte order."""

    __slots__ = ("code", "byteorder")

    def __init__(self, code: str) -> None:
        self.code = code
        self.byteorder = "="

    def apply_state(self, state: Any) -> None:
        """Validate and apply numpy's dtype pickle state ``(3, byteorder, None, None, None, -1, -1, 0)``."""
        ok = (
            isinstance(state, tuple)
            and len(state) in (8, 9)
            and state[0] in (3, 4)
            and state[1] in ("<", ">", "|", "=")
            and state[2:5] == (None, None, None)
            and state[5:8] == (-1, -1, 0)
            and (len(state) == 8 or not state[8])
        )
        if not ok:
            raise UnsafePickleError(
                f"numpy.dtype: refusing dtype state {state!r}: only plain numeric dtypes (no fields, "
                "sub-arrays, objects or metadata) are allowed"
            )
        self.byteorder = state[1]

    def to_numpy(self) -> np.dtype:
        dtype = np.dtype(self.code)
        if self.byteorder in ("<", ">"):
            dtype = dtype.newbyteorder(self.byteorder)
        return dtype


# --------------------------------------------------------------------------------------------------
# The allow-listed callables. Each validates its arguments and returns plain data.


def _reconstruct_persistent_obj(meta: Any) -> PersistentRecord:
    """Replacement for ``torch_utils.persistence._reconstruct_persistent_obj``: data only.

    ``meta['module_src']`` is deliberately never read, compiled or executed.
    """
    if not isinstance(meta, dict):
        raise LegacyPickleError(f"persistent object: expected a dict of metadata, got {type(meta).__name__}")
    if meta.get("type") != "class":
        raise UnsafePickleError(
            f"persistent object of type {meta.get('type')!r}: only type 'class' is supported"
        )
    class_name = meta.get("class_name")
    if not isinstance(class_name, str):
        raise LegacyPickleError("persistent object: 'class_name' is missing or not a string")
    if class_name not in UPSTREAM_PERSISTENT_CLASSES:
        raise UnsafePickleError(
            f"persistent object of class {class_name!r}: not one of the stylegan2-ada-pytorch classes "
            f"we know ({', '.join(sorted(UPSTREAM_PERSISTENT_CLASSES))}); its module source is not "
            "executed and the class cannot be rebuilt"
        )
    version = meta.get("version")
    if version != PERSISTENCE_FORMAT_VERSION:
        raise LegacyPickleError(
            f"persistent object {class_name!r}: format version {version!r} is not supported "
            f"(expected {PERSISTENCE_FORMAT_VERSION})"
        )
    state = meta.get("state")
    if not isinstance(state, dict):
        raise LegacyPickleError(f"persistent object {class_name!r}: 'state' is missing or not a dict")
    return PersistentRecord(class_name=class_name, state=state, version=version)


def _load_storage_from_bytes(data: Any) -> torch.UntypedStorage | torch.TypedStorage:
    """Replacement for ``torch.storage._load_from_bytes``: ``torch.load(weights_only=True)``, storages only."""
    if not isinstance(data, (bytes, bytearray)):
        raise UnsafePickleError(f"torch.storage._load_from_bytes: expected bytes, got {type(data).__name__}")
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*TypedStorage is deprecated.*")
            storage = torch.load(io.BytesIO(bytes(data)), weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as exc:
        raise UnsafePickleError(
            "torch.storage._load_from_bytes: the embedded tensor blob is not plain weights and was refused "
            f"by torch.load(weights_only=True): {_weights_only_reason(exc)}"
        ) from exc
    except Exception as exc:  # truncated or corrupt blob
        raise LegacyPickleError(f"torch.storage._load_from_bytes: unreadable tensor blob: {exc}") from exc
    if not isinstance(storage, (torch.TypedStorage, torch.UntypedStorage)):
        raise UnsafePickleError(
            "torch.storage._load_from_bytes: the embedded blob holds a "
            f"{type(storage).__module__}.{type(storage).__name__}, not a tensor storage"
        )
    return storage


def _weights_only_reason(exc: BaseException) -> str:
    """The useful part of torch's weights_only refusal (which global), without its advice to disable it."""
    text = str(exc)
    match = re.search(r"WeightsUnpickler error:\s*([^\n]*?)(?: Please use|\n|$)", text)
    if match:
        return match.group(1).strip()
    return re.sub(r"\x1b\[[0-9;]*m", "", text.splitlines()[0] if text else repr(exc))[:300]


def _check_int_tuple(value: Any, what: str) -> tuple[int, ...]:
    if isinstance(value, torch.Size):
        value = tuple(value)
    if not isinstance(value, tuple) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise UnsafePickleError(
            f"torch._utils._rebuild_tensor_v2: {what} must be a tuple of ints, got {value!r}"
        )
    if any(v < 0 for v in value):
        raise LegacyPickleError(f"torch._utils._rebuild_tensor_v2: negative {what} {value!r}")
    return value


def _check_no_hooks(hooks: Any, who: str) -> None:
    if hooks is None:
        return
    if not isinstance(hooks, dict) or len(hooks) != 0:
        raise UnsafePickleError(f"{who}: tensors with backward hooks are not allowed (got {hooks!r})")


def _rebuild_tensor_v2(
    storage: Any,
    storage_offset: Any,
    size: Any,
    stride: Any,
    requires_grad: Any = False,
    backward_hooks: Any = None,
    metadata: Any = None,
) -> torch.Tensor:
    """Replacement for ``torch._utils._rebuild_tensor_v2``: a CPU tensor viewing a checked storage."""
    who = "torch._utils._rebuild_tensor_v2"
    if not isinstance(storage, (torch.TypedStorage, torch.UntypedStorage)):
        raise UnsafePickleError(f"{who}: expected a storage, got {type(storage).__name__}")
    if not isinstance(storage_offset, int) or isinstance(storage_offset, bool) or storage_offset < 0:
        raise UnsafePickleError(f"{who}: bad storage offset {storage_offset!r}")
    size = _check_int_tuple(size, "size")
    stride = _check_int_tuple(stride, "stride")
    if len(size) != len(stride):
        raise LegacyPickleError(f"{who}: size {size} and stride {stride} differ in length")
    if not isinstance(requires_grad, bool):
        raise UnsafePickleError(f"{who}: requires_grad must be a bool, got {requires_grad!r}")
    _check_no_hooks(backward_hooks, who)
    if metadata:
        raise UnsafePickleError(f"{who}: tensor metadata {metadata!r} is not supported")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*TypedStorage is deprecated.*")
        if isinstance(storage, torch.TypedStorage):
            dtype, untyped = storage.dtype, storage._untyped_storage
        else:
            dtype, untyped = torch.uint8, storage
    itemsize = torch.empty((), dtype=dtype).element_size()
    numel_available = untyped.nbytes() // itemsize
    # Elements the view touches: offset + sum((n-1)*s) + 1, or nothing for an empty tensor.
    if all(n > 0 for n in size):
        extent = storage_offset + sum((n - 1) * s for n, s in zip(size, stride)) + 1
        if extent > numel_available:
            raise LegacyPickleError(
                f"{who}: tensor of size {list(size)} / stride {list(stride)} at offset {storage_offset} "
                f"needs {extent} elements but its storage holds {numel_available} (truncated or corrupt file)"
            )
    tensor = torch.empty((0,), dtype=dtype).set_(untyped, storage_offset, size, stride)
    return tensor


def _rebuild_parameter(data: Any, requires_grad: Any, backward_hooks: Any) -> torch.Tensor:
    """Replacement for ``torch._utils._rebuild_parameter``: returns the plain tensor (no Parameter)."""
    who = "torch._utils._rebuild_parameter"
    if not isinstance(data, torch.Tensor):
        raise UnsafePickleError(f"{who}: expected a tensor, got {type(data).__name__}")
    if not isinstance(requires_grad, bool):
        raise UnsafePickleError(f"{who}: requires_grad must be a bool, got {requires_grad!r}")
    _check_no_hooks(backward_hooks, who)
    return data


def _numpy_dtype(code: Any, align: Any = False, copy: Any = False) -> _DtypeSpec:
    """Replacement for ``numpy.dtype``: plain numeric dtype codes only (``'f8'``, ``'i4'``, ...)."""
    if not isinstance(code, str) or code not in _NUMERIC_DTYPE_CODES:
        raise UnsafePickleError(
            f"numpy.dtype: refusing dtype {code!r}: only plain numeric dtypes "
            f"({', '.join(sorted(_NUMERIC_DTYPE_CODES))}) are allowed"
        )
    if not isinstance(align, bool) or not isinstance(copy, bool):
        raise UnsafePickleError(f"numpy.dtype: bad arguments align={align!r}, copy={copy!r}")
    return _DtypeSpec(code)


def _numpy_scalar(dtype: Any, data: Any = None) -> np.generic:
    """Replacement for ``numpy.(_)core.multiarray.scalar``: a numeric numpy scalar from its raw bytes."""
    if not isinstance(dtype, _DtypeSpec):
        raise UnsafePickleError(
            f"numpy scalar: the dtype must come from an allowed numpy.dtype, got {type(dtype).__name__}"
        )
    np_dtype = dtype.to_numpy()
    if not isinstance(data, bytes) or len(data) != np_dtype.itemsize:
        raise LegacyPickleError(
            f"numpy scalar: expected {np_dtype.itemsize} bytes for dtype {np_dtype}, got {data!r}"
        )
    return np.frombuffer(data, dtype=np_dtype)[0]


def _string_set(items: Any = ()) -> set[str]:
    """Replacement for ``builtins.set`` as pickle protocols < 4 use it: a set of strings only.

    Python 3.7 (upstream's environment) pickles with protocol 3 by default, which writes each module's
    ``_non_persistent_buffers_set`` as ``builtins.set([...])``.
    """
    if not isinstance(items, (list, tuple)) or not all(isinstance(item, str) for item in items):
        raise UnsafePickleError(f"builtins.set: only sets of strings are allowed, got {items!r}")
    return set(items)


#: ``(module, name)`` pairs an upstream snapshot may reference, each mapped to our safe replacement.
ALLOWED_GLOBALS: Mapping[tuple[str, str], Callable[..., Any] | type] = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
    ("dnnlib.util", "EasyDict"): EasyDict,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): _load_storage_from_bytes,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,  # pickled under numpy 1.x
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,  # pickled under numpy 2.x
    ("numpy", "dtype"): _numpy_dtype,
    ("builtins", "set"): _string_set,  # protocol <= 3 pickles (Python 3.7 default)
}


# --------------------------------------------------------------------------------------------------
# The unpickler.


def _load_build_restricted(self: RestrictedUnpickler) -> None:
    """``BUILD`` opcode: only our numpy-dtype stand-in may receive state; everything else is refused."""
    state = self.stack.pop()
    inst = self.stack[-1]
    if type(inst) is _DtypeSpec:
        inst.apply_state(state)
        return
    raise UnsafePickleError(
        f"BUILD (__setstate__) on a {type(inst).__module__}.{type(inst).__qualname__} object: not needed "
        "by stylegan2-ada-pytorch snapshots; refusing to load to avoid executing code from the file"
    )


class RestrictedUnpickler(pickle._Unpickler):  # type: ignore[name-defined]
    """A pickle reader that resolves only :data:`ALLOWED_GLOBALS` and never executes stored code.

    Built on the pure-Python unpickler so that the ``BUILD`` opcode can be restricted too (the C
    unpickler calls ``__setstate__`` on any object). Every refusal raises :class:`UnsafePickleError`
    before anything refused is called.
    """

    dispatch = dict(pickle._Unpickler.dispatch)  # type: ignore[attr-defined]
    dispatch[pickle.BUILD[0]] = _load_build_restricted

    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except (KeyError, TypeError):
            raise UnsafePickleError(f"global '{module}.{name}' is {_REFUSAL_REASON}") from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(
            f"persistent id {pid!r}: the file uses torch.save's storage references, which upstream "
            "snapshots never contain; refusing to load it as a stylegan2-ada-pytorch snapshot"
        )


def restricted_load(file: BinaryIO) -> Any:
    """Unpickle ``file`` with :class:`RestrictedUnpickler` and return the (inert) object."""
    return RestrictedUnpickler(file).load()


# --------------------------------------------------------------------------------------------------
# Interpreting the records.


def to_plain(value: Any, where: str = "value") -> Any:
    """Convert unpickled metadata to plain JSON-able Python: dict (str keys), list, str, int, float, bool, None.

    ``EasyDict`` becomes ``dict``, tuples become lists and numpy scalars become Python numbers.
    Anything else (tensors, records) raises :class:`LegacyPickleError` naming ``where``.
    """
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.generic) and value.dtype.kind in "biuf":
        return value.item()
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise LegacyPickleError(f"{where}: non-string key {key!r}")
            out[key] = to_plain(item, f"{where}.{key}")
        return out
    if isinstance(value, (list, tuple)):
        return [to_plain(item, f"{where}[{i}]") for i, item in enumerate(value)]
    raise LegacyPickleError(f"{where}: unsupported value of type {type(value).__name__}")


def record_state_dict(record: PersistentRecord) -> collections.OrderedDict[str, torch.Tensor]:
    """The ``state_dict`` of a persistent network record, as ``nn.Module.state_dict()`` would name it.

    Walks ``_parameters``, then ``_buffers`` (skipping non-persistent ones), then ``_modules``
    recursively, joining names with ``'.'``. Freeze-D layers store their weights as buffers under the
    same names, so they come out under the same keys. Tensors keep their stored dtype and shape.
    """
    out: collections.OrderedDict[str, torch.Tensor] = collections.OrderedDict()
    _walk_record(record, "", out, record.class_name)
    return out


def _walk_record(record: Any, prefix: str, out: dict, path: str) -> None:
    if not isinstance(record, PersistentRecord):
        raise LegacyPickleError(
            f"{path}: expected a persistent stylegan2-ada-pytorch module, got {type(record).__name__}"
        )
    state = record.state
    non_persistent = state.get("_non_persistent_buffers_set") or set()
    for group in ("_parameters", "_buffers"):
        tensors = state.get(group, {})
        if not isinstance(tensors, dict):
            raise LegacyPickleError(f"{path}.{group}: expected a dict, got {type(tensors).__name__}")
        for name, tensor in tensors.items():
            if tensor is None or (group == "_buffers" and name in non_persistent):
                continue
            if not isinstance(name, str) or not isinstance(tensor, torch.Tensor):
                raise LegacyPickleError(
                    f"{path}.{group}[{name!r}]: expected a tensor, got {type(tensor).__name__}"
                )
            out[prefix + name] = tensor
    modules = state.get("_modules", {})
    if not isinstance(modules, dict):
        raise LegacyPickleError(f"{path}._modules: expected a dict, got {type(modules).__name__}")
    for name, child in modules.items():
        if child is None:
            continue
        _walk_record(child, f"{prefix}{name}.", out, f"{path}.{name}")


def record_init_kwargs(record: PersistentRecord) -> dict[str, Any]:
    """The constructor keywords a persistent network was built with, as plain JSON-able data.

    Upstream stores them as ``_init_args`` (must be empty for the top-level networks) and
    ``_init_kwargs`` (nested ``EasyDict``s become plain dicts).
    """
    args = record.state.get("_init_args", ())
    if args not in ((), []):
        raise LegacyPickleError(
            f"{record.class_name}: positional constructor arguments {args!r} are not supported "
            "(upstream's train.py passes keywords only)"
        )
    kwargs = record.state.get("_init_kwargs")
    if not isinstance(kwargs, dict):
        raise LegacyPickleError(f"{record.class_name}: '_init_kwargs' is missing or not a dict")
    return to_plain(kwargs, f"{record.class_name} constructor arguments")


@dataclass
class UpstreamSnapshot:
    """What an upstream snapshot holds, still as inert data.

    Attributes:
        networks: ``'G'``, ``'D'``, ``'G_ema'``, ``'augment_pipe'`` -> record (those present, not ``None``).
        training_set_kwargs: upstream's dataset options as a plain dict, or ``None``.
        extra: any other top-level entries that are plain data (e.g. ``progress`` in later forks).
    """

    networks: dict[str, PersistentRecord]
    training_set_kwargs: dict[str, Any] | None
    extra: dict[str, Any]


_TORCH_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


def read_upstream_snapshot(path: str | os.PathLike[str]) -> UpstreamSnapshot:
    """Read a stylegan2-ada-pytorch ``.pkl`` snapshot safely.

    Raises:
        FileNotFoundError / PermissionError: as ``open`` does.
        UnsafePickleError: the file references a name outside :data:`ALLOWED_GLOBALS` or uses a
            refused construct; nothing refused is ever called.
        LegacyPickleError: the file is truncated, corrupt, or not an upstream snapshot.
    """
    path = os.fspath(path)
    with open(path, "rb") as file:
        try:
            data = restricted_load(file)
        except LegacyPickleError as exc:
            raise type(exc)(f"{path}: {exc}") from exc
        except (
            EOFError,
            pickle.UnpicklingError,
            ValueError,
            TypeError,
            KeyError,
            IndexError,
            AttributeError,
            RuntimeError,
            OverflowError,
            MemoryError,
        ) as exc:
            raise LegacyPickleError(
                f"{path}: not a readable pickle (truncated or corrupt?): {exc!r}"
            ) from exc
    if isinstance(data, int) and data == _TORCH_LEGACY_MAGIC:
        raise LegacyPickleError(
            f"{path}: this is a legacy torch.save file, not a stylegan2-ada-pytorch snapshot"
        )
    if isinstance(data, tuple):
        raise LegacyPickleError(
            f"{path}: holds a tuple (an old TensorFlow-era (G, D, Gs) snapshot?); only stylegan2-ada-pytorch "
            "snapshots (a dict with G, D, G_ema) are supported"
        )
    if not isinstance(data, dict):
        raise LegacyPickleError(
            f"{path}: top-level object is a {type(data).__name__}, expected the dict of a stylegan2-ada-pytorch snapshot"
        )
    networks: dict[str, PersistentRecord] = {}
    extra: dict[str, Any] = {}
    training_set_kwargs = None
    for key, value in data.items():
        if key in UPSTREAM_NETWORK_KEYS:
            if value is None:
                continue
            if not isinstance(value, PersistentRecord):
                raise LegacyPickleError(
                    f"{path}: '{key}' is a {type(value).__name__}, not a persistent network"
                )
            networks[key] = value
        elif key == "training_set_kwargs":
            training_set_kwargs = None if value is None else to_plain(value, f"{path}: training_set_kwargs")
        else:
            try:
                extra[str(key)] = to_plain(value, f"{path}: {key}")
            except LegacyPickleError:
                warnings.warn(
                    f"{path}: ignoring top-level entry {key!r} that is not plain data", stacklevel=2
                )
    if not networks:
        raise LegacyPickleError(
            f"{path}: no networks found (expected some of {', '.join(UPSTREAM_NETWORK_KEYS)})"
        )
    return UpstreamSnapshot(networks=networks, training_set_kwargs=training_set_kwargs, extra=extra)
