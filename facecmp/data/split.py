"""A deterministic train / held-out split of a dataset."""

from __future__ import annotations

import numpy as np

from facecmp.errors import DataError
from facecmp.data.records import Dataset


def split_dataset(ds: Dataset, per_folder: int = 50, seed: int = 0) -> tuple[Dataset, Dataset]:
    """``(train_part, held_out)``: ``per_folder`` images of each training folder held out.

    The choice depends only on the image keys and ``seed`` (folders and keys are sorted before a
    ``numpy.random.default_rng(seed)`` picks), never on filesystem listing order. A test-layout
    dataset has a single folder ``''``, so ``per_folder`` is then the total held out.
    Both parts keep the dataset's order, problems, missing list and characters.
    """
    if per_folder < 0:
        raise DataError(f"cannot hold out a negative number of images per folder ({per_folder})")
    by_folder: dict[str, list[str]] = {}
    for record in ds.images:
        by_folder.setdefault(record.folder, []).append(record.key)
    rng = np.random.default_rng(seed)
    held: set[str] = set()
    for folder in sorted(by_folder):
        keys = sorted(by_folder[folder])
        if per_folder > len(keys):
            label = f"folder {folder!r}" if folder else "the dataset"
            raise DataError(
                f"{ds.name}: cannot hold out {per_folder} images from {label}, which has only {len(keys)}; "
                "choose a smaller number of held-out images per folder"
            )
        chosen = rng.choice(len(keys), size=per_folder, replace=False)
        held.update(keys[i] for i in chosen)
    train_keys = [r.key for r in ds.images if r.key not in held]
    return ds.subset(train_keys, name=f"{ds.name}[train]"), ds.subset(held, name=f"{ds.name}[held-out]")
