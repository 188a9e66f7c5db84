"""The domain term of the ``spinegan`` plugin: a frozen classifier's loss on the generator's fakes.

For fakes ``gen_img`` [N, C, H, W] in [-1, 1] (before augmentation) and their one-hot labels ``gen_c``
[N, K], the classifier (:class:`classification.model_file.Classifier`) sees the images through its own
eval transform (``Classifier.preprocess``: the function it was trained and validated with) and gives
logits; the per-example loss is

* two classes (one logit, of ``class_names[1]``): ``BCE-with-logits(logit, gen_c[:, 1])``;
* K > 2 classes (K logits): ``cross-entropy(logits, gen_c)`` (the one-hot row as the target).

The term added to G's loss is ``weight * mean over the N examples``. Class ``i`` of the classifier is
class ``i`` of the dataset; :func:`check_classes` refuses a classifier whose classes do not match.

Precision: float32, except on CUDA when mixed precision is on, where the classifier runs under
``torch.autocast`` (bfloat16 where the GPU has it: float32's exponent range, so small gradients do not
underflow; else float16). The loss itself is always computed in float32 from the logits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from classification.model_file import Classifier

__all__ = ["DomainOutput", "DomainTerm", "autocast_dtype", "check_classes", "domain_loss", "hits"]


def domain_loss(logits: torch.Tensor, gen_c: torch.Tensor) -> torch.Tensor:
    """Per-example loss [N] (float32) of logits [N, 1] (binary) or [N, K] against one-hot labels [N, K]."""
    logits = logits.float()
    target = gen_c.float()
    if logits.shape[1] == 1:
        return F.binary_cross_entropy_with_logits(logits[:, 0], target[:, 1], reduction="none")
    return F.cross_entropy(logits, target, reduction="none")


def hits(logits: torch.Tensor, gen_c: torch.Tensor) -> torch.Tensor:
    """[N] float: 1 where the classifier's class (logit > 0, or the arg-max) is the requested class."""
    wanted = gen_c.argmax(dim=1)
    predicted = (logits[:, 0] > 0).long() if logits.shape[1] == 1 else logits.argmax(dim=1)
    return (predicted == wanted).float()


def check_classes(class_names: Sequence[str], dataset_names: Sequence[str] | None, c_dim: int) -> None:
    """Raise ``ValueError`` unless the classifier's classes are the dataset's: as many as the labels'
    dimensions (``c_dim``) and, when the dataset names its classes, the same names in the same order."""
    names = list(class_names)
    if c_dim != len(names):
        named = "" if dataset_names is None else f" {list(dataset_names)}"
        raise ValueError(
            f"the classifier has {len(names)} classes {names} but the dataset's labels have {c_dim}{named}"
        )
    if dataset_names is not None and list(dataset_names) != names:
        raise ValueError(
            f"the classifier's classes {names} are not the dataset's {list(dataset_names)} (same names "
            "in the same order needed: class i of the classifier must be class i of the labels)"
        )


def autocast_dtype(device: torch.device, mixed_precision: bool) -> torch.dtype | None:
    """The autocast dtype for the classifier on ``device``, or ``None`` for plain float32."""
    if device.type != "cuda" or not mixed_precision:
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


@dataclass(frozen=True)
class DomainOutput:
    """``term``: the weighted scalar for G's loss; ``loss`` [N]: unweighted per-example losses
    (detached); ``hits`` [N]: 1 where the classifier calls a fake its requested class."""

    term: torch.Tensor
    loss: torch.Tensor
    hits: torch.Tensor


@dataclass(frozen=True)
class DomainTerm:
    """The term for one run: the frozen ``classifier`` (on the training device), its ``weight``, and the
    autocast dtype (``None``: float32)."""

    classifier: Classifier
    weight: float
    amp_dtype: torch.dtype | None = None

    def __call__(self, gen_img: torch.Tensor, gen_c: torch.Tensor) -> DomainOutput:
        """gen_img [N, C, H, W] in [-1, 1], gen_c [N, K] one-hot -> :class:`DomainOutput`."""
        if self.amp_dtype is None:
            logits = self.classifier.logits(gen_img)
        else:
            with torch.autocast(device_type=gen_img.device.type, dtype=self.amp_dtype):
                logits = self.classifier.logits(gen_img)
        loss = domain_loss(logits, gen_c)  # [N] float32
        return DomainOutput(loss.mean() * self.weight, loss.detach(), hits(logits.detach(), gen_c))
