"""The classifier architectures a model file may name: a fixed allow-list, rebuilt by name, never unpickled.

=============  ==============================================  ===========  ========  ==============
name           network                                         in_channels  features  head attribute
=============  ==============================================  ===========  ========  ==============
``small``      :class:`SmallCNN` (ours, for 16-512 px, CPU)    1 or 3       8*width   ``head``
``resnet18``   ``torchvision.models.resnet18``                 3            512       ``fc``
``resnet50``   ``torchvision.models.resnet50``                 3            2048      ``fc``
``densenet121`` ``torchvision.models.densenet121``             3            1024      ``classifier``
=============  ==============================================  ===========  ========  ==============

Every network maps ``[N, in_channels, S, S]`` (already normalised, see :mod:`classification.transform`)
to logits ``[N, num_outputs]``; its last layer is a ``Linear`` (the *head*) whose input is the
penultimate feature vector (:func:`penultimate_features`). torchvision networks are built with
``weights=None`` and ``num_classes=num_outputs``, so their state-dict keys are exactly torchvision's:
a ``resnet18`` whose ``fc`` was replaced by ``Linear(512, 1)`` loads as our ``resnet18``. Nothing is
ever downloaded; ImageNet weights come from a local file (:func:`load_pretrained_backbone`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

__all__ = [
    "ARCHITECTURES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ArchSpec",
    "SmallCNN",
    "arch_spec",
    "build_network",
    "head_of",
    "load_pretrained_backbone",
    "penultimate_features",
]

#: torchvision's ImageNet normalisation (what its pretrained weights expect), for [0, 1] RGB values.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class SmallCNN(nn.Module):
    """A small CNN for ``[N, in_channels, S, S]`` images, ``16 <= S <= 512``: fast on a CPU.

    A 3x3 stem (stride 2 when ``S >= 128``), then ``stages = clamp(log2(S) - 3, 1, 5)`` stages of
    ``conv 3x3 -> BatchNorm -> ReLU -> max-pool 2``, doubling the channels from ``width`` (at most
    ``16 * width``), so that the last map is about 4-8 px; global average pooling gives the feature
    vector ``[N, F]`` (``F`` = :attr:`num_features`), then dropout and the linear :attr:`head`.
    Width 16, multiply-accumulates per image: 0.01 G at 32 px, 0.06 G at 64-128 px, 0.30 G at 256 px
    (ResNet-18 at 224 px: 1.8 G, DenseNet-121: 2.8 G); 23k parameters at 32 px, 0.4 M at 256 px.
    """

    def __init__(self, in_channels: int, num_outputs: int, input_size: int, width: int = 16) -> None:
        super().__init__()
        if in_channels not in (1, 3):
            raise ValueError(f"SmallCNN takes 1 or 3 input channels, not {in_channels}")
        if not 16 <= input_size <= 512:
            raise ValueError(f"SmallCNN is for input sizes 16 to 512 px, not {input_size}")
        if not 4 <= width <= 128:
            raise ValueError(f"SmallCNN width must be 4 to 128, not {width}")
        stem_stride = 2 if input_size >= 128 else 1
        stages = min(5, max(1, int(math.log2(input_size / stem_stride)) - 3))
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, width, 3, stride=stem_stride, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        ]
        channels = width
        for i in range(stages):
            out = min(width * 2 ** (i + 1), 16 * width)
            layers += [
                nn.Conv2d(channels, out, 3, padding=1, bias=False),
                nn.BatchNorm2d(out),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
            channels = out
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(0.2)
        self.head = nn.Linear(channels, num_outputs)
        self.num_features = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, C, S, S]`` -> logits ``[N, num_outputs]``."""
        return self.head(self.dropout(self.pool(self.features(x)).flatten(1)))


def _build_small(num_outputs: int, in_channels: int, input_size: int, width: int = 16) -> nn.Module:
    return SmallCNN(in_channels, num_outputs, input_size, width=width)


def _torchvision_builder(name: str) -> Callable[..., nn.Module]:
    def build(num_outputs: int, in_channels: int, input_size: int) -> nn.Module:
        import torchvision.models  # local: torchvision takes a while to import

        if in_channels != 3:
            raise ValueError(f"{name} takes 3 input channels, not {in_channels}")
        if input_size < 32:
            raise ValueError(f"{name} needs inputs of at least 32 px, not {input_size}")
        return getattr(torchvision.models, name)(weights=None, num_classes=num_outputs)

    return build


