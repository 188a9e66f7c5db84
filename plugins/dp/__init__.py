"""``dp`` plugin: differentially private training of the discriminator (DP-SGD), its privacy accountant
and the original SpineGAN mechanism as a labelled, non-private ablation.

The engine lives in :mod:`plugins.dp.tape` and :mod:`plugins.dp.per_example` (per-example clipped
gradients), :mod:`plugins.dp.mechanism` (the discriminator's private gradient), :mod:`plugins.dp.accounting`
(epsilon and noise calibration) and :mod:`plugins.dp.legacy` (the ablation); see ``docs/privacy.md``.
This module wires them into training through the core's hooks only:

``--dp-mode dp`` (the default), ``python train.py --plugin dp --noise SIGMA --clip C ...``:

- options (``adjust_options``): minibatch-stddev group 1 (it mixes examples), R1 inside D's main phase
  (``Dboth``: one loss per example with its R1 term), ``--aug=ada`` becomes ``--aug=noaug`` (ADA's p is
  steered by D's outputs on reals; give ``--aug=fixed --p P`` for a fixed augmentation), and no
  ``reals.png``, real-score statistics or dataset details;
- data (``real_batch_sampler``): Poisson sampling, each image independently with ``q = batch / N``;
- D (``phase_gradients`` on ``Dmain``/``Dboth``): each rank's sum of per-example gradients of the full D
  loss (real term, its fake partner, R1 when due) clipped to C, then after the sum over ranks
  (``finish``) Gaussian noise of std ``sigma * C`` from the generator shared by all ranks, divided by the
  expected batch ``q * N``; every such step is charged to the accountant;
- G's labels (``generator_labels``): uniform over the classes; G, its EMA and path-length
  regularisation are post-processing of D's private updates;
- accounting: ``Privacy/epsilon`` every tick, ``privacy.json`` in the run folder and in each snapshot
  (``plugin_state``), a clean stop before ``--max-epsilon`` would be exceeded (``step_end``), and a
  snapshot cannot be resumed without the plugin (``resume_requirement``);
- other plugins that could see the training images are refused unless declared public
  (``--declare-public NAME``), and so is ``--metrics`` (FID and the rest compare the fakes with the
  training images, and their published values are not covered) unless ``--allow-metrics`` says the
  values stay with the data holder.

``--dp-mode legacy``: the original mechanism (noise then whole-module clip on G and D after every phase,
``gradient_transforms``), printed and logged as NOT differentially private; ``--no-clip`` and
``--noise 0`` are its ablations.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import click
import numpy as np
import torch
from torch import nn

from plugins.dp.accounting import (
    ACCOUNTANTS,
    ADJACENCY,
    PrivacyLedger,
    delta_warning,
    effective_noise_multiplier,
    noise_for_epsilon,
)
from plugins.dp.legacy import NOT_PRIVATE, ORIGINAL_MAX_NORM, ORIGINAL_NOISE_STD, legacy_noise_then_clip
from plugins.dp.mechanism import (
    check_per_example_independent,
    clipped_discriminator_sum,
    microbatch_groups,
    privatise,
)
from stylegan2_ada.atomic import write_json_atomic
from stylegan2_ada.hookspecs import hookimpl
from stylegan2_ada.plugin_api import PhaseBatch, PhaseGradients, StepInfo, TrainingContext
from stylegan2_ada.training.data import PoissonSampler

KEY = "dp"
MODES = ("dp", "legacy")
PRIVATE_PHASES = ("Dmain", "Dboth")
# Hooks that only read the training data for the core (a data reader such as `dicom`); a plugin with
# any other hook gets the training context, and so could read the training images.
READER_HOOKS = frozenset(
    {"plugin_options", "validate_options", "dataset_readers", "check_run", "adjust_options"}
)
PRIVACY_FILE = "privacy.json"


# ----------------------------------------------------------------------------------------- the options


@hookimpl
def plugin_options() -> list[click.Option]:
    return [
        click.Option(
            ["--dp-mode"],
            type=click.Choice(MODES),
            default="dp",
            show_default=True,
            help="dp: DP-SGD on the discriminator with accounting. legacy: the original SpineGAN mechanism, "
            "NOT differentially private (an ablation).",
        ),
        click.Option(
            ["--noise"],
            type=float,
            help="dp: noise multiplier sigma (Gaussian noise of std sigma x C on the sum of clipped "
            f"gradients). legacy: per-coordinate noise std [default {ORIGINAL_NOISE_STD}].",
        ),
        click.Option(
            ["--clip"],
            type=float,
            help="dp: per-example clip norm C (required). "
            f"legacy: whole-module clip norm [default {ORIGINAL_MAX_NORM}].",
        ),
        click.Option(
            ["--microbatch"],
            type=int,
            default=1,
            show_default=True,
            help="dp: clip per microbatch of M examples (M > 1: sensitivity 2C, accounted).",
        ),
        click.Option(
            ["--delta"],
            type=float,
            default=1e-5,
            show_default=True,
            help="dp: the delta of (epsilon, delta)-DP; keep it well below 1/N.",
        ),
        click.Option(
            ["--target-epsilon"],
            type=float,
            help="dp: instead of --noise, the noise multiplier that reaches this epsilon at the end of the "
            "planned run (--kimg at the expected batch).",
        ),
        click.Option(
            ["--max-epsilon"],
            type=float,
            help="dp: stop cleanly (final snapshot) before epsilon would exceed this.",
        ),
        click.Option(
            ["--accountant"],
            type=click.Choice(ACCOUNTANTS),
            default="rdp",
            show_default=True,
            help="dp: privacy accountant: rdp (Renyi DP) or pld (privacy loss distributions, tighter, "
            "slower).",
        ),
        click.Option(
            ["--no-clip"], is_flag=True, help="legacy: add the noise but do not clip (an ablation)."
        ),
        click.Option(
            ["--declare-public"],
            multiple=True,
            metavar="PLUGIN",
            help="dp: declare that another enabled plugin only uses public data (e.g. a classifier NOT "
            "trained on this data); other plugins that could see the training images are refused.",
        ),
        click.Option(
            ["--allow-metrics"],
            is_flag=True,
            help="dp: allow --metrics. They compare the fakes with the private training images, and the "
            "guarantee does not cover their values: keep them with the data holder, do not publish them.",
        ),
    ]


@dataclass(frozen=True)
class Settings:
    """The plugin's options, with the mode's defaults filled in (see :func:`plugin_options`)."""

    mode: str
    noise: float | None  # dp: noise multiplier (None: from target_epsilon); legacy: per-coordinate std
    clip: float | None  # dp: per-example C; legacy: whole-module norm
    clip_on: bool
    microbatch: int
    delta: float
    target_epsilon: float | None
    max_epsilon: float | None
    accountant: str
    declared_public: tuple[str, ...]

    @classmethod
    def of(cls, options: Mapping[str, Any]) -> Settings:
        legacy = options["dp_mode"] == "legacy"
        noise, clip = options["noise"], options["clip"]
        if legacy:
            noise = ORIGINAL_NOISE_STD if noise is None else noise
            clip = ORIGINAL_MAX_NORM if clip is None else clip
        return cls(
            mode=options["dp_mode"],
            noise=noise,
            clip=clip,
            clip_on=not options["no_clip"],
            microbatch=int(options["microbatch"]),
            delta=float(options["delta"]),
            target_epsilon=options["target_epsilon"],
            max_epsilon=options["max_epsilon"],
            accountant=options["accountant"],
            declared_public=tuple(options["declare_public"] or ()),
        )

    @property
    def budget(self) -> tuple[float, str] | None:
        """(epsilon not to exceed, the option that set it): ``--max-epsilon``, else ``--target-epsilon``
        (a Poisson-sampled run may need a few more steps than planned to show ``--kimg`` images)."""
        if self.max_epsilon is not None:
            return self.max_epsilon, "--max-epsilon"
        if self.target_epsilon is not None:
            return self.target_epsilon, "--target-epsilon"
        return None


def _problem(s: Settings, plugins: list[str]) -> str | None:
    """What is wrong with the settings (a usage error), or ``None``."""
    if s.mode == "legacy":
        for flag, value, default in [
            ("--target-epsilon", s.target_epsilon, None),
            ("--max-epsilon", s.max_epsilon, None),
            ("--microbatch", s.microbatch, 1),
        ]:
            if value != default:
                return (
                    f"{flag} applies to --dp-mode dp only (legacy mode has no privacy guarantee to account)"
                )
        if s.noise < 0 or s.clip <= 0:
            return "--dp-mode legacy needs --noise >= 0 and --clip > 0"
        return None
    if not s.clip_on:
        return "--no-clip voids the guarantee of --dp-mode dp; it is an ablation of --dp-mode legacy"
    if s.clip is None or s.clip <= 0:
        return "--plugin dp needs --clip C > 0 (the per-example gradient norm bound)"
    if (s.noise is None) == (s.target_epsilon is None):
        return "--plugin dp needs exactly one of --noise SIGMA and --target-epsilon EPS"
    if s.noise is not None and s.noise <= 0:
        return (
            f"--noise {s.noise:g} gives no privacy (epsilon is infinite); give a positive noise multiplier "
            f"(the noise-free ablation is --dp-mode legacy --noise 0)"
        )
    for flag, value in [("--target-epsilon", s.target_epsilon), ("--max-epsilon", s.max_epsilon)]:
        if value is not None and value <= 0:
            return f"{flag} must be > 0, got {value}"
    if not 0 < s.delta < 1:
        return f"--delta must be in (0, 1), got {s.delta}"
    if s.microbatch < 1:
        return f"--microbatch must be at least 1, got {s.microbatch}"
    unknown = [name for name in s.declared_public if name not in plugins]
    if unknown:
        return f"--declare-public {unknown[0]}: no such plugin is enabled (--plugin {unknown[0]})"
    return None


@hookimpl
def validate_options(options: Mapping[str, Any]) -> None:
    problem = _problem(Settings.of(options), list(options.get("plugin") or ()))
    if problem is not None:
        raise click.UsageError(problem)


@hookimpl
def adjust_options(options: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """Close the leaks of D's real-data inputs (see the module docstring); nothing in legacy mode."""
    if options["dp_mode"] != "dp":
        return None
    changes: dict[str, Any] = {
        "mbstd_group": 1,
        "combine_d_reg": True,
        "reals_grid": False,
        "real_score_stats": False,
        "dataset_details": False,
    }
    if options["aug"] == "ada":
        changes["aug"] = "noaug"
    return changes


