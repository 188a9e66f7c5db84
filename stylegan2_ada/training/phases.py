"""One training phase: its latents, then its gradients (a plugin's or the core's), the cross-rank
reduction, the NaN/inf guard, the plugins' gradient transforms and the optimizer step.

Reading order: :func:`build_phases` (the phases and their Adam optimizers), :func:`run_phase` (one phase
of one step) with its two paths, :func:`core_gradients` (the core's loss + plugin terms, backward round by
round) and :func:`apply_plugin_gradients` (a plugin's ``phase_gradients``: summed over ranks, its
``finish``, the guard); :func:`draw_latents` (z and G's labels per round).

Shapes: B = ``batch_gpu`` (images per accumulation round on this rank); images [B, C, H, W] float in
[-1, 1]; labels [B, c_dim]; z [B, z_dim].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from stylegan2_ada.loss import StyleGAN2Loss
from stylegan2_ada.plugin_api import PhaseBatch, PhaseGradients, TrainingContext
from stylegan2_ada.training import distributed as dist
from stylegan2_ada.training.options import TrainingOptions
from stylegan2_ada.training.stats import StatsCollector

ADAM_BETAS = (0.0, 0.99)
ADAM_EPS = 1e-8


@dataclass
class Phase:
    """One training phase: ``name`` in Gmain/Greg/Dmain/Dreg, the module it trains, its optimizer, and
    ``interval`` (it runs on steps where ``batch_idx % interval == 0``; also its loss gain).

    ``reg_interval`` > 0 (D's main phase with ``combine_d_reg``): the regulariser joins this phase on
    steps where ``batch_idx % reg_interval == 0``, with that gain; the phase is then called ``Dboth``."""

    name: str
    module: nn.Module
    opt: torch.optim.Optimizer
    interval: int
    reg_interval: int = 0

    def name_at(self, step: int) -> str | None:
        """The phase's name at step ``step`` (``Dboth`` where the regulariser joins), or ``None`` when it
        does not run then."""
        if step % self.interval:
            return None
        if self.reg_interval and step % self.reg_interval == 0:
            return self.name.replace("main", "both")
        return self.name

    @property
    def trains_d(self) -> bool:
        return self.name.startswith("D")


def build_phases(o: TrainingOptions, G: nn.Module, D: nn.Module) -> list[Phase]:
    """Adam optimizers with lazy-regularisation scaling and the phases Gmain, Greg, Dmain, Dreg.

    With regularisation every k steps, lr and betas are scaled by ``ratio = k / (k + 1)`` (``beta ** ratio``)
    so that the main+reg updates together match an unregularised schedule. A phase whose weight is 0
    (``--gamma 0``, or ``pl_weight`` 0 for ``--cfg cifar``) is left out. With ``combine_d_reg`` R1 joins
    Dmain (``Dboth`` every k steps): one optimizer step per step, so D's lr and betas are not scaled.
    """
    phases: list[Phase] = []
    for name, module, lr, reg_interval, reg_on, combine in [
        ("G", G, o.glr, o.G_reg_interval, o.pl_weight > 0, False),
        ("D", D, o.dlr, o.D_reg_interval, o.gamma > 0, o.combine_d_reg),
    ]:
        ratio = 1.0 if combine else reg_interval / (reg_interval + 1)
        betas = tuple(b**ratio for b in ADAM_BETAS)
        opt = torch.optim.Adam(module.parameters(), lr=lr * ratio, betas=betas, eps=ADAM_EPS)
        phases.append(Phase(f"{name}main", module, opt, 1, reg_interval if combine and reg_on else 0))
        if reg_on and not combine:
            phases.append(Phase(f"{name}reg", module, opt, reg_interval))
    return phases


@torch.no_grad()
def guard_gradients(params: list[nn.Parameter], stats: StatsCollector) -> None:
    """Replace NaN by 0 and +-inf by +-1e5 in the ``.grad`` of ``params`` (in place), counted in
    ``Progress/nonfinite_grads``; each gradient's norm is checked first and only bad ones are scrubbed."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    norms = torch.stack(torch._foreach_norm(grads))  # [num_params]; non-finite iff a value is (or overflows)
    bad = (~torch.isfinite(norms)).nonzero().flatten().tolist()
    count = 0
    for i in bad:
        count += int((~torch.isfinite(grads[i])).sum())
        torch.nan_to_num(grads[i], nan=0.0, posinf=1e5, neginf=-1e5, out=grads[i])
    stats.report("Progress/nonfinite_grads", count)


@torch.no_grad()
def reduce_and_guard_gradients(
    module: nn.Module, info: dist.DistInfo, stats: StatsCollector, flat_buffer: bool | None = None
) -> None:
    """Average ``module``'s gradients across ranks and replace NaN by 0 and +-inf by +-1e5 (counted in
    ``Progress/nonfinite_grads``).

    Several ranks or a GPU: one flat buffer (all-reduce, count, scrub, copy back; no host sync). One CPU
    process: in place, checking each gradient's norm first and scrubbing only gradients that need it
    (a flat copy of every gradient would cost several passes over memory per phase). ``flat_buffer``
    forces one way or the other (``None``: choose as above).
    """
    params = [p for p in module.parameters() if p.grad is not None]
    if not params:
        return
    if flat_buffer is None:
        flat_buffer = info.enabled or params[0].device.type != "cpu"
    if flat_buffer:
        flat = dist.all_reduce_gradients(params, info)  # [P]
        stats.report("Progress/nonfinite_grads", (~torch.isfinite(flat)).sum())
        torch.nan_to_num(flat, nan=0.0, posinf=1e5, neginf=-1e5, out=flat)
        for p, g in zip(params, flat.split([p.numel() for p in params])):
            p.grad.copy_(g.view_as(p.grad))
        return
    guard_gradients(params, stats)


def run_phase(
    phase: Phase,
    reals: list[tuple[torch.Tensor | None, torch.Tensor | None]],
    gens: list[tuple[torch.Tensor | None, torch.Tensor | None]],
    loss: StyleGAN2Loss,
    ctx: TrainingContext | None,
    pm: Any,
    stats: StatsCollector,
    info: dist.DistInfo,
    *,
    name: str | None = None,
    real_idx: torch.Tensor | None = None,
    expected: float | None = None,
) -> torch.Tensor:
    """One phase: its gradients (a plugin's, or the core's over the accumulation rounds), then the
    plugins' gradient transforms and the optimizer step.

    ``reals``/``gens``: one (images, labels) / (z, c) pair per round (``None`` where the phase needs none).
    ``name``: the phase's name at this step (default ``phase.name``; ``Dboth`` where R1 joins).
    ``real_idx``: the reals' dataset indices, if known. ``expected``: the expected examples on this rank
    (a plugin sampler's varying batch), ``None`` for the fixed batch (then the rounds' sizes).
    Returns ``[sum of sign(D(real)), count]`` (float64 [2], zeros where there are no real scores) for ADA.
    """
    from stylegan2_ada.plugins import call_phase_gradients, implements

    name = name or phase.name
    phase.opt.zero_grad(set_to_none=True)
    phase.module.requires_grad_(True)
    taken = None
    if implements(pm, "phase_gradients"):
        batch = phase_batch(phase, name, reals, gens, loss, real_idx, expected, info.world_size)
        taken = call_phase_gradients(pm, name, ctx, batch)
    if taken is not None:
        signal = apply_plugin_gradients(phase.module, taken[1], stats, info)
    else:
        signal = core_gradients(phase, name, reals, gens, loss, ctx, pm, stats, expected)
        reduce_and_guard_gradients(phase.module, info, stats)
    if pm is not None:
        pm.hook.gradient_transforms(phase=name, context=ctx, module=phase.module)
    phase.opt.step()
    phase.module.requires_grad_(False)
    return signal


def _round_size(real_img: torch.Tensor | None, gen_z: torch.Tensor | None) -> int:
    return int(real_img.shape[0] if real_img is not None else gen_z.shape[0])


def core_gradients(
    phase: Phase,
    name: str,
    reals: list[tuple[torch.Tensor | None, torch.Tensor | None]],
    gens: list[tuple[torch.Tensor | None, torch.Tensor | None]],
    loss: StyleGAN2Loss,
    ctx: TrainingContext | None,
    pm: Any,
    stats: StatsCollector,
    expected: float | None,
) -> torch.Tensor:
    """The core's loss plus the plugins' terms, backward round by round into ``.grad`` (this rank only).

    Round k's loss, the mean over its n_k examples, is weighted ``interval * n_k / expected``: the reg
    phases carry their lazy interval as upstream, and with the fixed batch (``expected`` = the rounds'
    total) that is ``interval / rounds``, so gradients do not depend on ``--batch-gpu``. With a varying
    batch (``expected`` given) every parameter starts from a zero gradient, so that a rank without
    examples (no rounds) still takes part in the cross-rank reduction with the same tensors.
    """
    from stylegan2_ada.plugins import call_loss_terms

    sizes = [_round_size(real_img, gen_z) for (real_img, _), (gen_z, _) in zip(reals, gens)]
    total_expected = expected if expected is not None else sum(sizes)
    device = next(phase.module.parameters()).device
    signal = torch.zeros(2, dtype=torch.float64, device=device)
    if expected is not None:
        for p in phase.module.parameters():
            p.grad = torch.zeros_like(p)
    r1_gain = float(phase.reg_interval or 1)
    for n, (real_img, real_c), (gen_z, gen_c) in zip(sizes, reals, gens):
        out = loss.compute(name, real_img=real_img, real_c=real_c, gen_z=gen_z, gen_c=gen_c, r1_gain=r1_gain)
        total = out.loss  # [] mean over the round's examples
        if pm is not None:
            for term_name, term in call_loss_terms(pm, name, ctx, out.data).items():
                total = total + term
                stats.report(term_name, term)
        (total * (phase.interval * n / total_expected)).backward()
        signal += report_phase_stats(out.stats, stats).to(device)
    return signal


def report_phase_stats(values: dict[str, torch.Tensor], stats: StatsCollector) -> torch.Tensor:
    """Report a phase's statistics; return ``[sum of sign(D(real)), count]`` (float64 [2]) for ADA."""
    for name, value in values.items():
        stats.report(name, value)
    signs = values.get("Loss/signs/real")
    if signs is None:
        return torch.zeros(2, dtype=torch.float64, device=stats.device)
    signal = torch.zeros(2, dtype=torch.float64, device=signs.device)
    signal[0] += signs.sum().double()
    signal[1] += signs.numel()
    return signal


def _cat(
    parts: list[torch.Tensor | None], empty_shape: list[int], device: torch.device
) -> torch.Tensor | None:
    """The rounds' tensors end to end, ``None`` when the phase has none, or empty [0, ...] without rounds."""
    if any(t is None for t in parts):
        return None
    return torch.cat(parts) if parts else torch.zeros([0, *empty_shape], device=device)


def phase_batch(
    phase: Phase,
    name: str,
    reals: list[tuple[torch.Tensor | None, torch.Tensor | None]],
    gens: list[tuple[torch.Tensor | None, torch.Tensor | None]],
    loss: StyleGAN2Loss,
    real_idx: torch.Tensor | None,
    expected: float | None,
    world_size: int,
) -> PhaseBatch:
    """What ``phase_gradients`` gets: the phase's rounds end to end (see :class:`.plugin_api.PhaseBatch`)."""
    D, G = loss.D, loss.G
    device = next(phase.module.parameters()).device
    sizes = [_round_size(real_img, gen_z) for (real_img, _), (gen_z, _) in zip(reals, gens)]
    per_rank = expected if expected is not None else sum(sizes)
    reg_gain = {"Dboth": phase.reg_interval, "Dreg": phase.interval, "Greg": phase.interval}.get(name, 0)
    real_img, real_c, gen_z, gen_c = (None,) * 4
    if phase.trains_d:
        real_img = _cat(
            [img for img, _ in reals], [D.img_channels, D.img_resolution, D.img_resolution], device
        )
        real_c = _cat([c for _, c in reals], [D.c_dim], device)
    if name != "Dreg":
        gen_z = _cat([z for z, _ in gens], [G.z_dim], device)
        gen_c = _cat([c for _, c in gens], [G.c_dim], device)
    return PhaseBatch(
        phase=name,
        module=phase.module,
        loss=loss,
        real_img=real_img,
        real_c=real_c,
        real_idx=real_idx,
        gen_z=gen_z,
        gen_c=gen_c,
        reg_gain=float(reg_gain),
        expected_batch=float(per_rank * world_size),
    )


@torch.no_grad()
def apply_plugin_gradients(
    module: nn.Module, taken: PhaseGradients, stats: StatsCollector, info: dist.DistInfo
) -> torch.Tensor:
    """A plugin's gradients into ``.grad``: every parameter gets the SUM over ranks of the plugin's
    contributions (zeros where it gave none), then the plugin's ``finish(module)``, then the NaN/inf guard.
    Returns the ADA signal of the plugin's statistics (see :func:`report_phase_stats`)."""
    params = []
    for name, p in module.named_parameters():
        grad = taken.grads.get(name)
        p.grad = torch.zeros_like(p) if grad is None else torch.empty_like(p).copy_(grad)
        params.append(p)
    if info.enabled and params:
        flat = dist.all_reduce_gradients(params, info, average=False)  # [P]
        for p, g in zip(params, flat.split([p.numel() for p in params])):
            p.grad.copy_(g.view_as(p.grad))
    if taken.finish is not None:
        taken.finish(module)
    guard_gradients(params, stats)
    return report_phase_stats(dict(taken.stats), stats)


# ------------------------------------------------------------------------------------------- latents


def draw_latents(
    rounds: int,
    batch_gpu: int,
    z_dim: int,
    labels: Any,
    rng: np.random.Generator,
    device: torch.device,
    sizes: list[int] | None = None,
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``rounds`` pairs (z [B, z_dim] ~ N(0, 1), c [B, c_dim]), or one pair per entry of ``sizes``
    (B = that entry).

    ``labels``: the training labels [n, c_dim] (c is then the label of random training examples), or a
    :class:`PluginLabels`.
    """
    out = []
    for n in sizes if sizes is not None else [batch_gpu] * rounds:
        z = torch.randn([n, z_dim], device=device)
        if isinstance(labels, np.ndarray):
            c = labels[rng.integers(0, len(labels), size=n)]
        else:
            c = labels.sample(n, rng)
        out.append((z, torch.from_numpy(c).to(device)))
    return out


@dataclass
class PluginLabels:
    """G's conditioning labels from a plugin's ``generator_labels`` hook, checked: float32 [n, c_dim]."""

    pm: Any
    ctx: TrainingContext
    c_dim: int

    def sample(self, count: int, rng: np.random.Generator) -> np.ndarray:
        from stylegan2_ada.plugins import InvalidPluginError, single_result

        answer = single_result(self.pm, "generator_labels", context=self.ctx, count=count, rng=rng)
        if answer is None:
            raise InvalidPluginError("generator_labels: the plugin that gave labels before returned None")
        name, labels = answer
        labels = np.asarray(labels, dtype=np.float32)
        if labels.shape != (count, self.c_dim) or not np.isfinite(labels).all():
            raise InvalidPluginError(
                f"plugin {name!r}: generator_labels must return finite float32 [{count}, {self.c_dim}], got "
                f"shape {list(labels.shape)}"
            )
        return labels


def plugin_labels(pm: Any, ctx: TrainingContext, c_dim: int) -> PluginLabels | None:
    """A :class:`PluginLabels` when a plugin answers ``generator_labels`` (asked once for 1 label), else
    ``None``."""
    from stylegan2_ada.plugins import implements, single_result

    if not implements(pm, "generator_labels"):
        return None
    probe = single_result(pm, "generator_labels", context=ctx, count=1, rng=np.random.default_rng(0))
    return PluginLabels(pm, ctx, c_dim) if probe is not None else None


def fake_grid_labels(labels: PluginLabels, count: int, seed: int) -> np.ndarray:
    """``count`` labels for the fakes grid from a plugin, sorted by class (argmax) so rows group classes."""
    c = labels.sample(count, np.random.default_rng(seed))  # [count, c_dim]
    order = np.argsort(c.argmax(axis=1), kind="stable") if c.shape[1] else np.arange(count)
    return c[order]
