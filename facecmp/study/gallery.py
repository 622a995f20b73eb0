"""A picture grid of test images with each variant's hits, false alarms and misses drawn.

People want to *see* where a detector fails: green = true positive, red = false positive
(at the variant's operating threshold), blue = a face it missed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from facecmp.atomic import atomic_path
from facecmp.data.images import read_image
from facecmp.data.records import Dataset
from facecmp.evaluation.evaluator import Evaluation
from facecmp.data.predictions import Predictions

TP, FP, MISS = "#2ca02c", "#d62728", "#1f77b4"


def pick_sample_images(dataset: Dataset, n: int, seed: int = 0) -> list[str]:
    """``n`` image keys with faces, chosen reproducibly."""
    with_faces = [r.key for r in dataset.images if len(r.boxes)]
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(with_faces), size=min(n, len(with_faces)), replace=False) if with_faces else []
    return [with_faces[i] for i in sorted(chosen)]


def _draw_box(ax, box, color, style="-") -> None:
    x1, y1, x2, y2 = box
    ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=color, linewidth=1.4, linestyle=style))


@dataclass
class Panel:
    """One image of a picture grid with what a variant did on it."""

    image: np.ndarray
    truth: np.ndarray  # (K, 4) ground-truth boxes
    found: np.ndarray  # (K,) bool: matched by a detection
    boxes: np.ndarray  # (D, 4) detections drawn
    is_true_positive: np.ndarray  # (D,) bool


def plot_panel_grid(rows: Sequence[tuple[str, Mapping[str, Panel]]], path: str | Path) -> Path:
    """Rows of panels (one per variant, the same variants in every row), written atomically."""
    names = list(rows[0][1]) if rows else []
    fig = Figure(figsize=(3.2 * max(len(names), 1), 2.5 * max(len(rows), 1)), dpi=90)
    FigureCanvasAgg(fig)
    for row, (label, panels) in enumerate(rows):
        for col, name in enumerate(names):
            panel = panels[name]
            ax = fig.add_subplot(len(rows), len(names), row * len(names) + col + 1)
            ax.imshow(panel.image)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(name, fontsize=9)
            if col == 0:
                ax.set_ylabel(label, fontsize=7)
            for box, hit in zip(panel.boxes, panel.is_true_positive):
                _draw_box(ax, box, TP if hit else FP)
            for box, hit in zip(panel.truth, panel.found):
                if not hit:
                    _draw_box(ax, box, MISS, "--")
    fig.suptitle("green: found   red: false alarm   blue dashed: missed", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path


def plot_detection_grid(
    dataset: Dataset,
    results: Mapping[str, tuple[Predictions, Evaluation]],
    path: str | Path,
    keys: Sequence[str],
) -> Path:
    """Rows = images, columns = variants; every detection drawn, coloured by its evaluation."""
    records = {r.key: r for r in dataset.images}
    rows = []
    for key in keys:
        image = read_image(records[key].path)
        truth = records[key].boxes
        panels = {}
        for name, (preds, ev) in results.items():
            mine = np.flatnonzero(preds.file_names == key)
            found = ev.gt_matched.get(key, np.zeros(len(truth), bool))
            panels[name] = Panel(image, truth, found, preds.boxes[mine], ev.is_true_positive[mine])
        rows.append((key, panels))
    return plot_panel_grid(rows, path)
