"""Metric and loss curves of training runs against kimg, several runs on one picture, to PNG.

    python -m stylegan2_ada.metrics.curves RUN_DIR [RUN_DIR ...] --out curves.png
        [--metrics 'fid50k_full,pr50k3_full_*'] [--stats 'Loss/G/loss,Loss/D/loss'] [--labels A,B] [--smooth N]

Reads from each run folder:

* ``metric-<name>.jsonl`` (written at each snapshot, or by ``calc_metrics.py``): every key of ``results``
  is a curve; its kimg is the line's ``kimg`` or, failing that, the one in the snapshot's name
  (``network-snapshot-000040.safetensors`` -> 40; ``000040.500`` -> 40.5).
* ``stats.jsonl`` (one line per tick): the ``mean`` of each statistic named by ``--stats`` against the
  line's ``Progress/kimg``.

``--metrics`` and ``--stats`` take comma-separated names or shell patterns (``'Loss/*'``). By default:
every metric key except the per-class ones (``*_class<k>``) and the G and D losses. One panel per key,
one colour per run (the same in every panel), a legend with the run labels (default: the folder names).
Missing or malformed lines are skipped and counted in a note on stderr; a run with nothing to plot is an
error.
"""

from __future__ import annotations

import fnmatch
import io
import json
import math
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path

import click

from stylegan2_ada.atomic import atomic_write

__all__ = ["CurvesError", "DEFAULT_STATS", "plot_curves", "read_metric_curves", "read_stats_curves"]

DEFAULT_STATS = ("Loss/G/loss", "Loss/D/loss")
_SNAPSHOT_KIMG = re.compile(r"snapshot-(\d+)(?:\.(\d{3}))?\.")
_CLASS_KEY = re.compile(r"_class\d+$")

Curve = list[tuple[float, float]]  # (kimg, value), sorted by kimg


class CurvesError(ValueError):
    """Nothing (or not what was asked for) can be plotted; the message says which run and why."""


def _json_lines(path: Path) -> tuple[list[dict], int]:
    records, bad = [], 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            bad += 1
            continue
        if isinstance(record, dict):
            records.append(record)
        else:
            bad += 1
    return records, bad


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def record_kimg(record: dict) -> float | None:
    if _finite(record.get("kimg")):
        return float(record["kimg"])
    match = _SNAPSHOT_KIMG.search(str(record.get("snapshot_pkl") or ""))
    if match:
        return int(match.group(1)) + int(match.group(2) or 0) / 1000
    return None


def read_metric_curves(run_dir: str | os.PathLike[str]) -> tuple[dict[str, Curve], int]:
    """``({result key: [(kimg, value), ...]}, lines skipped)`` from the run's ``metric-*.jsonl`` files."""
    curves: dict[str, Curve] = {}
    skipped = 0
    for path in sorted(Path(run_dir).glob("metric-*.jsonl")):
        records, bad = _json_lines(path)
        skipped += bad
        for record in records:
            kimg, results = record_kimg(record), record.get("results")
            if kimg is None or not isinstance(results, dict):
                skipped += 1
                continue
            for key, value in results.items():
                if _finite(value):
                    curves.setdefault(key, []).append((kimg, float(value)))
    return {k: sorted(v) for k, v in curves.items()}, skipped


def read_stats_curves(run_dir: str | os.PathLike[str]) -> tuple[dict[str, Curve], int]:
    """``({statistic: [(kimg, mean), ...]}, lines skipped)`` from the run's ``stats.jsonl``."""
    path = Path(run_dir) / "stats.jsonl"
    if not path.is_file():
        return {}, 0
    records, skipped = _json_lines(path)
    curves: dict[str, Curve] = {}
    for record in records:
        progress = record.get("Progress/kimg")
        kimg = progress.get("mean") if isinstance(progress, dict) else None
        if not _finite(kimg):
            skipped += 1
            continue
        for name, stat in record.items():
            if isinstance(stat, dict) and _finite(stat.get("mean")):
                curves.setdefault(name, []).append((float(kimg), float(stat["mean"])))
    return {k: sorted(v) for k, v in curves.items()}, skipped


def _select(available: Sequence[str], patterns: Sequence[str] | None, default: Sequence[str]) -> list[str]:
    wanted = default if patterns is None else patterns
    return [k for k in sorted(available) if any(fnmatch.fnmatchcase(k, p) for p in wanted)]


def _smooth(curve: Curve, window: int) -> Curve:
    if window <= 1:
        return curve
    values = [v for _, v in curve]
    out = []
    for i, (kimg, _) in enumerate(curve):
        part = values[max(0, i - window + 1) : i + 1]
        out.append((kimg, sum(part) / len(part)))
    return out