@dataclass(frozen=True)
class ArchSpec:
    """One allow-listed architecture.

    ``build(num_outputs, in_channels, input_size, **kwargs)`` makes it with fresh weights;
    ``kwargs`` are limited to ``allowed_kwargs``. ``head`` names the final ``Linear`` attribute.
    """

    name: str
    build: Callable[..., nn.Module]
    head: str
    default_input_size: int | None  # None: the training images' size
    channels: tuple[int, ...]  # accepted in_channels
    allowed_kwargs: tuple[str, ...] = ()
    torchvision: bool = True


ARCHITECTURES: Mapping[str, ArchSpec] = {
    "small": ArchSpec("small", _build_small, "head", None, (1, 3), ("width",), torchvision=False),
    "resnet18": ArchSpec("resnet18", _torchvision_builder("resnet18"), "fc", 224, (3,)),
    "resnet50": ArchSpec("resnet50", _torchvision_builder("resnet50"), "fc", 224, (3,)),
    "densenet121": ArchSpec("densenet121", _torchvision_builder("densenet121"), "classifier", 224, (3,)),
}


def arch_spec(arch: str) -> ArchSpec:
    """The :class:`ArchSpec` of ``arch``; ``ValueError`` naming the allow-list otherwise."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; allowed: {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[arch]


def build_network(
    arch: str,
    num_outputs: int,
    in_channels: int,
    input_size: int,
    arch_kwargs: Mapping[str, Any] | None = None,
) -> nn.Module:
    """A fresh ``arch`` network (CPU, float32, train mode) with ``num_outputs`` logits.

    Weights are drawn from torch's global RNG (seed it first for reproducible runs). Raises
    ``ValueError`` for an arch outside the allow-list, unknown ``arch_kwargs`` or unusable sizes.
    """
    spec = arch_spec(arch)
    kwargs = dict(arch_kwargs or {})
    unknown = sorted(set(kwargs) - set(spec.allowed_kwargs))
    if unknown:
        allowed = ", ".join(spec.allowed_kwargs) or "none"
        raise ValueError(f"{arch}: unknown option(s) {', '.join(unknown)} (allowed: {allowed})")
    if in_channels not in spec.channels:
        raise ValueError(
            f"{arch} takes {' or '.join(map(str, spec.channels))} input channels, not {in_channels}"
        )
    if num_outputs < 1:
        raise ValueError(f"number of outputs must be at least 1, not {num_outputs}")
    return spec.build(num_outputs, in_channels, input_size, **kwargs)


def head_of(arch: str, net: nn.Module) -> nn.Linear:
    """The final ``Linear`` layer of an ``arch`` network."""
    head = getattr(net, arch_spec(arch).head)
    if not isinstance(head, nn.Linear):
        raise TypeError(f"{arch}: {arch_spec(arch).head} is a {type(head).__name__}, not a Linear layer")
    return head


def penultimate_features(arch: str, net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The input of the head, ``[N, F]``, for network input ``x`` (one forward pass, head included).

    Read through a forward pre-hook on the head, so that it follows the network's own forward exactly
    (torchvision's forwards are not duplicated here).
    """
    captured: list[torch.Tensor] = []

    def grab(_module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        captured.append(args[0])

    handle = head_of(arch, net).register_forward_pre_hook(grab)
    try:
        net(x)
    finally:
        handle.remove()
    return captured[0]


def load_pretrained_backbone(arch: str, net: nn.Module, state: Mapping[str, torch.Tensor], where: str) -> int:
    """Copy ``state`` (e.g. local ImageNet weights of the same torchvision model, as torchvision publishes
    them) into ``net``, except the head, which keeps its fresh initialisation (its shape usually differs:
    1000 ImageNet classes).

    Every non-head tensor of ``net`` must be in ``state`` with the same shape, and ``state`` may hold
    nothing else; otherwise ``ValueError`` naming ``where`` and the first few mismatches. Returns the
    number of tensors copied.
    """
    from classification.state_dicts import rename_legacy_keys

    state, _ = rename_legacy_keys(arch, state)
    head = arch_spec(arch).head + "."
    own = {k: v for k, v in net.state_dict().items() if not k.startswith(head)}
    given = {k: v for k, v in state.items() if not k.startswith(head)}
    # BatchNorm's num_batches_tracked is absent from older files and unused in eval mode: keep ours.
    missing = sorted(k for k in set(own) - set(given) if not k.endswith("num_batches_tracked"))
    unexpected = sorted(set(given) - set(own))
    wrong = sorted(k for k in set(own) & set(given) if tuple(own[k].shape) != tuple(given[k].shape))
    if missing or unexpected or wrong:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
            if keys:
                parts.append(f"{len(keys)} {label} (e.g. {', '.join(keys[:3])})")
        raise ValueError(f"{where}: these weights do not fit {arch}: {'; '.join(parts)}")
    net.load_state_dict(given, strict=False)
    return len(given)
