"""The training loop: set-up, steps, ticks, snapshots.

Reading order: :func:`training_loop` (set-up, then the main loop), :func:`training_step` (one step:
the real batch, the due phases, EMA, ADA, ``step_end``), :func:`.phases.run_phase` (one phase: either a
plugin's ``phase_gradients`` -> sum over ranks -> its ``finish`` -> NaN/inf guard, or the core's loss +
plugin terms -> backward over the accumulation rounds -> cross-rank average -> NaN/inf guard; then the
plugins' gradient transforms and the optimizer step), and :func:`end_of_tick` (statistics, progress
line, image grid, snapshot).

Shapes: B = ``batch_gpu`` (images per accumulation round on this rank); R = ``batch // (batch_gpu *
world_size)`` accumulation rounds; images [B, C, H, W] float in [-1, 1]; labels [B, c_dim]. With a
plugin's real-batch sampler (``real_batch_sampler``) D's phases see this rank's share of the step's
examples instead, in rounds of at most B (none at all when the share is empty), and their losses are
normalised by the expected batch; G's phases keep R rounds of B.
"""

from __future__ import annotations

import copy
import random
import time
import traceback
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from stylegan2_ada import devices
from stylegan2_ada.atomic import write_json_atomic
from stylegan2_ada.loss import StyleGAN2Loss
from stylegan2_ada.plugin_api import StepInfo, TrainingContext
from stylegan2_ada.training import distributed as dist
from stylegan2_ada.training.data import (
    BadItemLog,
    InfiniteSampler,
    StepChunks,
    TolerantDataset,
    images_to_float,
    label_table,
    make_loader,
    make_step_loader,
    open_training_dataset,
    plugin_sampler,
    rank_share,
    without_failures,
)
from stylegan2_ada.training.ema import ema_beta, update_ema
from stylegan2_ada.training.evaluation import SnapshotMetrics, setup_snapshot_metrics
from stylegan2_ada.training.grids import generate_grid_images, grid_shape, save_image_grid, select_grid
from stylegan2_ada.training.logfile import LogTee
from stylegan2_ada.training.options import TrainingOptions, describe_adjustments, kimg_label, next_run_dir
from stylegan2_ada.training.phases import (
    Phase,
    PluginLabels,
    build_phases,
    draw_latents,
    fake_grid_labels,
    plugin_labels,
    run_phase,
)
from stylegan2_ada.training.phases import (  # re-exported: tests and benchmarks import them from here
    reduce_and_guard_gradients as reduce_and_guard_gradients,
)
from stylegan2_ada.training.snapshots import (
    ResumeData,
    TrainingState,
    capture_rng,
    copy_weights,
    is_training_snapshot,
    load_optimizer_state,
    parse_resume_data,
    restore_rng,
    save_snapshot,
    snapshot_path,
)
from stylegan2_ada.training.stats import StatsCollector, StatsWriter, cpu_memory_gb, scalar_stat

REAL_SCORE_STATS = ("Loss/scores/real", "Loss/signs/real")  # left out without ``real_score_stats``


class TrainingStopped(RuntimeError):
    """Training stopped early on purpose (e.g. too many training items could not be loaded), after a
    final tick and snapshot; the message says why and what to do."""


@dataclass
class TrainingResult:
    """What :func:`training_loop` returns (the networks stay on the training device)."""

    run_dir: Path | None
    state: TrainingState
    G: nn.Module
    D: nn.Module
    G_ema: nn.Module
    augment_pipe: nn.Module | None
    snapshots: list[Path] = field(default_factory=list)
    last_stats: dict[str, dict[str, float]] = field(default_factory=dict)
    stopped_early: str | None = None  # why a plugin ended the run before --kimg (a clean stop)


# ------------------------------------------------------------------------------------------ set-up pieces


def setup_device(o: TrainingOptions, info: dist.DistInfo) -> torch.device:
    """The device of this rank; on CUDA turns on cudnn.benchmark and keeps TF32 off (as upstream); on CPU
    lets the C allocator keep freed memory for the next step (:func:`devices.keep_freed_cpu_memory`)."""
    if o.device == "cuda":
        device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        return device
    devices.keep_freed_cpu_memory()
    return torch.device("cpu")


def seed_everything(seed: int) -> np.random.Generator:
    """Seed torch, numpy and python for this rank; return the loop's own numpy generator."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)
    return np.random.default_rng(seed)


def open_dataset(o: TrainingOptions, pm: Any = None) -> Any:
    """The run's dataset from its resolved options (see :func:`.data.open_training_dataset`)."""
    return open_training_dataset(
        o.data,
        cond=o.cond,
        mirror=o.mirror,
        subset=o.subset,
        seed=o.seed,
        outdir=o.outdir,
        max_classes=o.max_classes,
        pm=pm,
        options=o.context_options(),
    )


