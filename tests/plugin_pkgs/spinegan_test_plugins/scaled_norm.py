"""A working plugin: a weighted mean-square loss term on generated images, an option, statistics and state.

It counts its ``loss_terms`` calls in ``context.extras["scaled_norm"]`` and stores the count in snapshots.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import click
import torch

from stylegan2_ada.hookspecs import hookimpl
from stylegan2_ada.plugin_api import PhaseData, TrainingContext

EXTRAS_KEY = "scaled_norm"


@hookimpl
def plugin_options() -> list[click.Option]:
    return [click.Option(["--norm-weight"], type=float, default=0.5, help="Weight of the mean-square term.")]


@hookimpl
def training_setup(context: TrainingContext) -> None:
    context.extras[EXTRAS_KEY] = {"calls": 0}


@hookimpl
def loss_terms(phase: str, context: TrainingContext, data: PhaseData) -> Mapping[str, torch.Tensor] | None:
    if phase != "Gmain":
        return None
    context.extras[EXTRAS_KEY]["calls"] += 1
    # gen_img: [N, C, H, W] -> scalar
    return {"mean_square": context.options["norm_weight"] * data.gen_img.square().mean()}


@hookimpl
def tick_statistics(context: TrainingContext) -> Mapping[str, float]:
    return {"ScaledNorm/calls": context.extras[EXTRAS_KEY]["calls"]}


@hookimpl
def plugin_state(context: TrainingContext) -> Mapping[str, Any]:
    return {"calls": context.extras[EXTRAS_KEY]["calls"]}


@hookimpl
def restore_plugin_state(context: TrainingContext, state: Mapping[str, Any]) -> None:
    context.extras[EXTRAS_KEY]["calls"] = state["calls"]
