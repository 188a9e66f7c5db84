"""Example third-party plugin: a total-variation (smoothness) loss on the generator's images.

Enabled with ``train.py --plugin example`` once this package is installed: its ``pyproject.toml``
declares the entry point ``example = "spinegan_example_plugin"`` in the group ``stylegan2_ada.plugins``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import click
import torch

from stylegan2_ada.hookspecs import hookimpl
from stylegan2_ada.plugin_api import PhaseData, TrainingContext


@hookimpl
def plugin_options() -> list[click.Option]:
    return [
        click.Option(
            ["--tv-weight"],
            type=click.FloatRange(min=0.0),
            default=0.01,
            show_default=True,
            help="Weight of the total-variation loss on generated images (example plugin).",
        )
    ]


@hookimpl
def loss_terms(phase: str, context: TrainingContext, data: PhaseData) -> Mapping[str, torch.Tensor] | None:
    if phase != "Gmain":
        return None
    img = data.gen_img  # [N, C, H, W], in [-1, 1], before augmentation
    tv = (img[:, :, 1:, :] - img[:, :, :-1, :]).abs().mean() + (
        img[:, :, :, 1:] - img[:, :, :, :-1]
    ).abs().mean()
    return {"tv": tv * context.options.get("tv_weight", 0.01)}  # logged as Loss/example/tv


@hookimpl
def tick_statistics(context: TrainingContext) -> Mapping[str, Any]:
    return {"Example/tv_weight": context.options.get("tv_weight", 0.01)}