def build_networks(
    o: TrainingOptions, device: torch.device
) -> tuple[nn.Module, nn.Module, nn.Module, nn.Module | None]:
    """(G, D, G_ema, augment_pipe or None) from the options, on ``device``, with ``requires_grad`` off."""
    from stylegan2_ada.augment import AUGPIPE_SPECS, AugmentPipe
    from stylegan2_ada.networks import Discriminator, Generator

    G = Generator(**o.generator_kwargs()).train().requires_grad_(False).to(device)
    D = Discriminator(**o.discriminator_kwargs()).train().requires_grad_(False).to(device)
    G_ema = copy.deepcopy(G).eval()
    pipe = None
    if o.aug != "noaug":
        pipe = AugmentPipe(**AUGPIPE_SPECS[o.augpipe]).train().requires_grad_(False).to(device)
        pipe.p.fill_(float(o.p) if o.aug == "fixed" else 0.0)
    return G, D, G_ema, pipe


def restore_from_checkpoint(
    ckpt: Any,
    o: TrainingOptions,
    G: nn.Module,
    D: nn.Module,
    G_ema: nn.Module,
    pipe: nn.Module | None,
    say: Any,
) -> ResumeData | None:
    """Copy a checkpoint's weights into the new networks.

    A native training snapshot continues the run (strict: same architecture; returns its
    :class:`ResumeData`). Anything else (an upstream ``.pkl``, an exported checkpoint) is transfer
    learning: tensors with matching names and shapes are copied and ``None`` is returned.
    """
    nets = ckpt.networks
    if is_training_snapshot(ckpt):
        for name, dst in (("G", G), ("D", D), ("G_ema", G_ema)):
            copy_weights(nets[name], dst, strict=True, where=f"{ckpt.path}: {name}")
        if pipe is not None and o.aug == "ada" and "augment_pipe" in nets:
            pipe.p.copy_(nets["augment_pipe"].p.to(pipe.p.device))
        return parse_resume_data(ckpt)
    for name, dst in (("G", G), ("D", D), ("G_ema", G_ema)):
        if name not in nets:
            say(f"Resume: {ckpt.path} has no {name}; it starts from random weights")
            continue
        copied, skipped = copy_weights(nets[name], dst, strict=False, where=f"{ckpt.path}: {name}")
        say(
            f"Resume (weights only): {name}: copied {copied} tensors"
            + (f", skipped {len(skipped)}: {skipped[:3]}" if skipped else "")
        )
    return None