def _own_names(options: Mapping[str, Any]) -> set[str]:
    return {name for name in options["plugins"] if name in (KEY, __name__)}


def _readers_check(options: Mapping[str, Any], s: Settings) -> None:
    """Refuse other plugins that could see the training images, unless declared public."""
    own = _own_names(options)
    for name, hooks in options["plugin_hooks"].items():
        extra = sorted(set(hooks) - READER_HOOKS)
        if name in own or name in s.declared_public or not extra:
            continue
        raise click.UsageError(
            f"--plugin dp: plugin {name!r} could see the private training images (it implements "
            f"{', '.join(extra)}), which the privacy guarantee does not cover; if everything it reads is "
            f"public (e.g. a classifier NOT trained on this data), declare it: --declare-public {name}"
        )


def _check_one_hot(dataset: Any, c_dim: int) -> None:
    """Uniform labels need classes: every label one-hot."""
    for i in range(len(dataset)):
        label = np.asarray(dataset.get_label(i), dtype=np.float32).reshape(-1)
        if not (np.count_nonzero(label) == 1 and label.max() == 1.0):
            raise click.UsageError(
                f"--plugin dp draws G's labels uniformly over the classes, which needs one-hot class labels; "
                f"item {i} has the label {label.tolist()}"
            )


def noise_multiplier(s: Settings, options: Mapping[str, Any]) -> float:
    """sigma: ``--noise``, or the one that reaches ``--target-epsilon`` over the planned steps."""
    if s.noise is not None:
        return float(s.noise)
    try:
        return noise_for_epsilon(
            s.target_epsilon,
            sample_rate(options),
            planned_steps(options),
            s.delta,
            accountant=s.accountant,
            microbatch=s.microbatch,
        )
    except ValueError as exc:
        raise click.UsageError(f"--target-epsilon {s.target_epsilon}: {exc}") from exc


