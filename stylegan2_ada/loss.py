"""StyleGAN2 loss: non-saturating logistic loss, lazy R1 and lazy path-length regularisation.

The loss computes one *phase* at a time and returns the phase's scalar loss without calling
``backward``; the training loop adds the plugins' loss terms, scales by the lazy-regularisation interval
and calls ``backward`` itself. Phases (as upstream, but the main and regularisation parts always run
separately, see :mod:`stylegan2_ada.hookspecs`):

- ``Gmain``: ``softplus(-D(aug(G(z, c)), c))``
- ``Greg``:  path-length penalty ``pl_weight * (|J_w^T y| - pl_mean)^2`` on a batch shrunk by
  ``pl_batch_shrink`` (never below one example)
- ``Dmain``: ``softplus(D(aug(G(z, c)), c)) + softplus(-D(aug(x), c))``
- ``Dreg``:  R1 ``gamma / 2 * |grad_x D(aug(x), c)|^2`` on reals
- ``Dboth``: ``Dmain`` plus ``r1_gain`` times R1 of the same reals, one loss per example (used when R1
  joins D's main phase, see :mod:`stylegan2_ada.hookspecs`)

The discriminator's main loss for ONE example is also available as a pure function of the parameters
(:func:`d_main_loss_per_example`), so that per-example gradients can be computed with
``torch.func.vmap(torch.func.grad(...))``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from stylegan2_ada.hookspecs import PHASES
from stylegan2_ada.plugin_api import PhaseData

AugmentFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class PhaseOutput:
    """The result of one phase on one minibatch.

    ``loss`` is a scalar: the mean over the minibatch of the phase's per-example loss, *before* the
    lazy-regularisation gain. ``stats`` maps upstream statistic names to tensors of per-example values
    (shape [N] or [N, 1]). ``data`` holds the phase's tensors for plugins.
    """

    loss: torch.Tensor
    data: PhaseData
    stats: dict[str, torch.Tensor] = field(default_factory=dict)


def _as_image_batch(x: torch.Tensor) -> torch.Tensor:
    """[C, H, W] -> [1, C, H, W]."""
    return x.unsqueeze(0)


def d_main_loss_per_example(
    D: nn.Module,
    params_and_buffers: Mapping[str, torch.Tensor],
    real_img: torch.Tensor,
    real_c: torch.Tensor,
    gen_img: torch.Tensor,
    gen_c: torch.Tensor,
    augment: AugmentFn | None = None,
) -> torch.Tensor:
    """Discriminator main loss for ONE example, as a pure function of D's parameters and the data.

    Args:
        D: the discriminator (used only as a template for ``torch.func.functional_call``).
        params_and_buffers: ``{name: tensor}`` for all of D's parameters and buffers.
        real_img: [C, H, W] float in [-1, 1]. real_c: [c_dim].
        gen_img: [C, H, W] generated image (treated as data: no gradient flows to G). gen_c: [c_dim].
        augment: optional function [1, C, H, W] -> [1, C, H, W] (e.g. the augment pipe). Under ``vmap``
            a random augmentation needs ``randomness='different'``.

    Returns a scalar ``softplus(D(gen)) + softplus(-D(real))``. With augmentation off and a minibatch
    standard-deviation group of 1, the mean of this over a batch equals the batched ``Dmain`` loss.
    """
    real = _as_image_batch(real_img)  # [1, C, H, W]
    fake = _as_image_batch(gen_img)  # [1, C, H, W]
    if augment is not None:
        real = augment(real)
        fake = augment(fake)
    real_logits = torch.func.functional_call(
        D, dict(params_and_buffers), (real, real_c.unsqueeze(0))
    )  # [1, 1]
    fake_logits = torch.func.functional_call(
        D, dict(params_and_buffers), (fake, gen_c.unsqueeze(0))
    )  # [1, 1]
    return (F.softplus(fake_logits) + F.softplus(-real_logits)).sum()


def d_r1_loss_per_example(
    D: nn.Module,
    params_and_buffers: Mapping[str, torch.Tensor],
    real_img: torch.Tensor,
    real_c: torch.Tensor,
    r1_gamma: float,
    augment: AugmentFn | None = None,
) -> torch.Tensor:
    """R1 penalty ``gamma / 2 * |grad_x D(aug(x), c)|^2`` for ONE real example [C, H, W], label [c_dim].

    A pure function of D's parameters (double backward through ``torch.func.grad``); returns a scalar.
    The lazy-regularisation interval is NOT applied here.
    """

    def logit(x: torch.Tensor) -> torch.Tensor:
        img = _as_image_batch(x)
        if augment is not None:
            img = augment(img)
        return torch.func.functional_call(D, dict(params_and_buffers), (img, real_c.unsqueeze(0))).sum()

    grad_x = torch.func.grad(logit)(real_img)  # [C, H, W]
    return grad_x.square().sum() * (r1_gamma / 2)


class StyleGAN2Loss:
    """The four StyleGAN2 phases.

    Args:
        G, D: generator and discriminator (see :mod:`stylegan2_ada.networks`).
        augment_pipe: applied to every image D sees (reals and fakes), or ``None``.
        r1_gamma: R1 weight (``--gamma``); 0 disables ``Dreg``.
        style_mixing_prob: probability per minibatch of mixing two latents at a random layer cutoff.
        pl_weight: path-length weight; 0 disables ``Greg``.
        pl_batch_shrink: ``Greg`` runs on ``max(N // pl_batch_shrink, 1)`` examples.
        pl_decay: decay of the running mean of path lengths (``pl_mean``).
    """

    def __init__(
        self,
        G: nn.Module,
        D: nn.Module,
        augment_pipe: nn.Module | None = None,
        *,
        r1_gamma: float = 10.0,
        style_mixing_prob: float = 0.9,
        pl_weight: float = 2.0,
        pl_batch_shrink: int = 2,
        pl_decay: float = 0.01,
    ) -> None:
        self.G = G
        self.D = D
        self.augment_pipe = augment_pipe
        self.r1_gamma = float(r1_gamma)
        self.style_mixing_prob = float(style_mixing_prob)
        self.pl_weight = float(pl_weight)
        self.pl_batch_shrink = max(int(pl_batch_shrink), 1)
        self.pl_decay = float(pl_decay)
        device = next(G.parameters()).device
        self.pl_mean = torch.zeros([], device=device)  # running mean of path lengths (float32 scalar)

    # ---------------------------------------------------------------- state (for snapshots / resume)
    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"pl_mean": self.pl_mean.detach().clone()}

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        self.pl_mean.copy_(state["pl_mean"].to(self.pl_mean.device))

    # ---------------------------------------------------------------- network calls
    def run_G(self, z: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z [N, z_dim], c [N, c_dim] -> (img [N, C, H, W], ws [N, num_ws, w_dim]), with style mixing."""
        ws = self.G.mapping(z, c)  # [N, num_ws, w_dim]
        num_ws = ws.shape[1]
        if self.style_mixing_prob > 0 and num_ws > 1 and float(torch.rand([])) < self.style_mixing_prob:
            cutoff = int(torch.randint(1, num_ws, []))  # one cutoff per minibatch, as upstream
            ws2 = self.G.mapping(torch.randn_like(z), c, skip_w_avg_update=True)  # [N, num_ws, w_dim]
            ws = torch.cat([ws[:, :cutoff], ws2[:, cutoff:]], dim=1)
        img = self.G.synthesis(ws)  # [N, C, H, W]
        return img, ws

    def run_D(self, img: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """img [N, C, H, W], c [N, c_dim] -> logits [N, 1] (augmenting first when a pipe is set)."""
        if self.augment_pipe is not None:
            img = self.augment_pipe(img)
        return self.D(img, c)

    # ---------------------------------------------------------------- phases
    def compute(
        self,
        phase: str,
        *,
        real_img: torch.Tensor | None = None,
        real_c: torch.Tensor | None = None,
        gen_z: torch.Tensor | None = None,
        gen_c: torch.Tensor | None = None,
        r1_gain: float = 1.0,
    ) -> PhaseOutput:
        """Run ``phase`` (one of :data:`PHASES`) on one minibatch; see the phase methods for shapes.
        ``r1_gain`` weighs the R1 term of ``Dboth`` (the lazy-regularisation interval)."""
        if phase == "Gmain":
            return self.g_main(gen_z, gen_c)
        if phase == "Greg":
            return self.g_reg(gen_z, gen_c)
        if phase == "Dmain":
            return self.d_main(real_img, real_c, gen_z, gen_c)
        if phase == "Dboth":
            return self.d_both(real_img, real_c, gen_z, gen_c, r1_gain)
        if phase == "Dreg":
            return self.d_reg(real_img, real_c)
        raise ValueError(f"unknown phase {phase!r}; expected one of {PHASES}")

    def g_main(self, gen_z: torch.Tensor, gen_c: torch.Tensor) -> PhaseOutput:
        """gen_z [N, z_dim], gen_c [N, c_dim]: non-saturating generator loss."""
        gen_img, gen_ws = self.run_G(gen_z, gen_c)  # [N, C, H, W], [N, num_ws, w_dim]
        gen_logits = self.run_D(gen_img, gen_c)  # [N, 1]
        loss_G = F.softplus(-gen_logits)  # [N, 1]
        data = PhaseData(
            "Gmain", gen_z=gen_z, gen_c=gen_c, gen_ws=gen_ws, gen_img=gen_img, gen_logits=gen_logits
        )
        stats = {
            "Loss/scores/fake": gen_logits.detach(),
            "Loss/signs/fake": gen_logits.detach().sign(),
            "Loss/G/loss": loss_G.detach(),
        }
        return PhaseOutput(loss_G.mean(), data, stats)

    def g_reg(self, gen_z: torch.Tensor, gen_c: torch.Tensor) -> PhaseOutput:
        """Path-length regularisation on ``max(N // pl_batch_shrink, 1)`` examples; updates ``pl_mean``."""
        n = max(gen_z.shape[0] // self.pl_batch_shrink, 1)
        gen_z, gen_c = gen_z[:n], gen_c[:n]
        gen_img, gen_ws = self.run_G(gen_z, gen_c)  # [n, C, H, W], [n, num_ws, w_dim]
        h, w = gen_img.shape[2], gen_img.shape[3]
        pl_noise = torch.randn_like(gen_img) / (h * w) ** 0.5  # [n, C, H, W]
        (pl_grads,) = torch.autograd.grad(
            outputs=[(gen_img * pl_noise).sum()], inputs=[gen_ws], create_graph=True
        )
        pl_lengths = pl_grads.square().sum(2).mean(1).sqrt()  # [n]
        pl_mean = self.pl_mean.lerp(pl_lengths.mean().detach(), self.pl_decay)  # []
        self.pl_mean.copy_(pl_mean)
        pl_penalty = (pl_lengths - pl_mean).square()  # [n]
        loss_Gpl = pl_penalty * self.pl_weight  # [n]
        # No `gen_img[:, 0, 0, 0] * 0` term: it exists upstream only for DDP, which we do not use
        # (parameters the penalty does not reach simply get no gradient in this phase).
        loss = loss_Gpl.mean()
        data = PhaseData("Greg", gen_z=gen_z, gen_c=gen_c, gen_ws=gen_ws, gen_img=gen_img)
        stats = {"Loss/pl_penalty": pl_penalty.detach(), "Loss/G/reg": loss_Gpl.detach()}
        return PhaseOutput(loss, data, stats)

    def d_main(
        self, real_img: torch.Tensor, real_c: torch.Tensor, gen_z: torch.Tensor, gen_c: torch.Tensor
    ) -> PhaseOutput:
        """real_img [N, C, H, W] in [-1, 1], real_c [N, c_dim], gen_z [N, z_dim], gen_c [N, c_dim]."""
        with torch.no_grad():
            gen_img, gen_ws = self.run_G(gen_z, gen_c)  # [N, C, H, W] (no gradient to G)
        gen_logits = self.run_D(gen_img, gen_c)  # [N, 1]
        real_logits = self.run_D(real_img.detach(), real_c)  # [N, 1]
        loss_Dgen = F.softplus(gen_logits)  # [N, 1]
        loss_Dreal = F.softplus(-real_logits)  # [N, 1]
        loss_D = loss_Dgen + loss_Dreal  # [N, 1]
        data = PhaseData(
            "Dmain",
            gen_z=gen_z,
            gen_c=gen_c,
            gen_ws=gen_ws,
            gen_img=gen_img,
            gen_logits=gen_logits,
            real_img=real_img,
            real_c=real_c,
            real_logits=real_logits,
        )
        stats = {
            "Loss/scores/fake": gen_logits.detach(),
            "Loss/signs/fake": gen_logits.detach().sign(),
            "Loss/scores/real": real_logits.detach(),
            "Loss/signs/real": real_logits.detach().sign(),
            "Loss/D/loss": loss_D.detach(),
        }
        return PhaseOutput(loss_D.mean(), data, stats)

    def d_both(
        self,
        real_img: torch.Tensor,
        real_c: torch.Tensor,
        gen_z: torch.Tensor,
        gen_c: torch.Tensor,
        r1_gain: float,
    ) -> PhaseOutput:
        """``Dmain`` and ``r1_gain`` x R1 on the same reals, D run once per image: example i's loss is
        ``softplus(D(fake_i)) + softplus(-D(real_i)) + r1_gain * gamma / 2 * |grad_x D(real_i)|^2``.
        Shapes as in :meth:`d_main`."""
        with torch.no_grad():
            gen_img, gen_ws = self.run_G(gen_z, gen_c)  # [N, C, H, W] (no gradient to G)
        gen_logits = self.run_D(gen_img, gen_c)  # [N, 1]
        real_img_tmp = real_img.detach().requires_grad_(True)  # [N, C, H, W]
        real_logits = self.run_D(real_img_tmp, real_c)  # [N, 1]
        r1_penalty = self._r1_penalty(real_img_tmp, real_logits)  # [N]
        loss_Dr1 = r1_penalty * (self.r1_gamma / 2)  # [N]
        loss_D = F.softplus(gen_logits) + F.softplus(-real_logits)  # [N, 1]
        data = PhaseData(
            "Dboth",
            gen_z=gen_z,
            gen_c=gen_c,
            gen_ws=gen_ws,
            gen_img=gen_img,
            gen_logits=gen_logits,
            real_img=real_img_tmp,
            real_c=real_c,
            real_logits=real_logits,
        )
        stats = {
            "Loss/scores/fake": gen_logits.detach(),
            "Loss/signs/fake": gen_logits.detach().sign(),
            "Loss/scores/real": real_logits.detach(),
            "Loss/signs/real": real_logits.detach().sign(),
            "Loss/D/loss": loss_D.detach(),
            "Loss/r1_penalty": r1_penalty.detach(),
            "Loss/D/reg": loss_Dr1.detach(),
        }
        return PhaseOutput((loss_D[:, 0] + loss_Dr1 * r1_gain).mean(), data, stats)

    @staticmethod
    def _r1_penalty(real_img: torch.Tensor, real_logits: torch.Tensor) -> torch.Tensor:
        """``|grad_x D(x)|^2`` per example [N], differentiable (double backward) for R1."""
        (r1_grads,) = torch.autograd.grad(outputs=[real_logits.sum()], inputs=[real_img], create_graph=True)
        return r1_grads.square().sum([1, 2, 3])  # [N]

    def d_reg(self, real_img: torch.Tensor, real_c: torch.Tensor) -> PhaseOutput:
        """R1 on reals: real_img [N, C, H, W], real_c [N, c_dim]."""
        real_img_tmp = real_img.detach().requires_grad_(True)  # [N, C, H, W]
        real_logits = self.run_D(real_img_tmp, real_c)  # [N, 1]
        r1_penalty = self._r1_penalty(real_img_tmp, real_logits)  # [N]
        loss_Dr1 = r1_penalty * (self.r1_gamma / 2)  # [N]
        loss = loss_Dr1.mean()
        data = PhaseData("Dreg", real_img=real_img_tmp, real_c=real_c, real_logits=real_logits)
        stats = {"Loss/r1_penalty": r1_penalty.detach(), "Loss/D/reg": loss_Dr1.detach()}
        return PhaseOutput(loss, data, stats)