def fetch_reals(
    data_iter: Iterator[Any], rounds: int, device: torch.device
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``rounds`` minibatches of (images [B, C, H, W] float in [-1, 1], labels [B, c_dim]) on ``device``."""
    out = []
    for _ in range(rounds):
        img, c = next(data_iter)
        out.append((images_to_float(img, device), c.to(device, torch.float32, non_blocking=True)))
    return out


@dataclass
class RealBatch:
    """This rank's real examples of one step.

    ``rounds``: (images [b, C, H, W] in [-1, 1], labels [b, c_dim]) with b <= ``batch_gpu``; none when
    the rank's share of a plugin sampler's step is empty. ``idx`` [N] int64: their dataset indices (plugin
    sampler only). ``total``: the step's examples over all ranks. ``expected``: the expected examples
    per rank (plugin sampler), or ``None`` for the core's fixed batch.
    """

    rounds: list[tuple[torch.Tensor, torch.Tensor]]
    idx: torch.Tensor | None
    total: int
    expected: float | None = None

    @property
    def count(self) -> int:
        return sum(int(img.shape[0]) for img, _ in self.rounds)


def sampled_reals(
    data_iter: Iterator[Any], chunks: StepChunks, step: int, info: dist.DistInfo, device: torch.device
) -> RealBatch:
    """Step ``step``'s real batch from a plugin's sampler: as many loader batches as
    :class:`.data.StepChunks` yields for it (an empty one stands for "none")."""
    indices = chunks.sampler.indices(step)
    share = rank_share(indices, info.rank, info.world_size)
    rounds = fetch_reals(data_iter, chunks.chunks_in(share), device)
    rounds = [(img, c) for img, c in rounds if img.shape[0] > 0]
    idx = torch.from_numpy(share).to(device)
    return RealBatch(rounds, idx, len(indices), chunks.sampler.expected_batch / info.world_size)


# ----------------------------------------------------------------------------------------------- the loop


class _Say:
    """Print only on rank 0."""

    def __init__(self, info: dist.DistInfo) -> None:
        self.on = info.is_main

    def __call__(self, *args: Any) -> None:
        if self.on:
            print(*args, flush=True)


def _fmt_time(seconds: float) -> str:
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h {(s // 60) % 60:02d}m"
    return f"{s // 86400}d {(s // 3600) % 24:02d}h"


def progress_line(stats: dict[str, dict[str, float]]) -> str:
    """The human-readable line printed each tick."""

    def m(name: str, fmt: str = "{:.3f}") -> str:
        return fmt.format(stats[name]["mean"]) if name in stats else "-"

    parts = [
        f"tick {int(stats['Progress/tick']['mean']):<5d}",
        f"kimg {stats['Progress/kimg']['mean']:<9.3f}",
        f"time {_fmt_time(stats['Timing/total_sec']['mean']):<9s}",
        f"sec/tick {m('Timing/sec_per_tick', '{:<7.1f}')}",
        f"sec/kimg {m('Timing/sec_per_kimg', '{:<8.2f}')}",
        f"maint {m('Timing/maintenance_sec', '{:<5.1f}')}",
        f"augment {m('Progress/augment', '{:.3f}')}",
        f"G {m('Loss/G/loss')}",
        f"D {m('Loss/D/loss')}",
        f"r1 {m('Loss/r1_penalty', '{:.4f}')}",
        f"pl {m('Loss/pl_penalty', '{:.4f}')}",
        f"cpumem {m('Resources/cpu_mem_gb', '{:.2f}')}GB",
        f"peak {m('Resources/peak_mem', '{:.2f}')}GB",
    ]
    extra = []
    for (
        k,
        v,
    ) in stats.items():  # plugin loss terms: Loss/<plugin>/<term>, shown as <last part of plugin>/<term>
        name = k.split("/")
        if name[0] == "Loss" and len(name) == 3 and name[1] not in ("G", "D", "scores", "signs"):
            extra.append(f"{name[1].rsplit('.', 1)[-1]}/{name[2]} {v['mean']:.4g}")
    nonfinite = stats.get("Progress/nonfinite_grads", {"mean": 0, "num": 0})
    if nonfinite["mean"] > 0:
        extra.append(f"nonfinite_grads {nonfinite['mean'] * nonfinite['num']:.0f}")
    if stats.get("Progress/bad_items", {}).get("mean", 0) > 0:
        extra.append(f"bad_items {stats['Progress/bad_items']['mean']:.0f}")
    return "  ".join(parts + extra)


@dataclass
class Run:
    """Everything one process of a run holds, built by :func:`setup_run`."""

    o: TrainingOptions
    info: dist.DistInfo
    device: torch.device
    run_dir: Path | None
    say: _Say
    dataset: Any
    labels: np.ndarray  # [len(dataset), c_dim]
    G: nn.Module
    D: nn.Module
    G_ema: nn.Module
    pipe: nn.Module | None
    loss: StyleGAN2Loss
    phases: list[Phase]
    optimizers: dict[str, torch.optim.Optimizer]
    ada: Any  # AdaController | None
    ada_acc: torch.Tensor  # float64 [2]: sum of sign(D(real)) and count since the last ADA update
    pm: Any
    ctx: TrainingContext
    stats: StatsCollector
    writer: StatsWriter | None
    loop_rng: np.random.Generator
    data_iter: Iterator[Any]
    rounds: int  # accumulation rounds per step (G's phases; D's too with the core's sampler)
    state: TrainingState
    resumed_from: str | None
    bad_items: BadItemLog
    chunks: StepChunks | None = None  # a plugin's real-batch sampler, as the loader sees it
    gen_labels: PluginLabels | None = None  # G's labels from a plugin (else random training labels)
    stop_reason: str | None = None  # set by a step: end with a final tick and snapshot, then raise
    finish_reason: str | None = None  # a plugin's stop request: end with a final tick and snapshot, cleanly
    grid_size: tuple[int, int] | None = None
    grid_z: torch.Tensor | None = None  # [gw*gh, z_dim]
    grid_c: torch.Tensor | None = None  # [gw*gh, c_dim]
    start_time: float = field(default_factory=time.time)
    snapshots: list[Path] = field(default_factory=list)
    last_stats: dict[str, dict[str, float]] = field(default_factory=dict)
    metrics: SnapshotMetrics | None = None  # --metrics, evaluated after each snapshot (.evaluation)


def training_loop(
    o: TrainingOptions,
    *,
    pm: Any = None,
    dataset: Any = None,
    resume_ckpt: Any = None,
    stop_after_steps: int | None = None,
) -> TrainingResult:
    """Train according to ``o`` (see :mod:`.options`); returns the final state and networks.

    Args:
        pm: pluggy PluginManager from :func:`stylegan2_ada.plugins.create_plugin_manager`, or ``None``.
        dataset: an already opened dataset (train.py opens it to resolve the options), or ``None``.
        resume_ckpt: a :class:`stylegan2_ada.checkpoint.Checkpoint` to continue from (native snapshot)
            or take weights from (upstream ``.pkl``), or ``None``.
        stop_after_steps: stop (without a final snapshot) after this many steps, for benchmarks;
            ``None`` trains to ``o.kimg``.

    In a ``torchrun`` job (``WORLD_SIZE`` > 1) every rank calls this; only rank 0 writes files.
    Raises :class:`TrainingStopped` after the final snapshot of a run that had to stop early. Whatever
    ends the run with an exception is also written to ``log.txt`` (one ``Error:`` line for
    :class:`TrainingStopped`, the traceback otherwise).
    """
    info = dist.dist_info_from_env()
    device = setup_device(o, info)
    dist.init_distributed(info, device.type)
    tee: LogTee | None = None
    writer: StatsWriter | None = None
    try:
        run_dir = next_run_dir(o.outdir, o.desc) if info.is_main else None
        if run_dir is not None:
            tee = LogTee(run_dir / "log.txt").__enter__()
        run = setup_run(o, info, device, run_dir, pm=pm, dataset=dataset, resume_ckpt=resume_ckpt)
        writer = run.writer
        main_loop(run, stop_after_steps)
        run.say("Exiting...")
        return TrainingResult(
            run_dir=run.run_dir,
            state=run.state,
            G=run.G,
            D=run.D,
            G_ema=run.G_ema,
            augment_pipe=run.pipe,
            snapshots=run.snapshots,
            last_stats=run.last_stats,
            stopped_early=run.finish_reason,
        )
    except BaseException as exc:
        if tee is not None:
            stopped = isinstance(exc, TrainingStopped)
            tee.write_file_only(f"Error: {exc}\n" if stopped else "".join(traceback.format_exception(exc)))
        raise
    finally:
        if writer is not None:
            writer.close()
        if tee is not None:
            tee.__exit__(None, None, None)
        dist.shutdown_distributed(info)


def setup_run(
    o: TrainingOptions,
    info: dist.DistInfo,
    device: torch.device,
    run_dir: Path | None,
    *,
    pm: Any,
    dataset: Any,
    resume_ckpt: Any,
) -> Run:
    """Data, networks, optimizers, resume, loader, plugins and the initial image grids.

    The loader reads through a :class:`.data.TolerantDataset`: an item that fails to load is replaced by
    another one and reported to the run's :class:`.data.BadItemLog` (see :func:`training_step`). Which
    items each step reads: the core's :class:`.data.InfiniteSampler`, or a plugin's sampler
    (``real_batch_sampler``) through :class:`.data.StepChunks`.
    """
    from stylegan2_ada.augment import AdaController
    from stylegan2_ada.plugins import restore_plugin_states

    say = _Say(info)
    start_time = time.time()
    loop_rng = seed_everything(o.seed * info.world_size + info.rank)
    resumed_from = resume_ckpt.path if resume_ckpt is not None else None
    for line in describe_adjustments(o):
        say(line)
    if run_dir is not None:
        say(f"Run directory: {run_dir}")
        write_json_atomic(
            run_dir / "training_options.json",
            {
                **o.to_dict(),
                "run_dir": str(run_dir),
                "world_size": info.world_size,
                "resumed_from": resumed_from,
                "G_kwargs": o.generator_kwargs(),
                "D_kwargs": o.discriminator_kwargs(),
            },
        )

    # Data.
    if dataset is None:
        dataset = open_dataset(o, pm)
    labels = label_table(dataset, o.c_dim)  # [n, c_dim]
    size = f"{len(dataset)} items, " if o.dataset_details else ""
    say(
        f"Dataset {getattr(dataset, 'name', o.data)!r}: {size}"
        f"[{o.img_channels}, {o.resolution}, {o.resolution}], c_dim {o.c_dim}"
    )

    # Networks, loss, optimizers; resume.
    G, D, G_ema, pipe = build_networks(o, device)
    resume: ResumeData | None = None
    if resume_ckpt is not None:
        say(f"Resuming from {resume_ckpt.path} ({resume_ckpt.format})")
        resume = restore_from_checkpoint(resume_ckpt, o, G, D, G_ema, pipe, say)
    for module in (G, D, G_ema) + ((pipe,) if pipe is not None else ()):
        dist.broadcast_module(module, info)  # every rank starts from rank 0's weights
    say(
        f"G: {sum(p.numel() for p in G.parameters()) / 1e6:.2f}M parameters, "
        f"D: {sum(p.numel() for p in D.parameters()) / 1e6:.2f}M; device {device}; {info.world_size} process(es)"
    )
    loss = StyleGAN2Loss(
        G, D, pipe, r1_gamma=o.gamma, style_mixing_prob=o.style_mixing, pl_weight=o.pl_weight
    )
    if o.compile:
        from stylegan2_ada.compile import compile_for_training

        loss = compile_for_training(loss, device=device, say=say)
    phases = build_phases(o, G, D)
    optimizers = {"G": phases[0].opt, "D": next(p.opt for p in phases if p.name == "Dmain")}
    ada = AdaController(target=o.target, interval=o.ada_interval, kimg=o.ada_kimg) if o.aug == "ada" else None
    ada_acc = torch.zeros(2, dtype=torch.float64, device=device)
    state = TrainingState()
    if resume is not None:
        state = resume.state
        for name, opt in optimizers.items():
            if name in resume.optimizer_states:
                load_optimizer_state(opt, resume.optimizer_states[name], name)
        if resume.pl_mean is not None:
            loss.load_state_dict({"pl_mean": resume.pl_mean})
        if ada is not None and resume.ada_state:
            ada.load_state_dict(resume.ada_state)
            ada.kimg, ada.target = o.ada_kimg, o.target  # the current options win
            pending = resume.ada_state.get("pending")
            if pending and info.is_main:  # the saved sum is already reduced over ranks
                ada_acc.copy_(torch.tensor(pending, dtype=torch.float64))
        say(
            f"Resumed at {state.cur_nimg / 1000:g} kimg (tick {state.cur_tick}), augment p "
            f"{float(pipe.p) if pipe is not None else 0:.4f}"
        )

    # Loader: per-rank shard, resumable position; bad items are skipped and reported.
    bad_items = BadItemLog(o.max_bad_images, say, show_items=o.dataset_details)
    tolerant = TolerantDataset(dataset, max_tries=o.max_bad_images + 1)
    per_rank_batch = o.batch // info.world_size
    loader, chunks = make_real_loader(o, info, tolerant, pm, state, device)

    # Plugins.
    ctx = TrainingContext(
        G=G,
        D=D,
        G_ema=G_ema,
        augment_pipe=pipe,
        dataset=dataset,
        device=device,
        run_dir=str(run_dir) if run_dir is not None else None,
        options=o.context_options(),
        rank=info.rank,
        world_size=info.world_size,
        cur_nimg=state.cur_nimg,
        cur_tick=state.cur_tick,
        batch_size=o.batch,
        G_opt=optimizers["G"],
        D_opt=optimizers["D"],
    )
    if pm is not None:
        pm.hook.training_setup(context=ctx)
        if resume is not None and resume.plugin_states:
            unclaimed = restore_plugin_states(pm, ctx, resume.plugin_states)
            if unclaimed:
                warnings.warn(
                    f"the snapshot holds state of plugins not enabled now: {', '.join(unclaimed)}",
                    stacklevel=2,
                )

    run = Run(
        o=o,
        info=info,
        device=device,
        run_dir=run_dir,
        say=say,
        dataset=dataset,
        labels=labels,
        G=G,
        D=D,
        G_ema=G_ema,
        pipe=pipe,
        loss=loss,
        phases=phases,
        optimizers=optimizers,
        ada=ada,
        ada_acc=ada_acc,
        pm=pm,
        ctx=ctx,
        stats=StatsCollector(device, exclude=() if o.real_score_stats else REAL_SCORE_STATS),
        writer=StatsWriter(run_dir) if run_dir is not None else None,
        loop_rng=loop_rng,
        data_iter=without_failures(iter(loader), bad_items.record),
        rounds=per_rank_batch // o.batch_gpu,
        state=state,
        resumed_from=resumed_from,
        bad_items=bad_items,
        start_time=start_time,
        chunks=chunks,
        gen_labels=plugin_labels(pm, ctx, o.c_dim),
    )
    run.metrics = setup_snapshot_metrics(
        o,
        dataset=dataset,
        device=device,
        info=info,
        run_dir=run_dir,
        writer=run.writer,
        pm=pm,
        say=say,
        cur_nimg=state.cur_nimg,
    )
    if chunks is not None:
        say(f"Real examples per step: a plugin's sampler, {chunks.sampler.expected_batch:g} expected")
    if run_dir is not None:
        write_initial_grids(run, tolerant)

    # Random state last, so that a resumed run continues the very same random stream.
    if resume is not None:
        if len(resume.rng_states) == info.world_size:
            restore_rng(resume.rng_states[info.rank], device, run.loop_rng)
        else:
            say(
                f"Note: the snapshot was written by {len(resume.rng_states)} process(es); reseeding the random state"
            )
            run.loop_rng = seed_everything(o.seed * info.world_size + info.rank + 1_000_003 * state.batch_idx)
    return run


def make_real_loader(
    o: TrainingOptions,
    info: dist.DistInfo,
    tolerant: TolerantDataset,
    pm: Any,
    state: TrainingState,
    device: torch.device,
) -> tuple[torch.utils.data.DataLoader, StepChunks | None]:
    """The loader of real examples, and the :class:`.data.StepChunks` of a plugin's sampler (else
    ``None``): the core's per-rank :class:`.data.InfiniteSampler` continues at ``sampler_position``, a
    plugin's sampler at step ``batch_idx``."""
    sampler = plugin_sampler(pm, o, tolerant.dataset)
    seed = o.seed * info.world_size + info.rank
    pin = device.type == "cuda"
    if sampler is not None:
        chunks = StepChunks(sampler, info.rank, info.world_size, o.batch_gpu, start=state.batch_idx)
        return make_step_loader(tolerant, chunks, o.workers, pin_memory=pin, seed=seed), chunks
    infinite = InfiniteSampler(
        len(tolerant),
        rank=info.rank,
        world_size=info.world_size,
        shuffle=True,
        seed=o.seed,
        start=state.sampler_position,
    )
    return make_loader(tolerant, infinite, o.batch_gpu, o.workers, pin_memory=pin, seed=seed), None