def sample_rate(options: Mapping[str, Any]) -> float:
    """q = expected batch / N."""
    return options["batch"] / options["dataset_size"]


def planned_steps(options: Mapping[str, Any]) -> int:
    """Steps of a run of --kimg at the expected batch (each shows ``batch`` images on average)."""
    return max(math.ceil(options["kimg"] * 1000 / options["batch"]), 1)


@hookimpl
def check_run(options: Mapping[str, Any], dataset: Any) -> None:
    s = Settings.of(options)
    if s.mode == "legacy":
        click.echo(f"Warning: --plugin dp --dp-mode legacy: {NOT_PRIVATE}", err=True)
        return
    _readers_check(options, s)
    if options["metrics"] and not options["allow_metrics"]:
        raise click.UsageError(
            f"--plugin dp: --metrics {','.join(options['metrics'])} compares the fakes with the private "
            "training images at every snapshot, and the guarantee does not cover the values it writes; "
            "train without --metrics (evaluate later on public or held-out data), or give --allow-metrics "
            "if the values will stay with the data holder"
        )
    if options["mirror"]:
        raise click.UsageError(
            "--plugin dp: --mirror adds an x-flipped copy of every image, so one image would count as two "
            "examples and the guarantee would not hold per image; use augmentation instead "
            "(--aug=fixed --p P)"
        )
    if options["batch"] > options["dataset_size"]:
        raise click.UsageError(
            f"--plugin dp samples each image with probability batch / N; --batch={options['batch']} is more "
            f"than the {options['dataset_size']} training images"
        )
    if options["c_dim"] > 0:
        _check_one_hot(dataset, options["c_dim"])
    warning = delta_warning(s.delta, options["dataset_size"])
    if warning is not None:
        click.echo(f"Warning: --plugin dp: {warning}", err=True)
    noise_multiplier(s, options)  # a --target-epsilon that no noise reaches is refused here


