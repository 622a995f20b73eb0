"""Task-2 ground truth (who is it): one file per named character, and the same from labelled data.

A course test folder holds ``task2_<character>_gt_validare.txt`` (lines ``IMAGE X_MIN Y_MIN
X_MAX Y_MAX``, the faces of that character) beside ``task1_gt_validare.txt`` (every face). A
labelled :class:`Dataset` (a training split) gives the same thing from its labels. Either way the
result is ``character -> {image -> (K, 4) boxes}`` over the named characters (never ``unknown``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facecmp.data.annotations import as_box_array, read_ground_truth
from facecmp.data.layout import TASK2_PATTERN, _task1_file, find_image_folder
from facecmp.data.images import IMAGE_SUFFIXES
from facecmp.data.records import UNKNOWN, Dataset, Problem
from facecmp.errors import DataError


@dataclass
class Task2GroundTruth:
    """Per named character, ``image -> boxes``; ``all_faces`` is task 1's file when present (every face)."""

    characters: dict[str, dict[str, np.ndarray]]
    all_faces: dict[str, np.ndarray] | None = None
    # Image names listed in the ground truth whose file is absent (when the image folder is known).
    missing: list[str] | None = None
    problems: list[Problem] | None = None

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.characters)

    def restricted_to(self, keep: set[str]) -> "Task2GroundTruth":
        """The same ground truth over the images in ``keep`` only."""
        chars = {c: {k: v for k, v in gt.items() if k in keep} for c, gt in self.characters.items()}
        faces = None if self.all_faces is None else {k: v for k, v in self.all_faces.items() if k in keep}
        return Task2GroundTruth(chars, faces, [], self.problems)


def task2_files(gt_dir: str | Path) -> dict[str, Path]:
    """``character -> task2_<character>_gt_validare.txt`` in ``gt_dir`` (sorted by character)."""
    gt_dir = Path(gt_dir)
    if not gt_dir.is_dir():
        raise DataError(f"{gt_dir}: task-2 ground-truth folder not found; expected a folder with task2_<character>_gt_validare.txt files")
    found = sorted((m.group(1), p) for p in gt_dir.iterdir() if p.is_file() and (m := TASK2_PATTERN.match(p.name)))
    if not found:
        raise DataError(
            f"{gt_dir}: no task-2 ground truth found; expected one file task2_<character>_gt_validare.txt per named "
            "character (lines `IMAGE X_MIN Y_MIN X_MAX Y_MAX`), e.g. the course's validare/ folder"
        )
    return {char: path for char, path in found if char.lower() != UNKNOWN}


def read_task2_ground_truth(gt_dir: str | Path) -> Task2GroundTruth:
    """Every ``task2_<c>_gt_validare.txt`` of ``gt_dir``, task 1's file when present, and the images missing
    from its image folder (``validare/`` in any casing) when it has one."""
    gt_dir = Path(gt_dir)
    chars: dict[str, dict[str, np.ndarray]] = {}
    problems: list[Problem] = []
    for char, path in task2_files(gt_dir).items():
        gt, found = read_ground_truth(path)
        chars[char] = gt
        problems.extend(found)
    task1 = _task1_file(gt_dir)
    all_faces = None
    if task1 is not None:
        all_faces, found = read_ground_truth(task1)
        problems.extend(found)
    missing = None
    image_dir = find_image_folder(gt_dir)
    if image_dir is not None:
        present = {p.name.lower() for p in image_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
        listed = set(all_faces or {}).union(*(set(g) for g in chars.values()))
        missing = sorted(k for k in listed if k.lower() not in present)
    return Task2GroundTruth(chars, all_faces, missing, problems)


def task2_from_dataset(ds: Dataset, characters: tuple[str, ...] | None = None) -> Task2GroundTruth:
    """Task-2 ground truth from a labelled dataset: each named character's faces on every image of ``ds``.

    ``characters`` defaults to the labels found (``unknown`` and '' excluded), sorted. Every image
    is listed for every character (with no boxes where it does not appear), so detections there
    count as false positives exactly as they do against a course file that omits the image.
    """
    if characters is None:
        characters = tuple(sorted({lab for r in ds.images for lab in r.labels} - {UNKNOWN, ""}))
    if not characters:
        raise DataError(f"{ds.name}: no face carries a character name, so there is no task-2 ground truth")
    chars = {
        c: {r.key: as_box_array([b for b, lab in zip(r.boxes.tolist(), r.labels) if lab == c]) for r in ds.images}
        for c in characters
    }
    return Task2GroundTruth(chars, ds.ground_truth(), list(ds.missing), list(ds.problems))


TASK2_SUBFOLDER = "task2"


def task2_prediction_dir(pred_dir: str | Path) -> Path:
    """The folder holding ``detections_<c>.npy`` files: ``pred_dir/task2`` (as ``detect --characters``
    writes it) when that exists, else ``pred_dir`` itself."""
    pred_dir = Path(pred_dir)
    sub = pred_dir / TASK2_SUBFOLDER
    return sub if sub.is_dir() else pred_dir


def predicted_characters(pred_dir: str | Path) -> tuple[str, ...]:
    """Characters with a ``detections_<c>.npy`` file in ``pred_dir`` (task 1's ``all_faces`` excluded), sorted."""
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise DataError(f"{pred_dir}: prediction folder not found; expected the folder `facecmp detect --characters --out` wrote")
    names = sorted(p.name[len("detections_"):-len(".npy")] for p in pred_dir.glob("detections_*.npy"))
    return tuple(n for n in names if n != "all_faces")
