"""Checkpoints: our native safetensors + JSON format, and one loader for it and upstream ``.pkl`` files.

Native format (everything we write): ONE ``.safetensors`` file per snapshot.

* Tensors: ``<network>/<state_dict key>`` for each network (e.g. ``G/synthesis.b4.const``) and
  ``extra/<name>`` for free tensors (optimizer state, RNG states, ...).
* The safetensors header's ``__metadata__`` (str -> str) holds one key, :data:`METADATA_KEY`, whose
  value is a JSON document::

      {"format": "stylegan2_ada-checkpoint", "format_version": 2,
       "networks": {"G": {"class_name": "Generator", "init_kwargs": {...}}, ...},
       "tensors": ["<extra name>", ...],
       "metadata": {...free, JSON-able: training progress, class_names, ...},
       "provenance": {"created": ISO-8601 UTC, "stylegan2_ada": version, "torch": ..., "numpy": ...,
                      "python": ...},
       "content_sha256": "<hex digest, below>"}

Conventions for ``metadata``: ``class_names`` (list of str, one per class index) is shown by
``generate.py`` when it lists the valid classes of a conditional network.

Provenance records the time and the software versions, nothing that identifies a machine or a person
(files of format version 1 also hold the host name; they load unchanged).

Content hash (``content_sha256``, :func:`content_sha256`): hex SHA-256 over, for each tensor in the
file in sorted name order, the UTF-8 JSON line ``["<name>", "<dtype>", [<shape>], <byte count>]\n``
(dtype as torch names it without ``torch.``, e.g. ``float32``) followed by the tensor's bytes as stored
(little-endian); then the document itself without ``content_sha256``, as compact JSON with sorted keys.
:func:`load_checkpoint` recomputes it and refuses a file whose tensor bytes, tensor names, dtypes or
shapes, or document differ from what was written. Files of format version 1 (written before the hash
existed) have none and load unverified; from version 2 on it is required.

Loading never unpickles anything. Network classes are looked up in a fixed table of our own classes
(:func:`network_registry`), never imported by a name read from the file, rebuilt from their
``init_kwargs`` and filled with ``load_state_dict(strict=True)``.

:func:`load_checkpoint` also reads stylegan2-ada-pytorch ``.pkl`` snapshots through the restricted
unpickler in :mod:`stylegan2_ada.legacy_pickle`. The format is detected from the content, not the
extension (:func:`detect_format`): native when the first 8 bytes are a plausible little-endian header
length N, byte 9 opens a JSON object and the N header bytes are a JSON object whose tensors end exactly
at the end of the file; only otherwise a pickle (protocol 2-5 signature, last byte pickle's STOP
opcode). A native file is never taken for a pickle whatever its header length (e.g. one whose length's
low bytes are ``0x80 0x02``), and a pickle cannot pass the native test (its 9th byte is never ``{``
after a plausible length).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import importlib
import inspect
import json
import os
import platform
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Literal

import numpy as np
import torch
from torch import nn

import stylegan2_ada
from stylegan2_ada import legacy_pickle
from stylegan2_ada.atomic import atomic_path

__all__ = [
    "Checkpoint",
    "CheckpointError",
    "CheckpointNotFoundError",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "HASH_KEY",
    "METADATA_KEY",
    "build_network",
    "content_sha256",
    "detect_format",
    "load_checkpoint",
    "load_network",
    "network_registry",
    "package_version",
    "save_checkpoint",
    "sha256_file",
]

#: Key of our JSON document inside the safetensors ``__metadata__`` header.
METADATA_KEY = "stylegan2_ada"
FORMAT_NAME = "stylegan2_ada-checkpoint"
#: 2: the document holds :data:`HASH_KEY` (required) and no host name. 1: no content hash.
FORMAT_VERSION = 2
#: Key of the content hash in the JSON document (see the module docstring).
HASH_KEY = "content_sha256"
#: Tensor-name prefix of free (non-network) tensors.
EXTRA_PREFIX = "extra"

CheckpointFormat = Literal["native", "upstream-pkl"]

# Our classes that checkpoints may name: class name -> (module, attribute). A fixed table of our own
# code; nothing read from a file is ever imported.
_NETWORK_CLASS_LOCATIONS: Mapping[str, tuple[str, str]] = {
    "Generator": ("stylegan2_ada.networks", "Generator"),
    "Discriminator": ("stylegan2_ada.networks", "Discriminator"),
    "AugmentPipe": ("stylegan2_ada.augment", "AugmentPipe"),
}

_NETWORK_NAME_RE = re.compile(r"[A-Za-z0-9_.\-]+")
_MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024  # safetensors' own limit
_PICKLE_STOP = b"."  # the opcode every pickle ends with


class CheckpointError(ValueError):
    """A checkpoint could not be written or read; the message names the file and the problem."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """The checkpoint file does not exist."""


@dataclass
class Checkpoint:
    """What a checkpoint holds.

    Attributes:
        networks: ``'G'``, ``'D'``, ``'G_ema'``, ``'augment_pipe'`` (those present; native files may
            hold other names) -> our module, on the requested device, in eval mode with
            ``requires_grad=False`` (as upstream snapshots store them; call ``.train()`` /
            ``.requires_grad_(True)`` to train).
        tensors: free tensors (``extra/<name>`` in the file) keyed by ``<name>``, on the device. Empty for
            ``.pkl`` files.
        metadata: for native files, the ``metadata`` dict given to :func:`save_checkpoint`, unchanged.
            For ``.pkl`` files: ``training_set_kwargs`` (plain dict or ``None``), ``augment_p`` (float, if
            an augment pipe is present) and any other plain top-level entries under ``upstream_extra``.
        format: ``'native'`` or ``'upstream-pkl'``.
        path: the file read.
        provenance: when and with which versions a native file was written; ``{}`` for ``.pkl`` files.
    """

    networks: dict[str, nn.Module]
    tensors: dict[str, torch.Tensor]
    metadata: dict[str, Any]
    format: CheckpointFormat
    path: str = ""
    provenance: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------------
# Helpers.


def sha256_file(path: str | os.PathLike[str], chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes, read in ``chunk_size`` pieces."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while block := file.read(chunk_size):
            digest.update(block)
    return digest.hexdigest()


def content_sha256(tensors: Mapping[str, torch.Tensor], document: Mapping[str, Any]) -> str:
    """The content hash of a native checkpoint (module docstring): its tensors (by file name, e.g.
    ``G/synthesis.b4.const``; CPU) and its JSON document (``content_sha256`` itself left out).

    ``document`` must be as JSON gives it back (lists, string keys), so the writer hashes the parsed
    text it writes and the reader the parsed text it reads.
    """
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name]
        raw = tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8)  # [nbytes]
        entry = [name, str(tensor.dtype).removeprefix("torch."), list(tensor.shape), raw.numel()]
        digest.update(json.dumps(entry).encode("utf-8") + b"\n")
        digest.update(raw.numpy())
    body = {key: value for key, value in document.items() if key != HASH_KEY}
    digest.update(json.dumps(body, sort_keys=True, separators=(",", ":")).encode("utf-8"))
    return digest.hexdigest()


def package_version() -> str:
    """Version of this package (``stylegan2_ada.__version__``, else the installed distribution's)."""
    version = getattr(stylegan2_ada, "__version__", None)
    if isinstance(version, str):
        return version
    try:
        import importlib.metadata

        return importlib.metadata.version("spinegan")
    except Exception:  # pragma: no cover - not installed
        return "unknown"


def network_registry() -> dict[str, type[nn.Module]]:
    """Our network classes that checkpoints may name: ``{'Generator': ..., 'Discriminator': ..., 'AugmentPipe': ...}``.

    Imported lazily; a class whose module cannot be imported is left out.
    """
    registry: dict[str, type[nn.Module]] = {}
    for name in _NETWORK_CLASS_LOCATIONS:
        try:
            registry[name] = _resolve_class(name, None)
        except CheckpointError:
            continue
    return registry


def _resolve_class(class_name: str, registry: Mapping[str, type[nn.Module]] | None) -> type[nn.Module]:
    if registry is not None:
        if class_name in registry:
            return registry[class_name]
        raise CheckpointError(
            f"network class {class_name!r} is not one we can rebuild (known: {', '.join(sorted(registry))})"
        )
    if class_name not in _NETWORK_CLASS_LOCATIONS:
        raise CheckpointError(
            f"network class {class_name!r} is not one we can rebuild "
            f"(known: {', '.join(sorted(_NETWORK_CLASS_LOCATIONS))})"
        )
    module_name, attr = _NETWORK_CLASS_LOCATIONS[class_name]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise CheckpointError(f"network class {class_name!r}: cannot import {module_name}: {exc}") from exc
    cls = getattr(module, attr, None)
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise CheckpointError(f"network class {class_name!r}: {module_name}.{attr} is not an nn.Module class")
    return cls


def build_network(
    class_name: str,
    init_kwargs: Mapping[str, Any],
    *,
    registry: Mapping[str, type[nn.Module]] | None = None,
) -> nn.Module:
    """Construct our ``class_name`` from its constructor keywords (on CPU, float32).

    The global torch RNG state is left as it was.

    Unknown or missing keywords raise :class:`CheckpointError` listing them.
    """
    cls = _resolve_class(class_name, registry)
    if not isinstance(init_kwargs, Mapping):
        raise CheckpointError(
            f"{class_name}: constructor arguments must be a dict, got {type(init_kwargs).__name__}"
        )
    try:
        signature = inspect.signature(cls)
    except (TypeError, ValueError):  # pragma: no cover - builtin classes only
        signature = None
    if signature is not None:
        params = signature.parameters
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            unknown = sorted(set(init_kwargs) - set(params))
            if unknown:
                raise CheckpointError(
                    f"{class_name}: unknown constructor argument(s) {', '.join(unknown)} "
                    f"(accepted: {', '.join(p for p in params if params[p].kind is not inspect.Parameter.VAR_POSITIONAL)})"
                )
        missing = sorted(
            name
            for name, p in params.items()
            if p.default is inspect.Parameter.empty
            and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
            and name not in init_kwargs
        )
        if missing:
            raise CheckpointError(f"{class_name}: missing constructor argument(s) {', '.join(missing)}")
    try:
        # Constructors draw random initial weights (overwritten when loading): keep the caller's CPU
        # RNG stream untouched, so loading a checkpoint never changes what is sampled afterwards.
        with torch.random.fork_rng(devices=[]):
            return cls(**dict(init_kwargs))
    except (TypeError, ValueError, AssertionError, KeyError) as exc:
        raise CheckpointError(f"cannot build {class_name}(**{dict(init_kwargs)!r}): {exc}") from exc


def _load_weights(module: nn.Module, state: Mapping[str, torch.Tensor], where: str) -> None:
    try:
        module.load_state_dict(dict(state), strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{where}: weights do not fit the network: {exc}") from exc


def _finish(module: nn.Module, device: torch.device) -> nn.Module:
    return module.to(device).eval().requires_grad_(False)


# --------------------------------------------------------------------------------------------------
# Format detection.


def detect_format(path: str | os.PathLike[str]) -> CheckpointFormat:
    """``'native'`` (safetensors) or ``'upstream-pkl'`` (pickle protocol 2-5), from the file's content.

    See the module docstring for the tests; the native one comes first and reads the whole header.

    Raises:
        CheckpointNotFoundError: no such file.
        CheckpointError: unreadable, empty, truncated, a damaged safetensors header, or some other
            format (named when recognised).
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as file:
            size = os.fstat(file.fileno()).st_size
            return _classify(path, file, size)
    except FileNotFoundError:
        raise CheckpointNotFoundError(f"{path}: network file not found") from None
    except IsADirectoryError:
        raise CheckpointError(f"{path}: is a folder, not a network file") from None
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read network file: {exc.strerror or exc}") from exc


def _classify(path: str, file: BinaryIO, size: int) -> CheckpointFormat:
    head = file.read(16)
    if not head:
        raise CheckpointError(f"{path}: file is empty")
    header_len = _native_header_length(head)
    if header_len is not None:
        _check_native_layout(path, file, header_len, size)
        return "native"
    if head[0] == 0x80 and len(head) >= 2 and 2 <= head[1] <= 5:
        file.seek(-1, os.SEEK_END)
        if file.read(1) != _PICKLE_STOP:
            raise CheckpointError(
                f"{path}: truncated or damaged pickle snapshot (it does not end with pickle's STOP opcode)"
            )
        return "upstream-pkl"
    if head.startswith(b"PK\x03\x04"):
        raise CheckpointError(
            f"{path}: a zip archive (a torch.save file?), not a stylegan2_ada checkpoint or "
            "stylegan2-ada-pytorch snapshot"
        )
    if len(head) < 9:
        raise CheckpointError(f"{path}: too short to be a checkpoint ({size} bytes; truncated?)")
    raise CheckpointError(
        f"{path}: unrecognised file format (neither a safetensors checkpoint nor a pickle snapshot)"
    )


def _native_header_length(head: bytes) -> int | None:
    """The header length N if ``head`` starts like a safetensors file (8-byte little-endian N in a
    plausible range, then ``{``), else ``None``."""
    if len(head) < 9 or head[8:9] != b"{":
        return None
    (header_len,) = struct.unpack("<Q", head[:8])
    return header_len if 2 <= header_len <= _MAX_SAFETENSORS_HEADER else None


def _check_native_layout(path: str, file: BinaryIO, header_len: int, size: int) -> None:
    """The safetensors header is a JSON object whose tensors end exactly at the end of the file."""
    if 8 + header_len > size:
        raise CheckpointError(
            f"{path}: truncated safetensors file (the header runs past the end: {size} bytes)"
        )
    file.seek(8)
    try:
        header = json.loads(file.read(header_len).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise CheckpointError(f"{path}: damaged safetensors header (not valid JSON: {exc})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: damaged safetensors header (not a JSON object)")
    data_len = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if not (
            isinstance(offsets, list)
            and len(offsets) == 2
            and all(type(o) is int and o >= 0 for o in offsets)
        ):
            raise CheckpointError(
                f"{path}: damaged safetensors header (tensor {name!r} has no valid offsets)"
            )
        data_len = max(data_len, offsets[1])
    expected = 8 + header_len + data_len
    if size < expected:
        raise CheckpointError(
            f"{path}: truncated safetensors file ({size} bytes; its header describes {expected})"
        )
    if size > expected:
        raise CheckpointError(
            f"{path}: damaged safetensors file ({size - expected} unexpected bytes after the tensor data)"
        )


# --------------------------------------------------------------------------------------------------
# Saving.


def _provenance() -> dict[str, Any]:
    """When and with what a file was written: for reproducibility, nothing that names a machine or person."""
    return {
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "stylegan2_ada": package_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def _json_text(document: Any, path: str) -> str:
    def refuse(value: Any) -> Any:
        raise TypeError(f"{type(value).__name__} is not JSON-serialisable")

    try:
        return json.dumps(document, default=refuse, sort_keys=False)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: metadata cannot be stored as JSON: {exc}") from exc


def _cpu_copy(tensor: torch.Tensor, name: str, path: str) -> torch.Tensor:
    if not isinstance(tensor, torch.Tensor):
        raise CheckpointError(f"{path}: {name!r} is a {type(tensor).__name__}, not a tensor")
    if tensor.is_sparse or tensor.device.type == "meta":
        raise CheckpointError(f"{path}: {name!r} is a sparse or meta tensor, which cannot be saved")
    # A private contiguous CPU copy: safetensors refuses views and tensors that share memory.
    return tensor.detach().cpu().contiguous().clone()


def _fsync_dir(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def save_checkpoint(
    path: str | os.PathLike[str],
    *,
    networks: Mapping[str, nn.Module],
    tensors: Mapping[str, torch.Tensor] | None = None,
    metadata: Mapping[str, Any] | None = None,
    registry: Mapping[str, type[nn.Module]] | None = None,
) -> None:
    """Write ``networks`` (+ free ``tensors`` and JSON ``metadata``) to ONE safetensors file, atomically.

    Each network must be one of our classes (:func:`network_registry`, or ``registry``) with an
    ``init_kwargs`` attribute (JSON-able constructor keywords); its ``state_dict()`` tensors are stored
    bit-exactly in their own dtype, with a content hash of tensors and metadata (module docstring).
    The file is written to a temporary name in the same folder, fsynced, then renamed over ``path``, so
    readers see the old file or the complete new one.

    Args:
        path: output file (conventionally ``*.safetensors``); its folder must exist.
        networks: name (``[A-Za-z0-9_.-]+``, not ``'extra'``) -> module, e.g. ``{'G': G, 'D': D, ...}``.
        tensors: free tensors (optimizer state, RNG state, ...) by name, any shape/dtype.
        metadata: free JSON-able data (training progress, ``class_names``, ...). Returned unchanged
            by :func:`load_checkpoint`.
        registry: class name -> class, to accept classes beyond ours.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise CheckpointError(f"{path}: output folder {directory} does not exist")
    flat: dict[str, torch.Tensor] = {}
    net_doc: dict[str, Any] = {}
    for name, module in networks.items():
        if not isinstance(name, str) or not _NETWORK_NAME_RE.fullmatch(name) or name == EXTRA_PREFIX:
            raise CheckpointError(
                f"{path}: invalid network name {name!r} (letters, digits, '_', '.', '-'; not 'extra')"
            )
        class_name = type(module).__name__
        try:
            expected = _resolve_class(class_name, registry)
        except CheckpointError as exc:
            raise CheckpointError(f"{path}: network {name!r}: {exc}") from exc
        if type(module) is not expected:
            raise CheckpointError(
                f"{path}: network {name!r} is a {type(module).__module__}.{class_name}, not our "
                f"{expected.__module__}.{class_name}; it could not be rebuilt on loading"
            )
        init_kwargs = getattr(module, "init_kwargs", None)
        if not isinstance(init_kwargs, Mapping):
            raise CheckpointError(
                f"{path}: network {name!r} ({class_name}) has no init_kwargs dict; it could not be rebuilt on loading"
            )
        net_doc[name] = {"class_name": class_name, "init_kwargs": dict(init_kwargs)}
        for key, tensor in module.state_dict().items():
            flat[f"{name}/{key}"] = _cpu_copy(tensor, f"{name}/{key}", path)
    extra_names: list[str] = []
    for key, tensor in (tensors or {}).items():
        if not isinstance(key, str) or not key:
            raise CheckpointError(f"{path}: invalid tensor name {key!r}")
        flat[f"{EXTRA_PREFIX}/{key}"] = _cpu_copy(tensor, key, path)
        extra_names.append(key)
    document = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "networks": net_doc,
        "tensors": extra_names,
        "metadata": dict(metadata or {}),
        "provenance": _provenance(),
    }
    # Hash the document as a reader will parse it back (tuples as lists, keys as strings).
    document[HASH_KEY] = content_sha256(flat, json.loads(_json_text(document, path)))
    header = {METADATA_KEY: _json_text(document, path)}

    from safetensors.torch import save_file  # local: keeps import of this module light

    try:
        with atomic_path(path) as tmp:  # fsync, usual permissions, then rename
            save_file(flat, tmp, metadata=header)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot write checkpoint: {exc}") from exc
    _fsync_dir(directory)


# --------------------------------------------------------------------------------------------------
# Loading.


def load_checkpoint(
    path: str | os.PathLike[str],
    device: str | torch.device = "cpu",
    *,
    registry: Mapping[str, type[nn.Module]] | None = None,
) -> Checkpoint:
    """Load our native checkpoint or an upstream stylegan2-ada-pytorch ``.pkl`` snapshot.

    The format is detected from the content. Networks are rebuilt as our own classes on CPU, filled
    with ``load_state_dict(strict=True)`` and moved to ``device``; nothing in the file is executed.

    Raises:
        CheckpointNotFoundError: the file does not exist.
        CheckpointError: unreadable, truncated, damaged (content hash mismatch), malformed, or networks
            that cannot be rebuilt.
        legacy_pickle.UnsafePickleError: a ``.pkl`` that asks for anything outside the allow-list.
        legacy_pickle.LegacyPickleError: a malformed ``.pkl`` snapshot.
    """
    path = os.fspath(path)
    device = torch.device(device)
    fmt = detect_format(path)
    if fmt == "native":
        return _load_native(path, device, registry)
    return _load_upstream_pkl(path, device, registry)


def load_network(
    path: str | os.PathLike[str],
    device: str | torch.device = "cpu",
    *,
    registry: Mapping[str, type[nn.Module]] | None = None,
) -> dict[str, nn.Module]:
    """The networks of :func:`load_checkpoint`, keyed ``'G'``, ``'D'``, ``'G_ema'``, ``'augment_pipe'``."""
    return load_checkpoint(path, device, registry=registry).networks


def _load_native(
    path: str, device: torch.device, registry: Mapping[str, type[nn.Module]] | None
) -> Checkpoint:
    from safetensors import safe_open

    try:
        with safe_open(path, framework="pt", device="cpu") as file:
            header = file.metadata() or {}
            flat = {key: file.get_tensor(key) for key in file.keys()}
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read checkpoint: {exc}") from exc
    except Exception as exc:  # safetensors raises its own SafetensorError for bad headers/sizes
        raise CheckpointError(
            f"{path}: not a readable safetensors checkpoint (truncated or corrupt?): {exc}"
        ) from exc
    if METADATA_KEY not in header:
        raise CheckpointError(
            f"{path}: a safetensors file without our '{METADATA_KEY}' metadata (not written by "
            "stylegan2_ada.checkpoint.save_checkpoint); the network classes are unknown"
        )
    try:
        document = json.loads(header[METADATA_KEY])
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: checkpoint metadata is not valid JSON: {exc}") from exc
    if not isinstance(document, dict) or document.get("format") != FORMAT_NAME:
        raise CheckpointError(f"{path}: checkpoint metadata does not describe a '{FORMAT_NAME}'")
    version = document.get("format_version")
    if type(version) is not int or version > FORMAT_VERSION or version < 1:
        raise CheckpointError(
            f"{path}: checkpoint format version {version!r}; this version of stylegan2_ada reads "
            f"versions 1 to {FORMAT_VERSION} (a newer release wrote it?)"
        )
    _verify_content(path, flat, document, version)
    net_doc = document.get("networks")
    extra_names = document.get("tensors", [])
    metadata = document.get("metadata", {})
    if not isinstance(net_doc, dict) or not isinstance(extra_names, list) or not isinstance(metadata, dict):
        raise CheckpointError(f"{path}: malformed checkpoint metadata ('networks', 'tensors' or 'metadata')")

    per_net: dict[str, dict[str, torch.Tensor]] = {name: {} for name in net_doc}
    tensors: dict[str, torch.Tensor] = {}
    for key, tensor in flat.items():
        prefix, sep, rest = key.partition("/")
        if not sep or not rest:
            raise CheckpointError(f"{path}: tensor {key!r} has no '<network>/' or 'extra/' prefix")
        if prefix == EXTRA_PREFIX:
            tensors[rest] = tensor.to(device)
        elif prefix in per_net:
            per_net[prefix][rest] = tensor
        else:
            raise CheckpointError(f"{path}: tensor {key!r} belongs to no network listed in the metadata")
    missing_extra = sorted(set(extra_names) - set(tensors))
    if missing_extra:
        raise CheckpointError(f"{path}: listed tensors missing from the file: {', '.join(missing_extra)}")
    # safetensors stores keys sorted; restore the order they were given in.
    tensors = {**{name: tensors[name] for name in extra_names}, **tensors}

    networks: dict[str, nn.Module] = {}
    for name, spec in net_doc.items():
        if not isinstance(spec, dict) or not isinstance(spec.get("class_name"), str):
            raise CheckpointError(f"{path}: network {name!r}: malformed description {spec!r}")
        where = f"{path}: network {name!r} ({spec['class_name']})"
        try:
            module = build_network(spec["class_name"], spec.get("init_kwargs", {}), registry=registry)
        except CheckpointError as exc:
            raise CheckpointError(f"{path}: network {name!r}: {exc}") from exc
        _load_weights(module, per_net[name], where)
        networks[name] = _finish(module, device)
    provenance = document.get("provenance", {})
    return Checkpoint(
        networks=networks,
        tensors=tensors,
        metadata=metadata,
        format="native",
        path=path,
        provenance=provenance if isinstance(provenance, dict) else {},
    )


def _verify_content(path: str, flat: Mapping[str, torch.Tensor], document: dict, version: int) -> None:
    """Refuse a file whose content hash is missing (format version >= 2) or does not match."""
    expected = document.get(HASH_KEY)
    if expected is None and version < 2:
        return  # written before the hash existed
    if not isinstance(expected, str):
        raise CheckpointError(
            f"{path}: damaged checkpoint: its content hash ('{HASH_KEY}') is missing or malformed"
        )
    if content_sha256(flat, document) != expected:
        raise CheckpointError(
            f"{path}: damaged checkpoint: its tensors or metadata differ from what was written "
            "(content hash mismatch); use another copy or an earlier snapshot"
        )


def _load_upstream_pkl(
    path: str, device: torch.device, registry: Mapping[str, type[nn.Module]] | None
) -> Checkpoint:
    try:
        snapshot = legacy_pickle.read_upstream_snapshot(path)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read network file: {exc.strerror or exc}") from exc
    networks: dict[str, nn.Module] = {}
    metadata: dict[str, Any] = {"training_set_kwargs": snapshot.training_set_kwargs}
    for name, record in snapshot.networks.items():
        where = f"{path}: {name} ({record.class_name})"
        try:
            init_kwargs = legacy_pickle.record_init_kwargs(record)
        except legacy_pickle.LegacyPickleError as exc:
            raise CheckpointError(f"{path}: {name}: {exc}") from exc
        try:
            module = build_network(record.class_name, init_kwargs, registry=registry)
        except CheckpointError as exc:
            raise CheckpointError(f"{where}: {exc}") from exc
        try:
            state = legacy_pickle.record_state_dict(record)
        except legacy_pickle.LegacyPickleError as exc:
            raise CheckpointError(f"{where}: {exc}") from exc
        _load_weights(module, state, where)
        networks[name] = _finish(module, device)
        if name == "augment_pipe" and "p" in state:
            metadata["augment_p"] = float(state["p"])
    if snapshot.extra:
        metadata["upstream_extra"] = snapshot.extra
    return Checkpoint(networks=networks, tensors={}, metadata=metadata, format="upstream-pkl", path=path)
