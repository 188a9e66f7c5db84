"""Benchmark the private discriminator step (issue #10): prints figures, asserts nothing.

Our discriminator at 64x64, 1 channel, c_dim 2, channel_base 4096, channel_max 512, minibatch-stddev
group 1, batch 32 (32 reals + 32 fake partners), non-saturating loss; R1 gamma 1, lazy interval 16:

* ``ordinary``     -- the core's non-private D step: Dmain forward + backward (fakes, then reals);
* ``ordinary-r1``  -- the same step with the lazy R1 phase (Dreg) run after it, as every 16th step;
* ``loop``/``loop-r1`` -- the same clipped, noised step by a Python loop over the 32 examples, each
  gradient clipped and added as it comes (baseline);
* ``dp``/``dp-r1`` -- the vectorised clipped, noised step (``private_discriminator_gradients``).

"cycle" = the average step over the 16-step R1 cycle (15 plain + 1 R1 step). Each path runs in its own
process; time = median of ``--repeats`` runs after one warm-up, as wall-clock time and as the process's
CPU time (less sensitive to other processes on a shared machine); peak memory = the process's peak
resident set above what it held before the first run (CPU), or ``torch.cuda.max_memory_allocated``
(CUDA). ``--interleave`` times all paths in one process in turn instead (for a machine whose load
changes during the run; no memory figures).

Usage: python bench/bench_dp.py [--device cpu|cuda] [--repeats N] [--batch 32] [--resolution 64]
       [--paths ordinary,dp,...] [--interleave] [--threads N]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from plugins.dp.mechanism import discriminator_losses, private_discriminator_gradients, privatise  # noqa: E402
from plugins.dp.per_example import clipped_grad_sum_loop  # noqa: E402
from stylegan2_ada.devices import keep_freed_cpu_memory  # noqa: E402
from stylegan2_ada.loss import StyleGAN2Loss  # noqa: E402
from stylegan2_ada.networks import Discriminator  # noqa: E402

PATHS = ("ordinary", "ordinary-r1", "loop", "loop-r1", "dp", "dp-r1")
R1_GAMMA, R1_INTERVAL, CLIP, SIGMA = 1.0, 16, 1.0, 1.0


def _setup(args: argparse.Namespace, device: torch.device) -> tuple:
    torch.manual_seed(0)
    D = Discriminator(
        c_dim=2,
        img_resolution=args.resolution,
        img_channels=1,
        channel_base=args.cbase,
        channel_max=512,
        num_fp16_res=4,
        conv_clamp=256,
        epilogue_kwargs=dict(mbstd_group_size=1),
    )
    D = D.to(device).train().requires_grad_(False)
    n, r = args.batch, args.resolution
    c = F.one_hot(torch.arange(n, device=device) % 2, 2).float()
    real = torch.rand(n, 1, r, r, device=device) * 2 - 1
    fake = torch.randn(n, 1, r, r, device=device) * 0.5  # G is not part of the D step
    return D, real, c, fake, c.roll(1, 0)


def _step_fn(path: str, D, real, c, fake, gen_c, device: torch.device):  # noqa: ANN001, ANN202
    r1_weight = R1_GAMMA / 2 * R1_INTERVAL if path.endswith("-r1") else 0.0
    generator = torch.Generator(device=device).manual_seed(1)
    if path.startswith("ordinary"):
        core_loss = StyleGAN2Loss(D, D, r1_gamma=R1_GAMMA)  # the core's phases (G is unused by d_reg)

        def ordinary() -> None:
            D.requires_grad_(True)
            D.zero_grad(set_to_none=True)
            loss = F.softplus(D(fake, gen_c)).mean() + F.softplus(-D(real, c)).mean()
            loss.backward()
            if r1_weight:  # the core's Dreg phase, with the lazy-regularisation gain
                core_loss.d_reg(real, c).loss.mul(R1_INTERVAL).backward()
            D.requires_grad_(False)

        return ordinary
    if path.startswith("loop"):
        losses = functools.partial(discriminator_losses, r1_weight=r1_weight)

        def loop() -> None:
            clipped = clipped_grad_sum_loop(D, losses, (real, c, fake, gen_c), CLIP)
            privatise(
                clipped.grads,
                clip=CLIP,
                noise_multiplier=SIGMA,
                expected_batch_size=real.shape[0],
                generator=generator,
            )

        return loop

    def dp() -> None:
        private_discriminator_gradients(
            D,
            real,
            c,
            fake,
            gen_c,
            clip=CLIP,
            noise_multiplier=SIGMA,
            expected_batch_size=real.shape[0],
            generator=generator,
            r1_weight=r1_weight,
        )

    return dp


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_one(args: argparse.Namespace) -> dict:
    """Time one path in this process; returns {"times": [...], "peak_mb": ...}."""
    device = torch.device(args.device)
    tensors = _setup(args, device)
    fn = _step_fn(args.path, *tensors, device)
    _sync(device)
    base_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base_cuda = torch.cuda.memory_allocated(device)
    fn()  # warm-up
    _sync(device)
    times, cpu = [], []
    for _ in range(args.repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    if device.type == "cuda":
        peak_mb = (torch.cuda.max_memory_allocated(device) - base_cuda) / 2**20
    else:
        peak_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base_kb) / 1024
    return {"times": times, "cpu": cpu, "peak_mb": peak_mb}


def run_interleaved(args: argparse.Namespace) -> dict:
    """Time every path in this process, one run of each in turn per repeat: {"path": {"times": [...]}}."""
    device = torch.device(args.device)
    tensors = _setup(args, device)
    fns = {p: _step_fn(p, *tensors, device) for p in args.paths.split(",")}
    for fn in fns.values():
        fn()  # warm-up
    out = {p: {"times": [], "cpu": []} for p in fns}
    for _ in range(args.repeats):
        for p, fn in fns.items():
            _sync(device)
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            _sync(device)
            out[p]["times"].append(time.perf_counter() - t0)
            out[p]["cpu"].append(time.process_time() - c0)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--cbase", type=int, default=4096)
    parser.add_argument("--paths", default=",".join(PATHS))
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument(
        "--interleave",
        action="store_true",
        help="time all paths in one process, round-robin (robust to a changing machine load; no memory figures)",
    )
    parser.add_argument(
        "--allocator",
        choices=("keep", "default"),
        default="keep",
        help="keep: glibc keeps freed memory for reuse, as train.py sets on CPU "
        "(stylegan2_ada.devices.keep_freed_cpu_memory); default: glibc's own behaviour",
    )
    parser.add_argument("--path", help=argparse.SUPPRESS)  # internal: run one path, print JSON
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.allocator == "keep" and args.device == "cpu":
        keep_freed_cpu_memory()
    if args.path:
        print(json.dumps(run_one(args)))
        return

    print(
        f"torch {torch.__version__}, {platform.machine()}, {os.cpu_count()} CPUs, threads {torch.get_num_threads()}, "
        f"allocator {args.allocator}"
    )
    if args.device == "cuda":
        print(f"device: {torch.cuda.get_device_name()}")
    print(
        f"D {args.resolution}x{args.resolution}, channel_base {args.cbase}, mbstd group 1, batch {args.batch}; "
        f"load average before: {os.getloadavg()[0]:.2f}"
    )
    results = run_interleaved(args) if args.interleave else {}
    for path in [] if args.interleave else args.paths.split(","):
        cmd = (
            [sys.executable, __file__, "--path", path]
            + [
                f"--{k}={getattr(args, k)}"
                for k in ("device", "repeats", "batch", "resolution", "cbase", "allocator")
            ]
            + ([f"--threads={args.threads}"] if args.threads else [])
        )
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"Error: path {path} failed:\n{proc.stderr}")
        results[path] = json.loads(proc.stdout.strip().splitlines()[-1])
    for path in results:
        t, cpu = statistics.median(results[path]["times"]), statistics.median(results[path]["cpu"])
        print(
            f"  {path:12s} {t:8.3f} s (median of {args.repeats}), CPU time {cpu:8.3f} s"
            + (f"  peak +{results[path]['peak_mb']:7.0f} MB" if "peak_mb" in results[path] else ""),
            flush=True,
        )

    def med(p: str, key: str = "times") -> float | None:
        return statistics.median(results[p][key]) if p in results else None

    def cycle(plain: str, r1: str, key: str) -> float | None:
        if plain not in results or r1 not in results:
            return None
        return (15 * med(plain, key) + med(r1, key)) / 16

    for key, label in (("times", "wall"), ("cpu", "CPU")):
        base = med("ordinary", key)
        if base:
            print(
                f"{label} time ratios to the ordinary step: "
                + ", ".join(f"{p} {med(p, key) / base:.2f}x" for p in results)
            )
        ordinary, loop, dp = (cycle(f"{p}", f"{p}-r1", key) for p in ("ordinary", "loop", "dp"))
        if ordinary and dp:
            line = f"  16-step cycle average ({label}): ordinary {ordinary:.3f} s, dp {dp:.3f} s = {dp / ordinary:.2f}x"
            print(line + (f"; loop {loop:.3f} s = {loop / dp:.1f}x dp" if loop else ""))
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
