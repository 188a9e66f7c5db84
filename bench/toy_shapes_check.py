"""Does a short CPU run learn the toy two-class dataset? Trains a conditional StyleGAN2 on 32x32 discs vs
squares, then judges the conditional fakes by measurable criteria and prints them per snapshot.

    python bench/toy_shapes_check.py --workdir /tmp/toy --kimg 20

Main criterion ("right shape", the fill rule): threshold a fake at mid-grey and take the fill ratio of
the bright pixels' bounding box (bright area / box area): a disc fills pi/4 ~ 0.785 of its box, a square
~ 1.0, so a fill ratio above 0.89 (halfway) says "square"; a fake with fewer than 4 bright pixels has
no shape and counts as wrong. The rule scores 100 % on the real images (printed). 50 % is chance; a
generator that ignores its class cannot beat it on both classes at once. Also printed: each class's
mean fill ratio and the threshold-free AUC P(fill of a class-1 fake > fill of a class-0 fake) (0.5 = no
class difference, 1 = perfectly ordered).

A stricter second opinion: a small CNN trained on the REAL images only (``bench/shape_classifier.py``;
its held-out accuracy is printed). It learnt that squares have sharp corners, so it calls a fake square
whose corners are rounded by a pixel a disc, even where the fill rule and the eye see a square.
``--evaluate RUN_DIR`` only scores the snapshots of an earlier run.
The fakes grid (one row per class: discs, squares, alternating) is saved as ``toy_fakes.png`` in the run
folder, and the summary as ``toy_check.json`` beside it.

With the ``spinegan`` plugin (the experiment of docs/spinegan.md):

    python bench/toy_shapes_check.py --workdir /tmp/toy --kimg 20 --domain-loss [--domain-weight 0.1]
    python bench/toy_shapes_check.py --workdir /tmp/toy --kimg 20 --plugin spinegan --classifier M

``--domain-loss`` first trains a ``small`` classifier (``python -m classification train``'s code, seed 0)
on the REAL toy images of the work folder (reused when ``<workdir>/domain_classifier.safetensors``
exists) and trains with it; ``--plugin``/``--classifier`` pass through to ``train.py``. Either way the
summary adds the domain classifier's own agreement with the requested class on the fakes
("domain_agree"), beside the fill rule and the strict CNN, which took no part in training;
``--judge-classifier M`` scores a run trained without the plugin with the same classifier.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from make_toy_shapes import CLASS_NAMES, make_toy_shapes  # noqa: E402
from shape_classifier import ShapeNet, predict, train_shape_classifier  # noqa: E402

from classification.model_file import Classifier, load_classifier, save_classifier  # noqa: E402
from classification.train import TrainConfig, train_classifier  # noqa: E402
from stylegan2_ada.atomic import write_json_atomic  # noqa: E402
from stylegan2_ada.checkpoint import load_checkpoint  # noqa: E402
from stylegan2_ada.training import cli  # noqa: E402
from stylegan2_ada.training.grids import save_image_grid  # noqa: E402

FILL_THRESHOLD = (np.pi / 4 + 1.0) / 2  # halfway between disc and square


def fill_ratios(images: np.ndarray) -> np.ndarray:
    """images [N, H, W] float in [-1, 1] -> bright-area / bounding-box area [N] (NaN when no shape)."""
    out = np.full(len(images), np.nan)
    for i, img in enumerate(images):
        bright = img > 0
        if bright.sum() < 4:
            continue
        ys, xs = np.nonzero(bright)
        out[i] = bright.sum() / ((np.ptp(ys) + 1) * (np.ptp(xs) + 1))
    return out


def classify(images: np.ndarray) -> np.ndarray:
    """images [N, H, W] float in [-1, 1] -> predicted class [N] (0 disc, 1 square, -1 no shape)."""
    fill = fill_ratios(images)
    return np.where(np.isnan(fill), -1, (fill > FILL_THRESHOLD).astype(int))


def auc(neg: np.ndarray, pos: np.ndarray) -> float:
    """P(fill of a class-1 fake > fill of a class-0 fake); shapeless fakes count as wrong."""
    neg = np.where(np.isnan(neg), np.inf, neg)
    pos = np.where(np.isnan(pos), -np.inf, pos)
    return float((pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean())


def load_reals(data: Path) -> tuple[np.ndarray, np.ndarray]:
    """All toy images [N, H, W] uint8 and their classes [N] (from the folder names)."""
    paths = sorted(data.glob("*/*.png"))
    images = np.stack([np.asarray(Image.open(p)) for p in paths])
    return images, np.array([CLASS_NAMES.index(p.parent.name) for p in paths])


@torch.no_grad()
def fake_accuracy(
    G: torch.nn.Module,
    judge: ShapeNet,
    per_class: int = 128,
    seed: int = 123,
    domain: Classifier | None = None,
) -> tuple[float, dict, np.ndarray]:
    """ "Right shape" rate (the fill rule) over ``per_class`` fakes of each class (see the module docstring),
    with per-class rates, the CNN's per-class rates, mean fill ratios and the fill AUC (and, given the
    ``domain`` classifier, its per-class agreement ``dom0``/``dom1``); also returns the images."""
    g = torch.Generator().manual_seed(seed)
    info: dict = {}
    imgs, fills = [], []
    for cls in range(2):
        z = torch.randn([per_class, G.z_dim], generator=g)
        c = torch.nn.functional.one_hot(torch.full([per_class], cls), 2).float()
        img = G(z, c, noise_mode="const").clamp(-1, 1)[:, 0].numpy()  # [N, H, W]
        fill = fill_ratios(img)
        info[cls] = float((classify(img) == cls).mean())
        info[f"cnn{cls}"] = float(((predict(judge, img) == cls) & ~np.isnan(fill)).mean())
        info[f"fill{cls}"] = float(np.nanmean(fill)) if not np.isnan(fill).all() else None
        if domain is not None:
            info[f"dom{cls}"] = float(
                (domain.scores(torch.from_numpy(img)[:, None]) > 0.5).long().eq(cls).float().mean()
            )
        imgs.append(img)
        fills.append(fill)
    info["auc"] = auc(fills[0], fills[1])
    return (info[0] + info[1]) / 2, info, np.stack(imgs)


def evaluate(snapshots: list[Path], judge: ShapeNet, domain: Classifier | None = None) -> list[dict]:
    curve = []
    for snap in snapshots:
        ck = load_checkpoint(snap)
        acc_s, info, _ = fake_accuracy(ck.networks["G_ema"], judge, domain=domain)
        row = {
            "kimg": ck.metadata["training_state"]["cur_nimg"] / 1000,
            "right_shape": acc_s,
            "disc": info[0],
            "square": info[1],
            "cnn": (info["cnn0"] + info["cnn1"]) / 2,
            "cnn_disc": info["cnn0"],
            "cnn_square": info["cnn1"],
            "fill_disc": info["fill0"],
            "fill_square": info["fill1"],
            "fill_auc": info["auc"],
        }
        if domain is not None:
            row["domain_agree"] = (info["dom0"] + info["dom1"]) / 2
        curve.append(row)
        fd = "-" if info["fill0"] is None else f"{info['fill0']:.3f}"
        fs = "-" if info["fill1"] is None else f"{info['fill1']:.3f}"
        print(
            f"snapshot {snap.name}: right shape {acc_s:.3f} (disc {info[0]:.3f}, square {info[1]:.3f}); "
            f"mean fill disc {fd}, square {fs}; fill AUC {info['auc']:.3f}; strict CNN {row['cnn']:.3f} "
            f"(disc {info['cnn0']:.3f}, square {info['cnn1']:.3f})"
            + ("" if domain is None else f"; domain classifier agrees {row['domain_agree']:.3f}")
        )
    return curve


def make_judge(data: Path) -> tuple[ShapeNet, dict]:
    """Score the fill rule on the reals and train the strict CNN on them (sanity checks)."""
    reals, real_cls = load_reals(data)
    judge, holdout_acc = train_shape_classifier(reals, real_cls)
    rule_acc = float((classify(reals / 127.5 - 1) == real_cls).mean())
    print(f"fill rule on real images: {rule_acc:.3f}; strict CNN on held-out real images: {holdout_acc:.3f}")
    return judge, {"fill_rule_real_acc": rule_acc, "cnn_holdout_real_acc": holdout_acc}


def train_domain_classifier(data: Path, out: Path, seed: int = 0) -> Path:
    """A ``small`` classifier on the real toy images (15 % held out for validation), saved to ``out``."""
    if not out.exists():
        config = TrainConfig(data=[str(data)], arch="small", epochs=10, batch=64, patience=3, seed=seed)
        result = train_classifier(config, progress=False)
        save_classifier(out, result.classifier)
    clf = load_classifier(out)
    print(f"domain classifier {out}: validation AUC {clf.meta.validation.get('auc'):.4f}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", type=Path, help="where the data and runs go (required unless --evaluate)")
    ap.add_argument("--kimg", type=float, default=40)
    ap.add_argument("--count", type=int, default=1000, help="training images per class")
    ap.add_argument("--seed", type=int, default=0, help="train.py --seed")
    ap.add_argument(
        "--layout",
        choices=("anywhere", "centred"),
        default="centred",
        help="where the shapes lie (bench/make_toy_shapes.py)",
    )
    ap.add_argument("--evaluate", type=Path, help="only evaluate the snapshots of this run folder")
    ap.add_argument(
        "--domain-loss",
        action="store_true",
        help="train a small classifier on the real toy images and use it with --plugin spinegan",
    )
    ap.add_argument("--plugin", action="append", default=[], help="train.py --plugin (repeatable)")
    ap.add_argument("--classifier", type=Path, help="train.py --classifier (the spinegan plugin)")
    ap.add_argument("--domain-weight", type=float, help="train.py --domain-weight (the spinegan plugin)")
    ap.add_argument(
        "--judge-classifier",
        type=Path,
        help="a classifier file that only scores the fakes (default: --classifier, the one trained with)",
    )
    ap.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more train.py options")
    a = ap.parse_args()
    if a.evaluate is not None:
        opts = json.loads((a.evaluate / "training_options.json").read_text())
        judge, _ = make_judge(Path(opts["data"]))
        clf = a.judge_classifier or opts["plugin_options"].get("classifier")
        evaluate(
            sorted(a.evaluate.glob("network-snapshot-*.safetensors")),
            judge,
            load_classifier(clf) if clf else None,
        )
        return
    if a.workdir is None:
        ap.error("--workdir is required unless --evaluate is given")

    data = a.workdir / "toy_shapes"
    if not (data / "dataset.json").exists():
        make_toy_shapes(data, a.count, 32, layout=a.layout)
    judge, sanity = make_judge(data)
    plugin_args = [arg for name in a.plugin for arg in ("--plugin", name)]
    classifier = a.classifier
    if a.domain_loss:
        classifier = train_domain_classifier(data, a.workdir / "domain_classifier.safetensors")
        if "spinegan" not in a.plugin:
            plugin_args += ["--plugin", "spinegan"]
    if classifier is not None:
        plugin_args += ["--classifier", str(classifier)]
    if a.domain_weight is not None:
        plugin_args += ["--domain-weight", str(a.domain_weight)]
    scorer = a.judge_classifier or classifier
    domain = load_classifier(scorer) if scorer is not None else None

    # Small networks and a gentler D (dlr 0.001, gamma 0.1, batch 32) so that a CPU learns something in minutes.
    args = [
        "--outdir",
        str(a.workdir / "runs"),
        "--data",
        str(data),
        "--cond=1",
        "--batch",
        "32",
        "--cbase",
        "1024",
        "--cmax",
        "64",
        "--map-depth",
        "2",
        "--aug",
        "noaug",
        "--gamma",
        "0.1",
        "--dlr",
        "0.001",
        "--kimg",
        str(a.kimg),
        "--tick",
        "2",
        "--snap",
        "5",
        "--seed",
        str(a.seed),
        "--device",
        "cpu",
        "--workers",
        "1",
        *plugin_args,
        *a.extra,
    ]
    t0 = time.time()
    result = cli.main(args, standalone_mode=False)
    minutes = (time.time() - t0) / 60
    curve = evaluate(result.snapshots, judge, domain)
    G = load_checkpoint(result.snapshots[-1]).networks["G_ema"]
    acc, info, imgs = fake_accuracy(G, judge, domain=domain)
    gw = 16
    grid = np.concatenate(
        [imgs[0][: gw * 4].reshape(4, gw, 32, 32), imgs[1][: gw * 4].reshape(4, gw, 32, 32)]
    )  # [8, gw, H, W]
    grid = (
        grid.reshape(2, 4, gw, 32, 32).transpose(1, 0, 2, 3, 4).reshape(8 * gw, 1, 32, 32)
    )  # rows alternate class
    run_dir = Path(result.run_dir)
    save_image_grid(grid, run_dir / "toy_fakes.png", (gw, 8))
    summary = {
        "kimg": result.state.cur_nimg / 1000,
        "seed": a.seed,
        "layout": a.layout,
        "plugins": a.plugin + (["spinegan"] if a.domain_loss and "spinegan" not in a.plugin else []),
        "classifier": None if classifier is None else str(classifier),
        "domain_weight": json.loads((run_dir / "training_options.json").read_text())["plugin_options"].get(
            "domain_weight"
        ),
        "train_minutes": round(minutes, 2),
        **sanity,
        "right_shape": acc,
        "right_disc": info[0],
        "right_square": info[1],
        "fill_auc": info["auc"],
        "cnn_disc": info["cnn0"],
        "cnn_square": info["cnn1"],
        "judge_classifier": None if scorer is None else str(scorer),
        "domain_agree": None if domain is None else (info["dom0"] + info["dom1"]) / 2,
        "curve": curve,
        "run_dir": str(run_dir),
        "grid": str(run_dir / "toy_fakes.png"),
    }
    write_json_atomic(run_dir / "toy_check.json", summary)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
