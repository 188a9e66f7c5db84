"""Exponential moving average of the generator's weights (``G_ema``), with upstream's ramp-up."""

from __future__ import annotations

import torch
from torch import nn


def ema_beta(batch_size: int, cur_nimg: int, ema_kimg: float, ema_rampup: float | None) -> float:
    """The EMA decay for one step of ``batch_size`` images.

    ``beta = 0.5 ** (batch_size / ema_nimg)`` where ``ema_nimg = ema_kimg * 1000``, capped at
    ``cur_nimg * ema_rampup`` when a ramp-up is set (so G_ema follows G closely early on). Returns 0 when
    ``ema_nimg`` is 0 (G_ema becomes a copy of G).
    """
    ema_nimg = ema_kimg * 1000.0
    if ema_rampup is not None:
        ema_nimg = min(ema_nimg, cur_nimg * ema_rampup)
    return 0.5 ** (batch_size / max(ema_nimg, 1e-8))


@torch.no_grad()
def update_ema(G_ema: nn.Module, G: nn.Module, beta: float) -> None:
    """``G_ema <- beta * G_ema + (1 - beta) * G`` for parameters; buffers are copied as they are."""
    ema_params = list(G_ema.parameters())
    params = [p.detach() for p in G.parameters()]
    if len(ema_params) != len(params):
        raise ValueError("G_ema and G have different parameter lists")
    if ema_params:
        torch._foreach_lerp_(ema_params, params, 1.0 - beta)
    for b_ema, b in zip(G_ema.buffers(), G.buffers()):
        b_ema.copy_(b)
