"""Mined samples on disk: one ``.npz`` of plain arrays per sample set (read without pickle), written atomically."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from facecmp import atomic
from facecmp.errors import DataError
from facecmp.training.samples.sample_set import SampleSet


def save_samples(path: Path, samples: SampleSet) -> None:
    with atomic.atomic_path(path) as tmp:
        with open(tmp, "wb") as f:  # a file object keeps numpy from appending ".npz" to the temp name
            np.savez(f, images=samples.images, labels=samples.labels, offsets=samples.offsets)


def load_samples(path: Path) -> SampleSet:
    try:
        with np.load(path, allow_pickle=False) as z:
            return SampleSet(z["images"], z["labels"], z["offsets"], cache_path=path, from_cache=True)
    except Exception as exc:
        raise DataError(f"{path}: unreadable sample cache ({exc}); delete it and run again to re-mine") from None


def cached_samples(path: Path, mine: Callable[[], SampleSet]) -> SampleSet:
    """The samples saved at ``path`` when already mined, else ``mine()``, saved there."""
    if path.is_file():
        return load_samples(path)
    samples = mine()
    save_samples(path, samples)
    samples.cache_path = path
    return samples
