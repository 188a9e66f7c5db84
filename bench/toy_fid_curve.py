"""FID over kimg for a toy run, with DOMAIN features: does the metric fall as the run learns?

    python bench/toy_fid_curve.py --workdir /tmp/toyfid --kimg 8

1. The embedded demo data (``--data demo``: 512 32x32 white discs vs squares, two classes), generated
   where ``train.py --data demo`` puts it (``WORKDIR/runs/.cache/demo``).
2. A small CNN (:class:`ToyClassifier`) trained for a few epochs on those real images only; its held-out
   accuracy is printed. Its penultimate activations (the last convolution's 64 channels, averaged over
   the image, as Inception's pool3 features that FID was defined with) are exported as a TorchScript
   detector, ``WORKDIR/toy_features.pt``, with its input described inside the file
   (``feature_extractor.json``: 1 channel, own size, values in [-1, 1]).
3. ``train.py --data demo --cond 1 ... --metrics fid50k_full --detector WORKDIR/toy_features.pt
   --metrics-num N`` with small networks, a snapshot every ``--snap-kimg`` kimg.
4. Printed: the FID at every snapshot (class-balanced and per class) from the run's
   ``metric-fid50k_full.jsonl``, and the floor: the FID that a perfect generator would get at the same
   N, measured as the FID of a second, independently drawn demo set (seed 1) against the training set.
   The curve is plotted with ``python -m stylegan2_ada.metrics.curves`` to ``WORKDIR/toy_fid_curve.png``.

FID at N generated images is biased upwards for small N; compare only with the floor at the same N.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stylegan2_ada.checkpoint import load_checkpoint  # noqa: E402
from stylegan2_ada.demo_data import DEMO_NAME, make_demo_dataset  # noqa: E402
from stylegan2_ada.metrics import load_extractor  # noqa: E402
from stylegan2_ada.metrics.statistics import fid_from_features  # noqa: E402
from stylegan2_ada.training import cli  # noqa: E402

DETECTOR_JSON = {"name": "toy-shape-cnn", "input_size": None, "input_channels": 1, "input_range": "-1-1"}


class ToyClassifier(nn.Module):
    """Discs (0) vs squares (1): [N, 1, H, W] in [-1, 1] -> logits [N, 2]; :meth:`features` gives the
    penultimate activations [N, 64] (the last convolution, averaged over the image)."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        self.trunk = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1),
            nn.ReLU(),
            nn.AvgPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1),
            nn.ReLU(),
        )
        self.head = nn.Linear(2 * width, 2)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(x).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class PenultimateFeatures(nn.Module):
    """The detector: [N, 1, H, W] in [-1, 1] -> the classifier's penultimate activations [N, 64]."""

    def __init__(self, net: ToyClassifier) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.features(x)


def train_classifier(
    images: np.ndarray, labels: np.ndarray, epochs: int, seed: int = 0, holdout: float = 0.2
) -> tuple[ToyClassifier, float]:
    """images [N, H, W] uint8, labels [N] -> (classifier, accuracy on the held-out images). Augmented
    with flips and transposes only (they keep a disc a disc and a square a square)."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    x = torch.from_numpy(images).float().div(127.5).sub(1).unsqueeze(1)  # [N, 1, H, W]
    y = torch.from_numpy(labels).long()
    order = torch.randperm(len(x), generator=g)
    test, train = order[: int(len(x) * holdout)], order[int(len(x) * holdout) :]
    net = ToyClassifier()
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    for _ in range(epochs):
        for idx in train[torch.randperm(len(train), generator=g)].split(64):
            batch = x[idx]
            if torch.rand([], generator=g) < 0.5:
                batch = batch.flip(3)
            if torch.rand([], generator=g) < 0.5:
                batch = batch.transpose(2, 3)
            loss = nn.functional.cross_entropy(net(batch), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        accuracy = float((net(x[test]).argmax(1) == y[test]).float().mean())
    return net, accuracy


def load_folder(data: Path) -> tuple[np.ndarray, np.ndarray]:
    """The demo set's images [N, H, W] uint8 and classes [N], from its dataset.json."""
    labels = json.loads((data / "dataset.json").read_text())["labels"]
    images = np.stack([np.asarray(Image.open(data / name)) for name, _ in labels])
    return images, np.array([cls for _, cls in labels])


