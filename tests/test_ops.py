"""The pure-PyTorch ops against direct (slow, obviously correct) reference computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from stylegan2_ada.ops import (
    bias_act,
    conv2d_resample,
    downsample2d,
    filter2d,
    modulated_conv2d,
    setup_filter,
    upfirdn2d,
    upsample2d,
)


def reference_upfirdn1d(x: np.ndarray, f: np.ndarray, up: int, down: int, pad0: int, pad1: int) -> np.ndarray:
    """The module docstring's definition, one dimension, with explicit loops."""
    u = np.zeros(len(x) * up)
    u[::up] = x
    v = np.concatenate(
        [np.zeros(max(pad0, 0)), u[max(-pad0, 0) : len(u) - max(-pad1, 0)], np.zeros(max(pad1, 0))]
    )
    k = len(f)
    y = np.array([sum(f[t] * v[n + k - 1 - t] for t in range(k)) for n in range(len(v) - k + 1)])
    return y[::down]


@pytest.mark.parametrize(
    "up,down,pad0,pad1",
    [(1, 1, 1, 2), (2, 1, 2, 1), (1, 2, 1, 1), (1, 2, 2, 2), (2, 1, -1, 0), (3, 1, 1, 1), (1, 1, -1, -1)],
)
def test_upfirdn2d_matches_definition(up, down, pad0, pad1):
    rng = np.random.default_rng(0)
    f1 = rng.standard_normal(4)  # asymmetric, so flipping errors show
    x = rng.standard_normal((7, 9))
    got = upfirdn2d(
        torch.tensor(x, dtype=torch.float64)[None, None],
        torch.tensor(np.outer(f1, f1)),
        up=up,
        down=down,
        padding=[pad0, pad1, pad0, pad1],
        gain=1.5,
    )[0, 0].numpy()
    rows = np.stack([reference_upfirdn1d(r, f1, up, down, pad0, pad1) for r in x])
    want = 1.5 * np.stack([reference_upfirdn1d(c, f1, up, down, pad0, pad1) for c in rows.T]).T
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)


def test_flip_filter_correlates():
    f = torch.tensor([[1.0, 2.0], [0.0, 0.0]], dtype=torch.float64)
    x = torch.zeros(1, 1, 4, 4, dtype=torch.float64)
    x[0, 0, 1, 1] = 1
    conv = upfirdn2d(x, f, padding=1)
    corr = upfirdn2d(x, f, padding=1, flip_filter=True)
    assert not torch.equal(conv, corr)
    assert torch.equal(conv, upfirdn2d(x, f.flip([0, 1]), padding=1, flip_filter=True))


def test_resampling_sizes_and_dc_gain():
    f = setup_filter([1, 3, 3, 1])
    assert f.shape == (4, 4) and abs(float(f.sum()) - 1) < 1e-6
    x = torch.ones(2, 3, 8, 8)
    up = upsample2d(x, f)
    down = downsample2d(x, f)
    same = filter2d(x, f)
    assert up.shape == (2, 3, 16, 16) and down.shape == (2, 3, 4, 4) and same.shape == x.shape
    # Away from the zero-padded borders a constant stays constant (unit DC gain).
    assert torch.allclose(up[..., 2:-2, 2:-2], torch.ones(1)) and torch.allclose(
        down[..., 1:-1, 1:-1], torch.ones(1)
    )


