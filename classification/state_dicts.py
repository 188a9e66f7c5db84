"""Weights from other people's files -> the state dict of an allow-listed architecture.

Users arrive with weights saved in several layouts; this module turns them into exactly the tensors of
:func:`classification.models.build_network` (nothing here unpickles: inputs are plain tensor mappings).

* Wrappers: a checkpoint dict holding the weights under ``state_dict``, ``model_state_dict``, ``model``
  or ``net``; keys prefixed ``module.`` (``DataParallel`` / ``DistributedDataParallel``).
* A backbone followed by linear layers, ``nn.Sequential(backbone, Linear, ..., [Sigmoid])`` as the
  original SpineGAN saved it (DenseNet-121 with its 1000-class ImageNet layer, then ``Linear(1000, 1)``,
  then ``Sigmoid``): keys ``0.<backbone>`` and ``1.weight``, ``1.bias``, ... The linear layers carry
  no activation between them, so they compose exactly into one head:
  ``W = W_m ... W_1 W_0``, ``b = W_m (... (W_1 b_0 + b_1) ...) + b_m``. Indices must be consecutive
  (a gap means a parameter-free layer, e.g. a ReLU, sits between them, which cannot be folded). A final
  ``Sigmoid`` / ``Softmax`` has no parameters and is dropped: the head then gives the logits it was
  applied to.
* torchvision's old DenseNet key names (its published ImageNet files, e.g. ``densenet121-a639ec97.pth``,
  say ``denselayer1.norm.1.weight`` where the model has ``denselayer1.norm1.weight``): renamed.
* Two outputs for two classes (softmax training): folded to the single logit of class 1,
  ``l_1 - l_0`` (softmax over two logits is the sigmoid of their difference).

Each conversion is recorded as a short note, stored in the model file.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

from classification.models import arch_spec

__all__ = ["WRAPPER_KEYS", "canonical_state_dict", "rename_legacy_keys", "unwrap_state_dict"]

#: Keys under which checkpoint dicts commonly keep the model's weights.
WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net")
_SEQUENTIAL_KEY = re.compile(r"^(\d+)\.(.+)$")
_OLD_DENSENET_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.([12]\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$"
)


def _is_tensor_map(obj: object) -> bool:
    return (
        isinstance(obj, Mapping)
        and bool(obj)
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    )


def unwrap_state_dict(obj: object, where: str) -> tuple[dict[str, torch.Tensor], list[str]]:
    """A ``{name: tensor}`` state dict from ``obj`` (a state dict or a checkpoint dict holding one).

    Returns ``(state, notes)``. ``ValueError`` naming ``where`` when no state dict is found.
    """
    notes: list[str] = []
    if not _is_tensor_map(obj):
        if not isinstance(obj, Mapping):
            raise ValueError(f"{where}: holds a {type(obj).__name__}, not a state dict of tensors")
        found = [k for k in WRAPPER_KEYS if _is_tensor_map(obj.get(k))]
        if not found:
            keys = ", ".join(repr(k) for k in list(obj)[:8])
            raise ValueError(
                f"{where}: a dict without a state dict of tensors (top-level keys: {keys}; looked for "
                f"tensors directly or under {', '.join(WRAPPER_KEYS)})"
            )
        obj = obj[found[0]]
        notes.append(f"weights taken from the checkpoint entry {found[0]!r}")
    state = dict(obj)  # type: ignore[arg-type]
    if all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
        notes.append("'module.' prefix (DataParallel) removed")
    return state, notes


def rename_legacy_keys(
    arch: str, state: Mapping[str, torch.Tensor]
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """torchvision's old DenseNet names (``...denselayer1.norm.1.weight``) -> current (``...norm1.weight``)."""
    if arch != "densenet121":
        return dict(state), []
    renamed = {}
    for key, value in state.items():
        match = _OLD_DENSENET_KEY.match(key)
        renamed[match.group(1) + match.group(2) if match else key] = value
    changed = sum(1 for key in state if _OLD_DENSENET_KEY.match(key))
    return renamed, [f"{changed} old torchvision DenseNet key names renamed"] if changed else []


