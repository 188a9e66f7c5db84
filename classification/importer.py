"""``python -m classification import``: convert a classifier file users bring into our safetensors format.

Any file :func:`classification.model_file.load_classifier` reads (TorchScript, torch.export, a
``torch.save``'d state dict or checkpoint dict, safetensors weights) is converted with the metadata of
its embedded / side-car JSON and the command-line overrides; when the architecture is not named, each
allow-listed one is tried until the weights fit exactly.

A whole pickled model (``torch.save(model)``, what the original SpineGAN saved) is converted only with
``trust_pickle=True``: this is the ONE place in the project that unpickles (``torch.load(...,
weights_only=False)``), which runs code stored in the file with the user's permissions. The unpickled
model must be an allow-listed architecture, optionally inside ``nn.Sequential(model, Linear...,
[Dropout], [Sigmoid | Softmax | LogSoftmax])``; its weights are moved into our rebuilt architecture
(:mod:`classification.state_dicts` folds the linear layers), and the conversion is checked by running
both on the same random inputs: the scores must agree (:data:`AGREEMENT_TOLERANCE`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from classification.model_file import (
    Classifier,
    ClassifierFileError,
    PickledModelError,
    classifier_from_state,
    detect_file_kind,
    metadata_document,
    read_embedded_metadata,
    read_state_dict,
)
from classification.models import ARCHITECTURES
from classification.state_dicts import unwrap_state_dict
from stylegan2_ada.checkpoint import sha256_file

__all__ = ["AGREEMENT_TOLERANCE", "ImportResult", "TRUST_PICKLE_WARNING", "import_model"]

#: Largest difference in scores (probabilities) between the original and the converted model.
AGREEMENT_TOLERANCE = 1e-4
TRUST_PICKLE_WARNING = (
    "WARNING: --trust-pickle: unpickling {path} RUNS PYTHON CODE STORED IN THE FILE, with your permissions. "
    "Do this only for a file you trust (e.g. one you made yourself)."
)
_PASS_THROUGH = (nn.Linear, nn.Dropout, nn.Identity)
_FINAL = {nn.Sigmoid: "sigmoid", nn.Softmax: "softmax", nn.LogSoftmax: "log_softmax"}


@dataclass
class ImportResult:
    classifier: Classifier
    kind: str
    notes: list[str]
    max_score_difference: float | None  # original vs converted, for unpickled models


def _check_layers(model: nn.Module, where: str) -> str | None:
    """For ``nn.Sequential(backbone, ...)``: the final activation's name (or ``None``); refuses layers that
    cannot be folded into a linear head."""
    if not isinstance(model, nn.Sequential) or len(model) < 2:
        return None
    layers = list(model)[1:]
    final = None
    if type(layers[-1]) in _FINAL:
        final = _FINAL[type(layers.pop())]
    for layer in layers:
        if not isinstance(layer, _PASS_THROUGH):
            raise ClassifierFileError(
                f"{where}: cannot convert: after the backbone comes a {type(layer).__name__}; only Linear, "
                "Dropout and a final Sigmoid / Softmax / LogSoftmax can be folded into the head"
            )
    return final


def _unpickle(path: str) -> tuple[dict[str, torch.Tensor], list[str], nn.Module | None]:
    """Trusted unpickling: ``(state, notes, the unpickled model or None)``."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False)  # the one trusted unpickle
    except Exception as exc:  # unpickling can fail in any way the file's code chooses
        raise ClassifierFileError(f"{path}: cannot unpickle ({type(exc).__name__}: {exc})") from exc
    notes = ["unpickled with --trust-pickle"]
    if isinstance(obj, Mapping) and not isinstance(obj, nn.Module):
        modules = [v for v in obj.values() if isinstance(v, nn.Module)]
        if len(modules) == 1:
            obj = modules[0]
            notes.append("model taken from the checkpoint dict")
        else:
            try:
                state, more = unwrap_state_dict(obj, path)
            except ValueError as exc:
                raise ClassifierFileError(str(exc)) from None
            return state, notes + more, None
    if not isinstance(obj, nn.Module):
        raise ClassifierFileError(f"{path}: holds a {type(obj).__name__}, not a model or state dict")
    final = _check_layers(obj, path)
    if final:
        notes.append(f"final {final} dropped: the converted model's logits are its input")
    return {k: v.detach() for k, v in obj.state_dict().items()}, notes, obj.eval()


