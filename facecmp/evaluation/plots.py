"""Precision-recall curves of several detector variants on one figure."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from facecmp.atomic import atomic_path
from facecmp.evaluation.evaluator import Evaluation


def plot_pr_curves(curves: Mapping[str, Evaluation], path: str | Path, title: str = "Precision–recall") -> Path:
    """Draw each evaluation's PR curve (legend: name and both APs) and write the image atomically.

    The format follows the suffix of ``path`` (PNG when it has none). No pyplot: the figure is
    drawn on its own Agg canvas, so this works headless and leaves global matplotlib state alone.
    """
    path = Path(path)
    fig = Figure(figsize=(6.4, 5.6), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for name, ev in curves.items():
        label = f"{name}: AP {ev.ap_cava:.3f} course, {ev.ap_voc:.3f} VOC"
        ax.plot(ev.recall, ev.precision, linewidth=1.5, label=label)
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(0.0, 1.02)
    ax.set_xlabel("Recall")
    ax.set_ylabel("Precision")
    ax.set_title(title)
    ax.grid(True, alpha=0.4)
    if curves:
        ax.legend(loc="lower left", fontsize="small")
    fig.tight_layout()
    fmt = path.suffix.lstrip(".").lower() or "png"
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=fmt)
    return path
