"""Cost of the ``spinegan`` plugin's domain term: time of one generator (``Gmain``) step with and without it.

    python bench/bench_domain_loss.py                      # CPU, 256x256, batch 4, densenet121 and small
    python bench/bench_domain_loss.py --device cuda --repeats 20

Networks: ``train.py --cfg auto --cond 1 --batch 4 --aug noaug`` at ``--res`` (256: cbase 16384, cmax 512,
mapping depth 2; float16 in the top 4 resolutions on CUDA), resolved by train.py's own option code from a
small toy-shapes set. One step = what the training loop does in ``Gmain``: G(z, c) -> D -> non-saturating
loss, (with the term: + the plugin's ``loss_terms``, called through ``call_loss_terms`` exactly as the loop
calls it), backward into G, Adam step. The latents are fixed; D's parameters take no gradient.
Classifiers (random weights: the cost does not depend on them): ``densenet121`` (3 x 224 px, ImageNet
mean/std) and ``small`` (1 channel at the training resolution, width 16), in our model-file format, loaded by
the plugin itself (float32 on CPU; autocast bfloat16/float16 on CUDA, as in training).

Timing: ``--warmup`` steps, then ``--repeats`` rounds; each round times one plain step and one step per
classifier, interleaved, so that load from other processes hits them alike. Reported: the median per
variant and the overhead ``median(with) / median(plain) - 1``. CUDA times are synchronised.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from make_toy_shapes import make_toy_shapes  # noqa: E402

from classification.model_file import Classifier, ClassifierMeta, save_classifier  # noqa: E402
from classification.models import IMAGENET_MEAN, IMAGENET_STD, build_network  # noqa: E402
from stylegan2_ada.loss import StyleGAN2Loss  # noqa: E402
from stylegan2_ada.networks import Discriminator, Generator  # noqa: E402
from stylegan2_ada.plugin_api import TrainingContext  # noqa: E402
from stylegan2_ada.plugins import call_loss_terms, create_plugin_manager  # noqa: E402
from stylegan2_ada.training import cli  # noqa: E402


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def resolved_options(work: Path, res: int, batch: int, device: str, fp32: bool):
    """train.py's resolved options for ``--cfg auto`` at ``res`` (from a small toy set)."""
    data = make_toy_shapes(work / f"shapes{res}", count=4, res=res)
    args = ["--outdir", str(work / "runs"), "--data", str(data), "--cond=1", "--cfg", "auto"]
    args += ["--batch", str(batch), "--aug", "noaug", "--device", device, "--workers", "0"]
    args += ["--fp32=1"] if fp32 else []
    raw = cli.build_command(None, []).make_context("train.py", args).params
    opts, _, _ = cli.prepare(dict(raw), None, [])
    return opts


def classifier_file(work: Path, arch: str, res: int) -> Path:
    """A randomly initialised classifier of ``arch`` in our format."""
    if arch == "small":
        meta = ClassifierMeta(
            "small", res, 1, (0.5,), (0.25,), ("normal", "abnormal"), arch_kwargs={"width": 16}
        )
    else:
        meta = ClassifierMeta(arch, 224, 3, IMAGENET_MEAN, IMAGENET_STD, ("normal", "abnormal"))
    net = build_network(meta.arch, meta.num_outputs, meta.in_channels, meta.input_size, meta.arch_kwargs)
    path = work / f"{arch}.safetensors"
    save_classifier(path, Classifier(meta, net))
    return path


class GmainStep:
    """One Gmain step of fixed latents, optionally with the plugin's term (see the module docstring)."""

    def __init__(self, opts, device: torch.device) -> None:
        self.device = device
        self.G = Generator(**opts.generator_kwargs()).train().to(device)
        self.D = Discriminator(**opts.discriminator_kwargs()).train().requires_grad_(False).to(device)
        self.opt = torch.optim.Adam(self.G.parameters(), lr=opts.glr, betas=(0.0, 0.99), eps=1e-8)
        self.loss = StyleGAN2Loss(self.G, self.D, None, style_mixing_prob=0.0)
        g = torch.Generator().manual_seed(0)
        n = opts.batch_gpu
        self.z = torch.randn([n, self.G.z_dim], generator=g).to(device)
        self.c = torch.nn.functional.one_hot(torch.arange(n) % opts.c_dim, opts.c_dim).float().to(device)
        self.plugins: dict[str, tuple] = {}

    def add_classifier(self, name: str, path: Path, fp32: bool) -> None:
        pm = create_plugin_manager(["spinegan"])
        ctx = TrainingContext(
            G=self.G,
            D=self.D,
            G_ema=self.G,
            augment_pipe=None,
            dataset=None,
            device=self.device,
            run_dir=None,
            options={"classifier": str(path), "domain_weight": 0.1, "fp32": fp32},
        )
        pm.hook.training_setup(context=ctx)
        self.plugins[name] = (pm, ctx)

    def __call__(self, plugin: str | None) -> float:
        sync(self.device)
        t = time.perf_counter()
        self.opt.zero_grad(set_to_none=True)
        out = self.loss.compute("Gmain", gen_z=self.z, gen_c=self.c)
        total = out.loss
        if plugin is not None:
            pm, ctx = self.plugins[plugin]
            for term in call_loss_terms(pm, "Gmain", ctx, out.data).values():
                total = total + term
        total.backward()
        self.opt.step()
        sync(self.device)
        return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--res", type=int, default=256)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--archs", default="densenet121,small", help="comma-separated classifier architectures")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads [torch's default]")
    ap.add_argument("--fp32", action="store_true", help="no mixed precision on CUDA (train.py --fp32)")
    a = ap.parse_args()
    if a.device == "cuda" and not torch.cuda.is_available():
        sys.exit("Error: --device cuda, but no CUDA device is available")
    if a.threads:
        torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    work = Path(tempfile.mkdtemp(prefix="bench_domain_loss_"))
    opts = resolved_options(work, a.res, a.batch, a.device, a.fp32)
    step = GmainStep(opts, device)
    archs = [x for x in a.archs.split(",") if x]
    for arch in archs:
        step.add_classifier(arch, classifier_file(work, arch, a.res), a.fp32)
    variants = [None, *archs]
    load_before = os.getloadavg()
    for _ in range(a.warmup):
        for v in variants:
            step(v)
    times: dict[str | None, list[float]] = {v: [] for v in variants}
    for _ in range(a.repeats):
        for v in variants:
            times[v].append(step(v))
    load_after = os.getloadavg()
    plain = statistics.median(times[None])
    result = {
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "resolution": a.res,
        "batch": a.batch,
        "G_params_M": round(sum(p.numel() for p in step.G.parameters()) / 1e6, 2),
        "mixed_precision": device.type == "cuda" and not a.fp32,
        "threads": torch.get_num_threads(),
        "repeats": a.repeats,
        "load_average_1min": [round(load_before[0], 2), round(load_after[0], 2)],
        "plain_gmain_ms": round(plain * 1000, 1),
        "with_term": {
            arch: {
                "gmain_ms": round(statistics.median(times[arch]) * 1000, 1),
                "overhead_percent": round(100 * (statistics.median(times[arch]) / plain - 1), 1),
            }
            for arch in archs
        },
        "all_ms": {str(v): [round(t * 1000, 1) for t in ts] for v, ts in times.items()},
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
