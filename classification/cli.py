"""Command line: ``python -m classification train | import | info | evaluate`` (see docs/classification.md).

Expected failures (bad data, unusable model files, impossible settings) end with one ``Error: ...`` line
and exit status 1; usage errors with click's usual message and status 2.
"""

from __future__ import annotations

import functools
import importlib
import json
import os
import sys
from collections.abc import Callable
from typing import Any

import click

from classification.models import ARCHITECTURES
from classification.options import AUGMENT_DEFAULTS, TRAIN_DEFAULTS, model_training_options

__all__ = ["main"]

# Commands defined in other modules, imported only when used: name -> "module:attribute".
_LAZY_COMMANDS = {
    "evaluate": "classification.evaluate:evaluate_command",
    "experiment": "classification.experiment:experiment_command",
}


class _Group(click.Group):
    """A click group that also offers :data:`_LAZY_COMMANDS`, importing each only when it is used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *_LAZY_COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in _LAZY_COMMANDS:
            return super().get_command(ctx, cmd_name)
        module_name, attribute = _LAZY_COMMANDS[cmd_name].split(":")
        return getattr(importlib.import_module(module_name), attribute)


def _user_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn the expected error types into click's one-line ``Error: ...`` (no traceback)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from classification.model_file import ClassifierFileError
        from classification.train import TrainingError
        from stylegan2_ada.dataset import DatasetError

        try:
            return func(*args, **kwargs)
        except (ClassifierFileError, DatasetError, TrainingError) as exc:
            raise click.ClickException(str(exc)) from None

    return wrapper


def _floats(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[float, ...] | None:
    if value is None:
        return None
    try:
        return tuple(float(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(f"expected comma-separated numbers, got {value!r}") from None


def _names(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    names = tuple(n.strip() for n in value.split(","))
    if len(names) < 2 or not all(names):
        raise click.BadParameter(f"expected at least two comma-separated names, got {value!r}")
    return names


def _out_path(out: str, overwrite: bool) -> str:
    """Check ``--out`` before any work: never replace a file without ``--overwrite``; make its folder."""
    if os.path.isdir(out):
        raise click.BadParameter(
            f"{out} is a folder; give a file name such as model.safetensors", param_hint="'--out'"
        )
    if os.path.exists(out) and not overwrite:
        raise click.BadParameter(
            f"{out} exists; choose another name or pass --overwrite", param_hint="'--out'"
        )
    folder = os.path.dirname(os.path.abspath(out))
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as exc:
        raise click.BadParameter(
            f"cannot create the folder {folder}: {exc.strerror or exc}", param_hint="'--out'"
        ) from None
    return out


def metadata_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Options giving the metadata of files without ours (they win over embedded and side-car JSON);
    the command receives them as one ``overrides`` dict, plus ``sidecar``."""
    options = [
        click.option(
            "--sidecar",
            type=click.Path(exists=True, dir_okay=False),
            help="Metadata JSON [default: FILE.json when it exists].",
        ),
        click.option("--arch", type=click.Choice(list(ARCHITECTURES)), help="Architecture of the weights."),
        click.option(
            "--class-names",
            callback=_names,
            metavar="A,B[,...]",
            help="Class names in index order; for two, the second is the positive class.",
        ),
        click.option(
            "--input-size",
            type=click.IntRange(min=1),
            metavar="N",
            help="Side of the square network input [torchvision archs: 224].",
        ),
        click.option(
            "--in-channels",
            type=click.Choice(["1", "3"]),
            help="Input channels [torchvision: 3; small: from the weights].",
        ),
        click.option(
            "--mean",
            callback=_floats,
            metavar="M[,M,M]",
            help="Normalisation mean per channel, for [0, 1] pixels [torchvision: ImageNet].",
        ),
        click.option(
            "--std",
            callback=_floats,
            metavar="S[,S,S]",
            help="Normalisation std per channel [torchvision: ImageNet].",
        ),
        click.option(
            "--center-crop",
            type=click.FloatRange(0, 1, min_open=True),
            metavar="F",
            help="Fraction of each side kept before resizing, e.g. 0.875 for Resize(256)+CenterCrop(224) [1].",
        ),
    ]

    @functools.wraps(func)
    def wrapper(**kwargs: Any) -> Any:
        keys = ("arch", "class_names", "input_size", "in_channels", "mean", "std", "center_crop")
        overrides = {k: kwargs.pop(k) for k in keys}
        if overrides["in_channels"] is not None:
            overrides["in_channels"] = int(overrides["in_channels"])
        for key in ("class_names", "mean", "std"):
            if overrides[key] is not None:
                overrides[key] = list(overrides[key])
        return func(overrides={k: v for k, v in overrides.items() if v is not None}, **kwargs)

    for option in reversed(options):
        wrapper = option(wrapper)
    return wrapper


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Abnormality classifiers: train, convert (import), inspect (info) and evaluate model files."""


# --------------------------------------------------------------------------------------------------
# train


@main.command(context_settings={"show_default": True})
@click.option(
    "--data",
    multiple=True,
    metavar="DATASET",
    help="Real labelled images (folder or zip with dataset.json, as train.py reads); repeatable. Split into training and validation unless --val-data is given.",
)
@click.option(
    "--val-data",
    multiple=True,
    metavar="DATASET",
    help="Real labelled images used only for validation (model selection); repeatable. Then --data is all training.",
)
@click.option(
    "--synthetic",
    multiple=True,
    metavar="DIR",
    help="Generated images for training only: a generate.py output folder (manifest.json), a folder of such folders (one per class), or a folder with dataset.json; repeatable.",
)
@click.option(
    "--synthetic-per-class",
    type=click.IntRange(min=0),
    metavar="K",
    help="Use the first K generated images of each class [all].",
)
@model_training_options
@click.option(
    "--weight-decay",
    type=click.FloatRange(0),
    default=TRAIN_DEFAULTS["weight_decay"],
    help="AdamW weight decay.",
)
@click.option(
    "--hflip",
    type=click.FloatRange(0, 1),
    default=AUGMENT_DEFAULTS.hflip,
    metavar="P",
    help="Augmentation: probability of a horizontal flip.",
)
@click.option(
    "--rotate",
    type=click.FloatRange(0, 180),
    default=AUGMENT_DEFAULTS.rotate,
    metavar="DEG",
    help="Augmentation: largest rotation in degrees.",
)
@click.option(
    "--crop-scale",
    type=click.FloatRange(0, 1, min_open=True),
    default=AUGMENT_DEFAULTS.crop_scale,
    metavar="S",
    help="Augmentation: random resized crop of S to 1 of the area (1: none).",
)
@click.option(
    "--out", required=True, metavar="FILE", help="Model file to write (.safetensors); its folder is created."
)
@click.option("--overwrite", is_flag=True, help="Replace --out if it exists.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), help="Device [cuda if available, else cpu].")
@click.option(
    "--seed",
    type=click.IntRange(min=0),
    default=0,
    help="Seed of the split, initial weights, shuffling and augmentation.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=0),
    metavar="N",
    help="Data loader processes [available CPUs, at most 4].",
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
@_user_errors
def train(**opts: Any) -> None:
    """Train a classifier; the model with the best validation AUC is saved to --out.

    Validation data are real images only (a split of --data, or --val-data); keep your test set out of
    both. Example:

    \b
    python -m classification train --data spine.zip --arch densenet121 \\
        --weights densenet121-a639ec97.pth --epochs 30 --batch 32 --out clf.safetensors
    """
    from classification.model_file import save_classifier
    from classification.train import TrainConfig, train_classifier
    from classification.transform import Augment
    from stylegan2_ada import devices

    out = _out_path(opts["out"], opts["overwrite"])
    config = TrainConfig(
        data=opts["data"],
        val_data=opts["val_data"],
        synthetic=opts["synthetic"],
        synthetic_per_class=opts["synthetic_per_class"],
        val_fraction=opts["val_fraction"],
        arch=opts["arch"],
        width=opts["width"],
        weights=opts["weights"],
        input_size=opts["input_size"],
        epochs=opts["epochs"],
        batch=opts["batch"],
        lr=opts["lr"],
        weight_decay=opts["weight_decay"],
        patience=opts["patience"],
        augment=Augment(opts["hflip"], opts["rotate"], opts["crop_scale"]),
        seed=opts["seed"],
        device=opts["device"],
        workers=opts["workers"] if opts["workers"] is not None else devices.default_workers(cap=4),
    )
    result = train_classifier(config, progress=not opts["quiet"])
    save_classifier(out, result.classifier)
    meta = result.classifier.meta
    click.echo(
        f"Saved {out}: {meta.arch}, {meta.input_size} px, {meta.in_channels} channel(s), classes "
        f"{', '.join(meta.class_names)}; best epoch {meta.training['best_epoch']} of {meta.training['epochs_run']}, "
        f"validation AUC {meta.validation['auc']:.4f} (n={meta.validation['n']}); {result.seconds:.1f} s"
    )


# --------------------------------------------------------------------------------------------------
# import


@main.command("import")
@click.argument("source", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", required=True, metavar="FILE", help="Model file to write (.safetensors).")
@click.option("--overwrite", is_flag=True, help="Replace --out if it exists.")
@click.option(
    "--trust-pickle",
    is_flag=True,
    help="Allow unpickling a whole pickled model. THIS RUNS CODE STORED IN THE FILE: only for files you trust.",
)
@metadata_options
@_user_errors
def import_command(
    source: str, out: str, overwrite: bool, trust_pickle: bool, sidecar: str | None, overrides: dict[str, Any]
) -> None:
    """Convert SOURCE (TorchScript, torch.export, a torch.save'd state dict, safetensors weights, or with
    --trust-pickle a whole pickled model) into our safetensors model file.

    The architecture must be one of the allow-list (tried in turn when --arch is not given). The
    original SpineGAN's DenseNet-121 (trained with Resize(256) + CenterCrop(224) on 256 px images):

    \b
    python -m classification import --trust-pickle checkpoint_12.pt --out clf.safetensors \\
        --arch densenet121 --class-names normal,abnormal --center-crop 0.875
    """
    from classification.importer import TRUST_PICKLE_WARNING, import_model
    from classification.model_file import save_classifier

    out = _out_path(out, overwrite)
    if trust_pickle:
        click.secho(TRUST_PICKLE_WARNING.format(path=source), err=True, fg="red", bold=True)
    result = import_model(source, trust_pickle=trust_pickle, sidecar=sidecar, overrides=overrides)
    save_classifier(out, result.classifier)
    meta = result.classifier.meta
    for note in result.notes:
        click.echo(f"  {note}")
    if result.max_score_difference is not None:
        click.echo(
            f"  checked: scores of the original and the converted model differ by at most {result.max_score_difference:.2g}"
        )
    click.echo(
        f"Saved {out}: {meta.arch}, {meta.input_size} px, {meta.in_channels} channel(s), classes {', '.join(meta.class_names)}"
    )


# --------------------------------------------------------------------------------------------------
# info


@main.command()
@click.argument("model", type=click.Path(exists=True, dir_okay=False))
@metadata_options
@_user_errors
def info(model: str, sidecar: str | None, overrides: dict[str, Any]) -> None:
    """Check that MODEL loads and print its metadata as JSON."""
    from classification.model_file import detect_file_kind, load_classifier

    classifier = load_classifier(model, sidecar=sidecar, overrides=overrides or None)
    document = {
        "file": os.path.abspath(model),
        "kind": detect_file_kind(model),
        **classifier.meta.to_document(),
    }
    json.dump(document, sys.stdout, indent=2)
    click.echo()
