"""What does privacy cost the toy GAN? Trains the toy shapes set (32x32 discs vs squares) without DP and
with ``--plugin dp`` at several target epsilons, for the same kimg and seed, scores each run's final
fakes by ``bench/toy_shapes_check.py``'s criterion and prints one table (issue #10's utility
measurement; the figures go to docs/privacy.md).

    python bench/dp_utility.py --workdir /tmp/dp_utility --kimg 20 --epsilons 1,10

Each run is ``bench/toy_shapes_check.py --workdir W --kimg K --seed S`` (small networks, batch
``--batch`` (32), ``--aug noaug``, centred shapes, 1000 training images per class), with ``--plugin dp
--target-epsilon E --clip C --delta D`` added for the private runs; the plugin then forces what its
guarantee needs (minibatch-stddev group 1, Poisson sampling, R1 inside the private step) and the noise
multiplier is calibrated for the planned steps (kimg x 1000 / batch). All runs share the work folder's
data set. Columns: "right shape" (the fill rule on 128 fakes per class: 1.0 = every fake has its class's
shape, 0.5 = chance), its disc / square rates, "fill AUC" (how well the two classes' fakes separate, 0.5
= not at all), "strict CNN" (a classifier trained on the real images), sigma and the epsilon actually
spent (``privacy.json``), and the training time. Rerun with ``--summarise`` to reprint the table from the
run folders.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
CHECK = HERE / "toy_shapes_check.py"


def run_folders(workdir: Path) -> list[Path]:
    runs = workdir / "runs"
    return sorted(p for p in runs.iterdir() if p.is_dir()) if runs.is_dir() else []


def train(workdir: Path, kimg: float, seed: int, batch: int, private: list[str]) -> Path:
    """One toy_shapes_check run; returns its new run folder."""
    before = set(run_folders(workdir))
    cmd = [sys.executable, str(CHECK), "--workdir", str(workdir), "--kimg", str(kimg), "--seed", str(seed)]
    cmd += (["--plugin", "dp"] if private else []) + ["--extra", "--batch", str(batch), *private]
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    (new,) = set(run_folders(workdir)) - before
    return new


def row(run_dir: Path) -> dict:
    check = json.loads((run_dir / "toy_check.json").read_text())
    privacy_file = run_dir / "privacy.json"
    privacy = json.loads(privacy_file.read_text()) if privacy_file.exists() else None
    return {
        "run": run_dir.name,
        "batch": json.loads((run_dir / "training_options.json").read_text())["batch"],
        "target": None if privacy is None else privacy.get("target_epsilon"),
        "epsilon": None if privacy is None else privacy["epsilon"],
        "delta": None if privacy is None else privacy["delta"],
        "sigma": None if privacy is None else privacy["noise_multiplier"],
        "steps": None if privacy is None else privacy["steps"],
        "kimg": check["kimg"],
        "right": check["right_shape"],
        "disc": check["right_disc"],
        "square": check["right_square"],
        "fill_auc": check["fill_auc"],
        "cnn": (check["cnn_disc"] + check["cnn_square"]) / 2,
        "minutes": check["train_minutes"],
    }


def table(rows: list[dict]) -> str:
    lines = [
        "| training | batch | sigma | epsilon spent (delta) | private steps | kimg | right shape (disc / square) "
        "| fill AUC | strict CNN | minutes |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r["epsilon"] is None:
            name, sigma, eps, steps = "no DP", "-", "-", "-"
        else:
            name = f"DP, target epsilon {r['target']:g}" if r["target"] else "DP"
            sigma, eps, steps = f"{r['sigma']:.3f}", f"{r['epsilon']:.3f} ({r['delta']:g})", str(r["steps"])
        lines.append(
            f"| {name} | {r['batch']} | {sigma} | {eps} | {steps} | {r['kimg']:.1f} | {r['right']:.3f} "
            f"({r['disc']:.3f} / {r['square']:.3f}) | {r['fill_auc']:.3f} | {r['cnn']:.3f} | {r['minutes']:.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", type=Path, required=True)
    ap.add_argument("--kimg", type=float, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch", type=int, default=32, help="train.py --batch (the expected batch under DP)")
    ap.add_argument("--epsilons", default="1,10", help="target epsilons of the private runs")
    ap.add_argument("--clip", type=float, default=1.0, help="per-example clip norm C")
    ap.add_argument("--delta", type=float, default=1e-5)
    ap.add_argument("--summarise", action="store_true", help="only reprint the table of the run folders")
    a = ap.parse_args()
    if a.summarise:
        runs = [p for p in run_folders(a.workdir) if (p / "toy_check.json").exists()]
    else:
        runs = [train(a.workdir, a.kimg, a.seed, a.batch, [])]
        for eps in (float(e) for e in a.epsilons.split(",")):
            dp = ["--target-epsilon", str(eps), "--clip", str(a.clip), "--delta", str(a.delta)]
            runs.append(train(a.workdir, a.kimg, a.seed, a.batch, dp))
    print(table([row(r) for r in runs]))


if __name__ == "__main__":
    main()
