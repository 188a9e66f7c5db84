"""The model-training options that ``python -m classification train`` and ``... experiment`` share: one
definition each, with the defaults of :class:`classification.train.TrainConfig` (and of
:class:`classification.transform.Augment` for the augmentation options)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, TypeVar

import click

from classification.models import ARCHITECTURES
from classification.train import TrainConfig
from classification.transform import Augment

F = TypeVar("F", bound=Callable[..., Any])

TRAIN_DEFAULTS: dict[str, Any] = {
    f.name: f.default for f in dataclasses.fields(TrainConfig) if f.default is not dataclasses.MISSING
}
AUGMENT_DEFAULTS = Augment()

_OPTIONS = (
    click.option(
        "--val-fraction",
        type=click.FloatRange(0, 1, min_open=True, max_open=True),
        default=TRAIN_DEFAULTS["val_fraction"],
        metavar="F",
        help="Fraction of the real training images held out for validation (stratified by class; grouped "
        'by the dataset.json "groups" ids when present).',
    ),
    click.option(
        "--arch",
        type=click.Choice(list(ARCHITECTURES)),
        default=TRAIN_DEFAULTS["arch"],
        help="Network: small (our CNN, fast on CPU, 1 or 3 channels) or a torchvision model (3 channels).",
    ),
    click.option(
        "--width", type=click.IntRange(4, 128), metavar="N", help="Channels of the first layer of small [16]."
    ),
    click.option(
        "--weights",
        type=click.Path(exists=True, dir_okay=False),
        metavar="FILE",
        help="Local pretrained weights of the torchvision model (safetensors or a state dict; read with "
        "weights_only=True); its head is replaced. Nothing is downloaded.",
    ),
    click.option(
        "--input-size",
        type=click.IntRange(min=16),
        metavar="N",
        help="Side of the network input [torchvision: 224; small: the images' size, at most 256].",
    ),
    click.option(
        "--epochs",
        type=click.IntRange(min=1),
        default=TRAIN_DEFAULTS["epochs"],
        metavar="N",
        help="Most epochs per model.",
    ),
    click.option(
        "--batch",
        type=click.IntRange(min=2),
        default=TRAIN_DEFAULTS["batch"],
        metavar="B",
        help="Batch size.",
    ),
    click.option(
        "--lr",
        type=click.FloatRange(0, min_open=True),
        default=TRAIN_DEFAULTS["lr"],
        help="AdamW learning rate (cosine schedule).",
    ),
    click.option(
        "--patience",
        type=click.IntRange(min=0),
        default=TRAIN_DEFAULTS["patience"],
        metavar="N",
        help="Stop after N epochs without a better one (higher validation AUC, or equal AUC and lower loss; "
        "0: never).",
    ),
)


def model_training_options(func: F) -> F:
    """Add ``--val-fraction --arch --width --weights --input-size --epochs --batch --lr --patience``."""
    for option in reversed(_OPTIONS):
        func = option(func)
    return func
