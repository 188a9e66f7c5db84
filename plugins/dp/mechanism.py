"""DP-SGD for the discriminator: per-example losses, the clipped and noised gradient, and its checks.

For a Poisson-sampled real batch of N examples (N varies, may be 0), each real example i is paired with
one generated example (its *fake partner*, drawn by the caller independently of the data) and has the
loss

    L_i = softplus(D(aug(fake_i), c_fake_i)) + softplus(-D(aug(real_i), c_i))
          [+ r1_weight * |grad_x D(aug(x), c_i) at x = real_i|^2   on steps where R1 is due]

with ``r1_weight = gamma / 2 * r1_interval`` (lazy regularisation). The private gradient of D is

    ( sum_k clip_C(grad L_k)  +  N(0, (sigma * C)^2 I) ) / B_expected

where k runs over examples (microbatch 1) or microbatches, ``clip_C(g) = g * min(1, C / |g|)`` over all
of D's parameters (flat clipping), the noise is drawn once per coordinate from the caller's generator
(the same on every rank when added after a cross-process reduction), and ``B_expected = q * N_data``
is the EXPECTED batch size (dividing by the realised size would leak it).

Sensitivity under add/remove-one adjacency: C with microbatch 1 (adding an example adds one clipped
term); 2C with microbatches of m > 1 (the example's microbatch's clipped sum changes from one vector of
norm <= C to another), provided microbatches are formed from the examples' identities, not their
content or batch position (:func:`microbatch_groups`). The accountant then uses the effective noise
multiplier sigma / 2 (:func:`plugins.dp.accounting.effective_noise_multiplier`).

The discriminator must treat examples independently: minibatch-stddev groups of 1
(:func:`check_per_example_independent`). Only D is privatised; G, its EMA and its regularisers are
post-processing of D's private updates (G never sees real data otherwise).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from plugins.dp.per_example import ClippedGradients, clipped_grad_sum
from stylegan2_ada.networks import MinibatchStdLayer

Augment = Callable[[Tensor], Tensor]


class PerExampleMixingError(ValueError):
    """The network mixes examples of a batch, so per-example gradients (and their clipping) are void."""


def check_per_example_independent(D: nn.Module) -> None:
    """Refuse a discriminator whose minibatch-stddev layer groups several examples, or that has batch
    normalisation: either makes one example's output depend on the others."""
    for name, m in D.named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            raise PerExampleMixingError(f"{name}: batch normalisation mixes the examples of a batch")
        if isinstance(m, MinibatchStdLayer) and m.group_size != 1:
            raise PerExampleMixingError(
                f"{name or 'D'}: minibatch standard deviation over groups of {m.group_size} mixes examples; "
                f"differential privacy needs a minibatch-stddev group of 1 (--mbstd-group 1)"
            )


def discriminator_losses(
    forward: Callable[..., Tensor],
    real_img: Tensor,
    real_c: Tensor,
    gen_img: Tensor,
    gen_c: Tensor,
    *,
    augment: Augment | None = None,
    r1_weight: float = 0.0,
) -> Tensor:
    """The N per-example losses ``L_i`` above: [N] float32.

    Args:
        forward: D's call ``forward(img [n, C, H, W], c [n, c_dim]) -> logits [n, 1]``.
        real_img: [N, C, H, W] real images in [-1, 1]; real_c: [N, c_dim].
        gen_img: [N, C, H, W] generated partners (data: no gradient flows to G); gen_c: [N, c_dim].
        augment: applied to the fakes and to the reals (per-sample random draws; differentiable).
        r1_weight: gamma / 2 * R1 interval on steps where R1 is due, else 0.
    """
    aug = augment if augment is not None else (lambda x: x)
    fake_logits = forward(aug(gen_img.detach()), gen_c)[:, 0]  # [N]
    real = real_img.detach().requires_grad_(r1_weight > 0)
    real_logits = forward(aug(real), real_c)[:, 0]  # [N]
    loss = F.softplus(fake_logits) + F.softplus(-real_logits)
    if r1_weight > 0:
        (grad_x,) = torch.autograd.grad(real_logits.sum(), real, create_graph=True)  # [N, C, H, W]
        loss = loss + grad_x.square().flatten(1).sum(1) * r1_weight
    return loss.float()


