"""A plugin whose option takes the same flag as ``scaled_norm``'s (``--norm-weight``)."""

import click

from stylegan2_ada.hookspecs import hookimpl


@hookimpl
def plugin_options():
    return [click.Option(["--norm-weight"], type=float, default=1.0)]
