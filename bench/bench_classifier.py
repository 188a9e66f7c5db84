"""Time classifier training: (a) the test-sized run (``small``, 120 noisy 32 px discs vs squares, 6 epochs,
batch 16, one loader process) end to end, and (b) one training step (forward + backward + AdamW) per
architecture and input size. Prints figures only; no thresholds.

Usage: python bench/bench_classifier.py [--device cpu|cuda] [--threads N] [--archs small,resnet18]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from classification.models import build_network
from classification.train import TrainConfig, train_classifier
from stylegan2_ada.demo_data import render_shape


def _shapes(folder: Path, per_class: int = 60, resolution: int = 32) -> Path:
    """The test set of tests/test_classification_train.py (discs "normal", squares "abnormal", noise)."""
    rng = np.random.default_rng(0)
    labels = []
    for i in range(2 * per_class):
        img = render_shape(i % 2, resolution, rng).astype(np.float64) * rng.uniform(0.6, 1.0)
        img = np.clip(np.round(img + rng.normal(0, 20, img.shape)), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(folder / f"img{i:04d}.png")
        labels.append([f"img{i:04d}.png", i % 2])
    (folder / "dataset.json").write_text(
        json.dumps({"labels": labels, "class_names": ["normal", "abnormal"]})
    )
    return folder


def _step_ms(arch: str, size: int, batch: int, device: torch.device, repeats: int) -> float:
    channels = 1 if arch == "small" else 3
    net = build_network(arch, 1, channels, size).to(device)
    opt = torch.optim.AdamW(net.parameters())
    x = torch.randn(batch, channels, size, size, device=device)
    y = torch.randint(0, 2, (batch, 1), device=device).float()
    loss_fn = torch.nn.BCEWithLogitsLoss()

    def step() -> None:
        loss = loss_fn(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - start) / repeats * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    parser.add_argument("--archs", default="small,resnet18,densenet121", help="for (b); empty: skip (b)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}, load {os.getloadavg()[0]:.1f}"
    )

    with tempfile.TemporaryDirectory() as tmp:
        data = _shapes(Path(tmp))
        config = TrainConfig(
            data=[str(data)],
            val_fraction=0.25,
            epochs=6,
            batch=16,
            lr=3e-3,
            patience=0,
            workers=0,
            device=args.device,
        )
        train_classifier(TrainConfig(**{**config.__dict__, "epochs": 1}), progress=False)  # warm-up (imports)
        result = train_classifier(config, progress=False)
        meta = result.classifier.meta
        print(
            f"(a) small, 120 x 32 px, 6 epochs: {result.seconds:.2f} s "
            f"({result.seconds / 6 * 1000:.0f} ms per epoch of {sum(meta.training_data['train_counts'].values())} "
            f"training + {meta.validation['n']} validation images), validation AUC {meta.validation['auc']:.3f}"
        )

    for arch in [a for a in args.archs.split(",") if a]:
        sizes = (32, 64, 256) if arch == "small" else (224,)
        for size in sizes:
            ms = _step_ms(arch, size, args.batch, device, args.repeats)
            print(
                f"(b) {arch:12s} {size:3d} px, batch {args.batch}: {ms:8.1f} ms per step ({ms / args.batch:6.2f} ms per image)"
            )


if __name__ == "__main__":
    main()
