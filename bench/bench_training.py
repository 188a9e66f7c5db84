"""Training speed: seconds per kimg, and the share of step time spent outside the networks.

    python bench/bench_training.py                 # CPU, 64x64 config of the benchmark
    python bench/bench_training.py --cuda          # also CUDA at 256x256 --cfg auto (when a GPU is present)

CPU config (the previous issue's benchmark): 64x64, 1 channel, c_dim 2, z/w 512, mapping depth 2,
cbase 4096, cmax 512, batch 8. The loop's real step (:func:`stylegan2_ada.training.loop.training_step`:
data loading, augmentation, four phases, NaN guard, statistics, EMA, ADA) is timed over 16 steps (one
full cycle of the lazy regularisers) x ``--repeats``, after a warm-up. Each loop step is followed by a
"networks only" step that runs the same phases on preloaded tensors (forward, backward, optimizer step;
no data loader, augmentation, statistics, gradient guard, EMA or ADA); for each position in the cycle
the fastest repeat is kept, which filters out other load on a shared machine.
Overhead = 1 - networks-only / loop step time.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from make_toy_shapes import make_toy_shapes  # noqa: E402

from stylegan2_ada.training import cli  # noqa: E402
from stylegan2_ada.training import distributed as dist  # noqa: E402
from stylegan2_ada.training.loop import draw_latents, fetch_reals, setup_device, setup_run, training_step  # noqa: E402

CYCLE = 16  # steps: Greg runs on 4 of them, Dreg on 1


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def networks_only_step(run, reals, step_idx: int) -> None:
    """The four phases on preloaded reals, no augmentation and no bookkeeping."""
    for phase in run.phases:
        if step_idx % phase.interval:
            continue
        gens = draw_latents(run.rounds, run.o.batch_gpu, run.o.z_dim, run.labels, run.loop_rng, run.device)
        phase.opt.zero_grad(set_to_none=True)
        phase.module.requires_grad_(True)
        for (img, c), (z, gc) in zip(reals, gens):
            out = run.loss.compute(phase.name, real_img=img, real_c=c, gen_z=z, gen_c=gc)
            (out.loss * phase.interval / len(reals)).backward()
        phase.opt.step()
        phase.module.requires_grad_(False)


def measure(args: list[str], repeats: int, label: str) -> dict:
    opts, ds, _ = cli.prepare(dict(cli_defaults(args)), None, [])
    info = dist.DistInfo()
    device = setup_device(opts, info)
    run = setup_run(opts, info, device, None, pm=None, dataset=ds, resume_ckpt=None)
    for _ in range(2):  # warm-up (allocator, cudnn.benchmark, loader workers)
        training_step(run)
    reals = fetch_reals(run.data_iter, run.rounds, device)
    pipe = run.loss.augment_pipe
    # Interleave: each loop step is followed by a networks-only step with the same due phases, so that
    # other load on the machine hits both alike; per position in the 16-step cycle keep the fastest.
    loop_t: list[list[float]] = [[] for _ in range(CYCLE)]
    net_t: list[list[float]] = [[] for _ in range(CYCLE)]
    for _ in range(repeats * CYCLE):
        idx = run.state.batch_idx
        sync(device)
        t = time.perf_counter()
        training_step(run)
        sync(device)
        loop_t[idx % CYCLE].append(time.perf_counter() - t)
        run.loss.augment_pipe = None
        t = time.perf_counter()
        networks_only_step(run, reals, idx)
        sync(device)
        net_t[idx % CYCLE].append(time.perf_counter() - t)
        run.loss.augment_pipe = pipe
    step = sum(min(v) for v in loop_t) / CYCLE
    net = sum(min(v) for v in net_t) / CYCLE
    res = {
        "config": label,
        "device": str(device),
        "batch": opts.batch,
        "sec_per_step": round(step, 4),
        "sec_per_kimg": round(step * 1000 / opts.batch, 2),
        "networks_only_sec_per_step": round(net, 4),
        "overhead_fraction": round(1 - net / step, 4),
        "augment_p": float(pipe.p) if pipe is not None else None,
        "G_params_M": round(sum(p.numel() for p in run.G.parameters()) / 1e6, 2),
        "D_params_M": round(sum(p.numel() for p in run.D.parameters()) / 1e6, 2),
        "torch_threads": torch.get_num_threads(),
        "repeats": repeats,
    }
    print(json.dumps(res), flush=True)
    return res


def cli_defaults(args: list[str]) -> dict:
    """Parse train.py arguments into the raw options dict (without running anything)."""
    cmd = cli.build_command(None, [])
    ctx = cmd.make_context("train.py", list(args))
    return ctx.params


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--cuda", action="store_true", help="also run the 256x256 --cfg auto benchmark on CUDA")
    ap.add_argument("--skip-cpu", action="store_true")
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_training_"))
    results = []
    if not a.skip_cpu:
        data = make_toy_shapes(work / "shapes64", count=64, res=64)
        base = [
            "--outdir",
            str(work / "runs"),
            "--data",
            str(data),
            "--cond=1",
            "--cbase",
            "4096",
            "--cmax",
            "512",
            "--map-depth",
            "2",
            "--batch",
            "8",
            "--device",
            "cpu",
            "--workers",
            str(a.workers),
        ]
        results.append(measure(base + ["--aug", "ada"], a.repeats, "cpu 64x64 ada (p=0 at start)"))
        results.append(
            measure(
                base + ["--aug", "fixed", "--p", "0.5", "--augpipe", "bgc"],
                a.repeats,
                "cpu 64x64 augment p=0.5 bgc",
            )
        )
        results.append(measure(base + ["--aug", "noaug"], a.repeats, "cpu 64x64 noaug"))
    if a.cuda:
        if not torch.cuda.is_available():
            print("CUDA benchmark skipped: no CUDA device")
        else:
            data = make_toy_shapes(work / "shapes256", count=64, res=256)
            base = [
                "--outdir",
                str(work / "runs"),
                "--data",
                str(data),
                "--cond=1",
                "--cfg",
                "auto",
                "--device",
                "cuda",
                "--workers",
                "3",
            ]
            results.append(measure(base + ["--aug", "ada"], a.repeats, "cuda 256x256 cfg auto ada"))
            results.append(
                measure(base + ["--aug", "fixed", "--p", "0.5"], a.repeats, "cuda 256x256 cfg auto p=0.5")
            )
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
