"""Benchmark the core networks (issue #2): prints figures, asserts nothing.

(a) one training step = G forward + D forward + backward, resolution 64, 1 channel, c_dim 2, z/w 512,
    mapping 2 layers, channel_base 4096, channel_max 512, batch 8;
(b) generation images/s at 256x256, 1 channel, c_dim 2, channel_base 16384, channel_max 512, batch 4, eval.

Usage: python bench/bench_networks.py [--device cpu|cuda] [--repeats N] [--only a|b]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from stylegan2_ada.networks import Discriminator, Generator


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn, device: torch.device, warmup: int, repeats: int) -> list[float]:
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return times


def bench_train_step(device: torch.device, repeats: int) -> list[float]:
    torch.manual_seed(0)
    kw = dict(channel_base=4096, channel_max=512, num_fp16_res=4, conv_clamp=256)
    G = (
        Generator(
            z_dim=512,
            c_dim=2,
            w_dim=512,
            img_resolution=64,
            img_channels=1,
            mapping_kwargs=dict(num_layers=2),
            synthesis_kwargs=kw,
        )
        .to(device)
        .train()
    )
    D = Discriminator(c_dim=2, img_resolution=64, img_channels=1, **kw).to(device).train()
    z = torch.randn(8, 512, device=device)
    c = torch.nn.functional.one_hot(torch.arange(8, device=device) % 2, 2).float()

    def step() -> None:
        img = G(z, c)
        loss = torch.nn.functional.softplus(-D(img, c)).mean()
        loss.backward()

    return _time(step, device, warmup=2, repeats=repeats)


def bench_generation(device: torch.device, repeats: int) -> list[float]:
    torch.manual_seed(0)
    G = Generator(
        z_dim=512,
        c_dim=2,
        w_dim=512,
        img_resolution=256,
        img_channels=1,
        mapping_kwargs=dict(num_layers=2),
        synthesis_kwargs=dict(channel_base=16384, channel_max=512, num_fp16_res=4, conv_clamp=256),
    )
    G = G.to(device).eval().requires_grad_(False)
    z = torch.randn(4, 512, device=device)
    c = torch.nn.functional.one_hot(torch.arange(4, device=device) % 2, 2).float()

    def gen() -> None:
        with torch.inference_mode():
            G(z, c, noise_mode="const")

    return _time(gen, device, warmup=1, repeats=repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--only", choices=["a", "b"], default=None)
    args = parser.parse_args()
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    print(f"device={device} ({name}), torch {torch.__version__}, threads {torch.get_num_threads()}")
    if args.only in (None, "a"):
        t = bench_train_step(device, args.repeats)
        print(
            f"(a) train step 64px batch 8: median {statistics.median(t):.3f} s  (min {min(t):.3f}, "
            f"max {max(t):.3f}, n={len(t)})"
        )
    if args.only in (None, "b"):
        t = bench_generation(device, args.repeats)
        ips = 4 / statistics.median(t)
        print(
            f"(b) generation 256px batch 4: {ips:.2f} img/s  (median {statistics.median(t):.3f} s per batch, "
            f"n={len(t)})"
        )


if __name__ == "__main__":
    main()
