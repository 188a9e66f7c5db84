"""Tests for the ADA augmentation pipeline and the adaptive-p controller."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from stylegan2_ada import augment_ops as ops
from stylegan2_ada import checkpoint
from stylegan2_ada.augment import (
    AUGPIPE_SPECS,
    DEFAULT_ADA_KIMG,
    DEFAULT_ADA_TARGET,
    RESUME_ADA_KIMG,
    AdaController,
    AugmentPipe,
    make_augment_pipe,
)

SINGLE_OPS = list(AUGPIPE_SPECS["bgcfnc"])  # the 15 probability multipliers
COLOUR_ONLY_OPS = {"hue", "saturation"}  # need chroma: no-ops on 1-channel images


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def smooth_images(n: int, c: int, size: int, seed: int = 0) -> torch.Tensor:
    """Smooth random images in [-1, 1]: [n, c, size, size]."""
    g = gen(seed)
    coarse = torch.rand(n, c, 4, 4, generator=g) * 2 - 1
    return F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False).clamp(-1, 1)


def pipe_for(op_or_spec: str, p: float) -> AugmentPipe:
    if op_or_spec in AUGPIPE_SPECS:
        return make_augment_pipe(op_or_spec, p=p)
    pipe = AugmentPipe(**{op_or_spec: 1})
    pipe.p.fill_(p)
    return pipe


# ---------------------------------------------------------------------------------------------
# Specs, constructor, state dict


def test_specs_are_the_upstream_pipelines():
    assert list(AUGPIPE_SPECS) == [
        "blit",
        "geom",
        "color",
        "filter",
        "noise",
        "cutout",
        "bg",
        "bgc",
        "bgcf",
        "bgcfn",
        "bgcfnc",
    ]
    assert set(AUGPIPE_SPECS["blit"]) == {"xflip", "rotate90", "xint"}
    assert set(AUGPIPE_SPECS["geom"]) == {"scale", "rotate", "aniso", "xfrac"}
    assert set(AUGPIPE_SPECS["color"]) == {"brightness", "contrast", "lumaflip", "hue", "saturation"}
    chain = ["blit", "geom", "color", "filter", "noise", "cutout"]
    for k, combo in enumerate(["bg", "bgc", "bgcf", "bgcfn", "bgcfnc"]):
        expected = {}
        for part in chain[: k + 2]:
            expected.update(AUGPIPE_SPECS[part])
        assert AUGPIPE_SPECS[combo] == expected
    assert all(v == 1.0 for spec in AUGPIPE_SPECS.values() for v in spec.values())
    with pytest.raises(ValueError, match="unknown augment pipeline"):
        make_augment_pipe("bgx")


def test_constructor_defaults_and_init_kwargs_roundtrip():
    pipe = AugmentPipe()
    expected_defaults = dict(
        xint_max=0.125,
        scale_std=0.2,
        rotate_max=1.0,
        aniso_std=0.2,
        xfrac_std=0.125,
        brightness_std=0.2,
        contrast_std=0.5,
        hue_max=1.0,
        saturation_std=1.0,
        imgfilter_bands=[1.0, 1.0, 1.0, 1.0],
        imgfilter_std=1.0,
        noise_std=0.1,
        cutout_size=0.5,
    )
    for k, v in expected_defaults.items():
        assert pipe.init_kwargs[k] == v
        assert getattr(pipe, k) == v
    assert all(pipe.init_kwargs[k] == 0.0 for k in SINGLE_OPS)

    custom = AugmentPipe(**AUGPIPE_SPECS["bgc"], rotate_max=0.5, imgfilter_bands=[1, 0, 0, 2])
    blob = json.loads(json.dumps(custom.init_kwargs))
    rebuilt = AugmentPipe(**blob)
    assert rebuilt.init_kwargs == custom.init_kwargs
    assert rebuilt.rotate_max == 0.5 and rebuilt.xflip == 1.0 and rebuilt.noise == 0.0
    with pytest.raises(ValueError, match="imgfilter_bands"):
        AugmentPipe(imgfilter_bands=[1, 1, 1])
    with pytest.raises(ValueError, match="xflip"):
        AugmentPipe(xflip=-1)


def test_state_dict_keys_shapes_and_load():
    pipe = make_augment_pipe("bgcfnc", p=0.0)
    sd = pipe.state_dict()
    assert set(sd) == {"p", "Hz_geom", "Hz_fbank"}
    assert sd["p"].shape == () and sd["Hz_geom"].shape == (12,) and sd["Hz_fbank"].shape == (4, 43)
    assert all(t.dtype == torch.float32 for t in sd.values())

    other = {k: v.clone() for k, v in sd.items()}
    other["p"] = torch.tensor(0.25)
    fresh = AugmentPipe(**AUGPIPE_SPECS["bgc"])
    fresh.load_state_dict(other, strict=True)
    assert float(fresh.p) == 0.25
    assert torch.equal(fresh.Hz_geom, sd["Hz_geom"]) and torch.equal(fresh.Hz_fbank, sd["Hz_fbank"])


def test_wavelet_constants_are_orthonormal_and_hz_geom_is_normalised_sym6():
    # An orthonormal wavelet low-pass filter has sum sqrt(2) and is orthogonal to its even shifts;
    # this catches any mistyped coefficient.
    for coeffs in (ops.SYM6_DEC_LO, ops.SYM2_DEC_LO):
        h = torch.tensor(coeffs, dtype=torch.float64)
        assert abs(float(h.sum()) - math.sqrt(2)) < 1e-12
        for shift in range(0, h.numel(), 2):
            dot = float((h[shift:] * h[: h.numel() - shift]).sum())
            assert abs(dot - (1.0 if shift == 0 else 0.0)) < 1e-12
    # sym2 closed form (Daubechies D4 reversed).
    r3, r2 = math.sqrt(3), math.sqrt(2)
    closed = [(1 - r3) / (4 * r2), (3 - r3) / (4 * r2), (3 + r3) / (4 * r2), (1 + r3) / (4 * r2)]
    assert max(abs(a - b) for a, b in zip(ops.SYM2_DEC_LO, closed)) < 1e-12

    pipe = AugmentPipe()
    sym6 = torch.tensor(ops.SYM6_DEC_LO, dtype=torch.float64)
    torch.testing.assert_close(pipe.Hz_geom.double(), sym6 / sym6.sum(), atol=1e-6, rtol=0)
    assert abs(float(pipe.Hz_geom.sum()) - 1) < 1e-6


def test_hz_fbank_construction_properties():
    fb = AugmentPipe().Hz_fbank.double()  # [4, 43]
    assert fb.shape == (4, 43)
    # Band 0 is the low-pass (unit DC gain), bands 1-3 reject DC, band 3 is the finest.
    torch.testing.assert_close(
        fb.sum(dim=1), torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=torch.float64), atol=1e-6, rtol=0
    )
    # Every band is symmetric (zero phase) around tap 21.
    torch.testing.assert_close(fb, fb.flip(1), atol=1e-7, rtol=0)
    # Perfect reconstruction: the bands sum to a unit impulse at the centre tap.
    impulse = torch.zeros(43, dtype=torch.float64)
    impulse[21] = 1
    torch.testing.assert_close(fb.sum(dim=0), impulse, atol=1e-6, rtol=0)
    # sym2's half-band pair is the 4-point interpolating filter [-1 0 9 16 9 0 -1] / 32 and its mirror.
    hi = torch.tensor([1, 0, -9, 16, -9, 0, 1], dtype=torch.float64) / 32
    torch.testing.assert_close(fb[3, 18:25], hi, atol=1e-7, rtol=0)
    assert fb[3, :18].abs().max() < 1e-7 and fb[3, 25:].abs().max() < 1e-7
    # Band 2 is one octave lower: its support spans 19 taps (9..33), band 3 spans 7.
    assert fb[2, :12].abs().max() < 1e-7 and fb[2, 31:].abs().max() < 1e-7 and fb[2, 12].abs() > 1e-4
    # Frequency responses: band 0 passes DC, band 3 passes Nyquist.
    k = torch.arange(43, dtype=torch.float64) - 21
    nyquist = (fb * torch.cos(math.pi * k)).sum(dim=1)
    torch.testing.assert_close(
        nyquist, torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=torch.float64), atol=1e-6, rtol=0
    )


def test_buffers_match_an_upstream_snapshot(upstream_pkl_path: Path):
    loaded = checkpoint.load_checkpoint(str(upstream_pkl_path))
    assert "augment_pipe" in loaded.networks
    upstream = loaded.networks["augment_pipe"].state_dict()
    ours = make_augment_pipe("bgcfnc", p=0.25)
    ours.load_state_dict(upstream, strict=True)
    assert abs(float(ours.p) - 0.25) < 1e-6
    fresh = AugmentPipe()
    torch.testing.assert_close(upstream["Hz_geom"].float(), fresh.Hz_geom, atol=1e-6, rtol=0)
    torch.testing.assert_close(upstream["Hz_fbank"].float(), fresh.Hz_fbank, atol=1e-6, rtol=0)


# ---------------------------------------------------------------------------------------------
# Forward behaviour


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("name", SINGLE_OPS + [s for s in AUGPIPE_SPECS if s not in SINGLE_OPS])
def test_p0_is_exact_identity_and_p1_keeps_shape_dtype_range(name, channels):
    x = smooth_images(6, channels, 16, seed=1)
    x_copy = x.clone()
    assert torch.equal(pipe_for(name, 0.0)(x, generator=gen(0)), x)

    y = pipe_for(name, 1.0)(x, generator=gen(0))
    assert torch.equal(x, x_copy), "input modified in place"
    assert y.shape == x.shape and y.dtype == x.dtype and y.device == x.device
    assert torch.isfinite(y).all()
    assert y.abs().max() < 12 and y.abs().mean() < 3


@pytest.mark.parametrize("op", SINGLE_OPS)
def test_each_op_alone_at_p1_changes_images(op):
    x = smooth_images(8, 3, 16, seed=2)
    y = pipe_for(op, 1.0)(x, generator=gen(3))
    changed = (y - x).flatten(1).abs().amax(dim=1) > 1e-4
    assert changed.any(), f"{op} at p=1 changed nothing"
    if op in COLOUR_ONLY_OPS:  # skipped on 1-channel images, without error
        x1 = smooth_images(4, 1, 16, seed=2)
        assert torch.equal(pipe_for(op, 1.0)(x1, generator=gen(3)), x1)


@pytest.mark.parametrize("spec", ["blit", "bgcfnc"])
def test_one_channel_stays_one_channel(spec):
    x = smooth_images(4, 1, 32, seed=4)
    y = make_augment_pipe(spec, p=1.0)(x, generator=gen(5))
    assert y.shape == (4, 1, 32, 32)


def test_non_square_images_keep_their_shape():
    x = torch.rand(4, 3, 12, 20, generator=gen(30)) * 2 - 1
    y = make_augment_pipe("bgcfnc", p=1.0)(x, generator=gen(31))
    assert y.shape == x.shape and torch.isfinite(y).all()


def test_xflip_flips_about_half_the_samples_exactly():
    x = torch.randn(64, 3, 8, 8, generator=gen(6))
    y = pipe_for("xflip", 1.0)(x, generator=gen(7))
    same = torch.tensor([torch.equal(y[i], x[i]) for i in range(64)])
    flipped = torch.tensor([torch.equal(y[i], x[i].flip(-1)) for i in range(64)])
    assert (same | flipped).all()
    assert 16 <= int(flipped.sum()) <= 48


def test_rotate90_is_an_exact_quarter_turn():
    x = torch.randn(32, 1, 8, 8, generator=gen(8))
    y = pipe_for("rotate90", 1.0)(x, generator=gen(9))
    turns = []
    for i in range(32):
        hits = [k for k in range(4) if torch.equal(y[i], torch.rot90(x[i], k, dims=(1, 2)))]
        assert hits, f"sample {i} is not a 90-degree rotation of its input"
        turns.append(hits[0])
    assert len(set(turns)) == 4


def test_xint_is_an_integer_shift_with_mirrored_borders():
    n, size = 16, 16
    x = torch.randn(n, 1, size, size, generator=gen(10))
    y = pipe_for("xint", 1.0)(x, generator=gen(11))
    max_shift = round(0.125 * size)
    pad = max_shift
    padded = ops.reflect_pad(x, pad, pad, pad, pad)
    shifts = set()
    for i in range(n):
        found = [
            (dx, dy)
            for dx in range(-max_shift, max_shift + 1)
            for dy in range(-max_shift, max_shift + 1)
            if torch.equal(y[i], padded[i, :, pad - dy : pad - dy + size, pad - dx : pad - dx + size])
        ]
        assert found, f"sample {i} is not an integer shift of its input"
        shifts.add(found[0])
    assert len(shifts) > 3


def test_probability_multiplier_scales_with_p():
    x = smooth_images(300, 1, 8, seed=12)
    for op, p in (("noise", 0.3), ("rotate", 0.4), ("brightness", 0.7)):
        y = pipe_for(op, p)(x, generator=gen(13))
        frac = float(((y - x).flatten(1).abs().amax(dim=1) > 1e-6).float().mean())
        assert abs(frac - p) < 0.1, (op, p, frac)


def test_noise_statistics():
    x = torch.zeros(512, 1, 16, 16)
    y = pipe_for("noise", 1.0)(x, generator=gen(14))
    # sigma ~ |N(0,1)| * 0.1, so E|y - x| = 0.1 * E|N(0,1)|^2 = 0.1 * 2 / pi.
    expected = 0.1 * 2 / math.pi
    assert abs(float(y.abs().mean()) - expected) < 0.2 * expected
    per_sample_std = y.flatten(1).std(dim=1)
    assert abs(float(per_sample_std.mean()) - 0.1 * math.sqrt(2 / math.pi)) < 0.02
    # Noise is independent per pixel and channel: no two channels identical.
    y3 = pipe_for("noise", 1.0)(torch.zeros(4, 3, 8, 8), generator=gen(15))
    assert not torch.equal(y3[:, 0], y3[:, 1])


def test_cutout_zeroes_one_rectangle_of_at_most_a_quarter():
    x = torch.rand(64, 2, 16, 16, generator=gen(16)) + 0.5  # strictly positive
    y = pipe_for("cutout", 1.0)(x, generator=gen(17))
    zero = y == 0
    assert torch.equal(zero[:, 0], zero[:, 1])  # same mask for every channel
    frac = zero[:, 0].flatten(1).float().mean(dim=1)
    assert (frac > 0).all() and (frac <= 0.25 + 1e-6).all()
    assert float(frac.mean()) > 0.1
    for i in range(8):
        rows = zero[i, 0].any(dim=1).nonzero().flatten()
        cols = zero[i, 0].any(dim=0).nonzero().flatten()
        box = zero[i, 0, rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
        assert box.all(), "cutout region is not a rectangle"
    kept = ~zero
    assert torch.equal(y[kept], x[kept])


def test_colour_ops_on_one_channel_are_affine_per_sample():
    x = smooth_images(16, 1, 8, seed=18)
    y = pipe_for("brightness", 1.0)(x, generator=gen(19))
    d = (y - x).flatten(1)
    assert (d.amax(1) - d.amin(1)).abs().max() < 1e-5  # constant offset per sample
    assert d[:, 0].std() > 0.05

    y = pipe_for("contrast", 1.0)(x, generator=gen(20))
    ratio = (y / x).flatten(1)
    assert (ratio.amax(1) - ratio.amin(1)).abs().max() < 1e-3 * ratio.abs().amax()

    y = pipe_for("lumaflip", 1.0)(x, generator=gen(21))
    neg = torch.tensor([torch.allclose(y[i], -x[i], atol=1e-6) for i in range(16)])
    pos = torch.tensor([torch.equal(y[i], x[i]) for i in range(16)])
    assert (neg | pos).all() and neg.any() and pos.any()


def test_colour_ops_on_rgb_act_on_luma_and_chroma_as_expected():
    x = smooth_images(16, 3, 8, seed=22)
    luma = x.mean(dim=1)
    for op in ("hue", "saturation"):  # rotate / scale around the grey axis: luma is untouched
        y = pipe_for(op, 1.0)(x, generator=gen(23))
        torch.testing.assert_close(y.mean(dim=1), luma, atol=1e-5, rtol=0)
        assert (y - x).abs().max() > 0.05
    y = pipe_for("hue", 1.0)(x, generator=gen(24))  # rotation keeps the chroma magnitude
    chroma_in = (x - x.mean(1, keepdim=True)).norm(dim=1)
    chroma_out = (y - y.mean(1, keepdim=True)).norm(dim=1)
    torch.testing.assert_close(chroma_out, chroma_in, atol=1e-5, rtol=0)
    y = pipe_for("brightness", 1.0)(x, generator=gen(25))  # same offset on all channels and pixels
    d = (y - x).flatten(1)
    assert (d.amax(1) - d.amin(1)).abs().max() < 1e-5


def test_colour_ops_reject_unsupported_channel_counts_but_geometry_works():
    x = smooth_images(2, 2, 8)
    with pytest.raises(ValueError, match="1 or 3 image channels"):
        pipe_for("brightness", 1.0)(x)
    assert pipe_for("bg", 1.0)(x).shape == x.shape


def test_rejects_non_image_inputs():
    pipe = make_augment_pipe("bgc", p=1.0)
    with pytest.raises(ValueError, match="N, C, H, W"):
        pipe(torch.zeros(3, 8, 8))
    with pytest.raises(ValueError, match="floating point"):
        pipe(torch.zeros(1, 1, 8, 8, dtype=torch.uint8))


def test_generator_makes_draws_reproducible():
    pipe = make_augment_pipe("bgcfnc", p=0.8)
    x = smooth_images(4, 3, 16)
    a = pipe(x, generator=gen(42))
    b = pipe(x, generator=gen(42))
    c = pipe(x, generator=gen(43))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_resample_keeps_warps_centred_and_is_near_identity_without_warp():
    size = 32
    c = (size - 1) / 2
    ys, xs = torch.meshgrid(torch.arange(size) - c, torch.arange(size) - c, indexing="ij")
    blob = torch.exp(-(xs.square() + ys.square()) / (2 * 4.0**2))[None, None].double()
    one = torch.ones(1, dtype=torch.float64)
    f = ops.geom_lowpass_filter()

    ident = ops.resample(blob, ops.scale2d(one, one), f)
    assert (ident - blob).abs().max() < 1e-5

    scaled = ops.resample(blob, ops.scale2d(one / 1.5, one / 1.5), f)[0, 0]
    mass = scaled.sum()
    cx, cy = float((scaled * xs).sum() / mass), float((scaled * ys).sum() / mass)
    assert abs(cx) < 0.1 and abs(cy) < 0.1
    spread = float(((scaled * xs.square()).sum() / mass).sqrt())
    assert abs(spread / 4.0 - 1.5) < 0.05

    # A quarter turn through the resampler agrees with the exact pixel blit on smooth content.
    off_centre = torch.exp(-((xs - 5).square() + (ys + 3).square()) / (2 * 3.0**2))[None, None].double()
    quarter = ops.rotate2d(one * math.pi / 2).round()
    torch.testing.assert_close(
        ops.resample(off_centre, quarter, f), ops.blit(off_centre, quarter), atol=0.03, rtol=0
    )


def test_reflect_index_matches_torch_reflect_padding_and_extends_it():
    x = torch.arange(5.0)[None, None, None, :].expand(1, 1, 2, 5)
    torch.testing.assert_close(ops.reflect_pad(x, 3, 2, 1, 1), F.pad(x, (3, 2, 1, 1), mode="reflect"))
    idx = ops.reflect_index(torch.arange(-6, 10), 4)
    assert idx.tolist() == [0, 1, 2, 3, 2, 1, 0, 1, 2, 3, 2, 1, 0, 1, 2, 3]


# ---------------------------------------------------------------------------------------------
# Gradients


@pytest.mark.parametrize("channels", [1, 3])
def test_r1_double_backward_through_the_full_pipeline(channels):
    torch.manual_seed(0)
    disc = torch.nn.Sequential(
        torch.nn.Conv2d(channels, 4, 3, padding=1), torch.nn.Softplus(), torch.nn.Conv2d(4, 1, 16)
    )
    pipe = make_augment_pipe("bgcfnc", p=1.0)
    x = smooth_images(4, channels, 16).requires_grad_(True)
    logits = disc(pipe(x, generator=gen(1)))
    (grad,) = torch.autograd.grad(logits.sum(), x, create_graph=True)
    penalty = grad.square().sum(dim=(1, 2, 3)).mean()
    penalty.backward()
    w = disc[0].weight.grad
    assert w is not None and torch.isfinite(w).all() and w.abs().sum() > 0
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_gradients_are_correct_to_second_order():
    pipe = make_augment_pipe("bgcfnc", p=1.0).double()

    def fn(images: torch.Tensor) -> torch.Tensor:
        return torch.tanh(pipe(images, generator=gen(7)))  # tanh: make the 2nd derivative non-trivial

    x = smooth_images(2, 3, 8).double().requires_grad_(True)
    # fast_mode checks random projections of the Jacobians (the full ones take minutes).
    assert torch.autograd.gradcheck(fn, (x,), eps=1e-6, atol=1e-5, fast_mode=True)
    assert torch.autograd.gradgradcheck(fn, (x,), eps=1e-6, atol=1e-5, fast_mode=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available")
def test_cuda_forward_and_double_backward():
    pipe = make_augment_pipe("bgcfnc", p=1.0).cuda()
    x = smooth_images(4, 3, 16).cuda().requires_grad_(True)
    y = pipe(x, generator=torch.Generator(device="cuda").manual_seed(0))
    assert y.device.type == "cuda" and y.shape == x.shape
    (grad,) = torch.autograd.grad(y.square().sum(), x, create_graph=True)
    grad.square().sum().backward()
    assert torch.isfinite(x.grad).all()
    assert torch.equal(make_augment_pipe("bgcfnc", p=0.0).cuda()(x), x)


# ---------------------------------------------------------------------------------------------
# Adaptive p


def test_ada_controller_moves_p_towards_the_target():
    pipe = make_augment_pipe("bgc", p=0.5)
    ada = AdaController(target=0.6, interval=4, kimg=500)
    step = 32 * 4 / (500 * 1000)
    assert ada.adjustment(0.9, 32) == pytest.approx(step)
    assert ada.update(pipe, 0.9, batch_size=32) == pytest.approx(0.5 + step)  # overfitting: more aug
    assert float(pipe.p) == pytest.approx(0.5 + step)
    ada.update(pipe, 0.1, batch_size=32)
    ada.update(pipe, 0.1, batch_size=32)
    assert float(pipe.p) == pytest.approx(0.5 - step, abs=1e-7)  # too little: less aug
    before = float(pipe.p)
    ada.update(pipe, 0.6, batch_size=32)
    assert float(pipe.p) == before
    assert DEFAULT_ADA_KIMG == 500 and RESUME_ADA_KIMG == 100


def test_ada_controller_keeps_p_in_unit_interval():
    pipe = make_augment_pipe("bgc", p=0.0)
    ada = AdaController(kimg=0.01)  # huge steps
    for _ in range(5):
        assert 0.0 <= ada.update(pipe, -1.0, 64) <= 1.0
    assert float(pipe.p) == 0.0
    for _ in range(5):
        assert 0.0 <= ada.update(pipe, 1.0, 64) <= 1.0
    assert float(pipe.p) == 1.0
    assert ada.update(pipe, float("nan"), 64) == 1.0  # a NaN statistic leaves p alone
    for bad in (dict(interval=0), dict(kimg=0), dict(target=2.0)):
        with pytest.raises(ValueError):
            AdaController(**bad)


def test_ada_controller_state_round_trips_through_json():
    pipe = make_augment_pipe("bgc", p=0.2)
    ada = AdaController(target=0.7, interval=4, kimg=100)
    for _ in range(2):
        ada.update(pipe, 1.0, batch_size=16)  # all real logits positive: 1 > 0.7, so p grows
    assert float(pipe.p) == pytest.approx(0.2 + 2 * 16 * 4 / (100 * 1000))
    assert ada.last_signs == 1.0 and ada.num_updates == 2

    state = json.loads(json.dumps(ada.state_dict()))
    resumed = AdaController()
    resumed.load_state_dict({**state, "steps": 8})  # older snapshots also stored a step counter
    assert (resumed.target, resumed.interval, resumed.kimg, resumed.num_updates) == (0.7, 4, 100.0, 2)
    assert resumed.last_signs == 1.0
    resumed.update(pipe, -1.0, batch_size=16)
    assert float(pipe.p) == pytest.approx(0.2 + 16 * 4 / (100 * 1000))
    assert AdaController().target == DEFAULT_ADA_TARGET == 0.6
