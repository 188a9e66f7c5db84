"""A plugin that refuses runs in ``check_run`` and reports what the context holds each tick.

- ``check_run``: the run must be conditional with at least ``--guard-min-classes`` classes (c_dim of
  the resolved options), and the opened dataset's ``label_dim`` must agree with it; every call is
  counted in :data:`CHECKED` (module level on purpose: the test reads it; real plugins keep state in
  the context).
- ``tick_statistics``: ``RunGuard/cur_tick`` (``context.cur_tick``) and ``RunGuard/G_lr`` /
  ``RunGuard/D_lr`` (the learning rates of ``context.G_opt`` / ``context.D_opt``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import click

from stylegan2_ada.hookspecs import hookimpl
from stylegan2_ada.plugin_api import TrainingContext

CHECKED: list[dict[str, Any]] = []


@hookimpl
def plugin_options() -> list[click.Option]:
    return [click.Option(["--guard-min-classes"], type=int, default=2, help="Classes the run needs.")]


@hookimpl
def check_run(options: Mapping[str, Any], dataset: Any) -> None:
    CHECKED.append({"c_dim": options["c_dim"], "label_dim": int(dataset.label_dim)})
    if options["c_dim"] < options["guard_min_classes"]:
        raise click.UsageError(
            f"run_guard needs a conditional run with at least {options['guard_min_classes']} classes, "
            f"got c_dim={options['c_dim']} (add --cond=1)"
        )
    if int(dataset.label_dim) != options["c_dim"]:
        raise click.UsageError("run_guard: the dataset's label_dim differs from the resolved c_dim")


@hookimpl
def tick_statistics(context: TrainingContext) -> Mapping[str, float]:
    return {
        "RunGuard/cur_tick": float(context.cur_tick),
        "RunGuard/G_lr": float(context.G_opt.param_groups[0]["lr"]),
        "RunGuard/D_lr": float(context.D_opt.param_groups[0]["lr"]),
    }
