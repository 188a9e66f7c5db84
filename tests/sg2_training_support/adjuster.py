"""A test plugin whose ``adjust_options`` returns the JSON given with ``--adjust`` (named by dotted path)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import click

from stylegan2_ada.hookspecs import hookimpl


@hookimpl
def plugin_options() -> list[click.Option]:
    return [click.Option(["--adjust"], type=str, default="{}", help="Changes to the options, as JSON.")]


@hookimpl
def adjust_options(options: Mapping[str, Any]) -> Mapping[str, Any]:
    return json.loads(options["adjust"])
