"""Time the ADA augmentation pipeline: milliseconds per batch (forward, and forward + R1-style
double backward). Prints figures only; no thresholds.

Usage: python bench/bench_augment.py [--device cpu|cuda] [--res 64] [--batch 8] [--spec bgcfnc]
"""

from __future__ import annotations

import argparse
import time

import torch

from stylegan2_ada.augment import make_augment_pipe


def _time_ms(fn, device: torch.device, repeats: int) -> float:
    """Mean wall time of ``fn`` over ``repeats`` calls after one warm-up call, in ms."""
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - start) / repeats * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--res", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--spec", default="bgcfnc")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)

    print(
        f"AugmentPipe '{args.spec}' {args.res}x{args.res} batch {args.batch} on {device} "
        f"(torch {torch.__version__}, {torch.get_num_threads()} threads)"
    )
    for channels in (1, 3):
        for p in (0.0, 0.2, 1.0):
            pipe = make_augment_pipe(args.spec, p=p).to(device)
            x = torch.rand(args.batch, channels, args.res, args.res, device=device) * 2 - 1

            def forward(pipe=pipe, x=x) -> None:
                with torch.no_grad():
                    pipe(x)

            def double_backward(pipe=pipe, x=x) -> None:
                xr = x.detach().requires_grad_(True)
                (g,) = torch.autograd.grad(pipe(xr).square().sum(), xr, create_graph=True)
                g.square().sum().backward()

            fwd = _time_ms(forward, device, args.repeats)
            dbl = _time_ms(double_backward, device, args.repeats)
            print(
                f"  C={channels} p={p:.1f}: forward {fwd:7.2f} ms/batch, forward+double-backward {dbl:7.2f} ms/batch"
            )


if __name__ == "__main__":
    main()
