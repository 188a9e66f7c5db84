"""The objects the core hands to plugins and gets back from them.

- :class:`TrainingContext`: the run, one per process (networks, options, counters, a stop request, a
  random generator shared by all ranks);
- :class:`PhaseData`: one phase's tensors, given to ``loss_terms``;
- :class:`PhaseBatch` / :class:`PhaseGradients`: what ``phase_gradients`` receives when it may take over
  a phase's gradient computation, and what it returns;
- :class:`StepInfo`: what happened in one training step, given to ``step_end``;
- :class:`RealBatchSampler`: the protocol of the object ``real_batch_sampler`` returns.

This module sits beside :mod:`stylegan2_ada.hookspecs` (the hooks) and is, with it, the whole plugin API:
the loss (:mod:`stylegan2_ada.loss`), the plugin manager (:mod:`stylegan2_ada.plugins`) and the training
loop (:mod:`stylegan2_ada.training`) all import these classes from here, so nothing below the training
package depends on it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch


@dataclass
class TrainingContext:
    """Everything a plugin may need about the run. Owned by the training loop; plugins read it.

    Fields (all set before ``training_setup`` is called):

    - ``G``, ``D``, ``G_ema``: the networks; ``augment_pipe``: the ADA pipeline or ``None``;
    - ``dataset``: the training dataset (what ``dataset_readers`` returned, or the core's image dataset);
    - ``device``: this process's device; ``run_dir``: the run folder on rank 0, ``None`` on other ranks
      (only rank 0 writes files);
    - ``options``: every resolved option (core and plugins) by parameter name;
    - ``rank``, ``world_size``: this process and the number of processes;
    - ``cur_nimg``: real images shown to D so far (kimg * 1000), updated after every step;
    - ``cur_tick``: the index of the tick in progress (0 for the first; the tick a resumed run continues
      with), updated at the end of every tick, so ``tick_statistics`` sees the tick it reports;
    - ``batch_size``: the total batch over all ranks per step;
    - ``G_opt``, ``D_opt``: the Adam optimizers of G and D (shared by the main and regularisation phases);
    - ``extras``: a free dict where plugins keep per-run objects under their own name;
    - ``step``: the index of the training step in progress (0 first; a resumed run continues the count);
      set before the step's phases run, so ``phase_gradients`` and ``step_end`` see the step they serve;
    - ``stop_request``: why a plugin asked training to stop (:meth:`request_stop`), or ``None``.
    """

    G: torch.nn.Module
    D: torch.nn.Module
    G_ema: torch.nn.Module
    augment_pipe: torch.nn.Module | None
    dataset: Any
    device: torch.device
    run_dir: str | None
    options: dict[str, Any]
    rank: int = 0
    world_size: int = 1
    cur_nimg: int = 0
    cur_tick: int = 0
    batch_size: int = 0
    G_opt: torch.optim.Optimizer | None = None
    D_opt: torch.optim.Optimizer | None = None
    extras: dict[str, Any] = field(default_factory=dict)
    step: int = 0
    stop_request: str | None = None

    def request_stop(self, reason: str) -> None:
        """Ask the loop to end the run cleanly before its next step: a final tick and snapshot, then
        ``training_end``; ``train.py`` exits with status 0. ``reason`` (say which plugin and why) is
        printed and logged. Call it on every rank alike (the ranks stop together if any rank asks). The
        first request wins; asking again does nothing."""
        if self.stop_request is None:
            self.stop_request = str(reason)

    def shared_generator(self, purpose: str) -> torch.Generator:
        """A ``torch.Generator`` on :attr:`device` that is the SAME on every rank, for random numbers that
        must agree across processes (e.g. noise added to gradients after the cross-rank reduction).

        Seeded from the run's ``options["seed"]``, the step in progress (:attr:`step`) and ``purpose`` (a
        name that keeps independent streams apart, e.g. ``"myplugin/Dmain"``): the same step of a resumed
        run draws the same numbers, and two purposes never share a stream. Anyone who knows the seed can
        reproduce the draws: it is not a secret.
        """
        return seeded_generator(int(self.options.get("seed", 0)), self.step, purpose, self.device)


@dataclass
class PhaseData:
    """The tensors of one training phase, given to ``loss_terms``.

    Shapes: N = this rank's examples per accumulation round (``--batch-gpu``), except in ``Greg``, which
    uses ``max(N // 2, 1)`` of them; images [N, C, H, W] float in [-1, 1]; labels [N, c_dim] (one-hot for
    class labels; c_dim may be 0); latents z [N, z_dim]; ws [N, num_ws, w_dim]; logits [N, 1].

    Which fields each phase sets (the others are ``None``):

    - ``Gmain``: ``gen_z``, ``gen_c``, ``gen_ws``, ``gen_img``, ``gen_logits``;
    - ``Greg``: ``gen_z``, ``gen_c``, ``gen_ws``, ``gen_img``;
    - ``Dmain``: all fields (``gen_img`` is computed without a gradient path to G);
    - ``Dboth`` (D's main loss and R1 in one phase, see ``combine_d_reg``): all fields, ``real_img``
      requiring grad;
    - ``Dreg``: ``real_img`` (requires grad, for R1), ``real_c``, ``real_logits``.

    ``gen_img`` is the generator output *before* augmentation; the logits are D's outputs on the
    augmented images.
    """

    phase: str
    gen_z: torch.Tensor | None = None
    gen_c: torch.Tensor | None = None
    gen_ws: torch.Tensor | None = None
    gen_img: torch.Tensor | None = None
    gen_logits: torch.Tensor | None = None
    real_img: torch.Tensor | None = None
    real_c: torch.Tensor | None = None
    real_logits: torch.Tensor | None = None


def seeded_generator(
    seed: int, step: int, purpose: str, device: torch.device | str = "cpu"
) -> torch.Generator:
    """A generator seeded from ``(seed, step, purpose)`` through SHA-256 (see
    :meth:`TrainingContext.shared_generator`)."""
    digest = hashlib.sha256(f"{int(seed)}:{int(step)}:{purpose}".encode()).digest()
    return torch.Generator(device=device).manual_seed(int.from_bytes(digest[:8], "little") >> 1)


@dataclass
class PhaseBatch:
    """What a phase would train on, given to ``phase_gradients`` (this rank's share).

    - ``phase``: ``Gmain``, ``Greg``, ``Dmain``, ``Dboth`` or ``Dreg``; ``module``: what it trains;
    - ``real_img`` [N, C, H, W] float in [-1, 1], ``real_c`` [N, c_dim]: this rank's real examples of
      the step (``None`` in G phases). N may be 0 with a plugin sampler (``real_batch_sampler``);
    - ``real_idx`` [N] int64: their dataset indices (with a plugin sampler; ``None`` otherwise);
    - ``gen_z`` [M, z_dim], ``gen_c`` [M, c_dim]: the latents and labels the core drew for this phase (in
      D phases one per real example, M = N; ``None`` in ``Dreg``);
    - ``loss``: the core's :class:`stylegan2_ada.loss.StyleGAN2Loss`: ``run_G``, ``run_D`` (with
      augmentation), ``compute(phase, ...)`` (the batched phase losses), ``r1_gamma``, ``augment_pipe``;
    - ``reg_gain``: the weight of the lazy regulariser in this phase (its interval in ``Dreg``/``Greg``
      and ``Dboth``; 0 in ``Dmain``/``Gmain``): R1 counts ``reg_gain * gamma / 2 * |grad_x D|^2``;
    - ``expected_batch``: the expected number of real examples per step over all ranks (the core's own
      losses are normalised by it; with the core's sampler it is ``--batch``).

    The most examples the core runs through a network at once is ``context.options["batch_gpu"]``.
    """

    phase: str
    module: torch.nn.Module
    loss: Any
    real_img: torch.Tensor | None = None
    real_c: torch.Tensor | None = None
    real_idx: torch.Tensor | None = None
    gen_z: torch.Tensor | None = None
    gen_c: torch.Tensor | None = None
    reg_gain: float = 0.0
    expected_batch: float = 0.0


@dataclass
class PhaseGradients:
    """What a plugin's ``phase_gradients`` returns when it takes over a phase.

    - ``grads``: ``{parameter name of module: tensor shaped like it}``, this rank's CONTRIBUTION; the
      core SUMS them over ranks (missing parameters count as zeros) and writes the sums to ``.grad``;
    - ``finish``: called once per rank as ``finish(module)`` after that sum, with ``.grad`` identical on
      every rank, to edit ``.grad`` in place (e.g. add noise from ``context.shared_generator``, divide by
      the expected batch); then the core's NaN/inf guard, ``gradient_transforms`` and the optimizer step
      follow;
    - ``stats``: ``{statistic name: tensor of values}`` reported like the core's (e.g. ``"Loss/D/loss"``);
      ``"Loss/signs/real"`` also feeds ADA.
    """

    grads: Mapping[str, torch.Tensor]
    finish: Callable[[torch.nn.Module], None] | None = None
    stats: Mapping[str, torch.Tensor] = field(default_factory=dict)


@dataclass(frozen=True)
class StepInfo:
    """One finished training step, given to ``step_end``.

    ``step``: its index (the context's ``step``); ``phases``: the phases it ran, in order (e.g.
    ``("Gmain", "Greg", "Dboth")``); ``real_batch``: real examples this rank's D phases used;
    ``real_batch_total``: over all ranks (what ``cur_nimg`` grew by); ``expected_batch``: the expected
    total.
    """

    step: int
    phases: tuple[str, ...]
    real_batch: int
    real_batch_total: int
    expected_batch: float


class RealBatchSampler(Protocol):
    """Chooses the real examples of each step (returned by the ``real_batch_sampler`` hook).

    ``indices(step)`` must be a pure function of ``step`` (the same on every rank, and again after a
    resume): the dataset indices of ALL ranks' examples for that step, any number of them, 0 included.
    Rank ``r`` of ``W`` trains on ``indices(step)[r::W]``. ``expected_batch`` is the expected length of
    ``indices(step)``: the core divides the summed loss of a step by it (not by the realised size).
    """

    expected_batch: float

    def indices(self, step: int) -> np.ndarray: ...