@hookimpl
def real_batch_sampler(options: Mapping[str, Any], dataset: Any) -> PoissonSampler | None:
    if options["dp_mode"] != "dp":
        return None
    return PoissonSampler(len(dataset), rate=sample_rate(options), seed=int(options["seed"]))


# ------------------------------------------------------------------------------------------- the run


@dataclass
class PrivateRun:
    """The ``dp`` plugin's state in one process (``context.extras["dp"]``)."""

    s: Settings
    sigma: float  # noise multiplier as applied (before the microbatch adjustment)
    q: float
    dataset_size: int
    ledger: PrivacyLedger
    planned: int  # planned privatised steps (--kimg at the expected batch)
    allowed: int | None = None  # privatised steps that stay within --max-epsilon (None: no limit)
    must_restore: bool = False  # resuming a snapshot: its dp state must come back first
    _epsilon: tuple[int, float] | None = None  # (steps, epsilon): the accountant runs once per step count

    def begin(self) -> None:
        self.ledger.begin(self.sigma, self.q, self.s.microbatch)
        self._epsilon = None
        budget = self.s.budget
        self.allowed = None if budget is None else steps_within(self.ledger, budget[0], self.s.delta)

    def epsilon(self) -> float:
        """Epsilon of the privatised steps taken so far, at ``--delta``."""
        if self._epsilon is None or self._epsilon[0] != self.ledger.steps:
            self._epsilon = (self.ledger.steps, self.ledger.epsilon(self.s.delta))
        return self._epsilon[1]

    def record(self) -> dict[str, Any]:
        """``privacy.json``: every input of the guarantee and its value now."""
        s = self.s
        return {
            "mode": "dp",
            "differentially_private": True,
            "epsilon": self.epsilon(),
            "delta": s.delta,
            "steps": self.ledger.steps,
            "noise_multiplier": self.sigma,
            "noise_from": "--noise" if s.noise is not None else f"--target-epsilon {s.target_epsilon}",
            "effective_noise_multiplier": effective_noise_multiplier(self.sigma, s.microbatch),
            "clip": s.clip,
            "microbatch": s.microbatch,
            "sensitivity": "C" if s.microbatch == 1 else "2C",
            "sample_rate": self.q,
            "expected_batch": self.q * self.dataset_size,
            "dataset_size": self.dataset_size,
            "sampling": "poisson",
            "accountant": self.ledger.accountant,
            "adjacency": ADJACENCY,
            "planned_steps": self.planned,
            "target_epsilon": s.target_epsilon,
            "max_epsilon": s.max_epsilon,
            "privatised": "the discriminator's updates (every D step, R1 steps included); G, G_ema and "
            "path-length regularisation are post-processing",
            "ledger": self.ledger.to_dict(),
        }


