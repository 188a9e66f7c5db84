"""A test plugin: weighted loss terms in Gmain and Dmain, an option, statistics, state, and a gradient hook.

- Gmain: ``extra_weight * mean(gen_img)`` (term ``img_mean``)
- Dmain: ``extra_weight * mean(real_logits ** 2)`` (term ``logit_square``)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import click
import torch

from stylegan2_ada.hookspecs import hookimpl
from stylegan2_ada.plugin_api import PhaseData, TrainingContext

KEY = "extra_loss"


@hookimpl
def plugin_options() -> list[click.Option]:
    return [click.Option(["--extra-weight"], type=float, default=0.1, help="Weight of the extra terms.")]


@hookimpl
def validate_options(options: Mapping[str, Any]) -> None:
    if options["extra_weight"] < 0:
        raise click.UsageError("--extra-weight must be >= 0")


@hookimpl
def training_setup(context: TrainingContext) -> None:
    context.extras[KEY] = {"calls": 0, "transforms": {}}


@hookimpl
def loss_terms(phase: str, context: TrainingContext, data: PhaseData) -> Mapping[str, torch.Tensor] | None:
    w = float(context.options["extra_weight"])
    if phase == "Gmain":
        context.extras[KEY]["calls"] += 1
        return {"img_mean": w * data.gen_img.mean()}
    if phase == "Dmain":
        context.extras[KEY]["calls"] += 1
        return {"logit_square": w * data.real_logits.square().mean()}
    return None


@hookimpl
def gradient_transforms(phase: str, context: TrainingContext, module: torch.nn.Module) -> None:
    counts = context.extras[KEY]["transforms"]
    counts[phase] = counts.get(phase, 0) + 1


@hookimpl
def tick_statistics(context: TrainingContext) -> Mapping[str, float]:
    return {"ExtraLoss/calls": context.extras[KEY]["calls"]}


@hookimpl
def plugin_state(context: TrainingContext) -> Mapping[str, Any]:
    return {"calls": context.extras[KEY]["calls"]}


@hookimpl
def restore_plugin_state(context: TrainingContext, state: Mapping[str, Any]) -> None:
    context.extras[KEY]["calls"] = int(state["calls"])
    context.extras[KEY]["restored"] = int(state["calls"])