def write_initial_grids(run: Run, tolerant: TolerantDataset) -> None:
    """``reals.png`` (unless ``reals_grid`` is off) and ``fakes_init.png``; fixes the grid's latents and
    labels (their own fixed random draws; the training RNG is untouched). Rank 0 only."""
    o = run.o
    run.grid_size, grid_idx, grid_labels = select_grid(
        run.dataset, run.labels if o.c_dim else None, o.resolution, seed=o.seed
    )
    if o.reals_grid:
        grid_items = [tolerant[i] for i in grid_idx]  # (image [C, H, W], label, failures)
        run.bad_items.record(f for _, _, failures in grid_items for f in failures)
        real_images = np.stack([np.asarray(image) for image, _, _ in grid_items])  # [N, C, H, W]
        save_image_grid(real_images, run.run_dir / "reals.png", run.grid_size, drange=(0, 255))
    if run.gen_labels is not None:
        run.grid_size = grid_shape(o.resolution, num_classes=o.c_dim)
        grid_labels = fake_grid_labels(run.gen_labels, run.grid_size[0] * run.grid_size[1], o.seed)
    run.grid_z = torch.randn([len(grid_labels), o.z_dim], generator=torch.Generator().manual_seed(o.seed)).to(
        run.device
    )
    run.grid_c = torch.from_numpy(grid_labels).to(run.device)
    save_image_grid(
        generate_grid_images(run.G_ema, run.grid_z, run.grid_c), run.run_dir / "fakes_init.png", run.grid_size
    )


