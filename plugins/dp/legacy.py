"""The original SpineGAN "differential privacy" mechanism, as a labelled ablation. NOT differentially private.

What the original training loop did after each phase's backward, for the phase's module (G or D):

1. add N(0, 0.02^2) to every coordinate of the accumulated gradient (absolute noise, not sigma * C);
2. THEN clip the whole module's gradient to norm 1.5 (``torch.nn.utils.clip_grad_norm_``);
3. step the optimizer.

Noise before clipping and whole-batch clipping bound nothing per example, so no privacy guarantee
follows (its own accounting at delta = 1/N gives epsilon of about 7e9); with ~24M parameters the noise
norm (about 0.02 * sqrt(24M) = 100) dwarfs the clip (1.5), so updates are almost pure noise.

Scale: the original SUMMED gradients over accumulation rounds where this toolkit's loop averages them,
so :func:`legacy_noise_then_clip` first multiplies the gradient by ``rounds`` (the number of
accumulation rounds of the phase) to restore the original's scale, then adds noise and clips, and leaves
the result on that scale, which is what the original's optimizer saw. Ablations: ``clip=False`` (noise
only), ``noise_std=0`` (clip only).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

NOT_PRIVATE = "legacy mode: the original SpineGAN mechanism, NOT differentially private (no guarantee)"
ORIGINAL_NOISE_STD = 0.02
ORIGINAL_MAX_NORM = 1.5


def legacy_noise_then_clip(
    parameters: nn.Module | Iterable[nn.Parameter],
    *,
    rounds: int = 1,
    noise_std: float = ORIGINAL_NOISE_STD,
    max_norm: float = ORIGINAL_MAX_NORM,
    clip: bool = True,
    generator: torch.Generator | None = None,
) -> float:
    """Apply the original mechanism in place to the ``.grad`` of ``parameters`` (those with one).

    Args:
        parameters: a module (its parameters) or parameters, with gradients already accumulated.
        rounds: accumulation rounds the gradient was averaged over (rescaled to the original's sum).
        noise_std: per-coordinate noise standard deviation (0: no noise).
        max_norm: whole-module clip norm; ``clip=False`` skips clipping.
        generator: source of the noise, on the gradients' device (default: torch's global one).

    Returns the total gradient norm before clipping (after the noise), as ``clip_grad_norm_`` reports it.
    """
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1; got {rounds}")
    if noise_std < 0:
        raise ValueError(f"noise_std must be >= 0; got {noise_std}")
    params = list(parameters.parameters() if isinstance(parameters, nn.Module) else parameters)
    grads = [p.grad for p in params if p.grad is not None]
    for g in grads:
        if rounds != 1:
            g.mul_(rounds)
        if noise_std > 0:
            g.add_(torch.randn(g.shape, generator=generator, device=g.device, dtype=g.dtype), alpha=noise_std)
    if not grads:
        return 0.0
    if clip:
        return float(torch.nn.utils.clip_grad_norm_([p for p in params if p.grad is not None], max_norm))
    return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])))
