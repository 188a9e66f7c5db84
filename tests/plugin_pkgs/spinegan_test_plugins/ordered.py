"""A plugin with a loss term and a statistic of its own, to check call order next to ``scaled_norm``."""

import torch

from stylegan2_ada.hookspecs import hookimpl


@hookimpl
def loss_terms(phase, data):  # a hook may declare only the arguments it uses
    return {"zero": data.gen_img.sum() * 0.0} if phase == "Gmain" else None


@hookimpl
def tick_statistics():
    return {"Ordered/value": torch.tensor(2.5)}