def main_loop(run: Run, stop_after_steps: int | None = None) -> None:
    """Steps until ``o.kimg`` thousand images have been shown (or ``stop_after_steps``), with ticks.

    A step that sets ``run.stop_reason`` ends the run early: a final tick and snapshot, then
    :class:`TrainingStopped`. A plugin's stop request (``run.finish_reason``, see
    :func:`check_stop_request`) ends it the same way but cleanly. Either way ``training_end`` follows.
    """
    o, state = run.o, run.state
    total_nimg = int(round(o.kimg * 1000))
    tick_nimg = max(int(round(o.tick * 1000)), 1)
    run.say(
        f"Training for {o.kimg:g} kimg: batch {o.batch} = {run.info.world_size} process(es) x {run.rounds} "
        f"round(s) x {o.batch_gpu}; tick {o.tick:g} kimg; snapshot every {o.snap} tick(s)"
    )
    tick_start_time = time.time()
    maintenance_sec = tick_start_time - run.start_time
    steps = 0
    check_stop_request(run)  # asked for during set-up: not a single step
    while True:
        if run.finish_reason is None:
            training_step(run)
            steps += 1
            if stop_after_steps is not None and steps >= stop_after_steps:
                return
        stopping = run.stop_reason or run.finish_reason
        done = stopping is not None or state.cur_nimg >= total_nimg
        if not done and state.cur_tick != 0 and state.cur_nimg < state.tick_start_nimg + tick_nimg:
            continue
        if run.device.type == "cuda":
            torch.cuda.synchronize(run.device)
        tick_end_time = time.time()
        report_tick(run, tick_start_time, tick_end_time, maintenance_sec)
        end_of_tick(run, done)
        state.cur_tick += 1
        run.ctx.cur_tick = state.cur_tick
        state.tick_start_nimg = state.cur_nimg
        tick_start_time = time.time()
        maintenance_sec = tick_start_time - tick_end_time
        if not done:
            continue
        if run.finish_reason is not None:
            run.say(f"Stopped early: {run.finish_reason}")
        if run.pm is not None:
            run.pm.hook.training_end(context=run.ctx, stop_reason=stopping)
        if run.stop_reason is not None:
            raise TrainingStopped(run.stop_reason)
        return


