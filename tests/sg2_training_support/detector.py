"""A tiny TorchScript feature extractor for ``--metrics ... --detector PATH`` in tests."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn


class TinyDetector(nn.Module):
    """Upstream's detector convention: uint8-range [N, 3, H, W] in, [N, 16] features out."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=2)

    def forward(self, img: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        x = torch.relu(self.conv(img.to(torch.float32) / 127.5 - 1))
        return torch.cat([x.mean(dim=(2, 3)), x.amax(dim=(2, 3))], dim=1)


def script(module: nn.Module, path: Path) -> Path:
    """Save ``module`` as TorchScript at ``path`` (returned)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit's deprecation notices
        torch.jit.script(module.eval()).save(str(path))
    return path