def _reference_scores(model: nn.Module, x: torch.Tensor, binary: bool) -> torch.Tensor:
    """The original model's output as scores (class-1 probability [N], or softmax [N, K])."""
    out = model(x).float()
    final = _check_layers(model, "")
    if final == "log_softmax":
        out, final = out.exp(), "softmax"
    if final is None:
        if out.shape[1] == 1:
            out, final = torch.sigmoid(out), "sigmoid"
        else:
            out, final = torch.softmax(out, dim=1), "softmax"
    if binary:
        return out[:, 0] if out.shape[1] == 1 else out[:, 1]
    return out


def _agreement(original: nn.Module, classifier: Classifier) -> float:
    meta = classifier.meta
    generator = torch.Generator().manual_seed(0)
    images = torch.rand([4, meta.in_channels, meta.input_size, meta.input_size], generator=generator) * 2 - 1
    with torch.no_grad():
        x = classifier.preprocess(images)
        ours = classifier.scores(images)
        theirs = _reference_scores(original, x, meta.num_outputs == 1)
    return float((ours - theirs).abs().max())


def _fit_any_arch(
    state: dict[str, torch.Tensor], doc: Mapping[str, Any], where: str, notes: list[str]
) -> Classifier:
    """Try each allow-listed architecture (the named one only, when ``doc`` names one)."""
    if "arch" in doc:
        return classifier_from_state(state, doc, where, notes=notes)
    errors = []
    for arch in ARCHITECTURES:
        try:
            return classifier_from_state(
                state,
                {**doc, "arch": arch},
                where,
                notes=[*notes, f"architecture {arch} inferred from the weights"],
            )
        except ClassifierFileError as exc:
            errors.append(f"{arch}: {str(exc).removeprefix(where + ': ')[:120]}")
    raise ClassifierFileError(
        f"{where}: the weights fit no allow-listed architecture ({'; '.join(errors)}); name one with --arch "
        "(and --input-size for small)"
    )


def import_model(
    path: str | os.PathLike[str],
    *,
    trust_pickle: bool = False,
    sidecar: str | os.PathLike[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> ImportResult:
    """Convert ``path`` (module docstring) into a :class:`Classifier` (CPU) ready for ``save_classifier``.

    Raises :class:`ClassifierFileError`; :class:`PickledModelError` for a whole pickled model without
    ``trust_pickle``.
    """
    path = os.fspath(path)
    kind = detect_file_kind(path)
    original = None
    try:
        state, notes = read_state_dict(path, kind)
    except PickledModelError:
        if not trust_pickle:
            raise
        state, notes, original = _unpickle(path)
        kind = "pickled-model"
    embedded = read_embedded_metadata(path) if kind in ("torchscript", "torch-export") else None
    doc, origins = metadata_document(path, embedded, sidecar, overrides)
    notes += [f"converted by `python -m classification import` from {path} (sha256 {sha256_file(path)})"]
    notes += ["metadata from " + (", ".join(origins) or "architecture defaults")]
    classifier = _fit_any_arch(state, doc, path, notes)
    difference = None
    if original is not None:
        difference = _agreement(original, classifier)
        if not difference <= AGREEMENT_TOLERANCE:
            raise ClassifierFileError(
                f"{path}: the converted model disagrees with the original (largest score difference "
                f"{difference:.3g} > {AGREEMENT_TOLERANCE:g}); its forward does more than the allow-listed "
                "architecture, so it cannot be converted"
            )
    return ImportResult(
        classifier, kind, list(classifier.meta.training.get("conversion_notes", [])), difference
    )