def check_stop_request(run: Run) -> None:
    """Set ``run.finish_reason`` when a plugin asked to stop (``context.request_stop``) on any rank."""
    if run.pm is None:
        return
    request = run.ctx.stop_request
    if dist.any_rank(request is not None, run.info, run.device):
        run.finish_reason = request or "a plugin asked to stop on another rank"


def next_real_batch(run: Run) -> RealBatch:
    """This rank's real examples of the step: R rounds of B (the core's sampler) or a plugin sampler's."""
    if run.chunks is not None:
        return sampled_reals(run.data_iter, run.chunks, run.state.batch_idx, run.info, run.device)
    return RealBatch(fetch_reals(run.data_iter, run.rounds, run.device), None, run.o.batch)


def training_step(run: Run) -> None:
    """One step: the real batch; each due phase with its own latents; EMA; ADA; counters; ``step_end``.

    Items that failed to load were replaced by the loader; they are logged and counted here (on every
    rank alike). When there are too many, the step trains nothing and sets ``run.stop_reason``. After the
    step a plugin's stop request is picked up (see :func:`check_stop_request`).
    """
    o, state, info = run.o, run.state, run.info
    batch = next_real_batch(run)
    reason = run.bad_items.exchange(info, run.device)
    if reason is not None:
        run.stop_reason = reason
        return
    run.ctx.step = state.batch_idx
    labels = run.gen_labels if run.gen_labels is not None else run.labels
    names = []
    for phase in run.phases:
        name = phase.name_at(state.batch_idx)
        if name is None:
            continue
        sampled = batch.expected is not None  # a plugin's sampler: it feeds D; G keeps its fixed batch
        reals = [(None, None)] * run.rounds if sampled and not phase.trains_d else batch.rounds
        sizes = [int(img.shape[0]) for img, _ in reals] if sampled and phase.trains_d else None
        gens = draw_latents(run.rounds, o.batch_gpu, o.z_dim, labels, run.loop_rng, run.device, sizes)
        run.ada_acc += run_phase(
            phase,
            reals,
            gens,
            run.loss,
            run.ctx,
            run.pm,
            run.stats,
            info,
            name=name,
            real_idx=batch.idx if phase.trains_d else None,
            expected=batch.expected if sampled and phase.trains_d else None,
        )
        names.append(name)
    update_ema(run.G_ema, run.G, ema_beta(o.batch, state.cur_nimg, o.ema_kimg, o.ema_rampup))
    if run.ada is not None and state.batch_idx % o.ada_interval == 0:
        dist.all_reduce_sum(run.ada_acc, info)
        if float(run.ada_acc[1]) > 0:
            run.ada.update(run.pipe, float(run.ada_acc[0] / run.ada_acc[1]), o.batch)
        run.ada_acc.zero_()
    state.cur_nimg += batch.total
    state.batch_idx += 1
    state.sampler_position += batch.count
    run.ctx.cur_nimg = state.cur_nimg
    if run.pm is not None:
        expected = batch.expected * info.world_size if batch.expected is not None else o.batch
        step = StepInfo(run.ctx.step, tuple(names), batch.count, batch.total, float(expected))
        run.pm.hook.step_end(context=run.ctx, step=step)
        check_stop_request(run)


