"""``spinegan`` plugin: a frozen classifier's judgement of the fakes as an extra generator loss.

``python train.py --plugin spinegan --classifier MODEL [--domain-weight 0.1] --cond 1 ...``

SpineGAN's idea: a classifier trained on real images (e.g. normal vs abnormal radiographs, with
``python -m classification train``) tells whether a fake generated for class ``c`` looks like class
``c``; its loss is added to the generator's adversarial loss in ``Gmain``:
``L_G = softplus(-D(aug(G(z, c)), c)) + w * L_cls(classifier(G(z, c)), c)``, see
:mod:`plugins.spinegan.domain` for ``L_cls`` (BCE-with-logits for two classes, cross-entropy for more)
and the precision. The classifier sees the fakes *before* augmentation, through exactly its own eval
transform; it is frozen (eval mode, ``requires_grad_(False)``, in no optimizer), so its gradient reaches
G only. Each process computes the term on its own fakes; the loop averages G's gradients.

Refused before the run folder exists (``Error: ...``, status 2): no ``--classifier``, a negative
``--domain-weight``, a file that is not a usable classifier (any kind ``load_classifier`` reads: our
safetensors, TorchScript / torch.export / state dict with metadata; a whole pickled model is refused with
its conversion command), an unconditional run, and classes that are not the dataset's (names and order
when ``dataset.json`` names them, else their number).

Logged: ``Loss/spinegan/domain`` (the weighted term, per step) and per tick ``Domain/loss`` (the
unweighted loss) and ``Domain/agreement`` (the fraction of fakes the classifier assigns their requested
class), over all processes. Rank 0 writes the classifier's description and SHA-256 to
``spinegan_classifier.json`` in the run folder.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import click
import torch
import torch.distributed as tdist

from classification.model_file import Classifier, ClassifierFileError, load_classifier
from plugins.spinegan.domain import DomainTerm, autocast_dtype, check_classes
from stylegan2_ada.atomic import write_json_atomic
from stylegan2_ada.checkpoint import sha256_file
from stylegan2_ada.hookspecs import hookimpl

__all__ = [
    "DEFAULT_WEIGHT",
    "EXTRAS_KEY",
    "check_run",
    "loss_terms",
    "plugin_options",
    "tick_statistics",
    "training_setup",
    "validate_options",
]

DEFAULT_WEIGHT = 0.1  # the original project's final weight
EXTRAS_KEY = "spinegan"  # this plugin's entry in context.extras
INFO_FILE = "spinegan_classifier.json"


@hookimpl
def plugin_options() -> list[click.Option]:
    return [
        click.Option(
            ["--classifier"],
            type=click.Path(exists=True, dir_okay=False),
            default=None,
            metavar="MODEL",
            help="spinegan: the frozen classifier (python -m classification train/import; a TorchScript, "
            "torch.export or state-dict file with metadata in MODEL.json also works). Required.",
        ),
        click.Option(
            ["--domain-weight"],
            type=float,
            default=DEFAULT_WEIGHT,
            show_default=True,
            metavar="W",
            help="spinegan: weight of the classifier's loss on the fakes in G's loss (0 only logs it).",
        ),
    ]


def _load(path: str, device: str | torch.device = "cpu") -> Classifier:
    try:
        return load_classifier(path, device=device)
    except ClassifierFileError as exc:
        raise click.UsageError(f"--classifier: {exc}") from None


@hookimpl
def validate_options(options: Mapping[str, Any]) -> None:
    if options.get("classifier") is None:
        raise click.UsageError("--plugin spinegan needs --classifier MODEL (a classifier model file)")
    weight = options["domain_weight"]
    if not math.isfinite(weight) or weight < 0:
        raise click.UsageError(f"--domain-weight must be a finite number >= 0, got {weight}")
    _load(options["classifier"])  # a file that is not a usable classifier fails before any data work


@hookimpl
def check_run(options: Mapping[str, Any], dataset: Any) -> None:
    if not options["cond"] or options["c_dim"] == 0:
        raise click.UsageError(
            "--plugin spinegan needs a conditional run (--cond 1 and class labels): the classifier's loss "
            "compares each fake with the class it was generated for"
        )
    classifier = _load(options["classifier"])
    try:
        check_classes(classifier.meta.class_names, getattr(dataset, "class_names", None), options["c_dim"])
    except ValueError as exc:
        raise click.UsageError(f"--classifier {options['classifier']}: {exc}") from None


@dataclass
class _RunState:
    """Per-run objects in ``context.extras[EXTRAS_KEY]``: the term and this tick's tallies on the device
    (float64 [3]: sum of unweighted losses, sum of hits, count), read only at the end of a tick."""

    term: DomainTerm
    tally: torch.Tensor


@hookimpl
def training_setup(context: Any) -> None:
    options = context.options
    classifier = _load(options["classifier"], context.device)
    amp = autocast_dtype(context.device, mixed_precision=not options.get("fp32", False))
    term = DomainTerm(classifier, float(options["domain_weight"]), amp)
    context.extras[EXTRAS_KEY] = _RunState(term, torch.zeros(3, dtype=torch.float64, device=context.device))
    if context.run_dir is not None:
        meta = classifier.meta
        info = {
            "path": os.path.abspath(options["classifier"]),
            "sha256": sha256_file(options["classifier"]),
            "domain_weight": term.weight,
            "precision": "float32" if amp is None else f"autocast {str(amp).removeprefix('torch.')}",
            "classifier": {k: v for k, v in meta.to_document().items() if k != "training_data"},
        }
        write_json_atomic(os.path.join(context.run_dir, INFO_FILE), info)
        print(
            f"spinegan: classifier {meta.arch} {meta.in_channels}x{meta.input_size}px, classes "
            f"{list(meta.class_names)}, weight {term.weight:g}, {info['precision']}"
        )


@hookimpl
def loss_terms(phase: str, context: Any, data: Any) -> dict[str, torch.Tensor] | None:
    if phase != "Gmain":
        return None
    state: _RunState = context.extras[EXTRAS_KEY]
    out = state.term(data.gen_img, data.gen_c)
    state.tally += torch.stack(
        [out.loss.sum(), out.hits.sum(), out.hits.new_tensor(out.hits.numel())]
    ).double()
    return {"domain": out.term}


@hookimpl
def tick_statistics(context: Any) -> dict[str, float] | None:
    state: _RunState = context.extras[EXTRAS_KEY]
    tally = state.tally.clone()
    state.tally.zero_()
    if context.world_size > 1 and tdist.is_available() and tdist.is_initialized():
        tdist.all_reduce(tally)  # every rank calls this hook at every tick
    loss_sum, hit_sum, count = tally.tolist()
    if count == 0:
        return None
    return {"Domain/loss": loss_sum / count, "Domain/agreement": hit_sum / count}
