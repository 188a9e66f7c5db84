"""Objects handed to plugins: the run's context and one phase's tensors."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class TrainingContext:
    """Everything a plugin may need about the run. Owned by the training loop; plugins read it.

    ``run_dir`` is ``None`` on ranks other than 0 (only rank 0 writes files). ``G_opt``/``D_opt`` are the
    optimizers (set before ``training_setup``). ``cur_nimg`` is the number
    of real images shown to D so far (kimg * 1000), kept up to date by the loop. ``extras`` is a free
    dict where plugins may keep per-run objects under their own name.
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

    Shapes: N = per-step batch on this rank; images [N, C, H, W] float in [-1, 1]; labels [N, c_dim]
    (one-hot for class labels; c_dim may be 0); latents z [N, z_dim]; ws [N, num_ws, w_dim]; logits [N, 1].
    Fields that a phase does not compute are ``None``: ``gen_*`` exist for ``Gmain``, ``Greg``, ``Dmain``;
    ``real_*`` for ``Dmain`` and ``Dreg``. ``gen_img`` is the generator output *before* augmentation.
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
