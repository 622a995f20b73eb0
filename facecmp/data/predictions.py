"""Detections of a whole test set, and the course's three-file ``.npy`` format for them.

A submission is three arrays of equal length N in one folder::

    detections_<name>.npy   N x 4 integer boxes  x_min y_min x_max y_max (inclusive pixels)
    scores_<name>.npy       N scores, higher = more confident
    file_names_<name>.npy   N image keys as in the ground truth ("0001.jpg" or "dad/0001.jpg")

``<name>`` is ``all_faces`` for task 1 and a character name for task 2.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from facecmp.atomic import save_npy
from facecmp.errors import DataError

DEFAULT_NAME = "all_faces"
_NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclass
class Predictions:
    """N detections: ``boxes`` (N, 4) ``x_min, y_min, x_max, y_max``, ``scores`` (N,), ``file_names`` (N,)."""

    boxes: np.ndarray
    scores: np.ndarray
    file_names: np.ndarray

    def __post_init__(self) -> None:
        boxes = np.asarray(self.boxes)
        if boxes.size == 0:
            boxes = boxes.reshape(0, 4)
        self.boxes = boxes
        self.scores = np.asarray(self.scores)
        names = np.asarray(self.file_names)
        self.file_names = names.astype(str) if names.size else np.zeros(0, dtype=str)
        n = len(self.boxes)
        if self.boxes.ndim != 2 or self.boxes.shape[1] != 4:
            raise ValueError(f"boxes must have shape (N, 4), got {self.boxes.shape}")
        if self.scores.shape != (n,) or self.file_names.shape != (n,):
            raise ValueError(
                f"boxes, scores and file_names disagree: shapes {self.boxes.shape}, "
                f"{self.scores.shape}, {self.file_names.shape}"
            )

    def __len__(self) -> int:
        return len(self.scores)

    @classmethod
    def empty(cls) -> "Predictions":
        return cls(np.zeros((0, 4), dtype=np.int64), np.zeros(0, dtype=np.float64), np.zeros(0, dtype=str))

    @classmethod
    def concatenate(cls, parts: Iterable["Predictions"]) -> "Predictions":
        parts = [p for p in parts if len(p)]
        if not parts:
            return cls.empty()
        return cls(
            np.concatenate([p.boxes for p in parts]),
            np.concatenate([p.scores for p in parts]),
            np.concatenate([p.file_names for p in parts]),
        )

    def for_image(self, key: str) -> "Predictions":
        """The detections of one image, in their original order."""
        keep = self.file_names == key
        return Predictions(self.boxes[keep], self.scores[keep], self.file_names[keep])


def prediction_paths(pred_dir: str | Path, name: str = DEFAULT_NAME) -> tuple[Path, Path, Path]:
    """The (detections, scores, file_names) paths of submission ``name`` in ``pred_dir``."""
    if not _NAME_PATTERN.match(name):
        raise ValueError(f"prediction name {name!r} must be letters, digits, '_', '.' or '-'")
    d = Path(pred_dir)
    return d / f"detections_{name}.npy", d / f"scores_{name}.npy", d / f"file_names_{name}.npy"


def save_predictions(out_dir: str | Path, preds: Predictions, name: str = DEFAULT_NAME) -> list[Path]:
    """Write the three course files (boxes rounded to integers), each atomically; return their paths."""
    det_path, score_path, names_path = prediction_paths(out_dir, name)
    boxes = np.asarray(preds.boxes, dtype=np.float64)
    scores = np.asarray(preds.scores, dtype=np.float64)
    if not (np.isfinite(boxes).all() and np.isfinite(scores).all()):
        raise ValueError("cannot save predictions with non-finite boxes or scores")
    if (boxes[:, 2] < boxes[:, 0]).any() or (boxes[:, 3] < boxes[:, 1]).any():
        raise ValueError("cannot save boxes with x_max < x_min or y_max < y_min")
    save_npy(det_path, np.rint(boxes).astype(np.int64).reshape(-1, 4))
    save_npy(score_path, scores)
    save_npy(names_path, np.asarray(preds.file_names, dtype=str))
    return [det_path, score_path, names_path]


def load_predictions(pred_dir: str | Path, name: str = DEFAULT_NAME) -> Predictions:
    """Read and validate the three course files; any problem is a DataError naming the file."""
    det_path, score_path, names_path = prediction_paths(pred_dir, name)
    missing = [p for p in (det_path, score_path, names_path) if not p.is_file()]
    if missing:
        raise DataError(
            f"{pred_dir}: missing prediction file(s) {', '.join(p.name for p in missing)}. "
            f"A submission '{name}' is three numpy files in one folder: {det_path.name} (N x 4 boxes "
            f"x_min y_min x_max y_max), {score_path.name} (N scores), {names_path.name} (N image names)."
        )
    boxes = _read_boxes(det_path)
    scores = _read_scores(score_path)
    file_names = _read_file_names(names_path)
    lengths = {det_path.name: len(boxes), score_path.name: len(scores), names_path.name: len(file_names)}
    if len(set(lengths.values())) != 1:
        listed = ", ".join(f"{k} has {v}" for k, v in lengths.items())
        raise DataError(
            f"{pred_dir}: the prediction files disagree in length ({listed}); they must describe the "
            "same N detections row by row. Re-export all three files together."
        )
    return Predictions(boxes, scores, file_names)


NPY_MAGIC = b"\x93NUMPY"


PICKLE_REFUSED = "facecmp never unpickles a data file (unpickling can run code)"


def _load_array(path: Path, resave: str = "np.save(path, np.asarray(values, dtype=float))") -> np.ndarray:
    """A plain (non-object) array from ``path``, never unpickled; ``resave`` says how to write it instead."""
    try:
        with open(path, "rb") as f:
            magic = f.read(len(NPY_MAGIC))
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc})") from None
    if magic != NPY_MAGIC:
        raise DataError(f"{path}: not a numpy .npy file (no .npy header). Save it with np.save.")
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise DataError(
                f"{path}: holds Python objects (a pickled object array); {PICKLE_REFUSED}. Re-save it as plain "
                f"values: {resave}"
            ) from None
        raise DataError(f"{path}: not a readable numpy .npy file ({exc}). Re-export it with np.save.") from None
    except (OSError, EOFError) as exc:
        raise DataError(f"{path}: not a readable numpy .npy file ({exc}). Re-export it with np.save.") from None


def _require_numeric(path: Path, array: np.ndarray, what: str) -> None:
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise DataError(f"{path}: {what} must be numbers, found dtype {array.dtype}.")
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        row = int(np.flatnonzero(~np.isfinite(array.reshape(len(array), -1)).all(axis=1))[0])
        raise DataError(f"{path}: row {row} is not finite (NaN or infinity); every {what[:-1]} must be a number.")


def _read_boxes(path: Path) -> np.ndarray:
    boxes = _load_array(path)
    if boxes.size == 0:
        boxes = boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise DataError(
            f"{path}: expected an N x 4 array of boxes (x_min y_min x_max y_max), found shape {boxes.shape}."
        )
    _require_numeric(path, boxes, "boxes")
    inverted = (boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])
    if inverted.any():
        row = int(np.flatnonzero(inverted)[0])
        raise DataError(
            f"{path}: row {row} box {boxes[row].tolist()} has x_max < x_min or y_max < y_min "
            f"({int(inverted.sum())} such rows); columns must be x_min y_min x_max y_max."
        )
    return boxes


def _read_scores(path: Path) -> np.ndarray:
    scores = _load_array(path)
    if scores.ndim != 1:
        raise DataError(f"{path}: expected a 1-D array of N scores, found shape {scores.shape}.")
    _require_numeric(path, scores, "scores")
    return scores


def _read_file_names(path: Path) -> np.ndarray:
    # Course scripts sometimes np.save Python strings as an object array: that needs pickle, which is refused.
    names = _load_array(path, resave="np.save(path, np.asarray(names).astype(str))")
    if names.ndim != 1:
        raise DataError(f"{path}: expected a 1-D array of N image names, found shape {names.shape}.")
    if names.dtype.kind not in "US":
        raise DataError(f"{path}: expected image name strings, found dtype {names.dtype}.")
    if names.dtype.kind == "S":
        names = np.char.decode(names, "utf-8")
    return names.astype(str)
