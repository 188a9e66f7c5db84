"""Tests of stylegan2_ada.loss: the four phases, lazy regularisers, style mixing, per-example D loss."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from stylegan2_ada.loss import StyleGAN2Loss, d_main_loss_per_example, d_r1_loss_per_example
from stylegan2_ada.networks import Discriminator, Generator

RES, C_DIM, Z = 16, 2, 32


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def make_nets(mbstd: int = 4, seed: int = 0) -> tuple[Generator, Discriminator]:
    torch.manual_seed(seed)
    G = Generator(
        z_dim=Z,
        c_dim=C_DIM,
        w_dim=Z,
        img_resolution=RES,
        img_channels=1,
        mapping_kwargs={"num_layers": 2},
        synthesis_kwargs={"channel_base": 256, "channel_max": 32},
    )
    D = Discriminator(
        c_dim=C_DIM,
        img_resolution=RES,
        img_channels=1,
        channel_base=256,
        channel_max=32,
        epilogue_kwargs={"mbstd_group_size": mbstd},
    )
    return G.train().requires_grad_(False), D.train().requires_grad_(False)


def batch(n: int, seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    c = F.one_hot(torch.arange(n) % C_DIM, C_DIM).float()
    return dict(
        real_img=torch.rand([n, 1, RES, RES], generator=g) * 2 - 1,
        real_c=c,
        gen_z=torch.randn([n, Z], generator=g),
        gen_c=c.flip(0),
    )


EXPECTED_STATS = {
    "Gmain": {"Loss/scores/fake", "Loss/signs/fake", "Loss/G/loss"},
    "Greg": {"Loss/pl_penalty", "Loss/G/reg"},
    "Dmain": {"Loss/scores/fake", "Loss/signs/fake", "Loss/scores/real", "Loss/signs/real", "Loss/D/loss"},
    "Dreg": {"Loss/r1_penalty", "Loss/D/reg"},
}


@pytest.mark.parametrize("phase", ["Gmain", "Greg", "Dmain", "Dreg"])
def test_phase_is_finite_has_stats_and_trains_only_its_module(phase: str) -> None:
    G, D = make_nets()
    loss = StyleGAN2Loss(G, D, r1_gamma=1.0)
    trained, frozen = (G, D) if phase.startswith("G") else (D, G)
    trained.requires_grad_(True)
    out = loss.compute(phase, **batch(4))
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    assert set(out.stats) == EXPECTED_STATS[phase]
    assert all(torch.isfinite(v).all() for v in out.stats.values())
    assert out.data.phase == phase
    out.loss.backward()
    grads = [p.grad for p in trained.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)
    assert all(p.grad is None for p in frozen.parameters())


def test_main_losses_are_non_saturating_logistic() -> None:
    G, D = make_nets()
    loss = StyleGAN2Loss(G, D)
    out = loss.compute("Gmain", **batch(4))
    torch.testing.assert_close(out.loss, F.softplus(-out.data.gen_logits).mean())
    out = loss.compute("Dmain", **batch(4))
    expected = (F.softplus(out.data.gen_logits) + F.softplus(-out.data.real_logits)).mean()
    torch.testing.assert_close(out.loss, expected)
    # The fakes D saw are G's images (no gradient to G in Dmain).
    assert not out.data.gen_img.requires_grad


def test_r1_penalty_matches_manual_gradient_norm() -> None:
    G, D = make_nets()
    gamma = 3.0
    loss = StyleGAN2Loss(G, D, r1_gamma=gamma)
    b = batch(4)
    out = loss.compute("Dreg", real_img=b["real_img"], real_c=b["real_c"])
    x = b["real_img"].clone().requires_grad_(True)
    (g,) = torch.autograd.grad(D(x, b["real_c"]).sum(), x)
    r1 = g.square().sum([1, 2, 3])  # [N]
    torch.testing.assert_close(out.stats["Loss/r1_penalty"], r1)
    torch.testing.assert_close(out.loss, (r1 * gamma / 2).mean())


@pytest.mark.parametrize("n", [1, 2, 5])
def test_path_length_batch_shrink_is_safe_and_updates_pl_mean(n: int) -> None:
    G, D = make_nets()
    loss = StyleGAN2Loss(G, D, pl_batch_shrink=2, pl_decay=0.01, pl_weight=2.0)
    G.requires_grad_(True)
    assert float(loss.pl_mean) == 0.0
    b = batch(n)
    out = loss.compute("Greg", gen_z=b["gen_z"], gen_c=b["gen_c"])
    m = max(n // 2, 1)
    assert out.stats["Loss/pl_penalty"].shape == (m,)
    assert out.data.gen_img.shape[0] == m
    assert torch.isfinite(out.loss)
    out.loss.backward()
    # pl_mean moved from 0 by decay * mean path length; the penalty is (length - pl_mean)^2.
    pl_mean = float(loss.pl_mean)
    assert pl_mean > 0
    lengths = out.stats["Loss/pl_penalty"].sqrt() + pl_mean  # lengths > pl_mean at the first step
    torch.testing.assert_close(torch.tensor(pl_mean), 0.01 * lengths.mean(), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(out.stats["Loss/G/reg"], 2.0 * out.stats["Loss/pl_penalty"])
    state = loss.state_dict()
    other = StyleGAN2Loss(G, D)
    other.load_state_dict(state)
    assert float(other.pl_mean) == pl_mean


def test_style_mixing_replaces_the_tail_of_ws() -> None:
    G, D = make_nets()
    z, c = batch(3)["gen_z"], batch(3)["gen_c"]
    ws_plain = G.mapping(z, c, skip_w_avg_update=True)  # [N, num_ws, w_dim]
    captured = {}
    orig = G.synthesis.forward

    def spy(ws, **kw):
        captured["ws"] = ws
        return orig(ws, **kw)

    G.synthesis.forward = spy
    G.eval()  # no w_avg update, so mapping(z) is reproducible
    StyleGAN2Loss(G, D, style_mixing_prob=0.0).run_G(z, c)
    torch.testing.assert_close(captured["ws"], ws_plain)
    StyleGAN2Loss(G, D, style_mixing_prob=1.0).run_G(z, c)
    ws = captured["ws"]
    same = (ws - ws_plain).abs().amax(dim=(0, 2)) < 1e-6  # [num_ws]
    cutoff = int(same.long().argmin())
    assert 1 <= cutoff < G.num_ws
    assert bool(same[:cutoff].all()) and not bool(same[cutoff:].any())


def test_augment_pipe_is_applied_to_what_d_sees() -> None:
    G, D = make_nets()
    seen = []

    class Recorder(torch.nn.Module):
        def forward(self, x):
            seen.append(x.shape)
            return x.flip(3)

    loss = StyleGAN2Loss(G, D, Recorder())
    b = batch(2)
    loss.compute("Dmain", **b)
    assert len(seen) == 2  # fakes and reals
    out = loss.compute("Dreg", real_img=b["real_img"], real_c=b["real_c"])
    torch.testing.assert_close(out.data.real_logits, D(b["real_img"].flip(3), b["real_c"]))


def _params(D: torch.nn.Module) -> tuple[dict, dict]:
    params = {k: v.detach() for k, v in D.named_parameters()}
    buffers = {k: v.detach() for k, v in D.named_buffers()}
    return params, buffers


def test_per_example_d_loss_vmap_grads_equal_loop_and_batched_loss() -> None:
    G, D = make_nets(mbstd=1)
    b = batch(4)
    with torch.no_grad():
        gen_img = G(b["gen_z"], b["gen_c"], noise_mode="const")  # [4, 1, 16, 16]
    params, buffers = _params(D)

    def f(p, real_img, real_c, fake_img, fake_c):
        return d_main_loss_per_example(D, {**p, **buffers}, real_img, real_c, fake_img, fake_c)

    args = (b["real_img"], b["real_c"], gen_img, b["gen_c"])
    per_ex = torch.func.vmap(torch.func.grad(f), in_dims=(None, 0, 0, 0, 0))(params, *args)
    for i in range(4):
        one = torch.func.grad(f)(params, *(a[i] for a in args))
        for k in params:
            torch.testing.assert_close(per_ex[k][i], one[k], rtol=1e-4, atol=1e-6)
    # Mean of per-example losses = the batched Dmain loss; mean of per-example grads = its gradient.
    loss = StyleGAN2Loss(G, D)
    D.requires_grad_(True)
    logits_fake = D(gen_img, b["gen_c"])
    logits_real = D(b["real_img"], b["real_c"])
    batched = (F.softplus(logits_fake) + F.softplus(-logits_real)).mean()
    losses = torch.func.vmap(f, in_dims=(None, 0, 0, 0, 0))(params, *args)
    torch.testing.assert_close(losses.mean(), batched.detach(), rtol=1e-5, atol=1e-6)
    batched.backward()
    for k, p in D.named_parameters():
        torch.testing.assert_close(per_ex[k].mean(0), p.grad, rtol=1e-4, atol=1e-6)
    assert loss.pl_mean.item() == 0.0


def test_per_example_r1_matches_batched_r1() -> None:
    G, D = make_nets(mbstd=1)
    b = batch(3)
    params, buffers = _params(D)
    gamma = 2.0

    def f(p, x, c):
        return d_r1_loss_per_example(D, {**p, **buffers}, x, c, gamma)

    per_ex = torch.func.vmap(f, in_dims=(None, 0, 0))(params, b["real_img"], b["real_c"])  # [3]
    out = StyleGAN2Loss(G, D, r1_gamma=gamma).compute("Dreg", real_img=b["real_img"], real_c=b["real_c"])
    torch.testing.assert_close(per_ex, out.stats["Loss/D/reg"], rtol=1e-4, atol=1e-7)
    grads = torch.func.vmap(torch.func.grad(f), in_dims=(None, 0, 0))(params, b["real_img"], b["real_c"])
    assert all(torch.isfinite(g).all() for g in grads.values())


def test_unknown_phase_is_rejected() -> None:
    G, D = make_nets()
    with pytest.raises(ValueError, match="unknown phase"):
        StyleGAN2Loss(G, D).compute("Gboth", **batch(2))
