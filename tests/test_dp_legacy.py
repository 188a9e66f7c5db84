"""The original SpineGAN mechanism (plugins.dp.legacy) against a hand computation."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from plugins.dp.legacy import NOT_PRIVATE, legacy_noise_then_clip


def module_with_grads() -> nn.Module:
    m = nn.Sequential(nn.Linear(30, 20), nn.Linear(20, 5))
    g = torch.Generator().manual_seed(1)
    for p in m.parameters():
        p.grad = torch.randn(p.shape, generator=g) * 0.3
    m[1].bias.grad = None  # a parameter without gradient is left alone
    return m


def hand(
    grads: list[torch.Tensor], rounds: int, std: float, max_norm: float | None, seed: int
) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    noisy = [g * rounds + std * torch.randn(g.shape, generator=gen) for g in grads]
    if max_norm is None:
        return noisy
    total = torch.sqrt(sum((x.double() ** 2).sum() for x in noisy))
    factor = min(1.0, max_norm / (float(total) + 1e-6))
    return [x * factor for x in noisy]


@pytest.mark.parametrize(
    "rounds, std, max_norm, clip",
    [
        (1, 0.02, 1.5, True),
        (4, 0.02, 1.5, True),
        (2, 0.02, 1.5, False),
        (3, 0.0, 1.5, True),
        (1, 0.02, 100.0, True),
    ],
)
def test_legacy_update_equals_hand_computation(rounds: int, std: float, max_norm: float, clip: bool) -> None:
    m = module_with_grads()
    before = [p.grad.clone() for p in m.parameters() if p.grad is not None]
    reported = legacy_noise_then_clip(
        m,
        rounds=rounds,
        noise_std=std,
        max_norm=max_norm,
        clip=clip,
        generator=torch.Generator().manual_seed(9),
    )
    expected = hand(before, rounds, std, max_norm if clip else None, seed=9)
    after = [p.grad for p in m.parameters() if p.grad is not None]
    for got, want in zip(after, expected):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)
    assert m[1].bias.grad is None
    noisy_norm = torch.sqrt(sum(x.square().sum() for x in hand(before, rounds, std, None, seed=9)))
    assert reported == pytest.approx(float(noisy_norm), rel=1e-5)
    if clip:
        assert float(torch.sqrt(sum(x.square().sum() for x in after))) <= max_norm * (1 + 1e-5)


def test_original_settings_make_updates_almost_pure_noise() -> None:
    """With 24M coordinates, the 0.02 noise has norm ~100: after clipping to 1.5 the gradient is ~1 %."""
    p = nn.Parameter(torch.zeros(1_000_000))
    p.grad = torch.full_like(p, 1e-4)  # signal norm 0.1
    legacy_noise_then_clip([p], generator=torch.Generator().manual_seed(0))
    assert float(p.grad.norm()) == pytest.approx(1.5, rel=1e-4)
    signal_share = float(p.grad @ torch.full_like(p, 1e-4)) / (1.5 * 0.1)
    assert abs(signal_share) < 0.05
    assert "NOT differentially private" in NOT_PRIVATE


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="rounds"):
        legacy_noise_then_clip(module_with_grads(), rounds=0)
    with pytest.raises(ValueError, match="noise_std"):
        legacy_noise_then_clip(module_with_grads(), noise_std=-1)
