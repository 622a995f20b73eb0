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
    lines = {f"{name}: AP {ev.ap_cava:.3f} course, {ev.ap_voc:.3f} VOC": (ev.recall, ev.precision) for name, ev in curves.items()}
    return plot_curves(lines, path, title)


def plot_curves(lines: Mapping[str, tuple], path: str | Path, title: str = "Precision–recall") -> Path:
    """``label -> (recall, precision)`` as lines on one precision-recall figure (see :func:`plot_pr_curves`)."""
    path = Path(path)
    fig = Figure(figsize=(6.4, 5.6), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for label, (recall, precision) in lines.items():
        ax.plot(recall, precision, linewidth=1.5, label=label)
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(0.0, 1.02)
    ax.set_xlabel("Recall")
    ax.set_ylabel("Precision")
    ax.set_title(title)
    ax.grid(True, alpha=0.4)
    if lines:
        ax.legend(loc="lower left", fontsize="small")
    fig.tight_layout()
    return save_figure(fig, path)


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` atomically in the format of ``path``'s suffix (PNG when it has none)."""
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower() or "png"
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=fmt)
    return path


def plot_wider_curves(evaluation, path: str | Path, title: str = "WIDER FACE precision–recall") -> Path:
    """The three PR curves (easy, medium, hard) of a :class:`facecmp.evaluation.wider.WiderEvaluation`."""
    lines = {f"{d}: AP {c.ap:.3f} ({c.n_faces} faces)": (c.recall, c.precision) for d, c in evaluation.curves.items()}
    return plot_curves(lines, path, title)
