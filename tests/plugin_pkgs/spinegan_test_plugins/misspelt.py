"""A broken plugin: ``loss_term`` is not a hook (the hook is ``loss_terms``)."""

from stylegan2_ada.hookspecs import hookimpl


@hookimpl
def loss_term(phase, context, data):
    return None