def report_tick(run: Run, tick_start_time: float, tick_end_time: float, maintenance_sec: float) -> None:
    """Reduce the tick's statistics over ranks, add progress/timing/resources; rank 0 prints and writes."""
    from stylegan2_ada.plugins import collect_tick_statistics

    state = run.state
    if run.pm is not None:
        for name, value in collect_tick_statistics(run.pm, run.ctx).items():
            run.stats.report(name, value)
    stats = run.stats.reduce(run.info)
    kimg = state.cur_nimg / 1000
    tick_kimg = (state.cur_nimg - state.tick_start_nimg) / 1000
    cur_mem, peak_cpu = cpu_memory_gb()
    stats.update(
        {
            "Progress/tick": scalar_stat(state.cur_tick),
            "Progress/kimg": scalar_stat(kimg),
            "Progress/augment": scalar_stat(float(run.pipe.p) if run.pipe is not None else 0.0),
            "Progress/bad_items": scalar_stat(run.bad_items.count),
            "Timing/total_sec": scalar_stat(tick_end_time - run.start_time),
            "Timing/sec_per_tick": scalar_stat(tick_end_time - tick_start_time),
            "Timing/sec_per_kimg": scalar_stat((tick_end_time - tick_start_time) / max(tick_kimg, 1e-9)),
            "Timing/maintenance_sec": scalar_stat(maintenance_sec),
            "Resources/cpu_mem_gb": scalar_stat(cur_mem),
        }
    )
    if run.device.type == "cuda":
        peak_gpu = torch.cuda.max_memory_allocated(run.device) / 2**30
        torch.cuda.reset_peak_memory_stats(run.device)
        stats["Resources/peak_gpu_mem_gb"] = scalar_stat(peak_gpu)
        stats["Resources/peak_mem"] = scalar_stat(peak_gpu)
    else:
        stats["Resources/peak_mem"] = scalar_stat(peak_cpu)
    stats = dict(sorted(stats.items()))
    run.last_stats = stats
    run.say(progress_line(stats))
    if run.writer is not None:
        run.writer.write(stats, global_kimg=kimg, timestamp=tick_end_time)


