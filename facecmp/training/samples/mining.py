"""Mining a dataset's PNet samples: every frame's crops, balanced, cached by what they depend on.

Each frame (an image, or an augmented copy of one with ``augment``) is mined with its own
generator ``default_rng([seed, *frame key])``; the per-image crops are joined and kept roughly in
the ratio neg:pos:part = 3:1:1 (the larger classes subsampled with ``default_rng([seed, n_images])``).
A cache file is named by :func:`mining_fingerprint`: the data, the settings, the seed, the
augmentation, the code and the library versions.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np

from facecmp.data.fingerprint import code_fingerprint, data_fingerprint, library_versions
from facecmp.data.records import Dataset
from facecmp.training.augment import AugmentSettings
from facecmp.training.samples.batches import mine_frames
from facecmp.training.samples.cache import cached_samples
from facecmp.training.samples.crops import MiningSettings, extract_crops, face_regions, pick, select_crops
from facecmp.training.samples.sample_set import NEGATIVE, PART, POSITIVE, SampleSet

# Bump when the mining code changes what it produces: old caches are then ignored.
MINING_VERSION = 2
# Frames per batch handed to a mining worker (no effect on the samples).
FRAMES_PER_BATCH = 16


def balance(labels: np.ndarray, ratio: tuple[int, int, int], rng: np.random.Generator) -> np.ndarray:
    """Indices keeping at most ``ratio`` neg:pos:part, relative to the rarest of the three classes."""
    classes = (NEGATIVE, POSITIVE, PART)
    counts = [int((labels == c).sum()) for c in classes]
    unit = min((n / r for n, r in zip(counts, ratio) if r > 0 and n > 0), default=0)
    keep = [pick(labels == c, max(int(round(unit * r)), 0), rng) for c, r in zip(classes, ratio)]
    return np.sort(np.concatenate(keep)).astype(np.int64)


def mine_image_samples(image: np.ndarray, boxes: np.ndarray, settings: MiningSettings, rng: np.random.Generator):
    height, width = image.shape[:2]
    faces = face_regions(boxes)
    crops, labels, offsets = select_crops(faces, width, height, settings, rng)
    return extract_crops(image, crops, settings.crop_size), labels, offsets


def mining_fingerprint(dataset: Dataset, settings: MiningSettings, seed: int, augment: AugmentSettings | None = None) -> str:
    spec = {"version": MINING_VERSION, "settings": asdict(settings), "seed": seed, "code": code_fingerprint(),
            "libraries": library_versions()}
    if augment is not None:  # absent when off, so the keys of unaugmented caches stay what they were
        spec["augment"] = asdict(augment)
    return hashlib.sha256((data_fingerprint(dataset) + json.dumps(spec, sort_keys=True)).encode()).hexdigest()


def mine_samples(
    dataset: Dataset, settings: MiningSettings = MiningSettings(), seed: int = 0, progress: bool = True,
    augment: AugmentSettings | None = None, workers: int = 0,
) -> SampleSet:
    """Mine every image of ``dataset`` (no cache), and its augmented copies with ``augment``.
    Each frame gets its own seeded generator; ``workers`` > 0 mines in that many worker processes
    (:mod:`facecmp.training.samples.batches`: the same samples)."""

    images, labels, offsets = mine_frames(dataset.images, augment, seed, frame_miner(settings, seed), batch=FRAMES_PER_BATCH, workers=workers,
                                          desc=f"mining {settings.crop_size}px samples", progress=progress)
    return balanced_sample_set(images, labels, offsets, settings, np.random.default_rng([seed, len(dataset.images)]))


def frame_miner(settings: MiningSettings, seed: int):
    """A batch of frames -> each frame's samples, every frame with its own seeded generator."""

    def mine(frames):
        return [mine_image_samples(f.image, f.boxes, settings, np.random.default_rng([seed, *f.key])) for f in frames]

    return mine


def balanced_sample_set(images: list, labels: list, offsets: list, settings: MiningSettings, rng: np.random.Generator) -> SampleSet:
    """Join per-image crops, labels and offsets, subsampled to ``settings.ratio`` (neg:pos:part)."""
    size = settings.crop_size
    all_labels = np.concatenate(labels) if labels else np.zeros(0, np.int8)
    keep = balance(all_labels, settings.ratio, rng)
    return SampleSet(
        images=(np.concatenate(images) if images else np.zeros((0, 3, size, size), np.uint8))[keep],
        labels=all_labels[keep],
        offsets=(np.concatenate(offsets) if offsets else np.zeros((0, 4), np.float32))[keep],
    )


def mine_pnet_samples(
    dataset: Dataset,
    settings: MiningSettings = MiningSettings(),
    seed: int = 0,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    augment: AugmentSettings | None = None,
    workers: int = 0,
) -> SampleSet:
    """Samples for ``settings.crop_size`` (12 for PNet), read from ``cache_dir`` when already mined."""
    if cache_dir is None:
        return mine_samples(dataset, settings, seed, progress, augment, workers)
    path = Path(cache_dir) / f"samples{settings.crop_size}_{mining_fingerprint(dataset, settings, seed, augment)[:20]}.npz"
    return cached_samples(path, lambda: mine_samples(dataset, settings, seed, progress, augment, workers))
