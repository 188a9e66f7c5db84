"""Generator / Discriminator: upstream parity, architectures, regularisation gradients, torch.func."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stylegan2_ada.networks import Discriminator, Generator
from tests.conftest import FIXTURE_D_KWARGS, FIXTURE_G_KWARGS, tiny_d_kwargs, tiny_g_kwargs

ATOL = 1e-4


def _state(npz: dict, prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) + 1 :]: torch.from_numpy(v) for k, v in npz.items() if k.startswith(prefix + "/")}


@pytest.fixture(scope="module")
def fixture_nets(upstream_npz):
    G_ema = Generator(**FIXTURE_G_KWARGS)
    G_ema.load_state_dict(_state(upstream_npz, "G_ema"))  # strict: same names and shapes as upstream
    D = Discriminator(**FIXTURE_D_KWARGS)
    D.load_state_dict(_state(upstream_npz, "D"))
    return G_ema.eval(), D.eval()


@pytest.mark.parametrize("psi", [1.0, 0.7])
def test_mapping_matches_upstream(fixture_nets, upstream_npz, psi):
    G_ema, _ = fixture_nets
    z, c = torch.from_numpy(upstream_npz["in/z"]), torch.from_numpy(upstream_npz["in/c"])
    ws = G_ema.mapping(z, c, truncation_psi=psi)
    assert ws.shape == (8, G_ema.num_ws, 64) == tuple(upstream_npz[f"out/ws_psi{psi}"].shape)
    torch.testing.assert_close(ws, torch.from_numpy(upstream_npz[f"out/ws_psi{psi}"]), rtol=0, atol=ATOL)


@pytest.mark.parametrize("noise_mode", ["const", "none"])
@pytest.mark.parametrize("psi", [1.0, 0.7])
@pytest.mark.parametrize("fused", [False, True])
def test_images_match_upstream(fixture_nets, upstream_npz, noise_mode, psi, fused):
    G_ema, _ = fixture_nets
    z, c = torch.from_numpy(upstream_npz["in/z"]), torch.from_numpy(upstream_npz["in/c"])
    img = G_ema(z, c, truncation_psi=psi, noise_mode=noise_mode, fused_modconv=fused)
    want = torch.from_numpy(upstream_npz[f"out/img_{noise_mode}_psi{psi}"])
    assert img.shape == want.shape == (8, 1, 32, 32)
    torch.testing.assert_close(img, want, rtol=0, atol=ATOL)


def test_training_copy_matches_upstream(upstream_npz):
    G = Generator(**FIXTURE_G_KWARGS)
    G.load_state_dict(_state(upstream_npz, "G"))
    G.train()
    z, c = torch.from_numpy(upstream_npz["in/z"]), torch.from_numpy(upstream_npz["in/c"])
    w_avg_before = G.mapping.w_avg.clone()
    img = G(z, c, noise_mode="const")
    torch.testing.assert_close(img, torch.from_numpy(upstream_npz["out/G_img_const"]), rtol=0, atol=ATOL)
    assert not torch.equal(G.mapping.w_avg, w_avg_before), "training mode must move w_avg"


def test_discriminator_matches_upstream(fixture_nets, upstream_npz):
    _, D = fixture_nets
    c = torch.from_numpy(upstream_npz["in/c"])
    real = D(torch.from_numpy(upstream_npz["in/real"]), c)
    fake = D(torch.from_numpy(upstream_npz["out/img_const_psi1.0"]), c)
    torch.testing.assert_close(real, torch.from_numpy(upstream_npz["out/D_logits_real"]), rtol=0, atol=ATOL)
    torch.testing.assert_close(fake, torch.from_numpy(upstream_npz["out/D_logits_fake"]), rtol=0, atol=ATOL)


def test_parameter_counts_match_published_configs():
    """Counts from the reference facts (256 px, cbase 16384, mapping 2): G 23.19M, D 24.00M."""
    G = Generator(
        z_dim=512,
        c_dim=0,
        w_dim=512,
        img_resolution=256,
        img_channels=3,
        mapping_kwargs=dict(num_layers=2),
        synthesis_kwargs=dict(channel_base=16384, channel_max=512),
    )
    D = Discriminator(c_dim=0, img_resolution=256, img_channels=3, channel_base=16384, channel_max=512)
    assert round(sum(p.numel() for p in G.parameters()) / 1e6, 2) == 23.19
    assert round(sum(p.numel() for p in D.parameters()) / 1e6, 2) == 24.00


@pytest.mark.parametrize("g_arch", ["orig", "skip", "resnet"])
@pytest.mark.parametrize("d_arch", ["orig", "skip", "resnet"])
def test_architectures_shapes_and_finite(g_arch, d_arch):
    G = Generator(**tiny_g_kwargs(architecture=g_arch, channels=3))
    D = Discriminator(**tiny_d_kwargs(architecture=d_arch, channels=3))
    z = torch.randn(4, G.z_dim)
    c = torch.eye(2)[torch.tensor([0, 1, 0, 1])]
    img = G(z, c)
    assert img.shape == (4, 3, 16, 16) and img.dtype == torch.float32
    logits = D(img, c)
    assert logits.shape == (4, 1) and torch.isfinite(logits).all()


def test_truncation_cutoff_and_psi_zero():
    G = Generator(**tiny_g_kwargs()).eval()
    G.mapping.w_avg.normal_()
    z, c = torch.randn(3, 16), torch.eye(2)[[0, 1, 0]]
    ws = G.mapping(z, c)
    ws0 = G.mapping(z, c, truncation_psi=0)
    assert torch.allclose(ws0, G.mapping.w_avg.expand_as(ws0))
    ws_cut = G.mapping(z, c, truncation_psi=0, truncation_cutoff=2)
    assert torch.allclose(ws_cut[:, :2], G.mapping.w_avg.expand(3, 2, -1)) and torch.equal(
        ws_cut[:, 2:], ws[:, 2:]
    )


def test_unconditional_networks_and_bad_input():
    G = Generator(**tiny_g_kwargs(c_dim=0))
    D = Discriminator(**tiny_d_kwargs(c_dim=0))
    assert not hasattr(D, "mapping") and not hasattr(G.mapping, "embed")
    img = G(torch.randn(2, 16), None)
    assert D(img, None).shape == (2, 1)
    with pytest.raises(ValueError, match="D expects images"):
        D(torch.zeros(2, 3, 16, 16), None)
    with pytest.raises(ValueError, match="power of two"):
        Generator(**{**tiny_g_kwargs(), "img_resolution": 24})


def test_freeze_d_stores_frozen_layers_as_buffers():
    D = Discriminator(**{**tiny_d_kwargs(), "block_kwargs": dict(freeze_layers=4)})
    params = dict(D.named_parameters())
    buffers = dict(D.named_buffers())
    # 16 px: b16 = layers 0-3 (fromrgb, conv0, conv1, skip) frozen; b8 trainable.
    assert "b16.conv0.weight" in buffers and "b16.conv0.weight" not in params
    assert "b16.skip.weight" in buffers and "b8.conv0.weight" in params
    assert set(D.state_dict()) == set(Discriminator(**tiny_d_kwargs()).state_dict())


def test_cpu_always_float32_even_with_fp16_blocks():
    kw = tiny_g_kwargs()
    kw["synthesis_kwargs"] = {**kw["synthesis_kwargs"], "num_fp16_res": 4}
    G = Generator(**kw)
    D = Discriminator(**{**tiny_d_kwargs(), "num_fp16_res": 4})
    assert G.synthesis.b16.use_fp16 and D.b16.use_fp16
    img = G(torch.randn(2, 16), torch.eye(2))
    assert img.dtype == torch.float32 and D(img, torch.eye(2)).dtype == torch.float32


def test_r1_and_path_length_double_backward():
    G = Generator(**tiny_g_kwargs())
    D = Discriminator(**tiny_d_kwargs())
    c = torch.eye(2)[[0, 1]]
    # R1: gradient of D's output w.r.t. reals, then backward of its squared norm into D's parameters.
    real = torch.randn(2, 1, 16, 16, requires_grad=True)
    (grad_real,) = torch.autograd.grad(D(real, c).sum(), real, create_graph=True)
    grad_real.square().sum().backward()
    assert D.b16.conv0.weight.grad is not None and D.b16.conv0.weight.grad.abs().sum() > 0
    # Path length: gradient of <img, noise> w.r.t. ws, then backward of its norm into G's parameters.
    ws = G.mapping(torch.randn(2, 16), c)
    img = G.synthesis(ws)
    (grad_ws,) = torch.autograd.grad((img * torch.randn_like(img)).sum(), ws, create_graph=True)
    grad_ws.square().sum(2).mean(1).sqrt().mean().backward()
    assert G.synthesis.b16.conv0.weight.grad is not None and G.synthesis.b16.conv0.weight.grad.abs().sum() > 0


def test_vmap_per_example_gradients_of_discriminator():
    D = Discriminator(**tiny_d_kwargs(mbstd=1)).train()
    params = {k: v.detach() for k, v in D.named_parameters()}
    buffers = {k: v.detach() for k, v in D.named_buffers()}
    imgs = torch.randn(4, 1, 16, 16)
    cs = torch.eye(2)[[0, 1, 1, 0]]

    def loss(p, img, c):
        logits = torch.func.functional_call(D, (p, buffers), (img[None], c[None]))
        return torch.nn.functional.softplus(-logits).sum()

    per_example = torch.func.vmap(torch.func.grad(loss), in_dims=(None, 0, 0))(params, imgs, cs)
    for i in range(4):
        single = torch.func.grad(loss)(params, imgs[i], cs[i])
        for name in ("b16.conv0.weight", "mapping.embed.weight", "b4.out.bias"):
            torch.testing.assert_close(per_example[name][i], single[name], rtol=1e-5, atol=1e-6)


def test_inference_layout_gives_the_same_images(fixture_nets, upstream_npz):
    """Without autograd the CPU path lays activations out as NHWC; values must not change."""
    G_ema, D = fixture_nets
    z, c = torch.from_numpy(upstream_npz["in/z"]), torch.from_numpy(upstream_npz["in/c"])
    with torch.inference_mode():
        img = G_ema(z, c, noise_mode="const")
        logits = D(img, c)
    torch.testing.assert_close(img, torch.from_numpy(upstream_npz["out/img_const_psi1.0"]), rtol=0, atol=ATOL)
    torch.testing.assert_close(logits, torch.from_numpy(upstream_npz["out/D_logits_fake"]), rtol=0, atol=ATOL)


def test_noise_inputs_replace_drawn_noise_per_sample():
    """Explicit noise inputs (one [N, 1, R, R] per conv layer) are what 'random' mode adds: a sample's
    image depends on its own noise only, and the noise is really used."""
    G = Generator(**tiny_g_kwargs()).eval()
    with torch.no_grad():
        for layer in G.synthesis.modules():
            if hasattr(layer, "noise_strength"):
                layer.noise_strength.fill_(0.5)
    resolutions = G.synthesis.noise_resolutions()
    assert resolutions == [4, 8, 8, 16, 16]
    ws = G.mapping(torch.randn(3, 16), torch.eye(2)[[0, 1, 0]])
    noise = [torch.randn(3, 1, r, r) for r in resolutions]
    img = G.synthesis(ws, noise_mode="random", noise=noise)
    alone = G.synthesis(ws[1:2], noise_mode="random", noise=[t[1:2] for t in noise])
    torch.testing.assert_close(img[1:2], alone, rtol=1e-4, atol=1e-5)
    other = G.synthesis(ws, noise_mode="random", noise=[t.flip(0) for t in noise])
    assert not torch.allclose(other[0], img[0])
    with pytest.raises(ValueError, match="noise must be 5 tensors"):
        G.synthesis(ws, noise_mode="random", noise=noise[:-1])
    with pytest.raises(ValueError, match="noise_mode 'random' only"):
        G.synthesis(ws, noise_mode="const", noise=noise)


def test_random_noise_generation_is_batched_and_the_same_for_any_batch():
    """generation.synthesize: seed s gives the same image in a batch of 1 and of 7, and the synthesis
    network runs once per batch (not once per image)."""
    from stylegan2_ada.generation import synthesize

    G = Generator(**tiny_g_kwargs(c_dim=0)).eval()
    with torch.no_grad():
        for layer in G.synthesis.modules():
            if hasattr(layer, "noise_strength"):
                layer.noise_strength.fill_(1.0)
    batches: list[int] = []

    def counting_synthesis(ws, **kwargs):
        batches.append(ws.shape[0])
        return G.synthesis(ws, **kwargs)

    seeds = [11, 3, 5, 8, 13, 21, 34]
    label = torch.zeros([1, 0])
    run = dict(noise_mode="random", synthesis=counting_synthesis)
    seven = dict(synthesize(G, seeds, label, batch_size=7, **run))
    assert batches == [7]
    ones = dict(synthesize(G, seeds, label, batch_size=1, **run))
    assert batches == [7] + [1] * 7
    for seed in seeds:
        np.testing.assert_array_equal(ones[seed], seven[seed])
    const = dict(synthesize(G, [3], label, noise_mode="const"))
    assert not np.array_equal(const[3], seven[3])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (float16 runs on CUDA only)")
@pytest.mark.parametrize("channels_last", [False, True])
def test_cuda_float16_blocks_match_float32_and_inference_path(channels_last):
    """On CUDA the top resolutions run in float16 with clamping: close to float32, the in-place
    inference path equal to the autograd path, and gradients finite (R1 double backward included)."""
    kw = tiny_g_kwargs(res=32)
    kw["synthesis_kwargs"] = {
        **kw["synthesis_kwargs"],
        "num_fp16_res": 2,
        "fp16_channels_last": channels_last,
    }
    torch.manual_seed(0)
    G = Generator(**kw).cuda().eval()
    D = Discriminator(
        **{**tiny_d_kwargs(res=32), "num_fp16_res": 2, "block_kwargs": dict(fp16_channels_last=channels_last)}
    ).cuda()
    assert G.synthesis.b32.use_fp16 and not G.synthesis.b8.use_fp16
    ws = G.mapping(torch.randn(4, 16, device="cuda"), torch.eye(2, device="cuda")[[0, 1, 0, 1]])
    fp16 = G.synthesis(ws, noise_mode="const")
    fp32 = G.synthesis(ws, noise_mode="const", force_fp32=True)
    with torch.no_grad():
        fp16_inference = G.synthesis(ws, noise_mode="const")
    assert fp16.dtype == torch.float32 and torch.isfinite(fp16).all()
    torch.testing.assert_close(fp16, fp32, rtol=0, atol=0.05)
    torch.testing.assert_close(fp16_inference, fp16, rtol=0, atol=1e-3)
    real = torch.randn(4, 1, 32, 32, device="cuda", requires_grad=True)
    (grad_real,) = torch.autograd.grad(
        D(real, torch.eye(2, device="cuda")[[0, 1, 0, 1]]).sum(), real, create_graph=True
    )
    grad_real.square().sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in D.parameters() if p.grad is not None)
