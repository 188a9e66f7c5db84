"""Time the evaluation statistics: the stratified bootstrap AUC interval (2000 resamples by default)
and the DeLong test, on synthetic scores. Prints figures only; no thresholds.

Usage: python bench/bench_classification_stats.py [--n 10000] [--resamples 2000] [--classes 2] [--repeats 5]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's packages

from classification import stats  # noqa: E402


def _best_seconds(fn, repeats: int) -> tuple[float, float]:
    """(best, median) wall time of ``fn`` over ``repeats`` calls, in seconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times), float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10000, help="test cases")
    parser.add_argument("--resamples", type=int, default=2000)
    parser.add_argument("--classes", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    labels = rng.integers(0, args.classes, args.n)
    if args.classes == 2:
        scores = rng.normal(size=args.n) + labels  # continuous: every score distinct
        cases = {
            "bootstrap AUC CI": lambda: stats.bootstrap_auc_ci(labels, scores, n_resamples=args.resamples),
            "bootstrap AUC CI, scores rounded to 0.01": lambda: stats.bootstrap_auc_ci(
                labels, np.round(scores, 2), n_resamples=args.resamples
            ),
            "DeLong test": lambda: stats.delong_test(labels, scores, scores + rng.normal(size=args.n)),
        }
    else:
        logits = rng.normal(size=(args.n, args.classes))
        logits[np.arange(args.n), labels] += 1
        cases = {
            f"one-vs-rest bootstrap, {args.classes} classes": lambda: stats.one_vs_rest_auc_ci(
                labels, logits, n_resamples=args.resamples
            )
        }
    print(f"n = {args.n}, resamples = {args.resamples}, best / median of {args.repeats}")
    for name, fn in cases.items():
        best, median = _best_seconds(fn, args.repeats)
        print(f"  {name}: {best * 1000:.0f} ms / {median * 1000:.0f} ms")


if __name__ == "__main__":
    main()