def _fold_sequential(arch: str, state: dict[str, torch.Tensor], where: str) -> tuple[dict, list[str]]:
    """``0.<backbone>`` + consecutive ``k.weight``/``k.bias`` linear layers -> backbone with one head."""
    head = arch_spec(arch).head
    parts: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        match = _SEQUENTIAL_KEY.match(key)
        if match is None:
            return state, []
        parts.setdefault(int(match.group(1)), {})[match.group(2)] = value
    if 0 not in parts or len(parts) < 2:
        return state, []
    backbone = parts.pop(0)
    indices = sorted(parts)
    if indices != list(range(1, len(indices) + 1)):
        raise ValueError(
            f"{where}: layers {indices} follow the backbone with gaps: a layer without weights (e.g. a "
            "ReLU) sits between linear layers, so they cannot be folded into one head"
        )
    weight, bias = backbone.get(f"{head}.weight"), backbone.get(f"{head}.bias")
    if weight is None or weight.ndim != 2:
        raise ValueError(f"{where}: the backbone has no linear {head!r} layer to fold the later layers into")
    w = weight.to(torch.float64)
    b = bias.to(torch.float64) if bias is not None else torch.zeros(w.shape[0], dtype=torch.float64)
    for i in indices:
        layer = parts[i]
        if set(layer) - {"weight", "bias"} or "weight" not in layer or layer["weight"].ndim != 2:
            raise ValueError(f"{where}: layer {i} after the backbone is not a linear layer ({sorted(layer)})")
        wi = layer["weight"].to(torch.float64)
        if wi.shape[1] != w.shape[0]:
            raise ValueError(f"{where}: layer {i} takes {wi.shape[1]} inputs but gets {w.shape[0]}")
        bi = (
            layer["bias"].to(torch.float64)
            if "bias" in layer
            else torch.zeros(wi.shape[0], dtype=torch.float64)
        )
        w, b = wi @ w, wi @ b + bi
    backbone[f"{head}.weight"] = w.to(weight.dtype)
    backbone[f"{head}.bias"] = b.to(weight.dtype)
    note = (
        f"nn.Sequential(backbone, {len(indices)} linear layer(s)) folded exactly into the backbone's "
        f"{head!r} layer ({weight.shape[0]} -> {w.shape[0]} outputs)"
    )
    return backbone, [note]


def canonical_state_dict(
    arch: str, state: Mapping[str, torch.Tensor], num_classes: int, where: str
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The layouts of the module docstring -> keys of our ``arch`` with ``1`` output for two classes, else
    ``num_classes``. Returns ``(state, notes)``; ``ValueError`` naming ``where`` when the head cannot be
    made to fit (the caller's strict load reports any other mismatch)."""
    head = arch_spec(arch).head
    state, notes = _fold_sequential(arch, dict(state), where)
    state, renamed = rename_legacy_keys(arch, state)
    notes += renamed
    weight, bias = state.get(f"{head}.weight"), state.get(f"{head}.bias")
    if weight is None or weight.ndim != 2:
        return state, notes  # not our layout at all: the strict load says what is missing
    expected = 1 if num_classes == 2 else num_classes
    outputs = weight.shape[0]
    if num_classes == 2 and outputs == 2:
        state[f"{head}.weight"] = weight[1:2] - weight[0:1]
        if bias is not None:
            state[f"{head}.bias"] = bias[1:2] - bias[0:1]
        notes.append("two softmax outputs folded into the one logit of class 1 (l1 - l0)")
    elif outputs != expected:
        raise ValueError(
            f"{where}: the network has {outputs} output(s) but {num_classes} class names were given "
            f"(expected {expected} output(s): one logit for two classes, else one per class)"
        )
    return state, notes
