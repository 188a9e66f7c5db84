"""A test plugin that uses the seam a per-example-gradient plugin needs (named by dotted path).

- ``adjust_options``: minibatch-std group 1, R1 inside D's main phase (``Dboth``), no ``reals.png``, no
  real-score statistics, no dataset details;
- ``real_batch_sampler`` (``--toy-sizes 1,0,3``): step s shows the next ``sizes[s % len]`` examples
  of the dataset (cyclically), so some steps are empty; the expected batch is the mean size;
- ``phase_gradients`` (the phases in ``--toy-takeover``): this rank's SUM over its examples of the
  gradient of the core's own batched loss; ``finish`` adds ``--toy-noise`` x N(0, 1) from the context's
  shared generator and divides by the expected batch, so with noise 0 the update equals the core's;
- ``generator_labels`` (``--toy-class K``): every conditioning label is class K;
- ``step_end`` records each step and asks to stop after ``--toy-stop-after`` steps; ``training_end``
  records the reason; ``resume_requirement`` and ``plugin_state`` keep the step count.

What it saw is kept in ``context.extras["takeover"]`` and in :data:`SEEN` (per process).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import click
import numpy as np
import torch

from stylegan2_ada.hookspecs import hookimpl
from stylegan2_ada.plugin_api import PhaseBatch, PhaseGradients, StepInfo, TrainingContext

KEY = "takeover"
SEEN: dict[str, Any] = {}  # the last run's records in this process, for the tests


@hookimpl
def plugin_options() -> list[click.Option]:
    return [
        click.Option(["--toy-sizes"], type=str, default="", help="Examples per step, cycled ('' = core)."),
        click.Option(["--toy-takeover"], type=str, default="Dmain,Dboth", help="Phases to take over."),
        click.Option(["--toy-noise"], type=float, default=0.0, help="Noise std added after the sum."),
        click.Option(["--toy-class"], type=int, default=-1, help="Class of every G label (-1: core's)."),
        click.Option(["--toy-stop-after"], type=int, default=0, help="Ask to stop after N steps (0: no)."),
    ]


@hookimpl
def adjust_options(options: Mapping[str, Any]) -> Mapping[str, Any]:
    return {
        "mbstd_group": 1,
        "combine_d_reg": True,
        "reals_grid": False,
        "real_score_stats": False,
        "dataset_details": False,
    }


class ScriptedSampler:
    """Step s: the next ``sizes[s % len(sizes)]`` dataset indices after those of the steps before."""

    def __init__(self, sizes: list[int], size: int) -> None:
        self.sizes, self.size = sizes, size
        self.expected_batch = float(np.mean(sizes))

    def indices(self, step: int) -> np.ndarray:
        cycle, pos = divmod(step, len(self.sizes))
        start = cycle * sum(self.sizes) + sum(self.sizes[:pos])
        return (start + np.arange(self.sizes[pos])) % self.size


@hookimpl
def real_batch_sampler(options: Mapping[str, Any], dataset: Any) -> ScriptedSampler | None:
    if not options["toy_sizes"]:
        return None
    return ScriptedSampler([int(k) for k in options["toy_sizes"].split(",")], len(dataset))


@hookimpl
def training_setup(context: TrainingContext) -> None:
    SEEN.clear()
    SEEN.update(steps=[], taken=[], label_counts=[], gen_c=[], end=[], restored=None)
    context.extras[KEY] = SEEN


@hookimpl
def generator_labels(context: TrainingContext, count: int, rng: np.random.Generator) -> np.ndarray | None:
    k = int(context.options["toy_class"])
    if k < 0:
        return None
    context.extras[KEY]["label_counts"].append(count)
    labels = np.zeros([count, context.options["c_dim"]], dtype=np.float32)
    labels[:, k] = 1
    return labels


@hookimpl
def phase_gradients(phase: str, context: TrainingContext, batch: PhaseBatch) -> PhaseGradients | None:
    if phase not in context.options["toy_takeover"].split(","):
        return None
    seen = context.extras[KEY]
    n = int(batch.real_img.shape[0])
    seen["taken"].append((context.step, phase, n, batch.expected_batch, batch.reg_gain))
    seen["gen_c"].append(batch.gen_c.cpu())
    grads, stats = {}, {}
    if n > 0:
        out = batch.loss.compute(
            phase,
            real_img=batch.real_img,
            real_c=batch.real_c,
            gen_z=batch.gen_z,
            gen_c=batch.gen_c,
            r1_gain=batch.reg_gain or 1.0,
        )
        params = dict(batch.module.named_parameters())
        summed = torch.autograd.grad(out.loss * n, list(params.values()), allow_unused=True)
        grads = {name: g for name, g in zip(params, summed) if g is not None}
        stats = out.stats
    finish = functools.partial(
        add_noise_and_average, context=context, phase=phase, expected=batch.expected_batch
    )
    return PhaseGradients(grads, finish=finish, stats=stats)


@torch.no_grad()
def add_noise_and_average(
    module: torch.nn.Module, context: TrainingContext, phase: str, expected: float
) -> None:
    """``(sum + noise * N(0, 1)) / expected`` on every parameter, the noise from the shared generator."""
    noise = float(context.options["toy_noise"])
    generator = context.shared_generator(f"{KEY}/{phase}")
    for p in module.parameters():
        if noise:
            p.grad += noise * torch.randn(p.shape, generator=generator, device=p.device)
        p.grad /= expected


@hookimpl
def step_end(context: TrainingContext, step: StepInfo) -> None:
    context.extras[KEY]["steps"].append(step)
    limit = int(context.options["toy_stop_after"])
    if limit and len(context.extras[KEY]["steps"]) >= limit:
        context.request_stop(f"takeover: stop after {limit} steps")


@hookimpl
def training_end(context: TrainingContext, stop_reason: str | None) -> None:
    context.extras[KEY]["end"].append((stop_reason, context.cur_nimg))


@hookimpl
def plugin_state(context: TrainingContext) -> Mapping[str, Any]:
    return {"steps": len(context.extras[KEY]["steps"])}


@hookimpl
def restore_plugin_state(context: TrainingContext, state: Mapping[str, Any]) -> None:
    context.extras[KEY]["restored"] = int(state["steps"])


@hookimpl
def resume_requirement(context: TrainingContext) -> str:
    return "its step count would be lost"