def end_of_tick(run: Run, done: bool) -> None:
    """Every ``snap`` ticks (and at the end): image grid ``fakesNNNNNN.png`` and a snapshot.

    Also averages G's and G_ema's float buffers over ranks (``mapping.w_avg`` moves with each rank's own
    ws) and, before a snapshot, checks that the ranks' weights agree.
    """
    from stylegan2_ada.plugins import plugin_states, resume_requirements

    o, state, info = run.o, run.state, run.info
    if state.cur_tick == 0 and o.compile:
        run.say(run.loss.compile_summary())  # compilation time of each network (first calls)
    dist.average_float_buffers(run.G, info)
    dist.average_float_buffers(run.G_ema, info)
    if not (done or state.cur_tick % o.snap == 0):
        return
    label = kimg_label(state.cur_nimg, o.tick)
    if run.run_dir is not None and snapshot_path(run.run_dir, label).exists():
        label = kimg_label(state.cur_nimg, 0.0)  # e.g. the final tick within the same kimg: keep both files
    if run.run_dir is not None:
        images = generate_grid_images(run.G_ema, run.grid_z, run.grid_c)
        save_image_grid(images, run.run_dir / f"fakes{label}.png", run.grid_size)
    # Collectives first (every rank), then rank 0 writes.
    rng_states = dist.all_gather_objects(capture_rng(run.device, run.loop_rng), info)
    ada_pending = dist.all_reduce_sum(run.ada_acc.clone(), info).tolist()
    dist.check_consistency([("G", run.G), ("D", run.D), ("G_ema", run.G_ema)], info)
    pstates = plugin_states(run.pm, run.ctx) if run.pm is not None else {}
    required = resume_requirements(run.pm, run.ctx) if run.pm is not None else {}
    if run.run_dir is None:
        if run.metrics is not None:  # every rank takes part in the metrics
            run.metrics.evaluate(run.G_ema, None, state.cur_nimg)
        return
    next_state = TrainingState(
        cur_nimg=state.cur_nimg,
        cur_tick=state.cur_tick + 1,
        batch_idx=state.batch_idx,
        tick_start_nimg=state.cur_nimg,
        sampler_position=state.sampler_position,
    )
    ada_state = {**run.ada.state_dict(), "pending": ada_pending} if run.ada is not None else None
    path = snapshot_path(run.run_dir, label)
    save_snapshot(
        path,
        G=run.G,
        D=run.D,
        G_ema=run.G_ema,
        augment_pipe=run.pipe,
        optimizers=run.optimizers,
        pl_mean=run.loss.pl_mean,
        state=next_state,
        rng_states=rng_states,
        ada_state=ada_state,
        plugin_states=pstates,
        training_options=o.to_dict(),
        resumed_from=run.resumed_from,
        class_names=getattr(run.dataset, "class_names", None),
        required_plugins=required,
    )
    run.snapshots.append(path)
    run.say(f"Saved {path.name}")
    if run.metrics is not None:
        run.metrics.evaluate(run.G_ema, path, state.cur_nimg)
