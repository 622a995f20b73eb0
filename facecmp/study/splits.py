"""The study's images: train / dev / test splits of an archive, a held-out test split never trained on."""

from __future__ import annotations

import dataclasses
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from facecmp.data import load_archive, split_dataset
from facecmp.data.archive import load_test_set
from facecmp.data.records import Dataset
from facecmp.errors import DataError

DEFAULT_TEST_PER_FOLDER = 50
# Dev images per training folder when a run names no count: 100, but at most a quarter of the smallest
# folder's frames left after the held-out test images (a small dataset keeps most frames for training).
# Why 100: the fast recipe's thresholds chosen on 25 frames per folder cost it AP that 100 win back
# (docs/price.md, session 18).
DEFAULT_DEV_PER_FOLDER = 100
DEV_SHARE_LIMIT = 4


@dataclass
class Splits:
    train: Dataset | None
    dev: Dataset | None
    test: Dataset | None  # None only from carve_splits without a holdout


def parse_split(spec: str) -> int | None:
    """``split`` -> default count, ``split:N`` -> N, anything else -> None (a path)."""
    if spec == "split":
        return DEFAULT_TEST_PER_FOLDER
    if spec.startswith("split:"):
        try:
            n = int(spec.split(":", 1)[1])
        except ValueError:
            n = 0
        if n < 1:
            raise DataError(f"--test {spec!r}: expected split:N with N a positive number of images per training folder")
        return n
    return None


def default_dev_per_folder(train: Dataset) -> int:
    """The dev count a run that names none gets: :data:`DEFAULT_DEV_PER_FOLDER`, or a quarter of the
    smallest folder of ``train`` (rounded down) when that is fewer."""
    per_folder = Counter(record.folder for record in train.images)
    return min(DEFAULT_DEV_PER_FOLDER, min(per_folder.values(), default=0) // DEV_SHARE_LIMIT)


def carve_splits(train_all: Dataset, *, holdout_per_folder: int, dev_per_folder: int | None, seed: int) -> Splits:
    """The study's recipe for one training set: first ``holdout_per_folder`` test images per folder
    (seed ``seed``), then ``dev_per_folder`` dev images per folder from the rest (seed ``seed + 1``;
    None: :func:`default_dev_per_folder` of the rest); what remains trains. Either count may be 0
    (no such split: ``None``)."""
    train, test = split_dataset(train_all, per_folder=holdout_per_folder, seed=seed) if holdout_per_folder > 0 else (train_all, None)
    if dev_per_folder is None:
        dev_per_folder = default_dev_per_folder(train)
    dev = None
    if dev_per_folder > 0:
        train, dev = split_dataset(train, per_folder=dev_per_folder, seed=seed + 1)
    return Splits(train, dev, test)


_REPORTED: set[str] = set()


def report_data_warnings(*datasets: Dataset | None) -> None:
    """Print each warning of the data read (boxes clipped or dropped, counted by kind) once per process, so a
    study says what the policy changed as ``check`` and ``convert`` do."""
    for ds in datasets:
        for problem in (ds.problems if ds is not None else []):
            if problem.severity == "warning" and str(problem) not in _REPORTED:
                _REPORTED.add(str(problem))
                print(f"warning: {problem}", file=sys.stderr)


def choose_splits(
    root: str | Path, test: str | None = None, *, seed: int = 0, dev_per_folder: int | None = None,
    allow_missing: bool = False, fmt: str | None = None,
) -> Splits:
    """Train / dev / test images for a study. A test split carved from the training images is never trained on.

    ``root`` is a course archive or any labelling format (:mod:`facecmp.data.formats`), found or named by ``fmt``.
    """
    archive = load_archive(root, allow_missing=allow_missing, fmt=fmt)
    report_data_warnings(archive.train, archive.test)
    if test is None and archive.test is None:
        test = f"split:{DEFAULT_TEST_PER_FOLDER}"
    per_folder = parse_split(test) if test is not None else None
    if per_folder is not None and archive.train is None:
        raise DataError(f"{root}: --test {test} needs training images (antrenare/) to split")
    if per_folder is None:
        test_ds = archive.test if test is None else load_test_set(Path(test), allow_missing=allow_missing)
    if archive.train is None:
        return Splits(None, None, test_ds)
    splits = carve_splits(archive.train, holdout_per_folder=per_folder or 0, dev_per_folder=dev_per_folder, seed=seed)
    return splits if per_folder is not None else dataclasses.replace(splits, test=test_ds)
