"""A classifier model file as the feature extractor ("detector") of the GAN metrics.

``python calc_metrics.py ... --detector clf.safetensors`` (and ``train.py --metrics``) take a classifier
file like any detector, without ``--plugin``: :func:`open_extractor` is declared in ``pyproject.toml``
as an extractor provider (entry-point group ``stylegan2_ada.feature_extractors``, see
:mod:`stylegan2_ada.metrics.extractors`), which the metrics' loader asks before its own kinds.

Recognised (by content, never by name), and read by :func:`classification.model_file.load_classifier`
without running anything from the file:

* our ``.safetensors`` model files (the ``"classifier"`` metadata in the header);
* TorchScript / ``torch.export`` archives that embed ``classifier.json`` (only their weights are read;
  their program is not run, unlike the metrics' own TorchScript kind).

Anything else is left to the other kinds (``None``). Features: :meth:`Classifier.features`, the
penultimate activations (the head's input, ``[N, F]``; ``small``: its width x 2^stages, densenet121:
1024, resnet18: 512, resnet50: 2048) of the images mapped to [-1, 1] (``u / 127.5 - 1``) and through the
classifier's own eval transform, in float32. ``content_hash``: SHA-256 over the file's SHA-256 and
:data:`FEATURES_VERSION`.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import torch

from classification.model_file import (
    METADATA_KEY,
    Classifier,
    ClassifierFileError,
    detect_file_kind,
    load_classifier,
    read_embedded_metadata,
)
from classification.models import head_of
from classification.transform import images_uint8_to_float
from stylegan2_ada.checkpoint import sha256_file
from stylegan2_ada.metrics.extractors import DetectorError

__all__ = ["FEATURES_VERSION", "ClassifierExtractor", "is_classifier_file", "open_extractor"]

#: Part of every content hash: raise it when what the network sees for given uint8 images changes.
FEATURES_VERSION = 1


def _safetensors_metadata_keys(path: str) -> set[str]:
    from safetensors import safe_open

    with safe_open(path, framework="pt") as f:
        return set(f.metadata() or {})


def is_classifier_file(path: str) -> bool:
    """Whether ``path`` is a classifier model file this module reads (see the module docstring)."""
    if not os.path.isfile(path):
        return False
    try:
        kind = detect_file_kind(path)
        if kind == "safetensors":
            return METADATA_KEY in _safetensors_metadata_keys(path)
        if kind in ("torchscript", "torch-export"):
            return read_embedded_metadata(path) is not None
    except (ClassifierFileError, OSError, ValueError):
        return False  # not ours, or unreadable: the metrics' own kinds report it
    return False


class ClassifierExtractor:
    """The feature-extractor protocol of :mod:`stylegan2_ada.metrics.extractors` around a
    :class:`~classification.model_file.Classifier` loaded from ``path``."""

    def __init__(self, classifier: Classifier, path: str) -> None:
        self.classifier = classifier
        self.path = os.path.abspath(path)
        meta = classifier.meta
        self.name = f"classifier-{meta.arch}"
        self.feature_dim = int(head_of(meta.arch, classifier.net).in_features)
        self.file_sha256 = sha256_file(path)
        doc = {"kind": "spinegan-classifier", "file_sha256": self.file_sha256, "features": FEATURES_VERSION}
        self.content_hash = hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 ``[N, C, H, W]`` (C = 1 or 3, any size) -> float32 ``[N, F]`` on the classifier's device."""
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ValueError(
                f"images must be uint8 [N, 1 or 3, H, W], got {images.dtype} {tuple(images.shape)}"
            )
        x = images_uint8_to_float(images.to(self.classifier.device))
        return self.classifier.features(x).float().reshape(len(images), -1)

    def describe(self) -> dict[str, Any]:
        meta = self.classifier.meta
        return {
            "name": self.name,
            "kind": "spinegan-classifier",
            "path": self.path,
            "file_sha256": self.file_sha256,
            "content_hash": self.content_hash,
            "feature_dim": self.feature_dim,
            "features": "penultimate (the head's input)",
            "arch": meta.arch,
            "class_names": list(meta.class_names),
            "input": {"uint8_to": "u / 127.5 - 1", "eval_transform": meta.eval_transform.describe()},
        }

    def __repr__(self) -> str:
        return f"ClassifierExtractor({self.name!r}, {self.feature_dim} features, {self.path})"


def open_extractor(path: str, device: torch.device) -> ClassifierExtractor | None:
    """The extractor provider (entry point): a :class:`ClassifierExtractor` for a classifier file,
    ``None`` for any other file. Raises ``DetectorError`` for a classifier file that cannot be used."""
    if not is_classifier_file(path):
        return None
    try:
        return ClassifierExtractor(load_classifier(path, device=device), path)
    except ClassifierFileError as exc:
        raise DetectorError(str(exc)) from None