def plot_curves(
    run_dirs: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    metrics: Sequence[str] | None = None,
    stats: Sequence[str] | None = None,
    labels: Sequence[str] | None = None,
    smooth: int = 1,
    title: str | None = None,
) -> Path:
    """Plot the runs' curves (see the module docstring) into the PNG ``out``, written atomically.

    ``metrics`` / ``stats``: names or shell patterns (``None``: the defaults, ``[]``: none).
    ``smooth``: trailing moving average over that many points, for the statistics only.
    Returns the path written. Raises :class:`CurvesError`.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not run_dirs:
        raise CurvesError("no run folders given")
    if labels is not None and len(labels) != len(run_dirs):
        raise CurvesError(f"{len(labels)} labels for {len(run_dirs)} runs")
    runs = []
    for i, run in enumerate(run_dirs):
        if not Path(run).is_dir():
            raise CurvesError(f"{run}: not a folder")
        metric_curves, bad_m = read_metric_curves(run)
        stat_curves, bad_s = read_stats_curves(run)
        chosen = {
            k: metric_curves[k]
            for k in _select(list(metric_curves), metrics, ["*"])
            if not (metrics is None and _CLASS_KEY.search(k))
        }
        chosen.update(
            {k: _smooth(stat_curves[k], smooth) for k in _select(list(stat_curves), stats, DEFAULT_STATS)}
        )
        if not chosen:
            raise CurvesError(
                f"{run}: nothing to plot (metric keys: {', '.join(sorted(metric_curves)) or 'none'}; "
                f"statistics: {len(stat_curves)} in stats.jsonl)"
            )
        if bad_m or bad_s:
            print(f"Note: {run}: skipped {bad_m + bad_s} malformed or incomplete lines", file=sys.stderr)
        runs.append((labels[i] if labels is not None else Path(run).resolve().name, chosen))
    keys = list(dict.fromkeys(k for _, chosen in runs for k in chosen))
    cols = min(3, len(keys))
    rows = math.ceil(len(keys) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.6 * rows), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, key in zip(axes.flat, keys):
        for r, (label, chosen) in enumerate(runs):
            if key in chosen:
                xs, ys = zip(*chosen[key])
                marker = "o" if len(xs) < 30 else None
                ax.plot(xs, ys, marker=marker, markersize=3, color=colours[r % len(colours)], label=label)
        ax.set_title(key, fontsize=10)
        ax.set_xlabel("kimg")
        ax.grid(True, alpha=0.3)
    for ax in list(axes.flat)[len(keys) :]:
        ax.axis("off")
    handles = [
        plt.Line2D([], [], color=colours[r % len(colours)], label=label) for r, (label, _) in enumerate(runs)
    ]
    fig.legend(handles=handles, loc="upper center", ncol=min(len(runs), 4), frameon=False, title=title)
    top = (0.9 if title else 0.93) if rows == 1 else (0.94 if title else 0.96)
    fig.tight_layout(rect=(0, 0, 1, top))
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    out = Path(out)
    atomic_write(out, lambda f: f.write(buffer.getvalue()))
    return out


def _names(text: str | None) -> list[str] | None:
    if text is None:
        return None
    return [n.strip() for n in text.split(",") if n.strip()]


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("run_dirs", nargs=-1, required=True, metavar="RUN_DIR [RUN_DIR ...]")
@click.option("--out", required=True, metavar="PNG", help="Output image.")
@click.option(
    "--metrics", default=None, metavar="LIST", help="Metric keys or patterns [default: all but per-class]."
)
@click.option(
    "--stats",
    default=None,
    metavar="LIST",
    help=f"stats.jsonl names or patterns [default: {','.join(DEFAULT_STATS)}].",
)
@click.option(
    "--labels", default=None, metavar="LIST", help="One legend label per run [default: folder names]."
)
@click.option(
    "--smooth",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Moving average of the statistics.",
)
@click.option("--title", default=None, help="Figure title.")
def main(
    run_dirs: tuple[str, ...],
    out: str,
    metrics: str | None,
    stats: str | None,
    labels: str | None,
    smooth: int,
    title: str | None,
) -> None:
    """Plot metric and loss curves of RUN_DIR(s) against kimg into one PNG."""
    try:
        path = plot_curves(
            run_dirs,
            out,
            metrics=_names(metrics),
            stats=_names(stats),
            labels=_names(labels),
            smooth=smooth,
            title=title,
        )
    except CurvesError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"Wrote {path}")


if __name__ == "__main__":
    main()
