"""Benchmark the GAN metrics (issue #11): feature extraction and statistics time; prints figures, asserts nothing.

Set-up: a generator at 256x256 (1 channel, c_dim 2, small channels: its speed is not what is measured),
a DenseNet-121 feature extractor loaded the way users load one (a torchvision ``densenet121(weights=None)``
state dict written to a temporary file and read by ``load_extractor``: random weights, which time the same
as trained ones; 1024 features, images resized to 224 as the extractor specifies).

Measured:
1. generation and feature extraction of ``--num`` generated images (separately, per image);
2. the statistics (FID, KID with 100 subsets of 1000, precision/recall k=3) for ``--target`` generated and
   ``--target`` real images, on random 1024-dimensional features (their cost depends only on the counts and
   the feature size, not on the values).
The extraction time for ``--target`` images is extrapolated linearly from ``--num`` (it is a per-image cost);
the statistics are measured at ``--target`` itself (they are not linear in the count). The issue's target:
statistics under 5 % of extraction + statistics for 10k images.

Usage: python bench/bench_metrics.py [--device cpu|cuda] [--num 200] [--target 10000] [--batch 32]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time

import torch

from stylegan2_ada.metrics import statistics as st
from stylegan2_ada.metrics.extractors import load_extractor
from stylegan2_ada.networks import Generator


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device: torch.device, *args) -> tuple[object, float, float]:
    """(fn(*args), wall seconds, CPU seconds of this process): CPU time is the fairer figure on a shared CPU."""
    _sync(device)
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn(*args)
    _sync(device)
    return out, time.perf_counter() - t0, time.process_time() - c0


def _generate(G: Generator, n: int, device: torch.device) -> torch.Tensor:
    """n images uint8 [n, 1, 256, 256], classes alternating."""
    z = torch.randn(n, G.z_dim, device=device)
    c = torch.eye(G.c_dim, device=device)[torch.arange(n) % G.c_dim]
    images = G(z, c, noise_mode="random", force_fp32=device.type == "cpu")
    return (images * 127.5 + 128).clamp(0, 255).to(torch.uint8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--num", type=int, default=200, help="generated images whose features are extracted")
    parser.add_argument("--target", type=int, default=10_000, help="image count the statistics are timed at")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads [default: torch's]")
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, device {device}"
        + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")
        + f", load average at start {load:.1f}"
    )

    import torchvision

    torch.manual_seed(0)
    G = (
        Generator(
            z_dim=512,
            c_dim=2,
            w_dim=512,
            img_resolution=256,
            img_channels=1,
            mapping_kwargs=dict(num_layers=2),
            synthesis_kwargs=dict(channel_base=2048, channel_max=128),
        )
        .eval()
        .to(device)
    )
    with tempfile.TemporaryDirectory() as tmp:
        weights = os.path.join(tmp, "densenet121.pt")
        torch.save(torchvision.models.densenet121(weights=None).state_dict(), weights)
        extractor = load_extractor(weights, device=device)
    print(
        f"extractor: {extractor.name}, {extractor.feature_dim} features, input {extractor.describe()['input']}"
    )

    gen_wall = feat_wall = feat_cpu = 0.0
    with torch.no_grad():
        for start in range(-args.batch, args.num, args.batch):  # the first batch only warms up
            n = min(args.batch, args.num - max(start, 0))
            images, t, _ = _timed(_generate, device, G, n, device)
            _, t_feat, c_feat = _timed(extractor, device, images)
            if start >= 0:
                gen_wall, feat_wall, feat_cpu = gen_wall + t, feat_wall + t_feat, feat_cpu + c_feat
    print(f"generation: {gen_wall:.2f} s wall for {args.num} images (not part of the metric cost below)")
    print(
        f"feature extraction: {args.num} images in {feat_wall:.2f} s wall, {feat_cpu:.2f} s CPU "
        f"({feat_wall / args.num * 1000:.1f} / {feat_cpu / args.num * 1000:.1f} ms per image)"
    )

    gen = torch.Generator().manual_seed(1)
    real = torch.randn(args.target, extractor.feature_dim, generator=gen).to(device)
    fake = (torch.randn(args.target, extractor.feature_dim, generator=gen) * 1.1 + 0.05).to(device)
    fid, w_fid, c_fid = _timed(st.fid_from_features, device, real, fake)
    kid, w_kid, c_kid = _timed(st.kernel_inception_distance, device, real, fake)
    pr, w_pr, c_pr = _timed(st.precision_recall, device, real, fake)
    print(
        f"statistics for {args.target} + {args.target} features (wall / CPU s): FID {w_fid:.2f} / {c_fid:.2f}, "
        f"KID {w_kid:.2f} / {c_kid:.2f}, precision/recall {w_pr:.2f} / {c_pr:.2f} "
        f"(values {fid:.3f}, {kid:.4f}, {pr[0]:.3f}/{pr[1]:.3f})"
    )
    scale = args.target / args.num
    for label, extraction, stats in (
        ("wall", feat_wall * scale, w_fid + w_kid + w_pr),
        ("CPU", feat_cpu * scale, c_fid + c_kid + c_pr),
    ):
        print(
            f"{label}: extraction of {args.target} images (extrapolated from {args.num}) {extraction:.1f} s, "
            f"statistics {stats:.1f} s, statistics share {100 * stats / (extraction + stats):.2f} % (target < 5 %)"
        )
    load_end = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"load average at the end: {load_end:.1f}")


if __name__ == "__main__":
    main()
