"""Speed of the networks, eager and compiled, beside upstream's code: prints figures, asserts nothing.

    python bench/bench_speed.py --device cpu
    python bench/bench_speed.py --device cuda --upstream /tmp/stylegan2-ada-pytorch
    python bench/bench_speed.py --device cpu --res 64 --only train --no-compile --repeats 2
    python bench/bench_speed.py --device cuda --res 256 --nhwc --tf32   # what channels-last and TF32 give

For each resolution (``--res``, default 64 and 256):

* training: seconds per kimg of the loop's own phase function (:func:`stylegan2_ada.training.loop.run_phase`:
  loss, backward, NaN guard, Adam step) on preloaded tensors, no augmentation, data loading, EMA or
  statistics. Each phase is timed separately (``--repeats`` times after a warm-up, median) and a step
  is ``Gmain + Dmain + Greg / 4 + Dreg / 16`` (upstream's lazy-regularisation intervals), so a few
  steps give the figure. Eager, compiled (``--compile`` of ``train.py``: main phases compiled,
  regularisation phases eager, see :mod:`stylegan2_ada.compile`) and, with ``--upstream DIR``,
  upstream's ``StyleGAN2Loss.accumulate_gradients`` on the same weights, in the same process, with
  the implementations alternating within each repeat.
* generation: images/s of ``G(z, c)`` in eval mode, const noise, batch ``--gen-batch``; eager,
  compiled synthesis, upstream.
* peak memory: CUDA, the peak allocated during that measurement; CPU, the process's peak resident set
  so far (it only grows: read the first rows of a run).

Configurations (``--cfg``): ``auto`` is upstream's ``--cfg auto`` for one GPU at that resolution
(256 px: batch 16, cbase 16384, mapping 2, gamma 0.8192, fp16 in the top 4 resolutions with clamp 256 on
CUDA); ``small`` is the issue's CPU configuration (cbase 4096 at 64 px, 16384 at 256 px; batch 8
training, 4 generating). Default: ``auto`` on CUDA, ``small`` on CPU. Both use 1-channel images and
2 classes (the project's use), z/w 512.

``--upstream DIR``: a checkout of NVlabs/stylegan2-ada-pytorch, imported in this process (read-only;
never part of this repository). Its ``dnnlib`` imports ``requests`` only for downloads; an empty
stand-in module is installed when ``requests`` is missing. On CPU its custom ops fall back to its
reference implementations; on CUDA it builds its kernels with the local CUDA toolkit when it can.

Compiling on CPU needs a C++ compiler and takes minutes; the compile time is printed. The machine's
load changes every figure: run on an idle machine, and compare rows of the same run.
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import resource
import statistics
import sys
import time
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stylegan2_ada.compile import compile_for_training, maybe_compile  # noqa: E402
from stylegan2_ada.loss import StyleGAN2Loss  # noqa: E402
from stylegan2_ada.networks import Discriminator, Generator  # noqa: E402
from stylegan2_ada.training import distributed as dist  # noqa: E402
from stylegan2_ada.training.loop import build_phases, run_phase  # noqa: E402
from stylegan2_ada.training.stats import StatsCollector  # noqa: E402

REG_INTERVALS = {"Gmain": 1, "Dmain": 1, "Greg": 4, "Dreg": 16}
C_DIM = 2
IMG_CHANNELS = 1
Z_DIM = 512


@dataclass
class Config:
    res: int
    cbase: int
    batch: int
    mbstd: int
    gamma: float
    lr: float = 0.0025
    map_layers: int = 2
    nhwc: bool = False  # channels-last float16 blocks (upstream's --nhwc)

    def describe(self) -> str:
        return (
            f"{self.res} px, {IMG_CHANNELS} channel, c_dim {C_DIM}, z/w {Z_DIM}, map {self.map_layers}, "
            f"cbase {self.cbase}, batch {self.batch}, mbstd {self.mbstd}, gamma {self.gamma:g}"
            + (", channels-last fp16 blocks" if self.nhwc else "")
        )


def make_config(cfg: str, res: int) -> Config:
    """Upstream's ``--cfg auto`` for one GPU, or the issue's small CPU configuration."""
    if cfg == "auto":
        batch = max(min(min(4096 // res, 32), 64), 1)
        return Config(
            res,
            cbase=16384 if res < 512 else 32768,
            batch=batch,
            mbstd=min(batch, 4),
            gamma=0.0002 * res**2 / batch,
        )
    cbase = 4096 if res <= 64 else 16384
    return Config(res, cbase=cbase, batch=8, mbstd=4, gamma=0.0002 * res**2 / 8)


def network_kwargs(cfg: Config, fp16: bool) -> tuple[dict, dict]:
    """Generator and discriminator constructor arguments (the same for ours and upstream's)."""
    common = dict(channel_base=cfg.cbase, channel_max=512, num_fp16_res=4 if fp16 else 0, conv_clamp=256)
    nhwc = dict(fp16_channels_last=True) if cfg.nhwc else {}
    G_kwargs = dict(
        z_dim=Z_DIM,
        c_dim=C_DIM,
        w_dim=512,
        img_resolution=cfg.res,
        img_channels=IMG_CHANNELS,
        mapping_kwargs=dict(num_layers=cfg.map_layers),
        synthesis_kwargs=dict(common, **nhwc),
    )
    D_kwargs = dict(
        c_dim=C_DIM,
        img_resolution=cfg.res,
        img_channels=IMG_CHANNELS,
        block_kwargs=nhwc,
        epilogue_kwargs=dict(mbstd_group_size=cfg.mbstd),
        **common,
    )
    return G_kwargs, D_kwargs


# ----------------------------------------------------------------------------------------------- timing


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # kB on Linux


def timed(fn: Callable[[], Any], device: torch.device) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


@dataclass
class Contender:
    """One implementation: a name, per measured item a function to time, and its compile reports."""

    name: str
    steps: dict[str, Callable[[], Any]]
    reports: list = field(default_factory=list)

    def note(self) -> str:
        return "".join(f"; {r.summary()}" for r in self.reports)


def race(contenders: list[Contender], device: torch.device, repeats: int) -> dict[str, dict[str, float]]:
    """Median seconds per item per contender; the contenders alternate within each repeat."""
    times: dict[str, dict[str, list[float]]] = {c.name: {k: [] for k in c.steps} for c in contenders}
    for _ in range(repeats):
        for c in contenders:
            for item, fn in c.steps.items():
                times[c.name][item].append(timed(fn, device))
    return {name: {k: statistics.median(v) for k, v in items.items()} for name, items in times.items()}


# ---------------------------------------------------------------------------------------------- ours


def build_ours(cfg: Config, device: torch.device, seed: int = 0) -> tuple[Generator, Discriminator]:
    torch.manual_seed(seed)
    G_kwargs, D_kwargs = network_kwargs(cfg, fp16=True)  # float16 is used on CUDA only
    G = Generator(**G_kwargs).train().requires_grad_(False).to(device)
    D = Discriminator(**D_kwargs).train().requires_grad_(False).to(device)
    return G, D


def fixed_batch(cfg: Config, device: torch.device) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    c = torch.nn.functional.one_hot(torch.arange(cfg.batch) % C_DIM, C_DIM).float()
    return dict(
        real_img=torch.rand(cfg.batch, IMG_CHANNELS, cfg.res, cfg.res, generator=g).mul(2).sub(1).to(device),
        real_c=c.to(device),
        gen_z=torch.randn(cfg.batch, Z_DIM, generator=g).to(device),
        gen_c=c.to(device),
    )


def ours_training(cfg: Config, device: torch.device, compiled: bool, mode: str | None) -> Contender:
    """Our four phases through the loop's run_phase."""
    G, D = build_ours(cfg, device)
    loss: Any = StyleGAN2Loss(G, D, None, r1_gamma=cfg.gamma)
    if compiled:
        loss = compile_for_training(loss, device=device, mode=mode)
    opts = SimpleNamespace(
        glr=cfg.lr, dlr=cfg.lr, G_reg_interval=4, D_reg_interval=16, pl_weight=2.0, gamma=cfg.gamma
    )
    phases = {p.name: p for p in build_phases(opts, G, D)}
    b = fixed_batch(cfg, device)
    stats, info = StatsCollector(device), dist.DistInfo()
    reals, gens = [(b["real_img"], b["real_c"])], [(b["gen_z"], b["gen_c"])]

    def step(name: str) -> Callable[[], Any]:
        return lambda: run_phase(phases[name], reals, gens, loss, None, None, stats, info)

    name = "ours compiled" if compiled else "ours eager"
    return Contender(name, {p: step(p) for p in REG_INTERVALS}, getattr(loss, "reports", []))


def ours_generation(
    cfg: Config, batch: int, device: torch.device, compiled: bool, mode: str | None
) -> Contender:
    G, _ = build_ours(cfg, device)
    G.eval()
    synthesis, report = maybe_compile(
        G.synthesis, enabled=compiled, mode=mode, name="G.synthesis", device=device
    )
    z = torch.randn(batch, Z_DIM, device=device)
    c = torch.nn.functional.one_hot(torch.arange(batch, device=device) % C_DIM, C_DIM).float()

    def generate() -> torch.Tensor:
        with torch.inference_mode():
            return synthesis(G.mapping(z, c), noise_mode="const")

    return Contender(
        "ours compiled" if compiled else "ours eager", {"gen": generate}, [report] if compiled else []
    )


# ------------------------------------------------------------------------------------------ upstream


def import_upstream(path: str) -> types.SimpleNamespace:
    """Upstream's networks and loss, imported from a checkout at ``path``."""
    root = Path(path).resolve()
    if not (root / "training" / "networks.py").is_file():
        raise SystemExit(f"Error: {root} is not a stylegan2-ada-pytorch checkout (no training/networks.py)")
    try:
        importlib.import_module("requests")
    except ImportError:  # upstream's dnnlib.util imports it for downloads only
        sys.modules["requests"] = types.ModuleType("requests")
    sys.path.insert(0, str(root))
    networks = importlib.import_module("training.networks")
    loss = importlib.import_module("training.loss")
    gradfix = importlib.import_module("torch_utils.ops.conv2d_gradfix")
    gradfix.enabled = True  # as upstream's training loop
    return types.SimpleNamespace(networks=networks, loss=loss)


def build_upstream(up: types.SimpleNamespace, cfg: Config, device: torch.device) -> tuple[Any, Any]:
    """Upstream's G and D with our weights (same state_dict names). On CPU without float16 blocks: its
    loss would otherwise run them in float16 there (ours computes float32 on CPU either way)."""
    G_ours, D_ours = build_ours(cfg, device)
    G_kwargs, D_kwargs = network_kwargs(cfg, fp16=device.type == "cuda")
    G = up.networks.Generator(**G_kwargs).to(device)
    D = up.networks.Discriminator(**D_kwargs).to(device)
    G.load_state_dict(G_ours.state_dict())
    D.load_state_dict(D_ours.state_dict())
    return G.train().requires_grad_(False), D.train().requires_grad_(False)


def upstream_training(up: types.SimpleNamespace, cfg: Config, device: torch.device) -> Contender:
    """Upstream's phases as its training loop runs them: accumulate_gradients, nan_to_num, Adam step."""
    G, D = build_upstream(up, cfg, device)
    loss = up.loss.StyleGAN2Loss(device, G.mapping, G.synthesis, D, r1_gamma=cfg.gamma)
    b = fixed_batch(cfg, device)
    opts = SimpleNamespace(
        glr=cfg.lr, dlr=cfg.lr, G_reg_interval=4, D_reg_interval=16, pl_weight=2.0, gamma=cfg.gamma
    )
    phases = {p.name: p for p in build_phases(opts, G, D)}

    def step(name: str) -> Callable[[], Any]:
        phase = phases[name]

        def run() -> None:
            phase.opt.zero_grad(set_to_none=True)
            phase.module.requires_grad_(True)
            loss.accumulate_gradients(name, sync=True, gain=phase.interval, **b)
            phase.module.requires_grad_(False)
            for p in phase.module.parameters():
                if p.grad is not None:
                    torch.nan_to_num(p.grad, nan=0, posinf=1e5, neginf=-1e5, out=p.grad)
            phase.opt.step()

        return run

    return Contender("upstream", {p: step(p) for p in REG_INTERVALS})


def upstream_generation(
    up: types.SimpleNamespace, cfg: Config, batch: int, device: torch.device
) -> Contender:
    G, _ = build_upstream(up, cfg, device)
    G.eval()
    z = torch.randn(batch, Z_DIM, device=device)
    c = torch.nn.functional.one_hot(torch.arange(batch, device=device) % C_DIM, C_DIM).float()
    force_fp32 = device.type != "cuda"

    def generate() -> torch.Tensor:
        with torch.no_grad():
            return G(z, c, noise_mode="const", force_fp32=force_fp32)

    return Contender("upstream", {"gen": generate})


# -------------------------------------------------------------------------------------------- report


def warm_up(contenders: list[Contender], device: torch.device) -> dict[str, float]:
    """Run every item once (compiles what is compiled); peak memory per contender in GiB."""
    peaks = {}
    for c in contenders:
        reset_peak(device)
        for fn in c.steps.values():
            fn()
        sync(device)
        peaks[c.name] = peak_gb(device)
    return peaks


def report_training(cfg: Config, contenders: list[Contender], device: torch.device, repeats: int) -> None:
    peaks = warm_up(contenders, device)
    medians = race(contenders, device, repeats)
    print(f"  training (networks only; s/kimg from the phase medians, n={repeats}):")
    base = None
    for c in contenders:
        t = medians[c.name]
        step = sum(t[p] / REG_INTERVALS[p] for p in REG_INTERVALS)
        s_per_kimg = step / cfg.batch * 1000
        base = base or s_per_kimg
        phases = "  ".join(f"{p} {t[p] * 1000:.0f}" for p in REG_INTERVALS)
        print(
            f"    {c.name:<14} {s_per_kimg:9.2f} s/kimg  ({base / s_per_kimg:4.2f}x first row; ms: {phases}; "
            f"peak {peaks[c.name]:.2f} GiB){c.note()}"
        )


def report_generation(batch: int, contenders: list[Contender], device: torch.device, repeats: int) -> None:
    peaks = warm_up(contenders, device)
    medians = race(contenders, device, repeats)
    print(f"  generation (eval, const noise, batch {batch}, n={repeats}):")
    base = None
    for c in contenders:
        ips = batch / medians[c.name]["gen"]
        base = base or ips
        print(
            f"    {c.name:<14} {ips:9.2f} img/s   ({ips / base:4.2f}x first row; peak {peaks[c.name]:.2f} GiB){c.note()}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--res", default="64,256", help="comma-separated resolutions")
    parser.add_argument(
        "--cfg", choices=["auto", "small"], default=None, help="default: auto on CUDA, small on CPU"
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--gen-batch", type=int, default=4)
    parser.add_argument("--only", choices=["train", "gen"], default=None)
    parser.add_argument("--no-compile", action="store_true", help="skip the compiled rows")
    parser.add_argument("--mode", default=None, help="torch.compile mode (e.g. max-autotune)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--nhwc", action="store_true", help="channels-last float16 blocks (CUDA)")
    parser.add_argument("--tf32", action="store_true", help="allow TF32 matmuls and convolutions (CUDA)")
    parser.add_argument("--upstream", metavar="DIR", default=None, help="stylegan2-ada-pytorch checkout")
    args = parser.parse_args()

    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as the training loop
        torch.backends.cuda.matmul.allow_tf32 = args.tf32  # off by default, as the training loop
        torch.backends.cudnn.allow_tf32 = args.tf32
    cfg_name = args.cfg or ("auto" if device.type == "cuda" else "small")
    up = import_upstream(args.upstream) if args.upstream else None
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    print(
        f"device {device} ({name}), torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"load average {os.getloadavg()[0]:.1f}, THP_MEM_ALLOC_ENABLE={os.environ.get('THP_MEM_ALLOC_ENABLE', 'unset')}"
        + (f", TF32 {'on' if args.tf32 else 'off'}" if device.type == "cuda" else "")
    )
    for res in [int(r) for r in args.res.split(",")]:
        cfg = make_config(cfg_name, res)
        cfg.nhwc = args.nhwc
        print(f"== {cfg_name}: {cfg.describe()}")
        if args.only in (None, "train"):
            contenders = [ours_training(cfg, device, False, None)]
            if not args.no_compile:
                contenders.append(ours_training(cfg, device, True, args.mode))
            if up is not None:
                contenders.append(upstream_training(up, cfg, device))
            report_training(cfg, contenders, device, args.repeats)
        if args.only in (None, "gen"):
            contenders = [ours_generation(cfg, args.gen_batch, device, False, None)]
            if not args.no_compile:
                contenders.append(ours_generation(cfg, args.gen_batch, device, True, args.mode))
            if up is not None:
                contenders.append(upstream_generation(up, cfg, args.gen_batch, device))
            report_generation(args.gen_batch, contenders, device, args.repeats)


if __name__ == "__main__":
    main()
