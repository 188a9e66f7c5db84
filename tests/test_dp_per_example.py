"""Per-example clipped gradients (plugins.dp.per_example / tape / mechanism): the vectorised engine
against a loop over single examples, against the core's batched loss, independence of examples,
clipping before noise, the noise itself and empty Poisson batches."""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from plugins.dp.mechanism import (
    PerExampleMixingError,
    check_per_example_independent,
    discriminator_losses,
    gaussian_noise_like,
    microbatch_groups,
    private_discriminator_gradients,
    privatise,
)
from plugins.dp.per_example import (
    clip_factors,
    clipped_grad_sum,
    clipped_grad_sum_loop,
    per_example_grads,
    per_example_grads_loop,
)
from plugins.dp.tape import UnsupportedParameterUse
from stylegan2_ada.augment import make_augment_pipe
from stylegan2_ada.loss import StyleGAN2Loss
from stylegan2_ada.networks import Discriminator, Generator
from tests.conftest import tiny_d_kwargs, tiny_g_kwargs

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def make_d(architecture: str = "resnet", mbstd: int = 1, c_dim: int = 2) -> Discriminator:
    return Discriminator(**tiny_d_kwargs(res=16, c_dim=c_dim, architecture=architecture, mbstd=mbstd))


def make_batch(n: int, c_dim: int = 2, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    c = F.one_hot(torch.arange(n) % c_dim, c_dim).float() if c_dim else torch.zeros(n, 0)
    real = torch.rand(n, 1, 16, 16, generator=g) * 2 - 1
    fake = torch.randn(n, 1, 16, 16, generator=g) * 0.5
    return real, c, fake, c.roll(1, 0)


def loss_fn(r1_weight: float = 0.0):
    return functools.partial(discriminator_losses, r1_weight=r1_weight)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


def flat_norms(grads: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.sqrt(sum(g.flatten(1).square().sum(1) for g in grads.values()))


def clipped_reference(per_example: dict[str, torch.Tensor], clip: float) -> dict[str, torch.Tensor]:
    f = clip_factors(flat_norms(per_example), clip)
    return {k: torch.tensordot(f, g, dims=1) for k, g in per_example.items()}


# ---------------------------------------------------------------------------------------------------
# Vectorised == loop


@pytest.mark.parametrize("architecture", ["resnet", "skip", "orig"])
@pytest.mark.parametrize("r1_weight", [0.0, 3.0])
@pytest.mark.parametrize("batched", [False, True])
def test_vectorised_per_example_grads_equal_loop(architecture: str, r1_weight: float, batched: bool) -> None:
    D, batch = make_d(architecture), make_batch(5)
    vec = per_example_grads(D, loss_fn(r1_weight), batch, batched=batched)
    ref = per_example_grads_loop(D, loss_fn(r1_weight), batch)
    assert vec.keys() == ref.keys() == dict(D.named_parameters()).keys()
    for name in ref:
        assert vec[name].shape == (5, *dict(D.named_parameters())[name].shape)
        assert rel_err(vec[name], ref[name]) < 1e-4, name
    if r1_weight:  # R1 really is part of the loss
        plain = per_example_grads_loop(D, loss_fn(0.0), batch)
        assert rel_err(plain["b16.conv0.weight"], ref["b16.conv0.weight"]) > 1e-3


@pytest.mark.parametrize(
    "method, batched", [("auto", False), ("ghost", False), ("materialise", False), ("materialise", True)]
)
@pytest.mark.parametrize("r1_weight", [0.0, 3.0])
def test_clipped_sum_and_norms_equal_loop(method: str, batched: bool, r1_weight: float) -> None:
    D, batch = make_d(), make_batch(6)
    ref = per_example_grads_loop(D, loss_fn(r1_weight), batch)
    norms = flat_norms(ref)
    clip = float(norms.median())  # about half the examples are clipped
    out = clipped_grad_sum(D, loss_fn(r1_weight), batch, clip, method=method, batched=batched)
    torch.testing.assert_close(out.norms, norms, rtol=1e-4, atol=0)
    expected = clipped_reference(ref, clip)
    for name in expected:
        assert rel_err(out.grads[name], expected[name]) < 1e-4, name
    loop = clipped_grad_sum_loop(D, loss_fn(r1_weight), batch, clip)
    torch.testing.assert_close(loop.norms, norms, rtol=1e-5, atol=0)
    for name in expected:
        assert rel_err(loop.grads[name], expected[name]) < 1e-5, name
    # Nothing kept between the norms and the sum: the reweighted recomputation gives the same.
    again = clipped_grad_sum(D, loss_fn(r1_weight), batch, clip, method=method, batched=batched, keep_bytes=0)
    for name in expected:
        assert rel_err(again.grads[name], expected[name]) < 1e-4, name


def test_sum_equals_core_batch_gradient_when_nothing_is_clipped() -> None:
    """Against the core's own Dmain + Dreg losses (StyleGAN2Loss), with the lazy-R1 gain."""
    torch.manual_seed(1)
    G = Generator(**tiny_g_kwargs(res=16))
    D = make_d()
    real, c, _, gen_c = make_batch(4)
    gen_z = torch.randn(4, G.z_dim)
    gamma, interval = 2.0, 4
    loss = StyleGAN2Loss(G, D, r1_gamma=gamma, style_mixing_prob=0.0)
    torch.manual_seed(2)
    with torch.no_grad():
        gen_img, _ = loss.run_G(gen_z, gen_c)
    D.requires_grad_(True)
    main = loss.compute("Dmain", real_img=real, real_c=c, gen_z=gen_z, gen_c=gen_c)
    # Dmain regenerates its fakes: use the same ones (same seed) and check that it did.
    torch.testing.assert_close(main.data.gen_img, gen_img)
    reg = loss.compute("Dreg", real_img=real, real_c=c)
    (main.loss * 4 + reg.loss * 4 * interval).backward()
    out = clipped_grad_sum(D, loss_fn(gamma / 2 * interval), (real, c, gen_img, gen_c), clip=1e9)
    assert out.norms.max() < 1e9
    for name, p in D.named_parameters():
        assert rel_err(out.grads[name], p.grad) < 1e-4, name


def test_microbatch_groups_equal_loop_over_groups() -> None:
    D, batch = make_d(), make_batch(7)
    groups, k = microbatch_groups(torch.tensor([3, 10, 4, 8, 21, 5, 2]), microbatch=2, expected_batch_size=7)
    assert k == 4
    assert groups.tolist() == [3, 2, 0, 0, 1, 1, 2]
    ref = per_example_grads_loop(D, loss_fn(3.0), batch, groups=groups, num_groups=k)
    for batched in (False, True):
        vec = per_example_grads(D, loss_fn(3.0), batch, groups=groups, num_groups=k, batched=batched)
        for name in ref:
            assert rel_err(vec[name], ref[name]) < 1e-4, (batched, name)
    clip = float(flat_norms(ref).median())
    expected = clipped_reference(ref, clip)
    for method in ("ghost", "materialise"):
        out = clipped_grad_sum(D, loss_fn(3.0), batch, clip, groups=groups, num_groups=k, method=method)
        assert out.norms.shape == (k,)
        for name in expected:
            assert rel_err(out.grads[name], expected[name]) < 1e-4, (method, name)


class PlainNet(nn.Module):
    """A third-party network: stock torch layers (F.conv2d, F.linear with the parameters directly), a
    weight masked by a buffer and a weight split in two."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1, stride=2)
        self.fc = nn.Linear(4 * 4 * 4, 4)
        self.register_buffer("mask", (torch.arange(16).reshape(4, 4) % 3 != 0).float())
        self.masked = nn.Parameter(torch.randn(4, 4) / 2)
        self.head = nn.Linear(4, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.fc(F.relu(self.conv(x)).flatten(1)))
        h = h @ (self.masked * self.mask)
        w1, w2 = self.head.weight.chunk(2, dim=1)
        return h[:, :2] @ w1.t() + h[:, 2:] @ w2.t()


def test_stock_torch_layers_equal_loop() -> None:
    net = PlainNet()
    x = torch.randn(5, 2, 8, 8)

    def losses(forward, x):  # noqa: ANN001, ANN202
        return forward(x)[:, 0].square()

    vec = per_example_grads(net, losses, (x,))
    ref = per_example_grads_loop(net, losses, (x,))
    for name in ref:
        assert rel_err(vec[name], ref[name]) < 1e-4, name
    out = clipped_grad_sum(net, losses, (x,), clip=0.1, method="ghost")
    for name, g in clipped_reference(ref, 0.1).items():
        assert rel_err(out.grads[name], g) < 1e-4, name


def test_unsupported_parameter_use_is_refused() -> None:
    class Gated(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.gate = nn.Parameter(torch.ones(3))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * self.gate  # elementwise product with data: no per-example rule

    with pytest.raises(UnsupportedParameterUse, match="'gate'.*mul"):
        per_example_grads(Gated(), lambda forward, x: forward(x).sum(1), (torch.randn(2, 3),))


# ---------------------------------------------------------------------------------------------------
# Independence of examples


def test_changing_one_example_leaves_the_others_unchanged() -> None:
    D = make_d()
    real, c, fake, gen_c = make_batch(4)
    before = per_example_grads(D, loss_fn(3.0), (real, c, fake, gen_c))
    real2, fake2 = real.clone(), fake.clone()
    real2[2], fake2[2] = -real[2], fake[2] * 3
    after = per_example_grads(D, loss_fn(3.0), (real2, c, fake2, gen_c))
    for name in before:
        for i in (0, 1, 3):
            torch.testing.assert_close(after[name][i], before[name][i], rtol=1e-5, atol=1e-7)
    assert rel_err(after["b16.conv0.weight"][2], before["b16.conv0.weight"][2]) > 1e-2


def test_augmentation_keeps_examples_independent_and_r1_differentiates_through_it() -> None:
    D = make_d()
    pipe = make_augment_pipe("bgc", p=0.6)
    batch = make_batch(4)
    lf = functools.partial(discriminator_losses, augment=pipe, r1_weight=3.0)
    torch.manual_seed(11)  # the pipe draws from the global generator: the same draws in both runs
    before = per_example_grads(D, lf, batch)
    real2 = batch[0].clone()
    real2[1] = -real2[1]
    torch.manual_seed(11)
    after = per_example_grads(D, lf, (real2, *batch[1:]))
    for name in before:
        assert torch.isfinite(before[name]).all()
        for i in (0, 2, 3):
            torch.testing.assert_close(after[name][i], before[name][i], rtol=1e-5, atol=1e-7)
    # A deterministic augmentation (a flip and a gain) against the loop, R1 through it included.
    flip = functools.partial(discriminator_losses, augment=lambda x: x.flip(3) * 0.9, r1_weight=3.0)
    vec, ref = per_example_grads(D, flip, batch), per_example_grads_loop(D, flip, batch)
    for name in ref:
        assert rel_err(vec[name], ref[name]) < 1e-4, name


def test_minibatch_stddev_groups_mix_examples_and_are_refused() -> None:
    D = make_d(mbstd=2)
    real, c, fake, gen_c = make_batch(4)
    # The independence check above has teeth: with groups of 2, example 0's gradient moves with example 2's.
    before = per_example_grads(D, loss_fn(), (real, c, fake, gen_c))
    real2 = real.clone()
    real2[2] = -real[2]
    after = per_example_grads(D, loss_fn(), (real2, c, fake, gen_c))
    assert rel_err(after["b4.conv.weight"][0], before["b4.conv.weight"][0]) > 1e-4
    with pytest.raises(PerExampleMixingError, match="minibatch-stddev group of 1"):
        check_per_example_independent(D)
    with pytest.raises(PerExampleMixingError):
        private_discriminator_gradients(
            D, real, c, fake, gen_c, clip=1.0, noise_multiplier=1.0, expected_batch_size=4, generator=None
        )
    check_per_example_independent(make_d(mbstd=1))


# ---------------------------------------------------------------------------------------------------
# Clipping, noise, normalisation


def test_clip_before_noise_bounds_one_examples_influence() -> None:
    D = make_d()
    weights = torch.tensor([1.0, 1e4, 1.0, 1.0])  # example 1's loss, hence its gradient, scaled by 1e4
    batch = (*make_batch(4), weights)

    def scaled(forward, real, c, fake, gen_c, weight):  # noqa: ANN001, ANN202
        return discriminator_losses(forward, real, c, fake, gen_c) * weight

    clip, sigma, expected = 0.01, 1.3, 4.0
    norms = flat_norms(per_example_grads_loop(D, scaled, batch))
    assert norms[1] > 1e5 * clip and (norms > clip).all()
    clipped = clipped_grad_sum(D, scaled, batch, clip).grads
    update = privatise(
        clipped,
        clip=clip,
        noise_multiplier=sigma,
        expected_batch_size=expected,
        generator=torch.Generator().manual_seed(7),
    )
    noise = gaussian_noise_like(update, sigma * clip, torch.Generator().manual_seed(7))
    signal = {k: v * expected - noise[k] for k, v in update.items()}  # the update minus its noise
    for k in signal:
        torch.testing.assert_close(signal[k], clipped[k], rtol=1e-5, atol=1e-7)
    total = torch.sqrt(sum(v.square().sum() for v in signal.values()))
    assert total <= 4 * clip * (1 + 1e-5)
    others = torch.tensor([0, 2, 3])
    without = clipped_grad_sum(D, scaled, tuple(t[others] for t in batch), clip).grads
    influence = torch.sqrt(sum((signal[k] - without[k]).square().sum() for k in signal))
    assert 0.99 * clip < influence <= clip * (1 + 1e-5)  # the huge example counts exactly C, no more


def test_an_example_with_non_finite_gradient_is_left_out() -> None:
    D = make_d()
    real, c, fake, gen_c = make_batch(4)
    real[3, 0, 5, 5] = float("nan")
    for method in ("ghost", "materialise"):
        out = clipped_grad_sum(D, loss_fn(3.0), (real, c, fake, gen_c), clip=0.1, method=method)
        assert torch.isfinite(out.norms[:3]).all() and not torch.isfinite(out.norms[3])
        rest = clipped_grad_sum(D, loss_fn(3.0), tuple(t[:3] for t in (real, c, fake, gen_c)), clip=0.1).grads
        for k in rest:
            assert torch.isfinite(out.grads[k]).all(), (method, k)
            assert rel_err(out.grads[k], rest[k]) < 1e-4, (method, k)


def test_noise_std_is_sigma_times_clip() -> None:
    sigma, clip = 0.7, 2.5
    zeros = {"a": torch.zeros(1000, 1000), "b": torch.zeros(300)}  # 1.0003e6 coordinates
    out = privatise(
        zeros,
        clip=clip,
        noise_multiplier=sigma,
        expected_batch_size=1.0,
        generator=torch.Generator().manual_seed(3),
    )
    values = torch.cat([v.flatten() for v in out.values()])
    assert values.numel() >= 10**6
    assert abs(float(values.std()) / (sigma * clip) - 1) < 0.01
    assert abs(float(values.mean())) < 0.01 * sigma * clip
    # The same generator state gives the same noise (every rank adds identical noise).
    again = privatise(
        zeros,
        clip=clip,
        noise_multiplier=sigma,
        expected_batch_size=1.0,
        generator=torch.Generator().manual_seed(3),
    )
    for k in out:
        torch.testing.assert_close(again[k], out[k], rtol=0, atol=0)


def test_normalised_by_expected_not_realised_batch() -> None:
    D = make_d()
    batch = make_batch(3)
    clipped = clipped_grad_sum(D, loss_fn(), batch, clip=0.1).grads
    update = private_discriminator_gradients(
        D, *batch, clip=0.1, noise_multiplier=0.0, expected_batch_size=8.0, generator=None
    )
    for k in clipped:
        torch.testing.assert_close(update[k], clipped[k] / 8.0)


def test_empty_poisson_batch_gives_noise_over_expected_batch() -> None:
    D = make_d()
    empty = tuple(t[:0] for t in make_batch(2))
    update = private_discriminator_gradients(
        D,
        *empty,
        clip=0.5,
        noise_multiplier=1.1,
        expected_batch_size=6.0,
        generator=torch.Generator().manual_seed(5),
        r1_weight=2.0,
    )
    noise = gaussian_noise_like(dict(D.named_parameters()), 1.1 * 0.5, torch.Generator().manual_seed(5))
    assert update.keys() == noise.keys()
    for k in noise:
        torch.testing.assert_close(update[k], noise[k] / 6.0)
    assert clipped_grad_sum(D, loss_fn(), empty, clip=0.5).norms.numel() == 0