@pytest.mark.parametrize("up,down,k", [(1, 1, 3), (2, 1, 3), (1, 2, 3), (2, 1, 1), (1, 2, 1)])
@pytest.mark.parametrize("flip_weight", [True, False])
def test_conv2d_resample_equals_resample_then_conv(up, down, k, flip_weight):
    """conv2d_resample == upsample2d -> conv (padding k//2) -> downsample2d, the slow composition.

    The two differ only in where intermediate results are cut at the borders, so the input carries a
    zero margin wide enough that nothing is cut; border behaviour is pinned by the upstream parity tests.
    """
    torch.manual_seed(1)
    f = setup_filter([1, 3, 3, 1]).double()
    x = F.pad(torch.randn(2, 3, 8, 8, dtype=torch.float64), [4, 4, 4, 4])
    w = torch.randn(5, 3, k, k, dtype=torch.float64)
    got = conv2d_resample(x, w, f=f, up=up, down=down, padding=k // 2, flip_weight=flip_weight)
    y = upsample2d(x, f, up=up) if up > 1 else x
    wk = w if flip_weight else w.flip([2, 3])
    y = F.conv2d(y, wk, padding=k // 2)
    want = downsample2d(y, f, down=down) if down > 1 else y
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)


def test_bias_act_order_and_clamp():
    x = torch.tensor([[-2.0, 0.5, 300.0]])
    b = torch.tensor([1.0, 1.0, 1.0])
    out = bias_act(x, b, act="lrelu", clamp=256)
    want = torch.tensor([[-0.2, 1.5, 301.0]]) * 2**0.5
    want = want.clamp(-256, 256)
    torch.testing.assert_close(out, want)
    assert torch.equal(bias_act(x), x)


@pytest.mark.parametrize("up", [1, 2])
def test_modulated_conv2d_fused_equals_nonfused_and_per_sample_reference(up):
    torch.manual_seed(2)
    f = setup_filter([1, 3, 3, 1]).double()
    x = torch.randn(3, 4, 8, 8, dtype=torch.float64)
    weight = torch.randn(6, 4, 3, 3, dtype=torch.float64)
    styles = torch.randn(3, 4, dtype=torch.float64)
    noise = torch.randn(3, 1, 8 * up, 8 * up, dtype=torch.float64)
    kwargs = dict(noise=noise, up=up, padding=1, resample_filter=f, flip_weight=(up == 1))
    a = modulated_conv2d(x, weight, styles, fused_modconv=False, **kwargs)
    b = modulated_conv2d(x, weight, styles, fused_modconv=True, **kwargs)
    # Per-sample reference with explicitly materialised, demodulated kernels.
    refs = []
    for n in range(3):
        wn = weight * styles[n].reshape(1, -1, 1, 1)
        wn = wn / (wn.square().sum(dim=[1, 2, 3], keepdim=True) + 1e-8).sqrt()
        refs.append(
            conv2d_resample(x[n : n + 1], wn, f=f, up=up, padding=1, flip_weight=(up == 1)) + noise[n]
        )
    ref = torch.cat(refs)
    torch.testing.assert_close(a, ref, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(b, ref, rtol=1e-9, atol=1e-9)


def test_ops_twice_differentiable_and_vmappable():
    f = setup_filter([1, 3, 3, 1]).double()
    x = torch.randn(2, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    s = torch.randn(2, 2, dtype=torch.float64, requires_grad=True)

    def fn(x, w, s):
        y = modulated_conv2d(x, w, s, up=2, padding=1, resample_filter=f, flip_weight=False)
        y = bias_act(y, act="lrelu")
        return conv2d_resample(y, w, f=f, down=2, padding=1).square().sum()

    assert torch.autograd.gradgradcheck(fn, (x, w, s), eps=1e-6, atol=1e-4, fast_mode=True)

    # torch.func: per-sample gradients w.r.t. the weight.
    def single(w, xi, si):
        return fn(xi[None], w, si[None])

    per_sample = torch.func.vmap(torch.func.grad(single), in_dims=(None, 0, 0))(
        w.detach(), x.detach(), s.detach()
    )
    loop = torch.stack([torch.func.grad(single)(w.detach(), x[i].detach(), s[i].detach()) for i in range(2)])
    torch.testing.assert_close(per_sample, loop)


@pytest.mark.parametrize("demodulate", [True, False])
@pytest.mark.parametrize("channels_last", [False, True])
def test_pointwise_modulated_conv2d_matches_per_sample_reference(demodulate, channels_last):
    """A 1x1 kernel without resampling (ToRGB) runs as a batched matrix product: same values, with bias,
    noise and gain, in either activation layout (and the output keeps the layout)."""
    torch.manual_seed(3)
    x = torch.randn(3, 5, 6, 6, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    weight = torch.randn(2, 5, 1, 1, dtype=torch.float64)
    styles = torch.randn(3, 5, dtype=torch.float64)
    bias = torch.randn(2, dtype=torch.float64)
    noise = torch.randn(3, 1, 6, 6, dtype=torch.float64)
    got = modulated_conv2d(x, weight, styles, noise=noise, demodulate=demodulate, bias=bias, gain=0.7)
    refs = []
    for n in range(3):
        wn = weight * styles[n].reshape(1, -1, 1, 1)
        if demodulate:
            wn = wn / (wn.square().sum(dim=[1, 2, 3], keepdim=True) + 1e-8).sqrt()
        refs.append((F.conv2d(x[n : n + 1], wn) + noise[n] + bias.reshape(-1, 1, 1)) * 0.7)
    torch.testing.assert_close(got, torch.cat(refs), rtol=1e-9, atol=1e-9)
    assert got.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


@pytest.mark.parametrize("up", [1, 2])
@pytest.mark.parametrize("fused", [False, True])
def test_modulated_conv2d_inference_path_equals_autograd_path_and_spares_inputs(up, fused):
    """Without autograd the epilogue works in place on the convolution's own output: same values as with
    autograd, the inputs untouched, NHWC activations stay NHWC."""
    torch.manual_seed(4)
    f = setup_filter([1, 3, 3, 1])
    x = torch.randn(2, 4, 8, 8).contiguous(memory_format=torch.channels_last)
    weight, styles = torch.randn(6, 4, 3, 3), torch.randn(2, 4)
    bias, noise = torch.randn(6), torch.randn(8 * up, 8 * up)
    inputs = [t.clone() for t in (x, weight, styles, bias, noise)]
    kwargs = dict(
        noise=noise, up=up, padding=1, resample_filter=f, flip_weight=(up == 1), bias=bias, gain=1.4
    )
    with_grad = modulated_conv2d(x, weight, styles, fused_modconv=fused, **kwargs)
    with torch.no_grad():
        without = modulated_conv2d(x, weight, styles, fused_modconv=fused, **kwargs)
    torch.testing.assert_close(without, with_grad, rtol=1e-6, atol=1e-6)
    for before, after in zip(inputs, (x, weight, styles, bias, noise)):
        assert torch.equal(before, after)
    if not fused:
        assert with_grad.is_contiguous(memory_format=torch.channels_last)
        assert without.is_contiguous(memory_format=torch.channels_last)