def steps_within(ledger: PrivacyLedger, max_epsilon: float, delta: float) -> int:
    """The most privatised steps in total (taken + more at the current settings) with epsilon <= max."""
    if ledger.epsilon_after(0, delta) > max_epsilon:
        return ledger.steps
    lo, hi = 0, 1  # extra steps: lo fits, find hi that does not
    while ledger.epsilon_after(hi, delta) <= max_epsilon:
        lo, hi = hi, hi * 2
        if hi > 10**9:
            return ledger.steps + lo
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if ledger.epsilon_after(mid, delta) <= max_epsilon else (lo, mid)
    return ledger.steps + lo


@dataclass
class LegacyRun:
    """The ``dp`` plugin's state in legacy mode."""

    s: Settings
    rounds: int  # accumulation rounds the loop averages over (the original summed them)

    def record(self) -> dict[str, Any]:
        return {
            "mode": "legacy",
            "differentially_private": False,
            "note": NOT_PRIVATE,
            "noise_std": self.s.noise,
            "max_norm": self.s.clip if self.s.clip_on else None,
            "clip": self.s.clip_on,
            "rounds": self.rounds,
            "applied_to": "G and D, every phase: noise on the summed gradient, then whole-module clipping",
        }


def _say(context: TrainingContext, line: str) -> None:
    if context.rank == 0:
        print(line, flush=True)


def _write_record(context: TrainingContext, record: Mapping[str, Any]) -> None:
    if context.run_dir is not None:
        write_json_atomic(f"{context.run_dir}/{PRIVACY_FILE}", dict(record))


@hookimpl
def training_setup(context: TrainingContext) -> None:
    o = context.options
    s = Settings.of(o)
    if s.mode == "legacy":
        rounds = o["batch"] // (o["batch_gpu"] * o["gpus"])
        context.extras[KEY] = run = LegacyRun(s, rounds)
        _say(context, f"dp: {NOT_PRIVATE}")
        _write_record(context, run.record())
        return
    check_per_example_independent(context.D)
    run = PrivateRun(
        s=s,
        sigma=noise_multiplier(s, o),
        q=sample_rate(o),
        dataset_size=int(o["dataset_size"]),
        ledger=PrivacyLedger(s.accountant),
        planned=planned_steps(o),
        must_restore=o.get("resume_format") == "snapshot",
    )
    context.extras[KEY] = run
    run.begin()
    planned_eps = run.ledger.epsilon_after(run.planned, s.delta)
    _say(
        context,
        f"dp: DP-SGD on D: noise multiplier {run.sigma:.4g}, clip {s.clip:g}, microbatch {s.microbatch}, "
        f"Poisson rate q = {run.q:.4g} (expected batch {run.q * run.dataset_size:g}), delta {s.delta:g}, "
        f"{s.accountant} accountant; the planned {run.planned} steps give epsilon {planned_eps:.4g}",
    )
    warning = delta_warning(s.delta, run.dataset_size)
    if warning is not None:
        _say(context, f"Warning: dp: {warning}")
    if o.get("resume_format") == "weights":
        _say(
            context,
            "dp: starting from pretrained weights: the guarantee holds only if they never saw this data",
        )
    _check_budget(context, run)
    _write_record(context, run.record())


@hookimpl
def restore_plugin_state(context: TrainingContext, state: Mapping[str, Any]) -> None:
    run = context.extras[KEY]
    if isinstance(run, LegacyRun):
        return  # a legacy run is not private: whatever came before
    if state.get("mode") != "dp":
        raise click.UsageError(
            "--plugin dp: the snapshot was trained with --dp-mode legacy (not private); a DP run cannot "
            "continue it"
        )
    run.ledger = PrivacyLedger.from_dict(state["ledger"])
    run.must_restore = False
    run.begin()
    _say(context, f"dp: resumed after {run.ledger.steps} privatised steps, epsilon {run.epsilon():.4g}")
    _check_budget(context, run)


def _check_budget(context: TrainingContext, run: PrivateRun) -> None:
    if run.allowed is not None and run.ledger.steps >= run.allowed:
        context.request_stop(
            f"dp: epsilon {run.epsilon():.4g} after {run.ledger.steps} privatised steps; one more step would "
            f"exceed {run.s.budget[1]} {run.s.budget[0]:g}"
        )


