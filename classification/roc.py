"""ROC curve figures (PNG) for evaluation reports.

Drawn with matplotlib's object API on an Agg canvas (no pyplot, no global backend or figure state, so
it is safe in any process, with or without a display) and written atomically
(:func:`stylegan2_ada.atomic.atomic_write`). Axes: false-positive rate (1 - specificity) against
true-positive rate (sensitivity), both [0, 1], square, with the chance diagonal; each curve's legend
entry carries its AUC and confidence interval; an operating point (the chosen threshold) is marked.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from stylegan2_ada.atomic import atomic_write

__all__ = ["RocCurve", "plot_roc", "render_roc_png"]

FIGURE_INCHES = 6.0
DPI = 120


@dataclass(frozen=True)
class RocCurve:
    """One curve: ``fpr``/``tpr`` float [M] (from :func:`classification.stats.roc_points`), its legend
    ``label``, an optional ``operating_point`` ``(fpr, tpr)`` with its legend text, and a line style."""

    label: str
    fpr: np.ndarray
    tpr: np.ndarray
    operating_point: tuple[float, float] | None = None
    operating_label: str | None = None
    linestyle: str = "-"


def render_roc_png(curves: Sequence[RocCurve], *, title: str) -> bytes:
    """The figure as PNG bytes (``FIGURE_INCHES`` square at ``DPI``)."""
    if not curves:
        raise ValueError("no ROC curves to plot")
    fig = Figure(figsize=(FIGURE_INCHES, FIGURE_INCHES), dpi=DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot([0, 1], [0, 1], color="0.6", linestyle=":", linewidth=1, label="chance")
    for i, curve in enumerate(curves):
        color = f"C{i}"
        # drawstyle steps-post would mis-draw tied scores; the points of roc_curve are joined directly.
        ax.plot(
            curve.fpr, curve.tpr, color=color, linestyle=curve.linestyle, linewidth=1.8, label=curve.label
        )
        if curve.operating_point is not None:
            x, y = curve.operating_point
            ax.plot(
                [x],
                [y],
                marker="o",
                markersize=7,
                color=color,
                markeredgecolor="black",
                linestyle="none",
                label=curve.operating_label,
            )
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.005)
    ax.set_aspect("equal")
    ax.set_xlabel("False-positive rate (1 - specificity)")
    ax.set_ylabel("True-positive rate (sensitivity)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, color="0.9")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def plot_roc(curves: Sequence[RocCurve], path: str | os.PathLike[str], *, title: str) -> None:
    """Write the ROC figure of ``curves`` to ``path`` (PNG, atomically; the folder is created)."""
    data = render_roc_png(curves, title=title)
    atomic_write(path, lambda f: f.write(data))
