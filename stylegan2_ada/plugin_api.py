"""The objects the core hands to plugins: the run's :class:`TrainingContext` and one phase's :class:`PhaseData`.

This module sits beside :mod:`stylegan2_ada.hookspecs` (the hooks) and is, with it, the whole plugin API:
the loss (:mod:`stylegan2_ada.loss`), the plugin manager (:mod:`stylegan2_ada.plugins`) and the training
loop (:mod:`stylegan2_ada.training`) all import these classes from here, so nothing below the training
package depends on it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

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
    - ``extras``: a free dict where plugins keep per-run objects under their own name.
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