def gaussian_noise_like(
    grads: Mapping[str, Tensor], std: float, generator: torch.Generator | None
) -> dict[str, Tensor]:
    """Independent N(0, std^2) per coordinate, drawn from ``generator`` in the parameters' order."""
    return {
        name: torch.randn(g.shape, generator=generator, device=g.device, dtype=torch.float32) * std
        for name, g in grads.items()
    }


def privatise(
    clipped_sum: Mapping[str, Tensor],
    *,
    clip: float,
    noise_multiplier: float,
    expected_batch_size: float,
    generator: torch.Generator | None,
) -> dict[str, Tensor]:
    """``(clipped_sum + N(0, (noise_multiplier * clip)^2)) / expected_batch_size`` per parameter."""
    if not expected_batch_size > 0:
        raise ValueError(f"expected_batch_size must be positive; got {expected_batch_size}")
    if noise_multiplier < 0:
        raise ValueError(f"noise_multiplier must be >= 0; got {noise_multiplier}")
    noise = gaussian_noise_like(clipped_sum, noise_multiplier * clip, generator)
    return {name: (g.float() + noise[name]) / expected_batch_size for name, g in clipped_sum.items()}


def microbatch_groups(
    dataset_indices: Tensor, microbatch: int, expected_batch_size: float
) -> tuple[Tensor, int]:
    """Microbatches of about ``microbatch`` examples formed from the examples' identities.

    Returns ``(groups [N], K)`` with ``K = ceil(expected_batch_size / microbatch)`` and
    ``groups = dataset_index % K``: adding or removing one example changes only its own microbatch,
    which is what the 2C sensitivity needs (grouping by position in the batch would shift the others).
    """
    if microbatch < 1:
        raise ValueError(f"microbatch must be >= 1; got {microbatch}")
    k = max(1, -(-int(round(expected_batch_size)) // microbatch))
    return torch.as_tensor(dataset_indices).long() % k, k


def clipped_discriminator_sum(
    D: nn.Module,
    real_img: Tensor,
    real_c: Tensor,
    gen_img: Tensor,
    gen_c: Tensor,
    *,
    clip: float,
    augment: Augment | None = None,
    r1_weight: float = 0.0,
    groups: Tensor | None = None,
    num_groups: int | None = None,
) -> ClippedGradients:
    """The sum of the examples' (or microbatches') clipped gradients of D, no noise, not normalised.

    With several processes, each calls this on its share of the batch; the sums are added across
    processes (all-reduce) and :func:`privatise` runs once on the total with a generator in the same
    state on every process. Raises :class:`PerExampleMixingError` for a D that mixes examples.
    """
    check_per_example_independent(D)
    loss_fn = functools.partial(discriminator_losses, augment=augment, r1_weight=r1_weight)
    return clipped_grad_sum(
        D, loss_fn, (real_img, real_c, gen_img, gen_c), clip, groups=groups, num_groups=num_groups
    )


def private_discriminator_gradients(
    D: nn.Module,
    real_img: Tensor,
    real_c: Tensor,
    gen_img: Tensor,
    gen_c: Tensor,
    *,
    clip: float,
    noise_multiplier: float,
    expected_batch_size: float,
    generator: torch.Generator | None,
    augment: Augment | None = None,
    r1_weight: float = 0.0,
    groups: Tensor | None = None,
    num_groups: int | None = None,
) -> dict[str, Tensor]:
    """One private D gradient in one process: ``{name: tensor}`` for every parameter of D (to be
    written to ``.grad``): :func:`clipped_discriminator_sum` then :func:`privatise`.

    ``real_img``/``real_c``/``gen_img``/``gen_c`` as in :func:`discriminator_losses` (N may be 0: the
    result is then noise only); ``groups``/``num_groups``: microbatches from :func:`microbatch_groups`
    (default: one example each).
    """
    clipped = clipped_discriminator_sum(
        D,
        real_img,
        real_c,
        gen_img,
        gen_c,
        clip=clip,
        augment=augment,
        r1_weight=r1_weight,
        groups=groups,
        num_groups=num_groups,
    )
    return privatise(
        clipped.grads,
        clip=clip,
        noise_multiplier=noise_multiplier,
        expected_batch_size=expected_batch_size,
        generator=generator,
    )