@hookimpl
def generator_labels(context: TrainingContext, count: int, rng: np.random.Generator) -> np.ndarray | None:
    """Uniform over the classes (the data's class frequencies would leak)."""
    c_dim = int(context.options["c_dim"])
    if context.options["dp_mode"] != "dp" or c_dim == 0:
        return None
    return np.eye(c_dim, dtype=np.float32)[rng.integers(0, c_dim, size=count)]


@hookimpl
def phase_gradients(phase: str, context: TrainingContext, batch: PhaseBatch) -> PhaseGradients | None:
    run = context.extras[KEY]
    if not isinstance(run, PrivateRun) or phase not in PRIVATE_PHASES:
        return None
    if run.must_restore:
        raise click.UsageError(
            f"--plugin dp --resume {context.options['resume']}: the snapshot was not trained with --plugin "
            f"dp, so its networks have seen the data without privacy; start a DP run from scratch"
        )
    D = batch.module
    with torch.no_grad():
        gen_img = batch.loss.run_G(batch.gen_z, batch.gen_c)[0] if len(batch.gen_z) else batch.real_img
    groups = num_groups = None
    if run.s.microbatch > 1:
        groups, num_groups = microbatch_groups(batch.real_idx, run.s.microbatch, batch.expected_batch)
    clipped = clipped_discriminator_sum(
        D,
        batch.real_img,
        batch.real_c,
        gen_img,
        batch.gen_c,
        clip=run.s.clip,
        augment=batch.loss.augment_pipe,
        r1_weight=batch.reg_gain * batch.loss.r1_gamma / 2,
        groups=groups,
        num_groups=num_groups,
    )
    finish = functools.partial(_privatise, context=context, phase=phase, expected=batch.expected_batch)
    return PhaseGradients(clipped.grads, finish=finish)


@torch.no_grad()
def _privatise(module: nn.Module, context: TrainingContext, phase: str, expected: float) -> None:
    """After the sum over ranks: ``(sum + N(0, (sigma C)^2)) / expected`` with noise the same on every
    rank; then the step is charged."""
    run: PrivateRun = context.extras[KEY]
    params = dict(module.named_parameters())
    noised = privatise(
        {name: p.grad for name, p in params.items()},
        clip=run.s.clip,
        noise_multiplier=run.sigma,
        expected_batch_size=expected,
        generator=context.shared_generator(f"{KEY}/{phase}"),
    )
    for name, p in params.items():
        p.grad.copy_(noised[name])
    run.ledger.step()


@hookimpl
def gradient_transforms(phase: str, context: TrainingContext, module: nn.Module) -> None:
    run = context.extras[KEY]
    if not isinstance(run, LegacyRun):
        return
    legacy_noise_then_clip(
        module,
        rounds=run.rounds,
        noise_std=run.s.noise,
        max_norm=run.s.clip,
        clip=run.s.clip_on,
        generator=context.shared_generator(f"{KEY}-legacy/{phase}"),
    )


@hookimpl
def step_end(context: TrainingContext, step: StepInfo) -> None:
    run = context.extras[KEY]
    if isinstance(run, PrivateRun):
        _check_budget(context, run)


@hookimpl
def tick_statistics(context: TrainingContext) -> Mapping[str, float] | None:
    run = context.extras[KEY]
    if not isinstance(run, PrivateRun):
        return None
    record = run.record()
    _write_record(context, record)
    return {"Privacy/epsilon": run.epsilon(), "Privacy/steps": run.ledger.steps}


@hookimpl
def plugin_state(context: TrainingContext) -> Mapping[str, Any]:
    return context.extras[KEY].record()


@hookimpl
def resume_requirement(context: TrainingContext) -> str | None:
    run = context.extras[KEY]
    if not isinstance(run, PrivateRun):
        return None
    return (
        f"it holds the privacy ledger ({run.ledger.steps} privatised steps, epsilon {run.epsilon():.4g} at "
        f"delta {run.s.delta:g}); without it training would continue on the private data unaccounted"
    )


@hookimpl
def training_end(context: TrainingContext, stop_reason: str | None) -> None:
    run = context.extras[KEY]
    _write_record(context, run.record())
    if isinstance(run, PrivateRun):
        _say(
            context,
            f"dp: {run.ledger.steps} privatised steps, epsilon {run.epsilon():.4g} at delta {run.s.delta:g}",
        )
    else:
        _say(context, f"dp: {NOT_PRIVATE}")
