"""Training a classifier: ``python -m classification train`` (see docs/classification.md).

* Data: :func:`classification.data.prepare_data` (real sources split stratified / grouped, or given
  validation sources; generated images for training only).
* Input: per-sample :class:`~classification.transform.Augment` in [0, 1], then the model's own
  :class:`~classification.transform.EvalTransform` (the function the saved model applies).
  Normalisation: ImageNet's with ``--weights`` (what those weights expect), else the mean and std of the
  training images.
* Loss: two classes, ``BCEWithLogitsLoss(pos_weight = negatives / positives)`` on the logit of class 1;
  more classes, cross-entropy with balanced class weights ``n / (K * n_c)``. Both from the training part.
* AdamW with a cosine learning-rate schedule over ``epochs``; mixed precision (float16 autocast and a
  gradient scaler) on CUDA only, float32 on CPU.
* Model selection and early stopping on the validation data only: the weights of the epoch with the best
  validation AUC (binary AUC, or macro one-vs-rest AUC for more classes) are kept, ties going to the lower
  validation loss (a small validation set often reaches AUC 1 early); training stops after ``patience``
  epochs without a better epoch. Test data is never an input of this module.
* Seeds: Python, NumPy and torch are seeded with ``seed``; shuffling and each sample's augmentation come
  from ``(seed, epoch)`` only, so CPU runs repeat bit for bit, whatever the number of loader workers.
"""

from __future__ import annotations

import dataclasses
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from classification.data import EpochSampler, SampleSet, TrainingData, pixel_statistics, prepare_data
from classification.model_file import Classifier, ClassifierMeta, read_state_dict
from classification.models import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    arch_spec,
    build_network,
    load_pretrained_backbone,
)
from classification.transform import Augment, EvalTransform
from stylegan2_ada import devices
from stylegan2_ada.checkpoint import sha256_file

__all__ = ["TrainConfig", "TrainResult", "TrainingError", "train_classifier", "validation_metrics"]

_MAX_DEFAULT_SIZE = 256  # the default input size of `small` is the images' size, at most this


class TrainingError(ValueError):
    """Settings that cannot work (the message says which and why)."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on (the CLI options of ``python -m classification train``)."""

    data: Sequence[str] = ()
    val_data: Sequence[str] = ()
    synthetic: Sequence[str] = ()
    synthetic_per_class: int | None = None
    val_fraction: float = 0.15
    arch: str = "small"
    width: int | None = None  # `small` only
    weights: str | None = None
    input_size: int | None = None
    epochs: int = 30
    batch: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    patience: int = 10  # 0: no early stopping
    augment: Augment = field(default_factory=Augment)
    seed: int = 0
    device: str | None = None
    workers: int = 0


@dataclass
class TrainResult:
    classifier: Classifier
    seconds: float


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _network_shape(config: TrainConfig, data: TrainingData) -> tuple[int, int, dict[str, Any]]:
    """``(in_channels, input_size, arch_kwargs)`` for the run."""
    spec = arch_spec(config.arch)
    train_sources = {s.source for s in data.train}
    datasets = [data.sources[i].dataset for i in sorted(train_sources)]
    if spec.torchvision:
        in_channels = 3
    else:
        in_channels = 1 if all(d.num_channels == 1 for d in datasets) else 3
    size = (
        config.input_size
        or spec.default_input_size
        or min(max(d.resolution for d in datasets), _MAX_DEFAULT_SIZE)
    )
    kwargs: dict[str, Any] = {}
    if config.width is not None:
        if "width" not in spec.allowed_kwargs:
            raise TrainingError(f"--width applies to the small architecture only, not {config.arch}")
        kwargs["width"] = config.width
    return in_channels, size, kwargs


def _loss_function(data: TrainingData, device: torch.device) -> tuple[nn.Module, dict[str, Any]]:
    counts = np.bincount([s.label for s in data.train], minlength=len(data.class_names)).astype(np.float64)
    if len(data.class_names) == 2:
        pos_weight = counts[0] / counts[1]
        loss = nn.BCEWithLogitsLoss(pos_weight=torch.tensor([pos_weight], dtype=torch.float32, device=device))
        return loss, {
            "loss": "BCEWithLogits on the logit of class 1",
            "pos_weight": round(float(pos_weight), 6),
        }
    weights = counts.sum() / (len(counts) * counts)
    loss = nn.CrossEntropyLoss(weight=torch.tensor(weights, dtype=torch.float32, device=device))
    return loss, {
        "loss": "CrossEntropy, balanced class weights",
        "class_weights": [round(float(w), 6) for w in weights],
    }


def _targets(labels: torch.Tensor, binary: bool) -> torch.Tensor:
    return labels.float()[:, None] if binary else labels


