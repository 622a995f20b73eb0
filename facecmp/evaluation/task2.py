"""Task-2 evaluation (who is it): AP per named character, mAP, and a confusion matrix.

Each character is scored on its own, exactly as task 1 (:func:`facecmp.evaluation.evaluator.evaluate`)
with that character's predictions (``detections_<c>.npy`` ...) against its ground truth
(``task2_<c>_gt_validare.txt``); a detection on an image without that character is a false
positive. The mAP is the plain mean of the per-character APs, in both conventions.

The confusion matrix is over the annotated faces: for each face (task 1's boxes when known, so
``unknown`` faces get a row too), every character's predictions that match it (IoU >= the
threshold) are looked at, and the face counts as *recognised as* the character whose best score
on it is highest, if that score is at least ``min_score``; otherwise as ``none`` (not found or
not confidently named).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np

from facecmp.atomic import atomic_path
from facecmp.data.predictions import Predictions
from facecmp.data.records import UNKNOWN
from facecmp.data.task2 import Task2GroundTruth
from facecmp.errors import DataError
from facecmp.evaluation.evaluator import Evaluation, _iou_broadcast, _offset, evaluate

NONE = "none"
DEFAULT_MIN_SCORE = 0.5


@dataclass
class Task2Evaluation:
    per_character: dict[str, Evaluation]
    # rows: true characters (+ unknown when task 1's boxes were known); columns: characters + "none"
    confusion: np.ndarray
    rows: tuple[str, ...]
    columns: tuple[str, ...]
    min_score: float

    @property
    def map_cava(self) -> float:
        return float(np.mean([e.ap_cava for e in self.per_character.values()]))

    @property
    def map_voc(self) -> float:
        return float(np.mean([e.ap_voc for e in self.per_character.values()]))

    def accuracy(self) -> float:
        """Share of the named characters' faces recognised as themselves."""
        named = [i for i, r in enumerate(self.rows) if r in self.columns]
        total = self.confusion[named].sum()
        hits = sum(self.confusion[i, self.columns.index(self.rows[i])] for i in named)
        return float(hits / total) if total else 0.0

    def summary(self) -> dict:
        return {
            "map_cava": self.map_cava,
            "map_voc": self.map_voc,
            "characters": {c: e.summary() for c, e in self.per_character.items()},
            "confusion": {"rows": list(self.rows), "columns": list(self.columns), "counts": self.confusion.tolist(),
                          "min_score": self.min_score},
            "recognition_accuracy": self.accuracy(),
        }


def check_characters(predicted: tuple[str, ...], ground_truth: Task2GroundTruth, where: str) -> None:
    """Every character with ground truth must have predictions: else an error naming both lists."""
    unknown = [c for c in ground_truth.names if c not in predicted]
    if unknown:
        raise DataError(
            f"{where}: no predictions for character(s) {', '.join(unknown)} of the task-2 ground truth "
            f"(ground truth: {', '.join(ground_truth.names)}; predicted/known: {', '.join(predicted) or 'none'}). "
            "Detect with a recognizer trained on these characters, or evaluate a ground-truth folder for the "
            "characters it knows."
        )


def evaluate_task2(
    predictions: Mapping[str, Predictions],
    ground_truth: Task2GroundTruth,
    *,
    iou_threshold: float = 0.3,
    min_score: float = DEFAULT_MIN_SCORE,
    convention: str = "inclusive",
) -> Task2Evaluation:
    """Score ``predictions`` (``character -> Predictions``) against every character of ``ground_truth``."""
    check_characters(tuple(predictions), ground_truth, "predictions")
    per_character = {}
    for char in ground_truth.names:
        gt = ground_truth.characters[char]
        if not any(len(b) for b in gt.values()):
            raise DataError(f"task-2 ground truth for {char!r} lists no face, so its AP is undefined; remove that file")
        per_character[char] = evaluate(predictions[char], gt, iou_threshold=iou_threshold, convention=convention)
    rows, counts = _confusion(predictions, ground_truth, iou_threshold, min_score, _offset(convention))
    columns = (*ground_truth.names, NONE)
    return Task2Evaluation(per_character, counts, rows, columns, min_score)


def _true_labels(ground_truth: Task2GroundTruth) -> dict[str, tuple[np.ndarray, list[str]]]:
    """Per image: every face box and its character (``unknown`` for task-1 faces in no task-2 file)."""
    faces: dict[str, tuple[list, list[str]]] = {}
    for char, gt in ground_truth.characters.items():
        for key, boxes in gt.items():
            for box in np.asarray(boxes).reshape(-1, 4).tolist():
                entry = faces.setdefault(key, ([], []))
                entry[0].append(box)
                entry[1].append(char)
    if ground_truth.all_faces is not None:
        for key, boxes in ground_truth.all_faces.items():
            entry = faces.setdefault(key, ([], []))
            named = set(map(tuple, entry[0]))
            for box in np.asarray(boxes).reshape(-1, 4).tolist():
                if tuple(box) not in named:
                    entry[0].append(box)
                    entry[1].append(UNKNOWN)
    return {k: (np.asarray(b, dtype=np.float64).reshape(-1, 4), labels) for k, (b, labels) in faces.items()}


def _confusion(predictions, ground_truth: Task2GroundTruth, iou_threshold: float, min_score: float, offset: float):
    chars = ground_truth.names
    faces = _true_labels(ground_truth)
    rows = (*chars, UNKNOWN) if ground_truth.all_faces is not None else chars
    counts = np.zeros((len(rows), len(chars) + 1), dtype=np.int64)
    by_image = {c: _group(predictions[c]) for c in chars}
    for key, (boxes, labels) in faces.items():
        best = np.full((len(boxes), len(chars)), -np.inf)
        for j, char in enumerate(chars):
            pred_boxes, pred_scores = by_image[char].get(key, (None, None))
            if pred_boxes is None:
                continue
            iou = _iou_broadcast(boxes[:, None, :], pred_boxes[None, :, :], offset)
            scores = np.where(iou >= iou_threshold, pred_scores[None, :], -np.inf)
            best[:, j] = scores.max(axis=1)
        for i, label in enumerate(labels):
            j = int(np.argmax(best[i]))
            column = j if best[i, j] >= min_score else len(chars)
            counts[rows.index(label), column] += 1
    return rows, counts


def _group(preds: Predictions) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    out = {}
    names = np.asarray(preds.file_names)
    for key in np.unique(names):
        rows = names == key
        out[str(key)] = (np.asarray(preds.boxes, dtype=np.float64)[rows], np.asarray(preds.scores, dtype=np.float64)[rows])
    return out


def plot_confusion(result: Task2Evaluation, path: str | Path, title: str = "Recognised as") -> Path:
    """The confusion matrix as an image (counts in the cells, rows = true character)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    m = result.confusion
    fig = Figure(figsize=(1.2 + 0.9 * len(result.columns), 1.0 + 0.8 * len(result.rows)), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    share = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            ax.text(j, i, str(m[i, j]), ha="center", va="center", color="white" if share[i, j] > 0.6 else "black")
    ax.set_xticks(range(len(result.columns)), result.columns, rotation=30)
    ax.set_yticks(range(len(result.rows)), result.rows)
    ax.set_xlabel(f"recognised as (best matching score >= {result.min_score:g})")
    ax.set_ylabel("true character")
    ax.set_title(f"{title} (accuracy {result.accuracy():.3f})")
    fig.tight_layout()
    fmt = path.suffix.lstrip(".").lower() or "png"
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=fmt)
    return path