def export_detector(net: ToyClassifier, path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit's deprecation notices
        scripted = torch.jit.script(PenultimateFeatures(net).eval())
    scripted.save(str(path), _extra_files={"feature_extractor.json": json.dumps(DETECTOR_JSON)})
    return path


@torch.no_grad()
def floor_fid(detector_path: Path, reals: np.ndarray, classes: np.ndarray, other: Path, num: int) -> dict:
    """Class-balanced FID of ``num`` images of an independent demo set against the training set (the
    runner's conditional scheme: num / 2 per class against every real image of that class)."""
    extractor = load_extractor(detector_path, log=lambda message: None)
    images, other_classes = load_folder(other)
    per_class = {}
    for c in (0, 1):
        real = extractor(torch.from_numpy(reals[classes == c][:, None]))
        fake = extractor(torch.from_numpy(images[other_classes == c][: num // 2, None]))
        per_class[c] = fid_from_features(real, fake)
    return {"fid": float(np.mean(list(per_class.values()))), "per_class": per_class}


@torch.no_grad()
def class_shares(snapshot: Path, classifier: Any, per_class: int = 256, seed: int = 0) -> tuple[float, float]:
    """Share of the snapshot's class-k fakes that the toy classifier calls class k, for k = 0, 1 (a second
    reading of what the per-class FIDs say)."""
    G = load_checkpoint(snapshot).networks["G_ema"].eval()
    z = torch.from_numpy(np.random.default_rng(seed).standard_normal((per_class, G.z_dim))).float()
    shares = []
    for k in (0, 1):
        c = torch.zeros(per_class, G.c_dim)
        c[:, k] = 1
        torch.manual_seed(seed)
        img = (G(z, c, noise_mode="random") * 127.5 + 128).clamp(0, 255).to(torch.uint8)  # as saved images
        shares.append(float((classifier(img.float() / 127.5 - 1).argmax(1) == k).float().mean()))
    return shares[0], shares[1]


def report(run_dir: Path, detector: Path, floor: dict) -> list[dict]:
    """Print the FID of every snapshot of the run (its metric-fid50k_full.jsonl) with the class shares."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        classifier = torch.jit.load(str(detector)).net  # the whole toy classifier is in the detector file
    lines = [json.loads(x) for x in (run_dir / "metric-fid50k_full.jsonl").read_text().splitlines()]
    print(
        f"\n{'kimg':>7}  {'FID':>8}  {'disc':>8}  {'square':>8}  {'right class (disc/square)':>26}  {'eval s':>6}"
    )
    rows = []
    for r in lines:
        res = r["results"]
        shares = class_shares(run_dir / r["snapshot_pkl"], classifier)
        print(
            f"{r['kimg']:7.3f}  {res['fid50k_full']:8.3f}  {res['fid50k_full_class0']:8.3f}  "
            f"{res['fid50k_full_class1']:8.3f}  {shares[0]:12.0%} / {shares[1]:<11.0%}  {r['total_time']:6.1f}"
        )
        rows.append({"kimg": r["kimg"], "fid": res["fid50k_full"], "right_class": shares})
    print(f"  floor  {floor['fid']:8.3f}  {floor['per_class'][0]:8.3f}  {floor['per_class'][1]:8.3f}")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", type=Path, required=True)
    ap.add_argument("--kimg", type=float, default=8)
    ap.add_argument("--snap-kimg", type=float, default=1, help="kimg between snapshots (and evaluations)")
    ap.add_argument("--num", type=int, default=512, help="generated images per evaluation (--metrics-num)")
    ap.add_argument("--epochs", type=int, default=20, help="classifier training epochs")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared)")
    ap.add_argument(
        "--evaluate", type=Path, help="only report this earlier run folder of WORKDIR (no training)"
    )
    ap.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more train.py options")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    a.workdir.mkdir(parents=True, exist_ok=True)
    outdir = a.workdir / "runs"
    data = make_demo_dataset(outdir / ".cache" / DEMO_NAME)  # where train.py --data demo puts it
    reals, classes = load_folder(data)
    other = make_demo_dataset(a.workdir / "demo-seed1", seed=1)
    detector = a.workdir / "toy_features.pt"
    if a.evaluate is not None:
        report(a.evaluate, detector, floor_fid(detector, reals, classes, other, a.num))
        return

    t0 = time.time()
    net, accuracy = train_classifier(reals, classes, a.epochs)
    classifier_sec = time.time() - t0
    export_detector(net, detector)
    floor = floor_fid(detector, reals, classes, other, a.num)
    print(
        f"Classifier: {accuracy:.1%} on held-out reals ({classifier_sec:.0f}s); FID floor at N={a.num} "
        f"(an independent demo set): {floor['fid']:.3f}",
        flush=True,
    )

    # Small networks and a gentler D (as bench/toy_shapes_check.py) so that a CPU learns in minutes.
    args = [
        "--outdir", str(outdir), "--data", DEMO_NAME, "--cond=1", "--batch", "32", "--cbase", "1024",
        "--cmax", "64", "--map-depth", "2", "--aug", "noaug", "--gamma", "0.1", "--dlr", "0.001",
        "--kimg", str(a.kimg), "--tick", str(a.snap_kimg), "--snap", "1", "--device", "cpu",
        "--workers", "1", "--metrics", "fid50k_full", "--detector", str(detector),
        "--metrics-num", str(a.num), *a.extra,
    ]  # fmt: skip
    t0 = time.time()
    result = cli.main(args, standalone_mode=False)
    train_min = (time.time() - t0) / 60
    rows = report(result.run_dir, detector, floor)
    png = a.workdir / "toy_fid_curve.png"
    subprocess.run(
        [sys.executable, "-m", "stylegan2_ada.metrics.curves", str(result.run_dir), "--out", str(png)],
        check=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    summary = {
        "kimg": result.state.cur_nimg / 1000,
        "train_minutes_with_metrics": round(train_min, 2),
        "classifier_heldout_accuracy": accuracy,
        "num": a.num,
        "floor": floor["fid"],
        "fid": rows,
        "run_dir": str(result.run_dir),
        "plot": str(png),
    }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
