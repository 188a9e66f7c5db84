"""A broken plugin: its ``loss_terms`` asks for an argument the hook does not have (``ctx``)."""

from stylegan2_ada.hookspecs import hookimpl


@hookimpl
def loss_terms(phase, ctx, data):
    return None