@torch.no_grad()
def _predict(
    net: nn.Module, loader: torch.utils.data.DataLoader, device: torch.device, amp: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits ``[N, K]`` (float32, CPU) and labels ``[N]`` over ``loader``, in order."""
    net.eval()
    logits, labels = [], []
    for x, y in loader:
        with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
            logits.append(net(x.to(device, non_blocking=True)).float().cpu())
        labels.append(y)
    return torch.cat(logits), torch.cat(labels)


def validation_metrics(logits: torch.Tensor, labels: torch.Tensor, loss_fn: nn.Module) -> dict[str, Any]:
    """AUC (binary, or macro one-vs-rest), loss, accuracy; binary also the Youden threshold on these
    data with its sensitivity and specificity (scikit-learn's ROC)."""
    from sklearn.metrics import roc_auc_score, roc_curve

    if not torch.isfinite(logits).all():
        raise TrainingError(
            "the network output NaN or infinity on the validation data (training diverged); lower --lr"
        )
    y = labels.numpy()
    binary = logits.shape[1] == 1
    loss = float(loss_fn(logits.to(_device_of(loss_fn)), _targets(labels, binary).to(_device_of(loss_fn))))
    if binary:
        prob = torch.sigmoid(logits[:, 0]).numpy()
        fpr, tpr, thresholds = roc_curve(y, prob)
        best = int(np.argmax(tpr - fpr))
        return {
            "auc": float(roc_auc_score(y, prob)),
            "auc_kind": "binary",
            "loss": loss,
            "accuracy_at_0.5": float(np.mean((prob >= 0.5) == (y == 1))),
            "youden_threshold": float(min(thresholds[best], 1.0)),
            "sensitivity_at_youden": float(tpr[best]),
            "specificity_at_youden": float(1 - fpr[best]),
            "n": int(len(y)),
        }
    prob = torch.softmax(logits, dim=1).numpy()
    return {
        "auc": float(
            roc_auc_score(y, prob, multi_class="ovr", average="macro", labels=list(range(prob.shape[1])))
        ),
        "auc_kind": "macro one-vs-rest",
        "loss": loss,
        "accuracy": float(np.mean(prob.argmax(axis=1) == y)),
        "n": int(len(y)),
    }


def _device_of(loss_fn: nn.Module) -> torch.device:
    """Where the loss's class weights (a buffer) live."""
    return next(loss_fn.buffers()).device


def _loader(dataset: SampleSet, sampler: EpochSampler, batch: int, workers: int, drop_last: bool, pin: bool):
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch,
        sampler=sampler,
        num_workers=workers,
        drop_last=drop_last,
        pin_memory=pin,
        persistent_workers=workers > 0,
    )


def _check(config: TrainConfig) -> torch.device:
    """Refuse impossible settings before any data is read; the device to train on."""
    try:
        device = devices.resolve_device(config.device)
        spec = arch_spec(config.arch)
    except ValueError as exc:
        raise TrainingError(str(exc)) from None
    for name, value, low in (
        ("epochs", config.epochs, 1),
        ("batch", config.batch, 2),
        ("patience", config.patience, 0),
    ):
        if value < low:
            raise TrainingError(f"--{name} must be at least {low}, got {value}")
    if not (config.lr > 0 and math.isfinite(config.lr)) or config.weight_decay < 0:
        raise TrainingError(
            f"learning rate must be positive and weight decay >= 0 (got {config.lr}, {config.weight_decay})"
        )
    if config.weights and not spec.torchvision:
        raise TrainingError(
            "--weights (local ImageNet weights) applies to the torchvision architectures only"
        )
    return device


@dataclass
class _Setup:
    net: nn.Module
    meta: ClassifierMeta  # without the training results yet
    pretrained: dict[str, Any] | None


def _setup(config: TrainConfig, data: TrainingData) -> _Setup:
    """The fresh (or pretrained) network and the metadata its eval transform comes from."""
    in_channels, input_size, arch_kwargs = _network_shape(config, data)
    if config.weights:
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    else:
        mean, std = pixel_statistics(data.sources, data.train, in_channels, seed=config.seed)
    try:
        meta = ClassifierMeta(
            config.arch, input_size, in_channels, mean, std, tuple(data.class_names), arch_kwargs=arch_kwargs
        )
        torch.manual_seed(config.seed)
        net = build_network(config.arch, meta.num_outputs, in_channels, input_size, arch_kwargs)
    except ValueError as exc:
        raise TrainingError(str(exc)) from None
    pretrained = None
    if config.weights:
        state, _ = read_state_dict(config.weights)
        try:
            copied = load_pretrained_backbone(config.arch, net, state, config.weights)
        except ValueError as exc:
            raise TrainingError(str(exc)) from None
        pretrained = {"path": config.weights, "sha256": sha256_file(config.weights), "tensors": copied}
    return _Setup(net, meta, pretrained)


@dataclass
class _Fit:
    best: dict[str, Any]  # validation metrics of the selected epoch, with "epoch"
    history: list[dict[str, Any]]


def _fit(
    config: TrainConfig,
    data: TrainingData,
    net: nn.Module,
    transform: EvalTransform,
    device: torch.device,
    loss_fn: nn.Module,
    progress: bool,
) -> _Fit:
    """The epochs: train, validate, keep the best weights (loaded into ``net`` at the end), stop early."""
    from tqdm import tqdm

    amp = device.type == "cuda"
    binary = len(data.class_names) == 2
    train_sampler = EpochSampler(len(data.train), config.seed, shuffle=True)
    drop_last = len(data.train) > config.batch  # BatchNorm cannot train on a last batch of one
    train_loader = _loader(
        SampleSet(data.sources, data.train, transform, config.augment),
        train_sampler,
        config.batch,
        config.workers,
        drop_last,
        amp,
    )
    val_loader = _loader(
        SampleSet(data.sources, data.val, transform, None),
        EpochSampler(len(data.val), config.seed, shuffle=False),
        config.batch,
        config.workers,
        False,
        amp,
    )
    optimizer = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    history: list[dict[str, Any]] = []
    best: dict[str, Any] = {"auc": -math.inf, "loss": math.inf}
    best_state: dict[str, torch.Tensor] = {}
    bar = tqdm(total=config.epochs * len(train_loader), unit="batch", desc="Training", disable=not progress)
    for epoch in range(1, config.epochs + 1):
        net.train()
        train_sampler.set_epoch(epoch)
        total, seen = 0.0, 0
        for x, y in train_loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
                loss = loss_fn(net(x).float(), _targets(y, binary))
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            total, seen = total + float(loss.detach()) * len(y), seen + len(y)
            bar.update(1)
        schedule.step()
        metrics = validation_metrics(*_predict(net, val_loader, device, amp), loss_fn)
        history.append(
            {
                "epoch": epoch,
                "train_loss": total / max(seen, 1),
                "val_loss": metrics["loss"],
                "val_auc": metrics["auc"],
            }
        )
        if (metrics["auc"], -metrics["loss"]) > (best["auc"], -best["loss"]):  # ties: the lower loss
            best = {**metrics, "epoch": epoch}
            best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
        bar.set_postfix(
            epoch=epoch,
            loss=f"{total / max(seen, 1):.4f}",
            val_auc=f"{metrics['auc']:.4f}",
            best=f"{best['auc']:.4f}",
        )
        if config.patience and epoch - best["epoch"] >= config.patience:
            break
    bar.close()
    net.load_state_dict(best_state)
    return _Fit(best, history)


def _training_record(
    config: TrainConfig,
    setup: _Setup,
    fit: _Fit,
    loss_info: dict[str, Any],
    device: torch.device,
    seconds: float,
) -> dict[str, Any]:
    """The model file's ``training`` entry: how the run was made."""
    return {
        "arch": config.arch,
        "arch_kwargs": dict(setup.meta.arch_kwargs),
        "pretrained_weights": setup.pretrained,
        "epochs_max": config.epochs,
        "epochs_run": len(fit.history),
        "best_epoch": fit.best["epoch"],
        "selection": "best validation AUC (ties: lower validation loss); early stopping on it"
        + (f" after {config.patience} epochs without improvement" if config.patience else " disabled"),
        "batch": config.batch,
        "optimizer": "AdamW",
        "lr": config.lr,
        "lr_schedule": "cosine over epochs_max",
        "weight_decay": config.weight_decay,
        **loss_info,
        "augment": config.augment.describe(),
        "normalisation": "ImageNet (pretrained weights)"
        if config.weights
        else "training images' mean and std",
        "seed": config.seed,
        "device": str(device),
        "precision": "float16 autocast (CUDA)" if device.type == "cuda" else "float32",
        "workers": config.workers,
        "seconds": round(seconds, 2),
    }


def train_classifier(config: TrainConfig, *, progress: bool = True) -> TrainResult:
    """Train per ``config`` (module docstring) and return the best-validation-AUC classifier (on CPU).

    Raises:
        TrainingError: unusable settings.
        stylegan2_ada.dataset.DatasetError: unusable data (names the source).
        classification.model_file.ClassifierFileError: an unusable ``weights`` file.
    """
    started = time.perf_counter()
    device = _check(config)
    if device.type == "cpu":  # as the GAN training loop: no page faults per step (7-25 % faster here)
        devices.keep_freed_cpu_memory()
    _seed_everything(config.seed)
    data = prepare_data(
        config.data,
        val_data=config.val_data,
        synthetic=config.synthetic,
        synthetic_per_class=config.synthetic_per_class,
        val_fraction=config.val_fraction,
        seed=config.seed,
    )
    setup = _setup(config, data)
    loss_fn, loss_info = _loss_function(data, device)
    fit = _fit(config, data, setup.net.to(device), setup.meta.eval_transform, device, loss_fn, progress)
    seconds = time.perf_counter() - started
    validation = {
        **{k: v for k, v in fit.best.items() if k != "epoch"},
        "epoch": fit.best["epoch"],
        "counts": data.counts(data.val),
        "history": fit.history,
    }
    meta = dataclasses.replace(
        setup.meta,
        training_data=data.summary(),
        training=_training_record(config, setup, fit, loss_info, device, seconds),
        validation=validation,
    )
    return TrainResult(Classifier(meta, setup.net.cpu().float()), seconds)
