"""A stage's training samples as arrays: crops, labels, box offsets."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

# A sample's label; DISCARD marks crops in the IoU band between part faces and negatives, never kept.
POSITIVE, NEGATIVE, PART, DISCARD = 1, 0, -1, -2


@dataclass
class SampleSet:
    """``images`` uint8 ``(N, 3, S, S)``; ``labels`` int8 (1 pos, 0 neg, -1 part); ``offsets`` float32 ``(N, 4)``;
    ``soft`` float32 ``(N,)`` or None: a teacher's face probability to learn instead of the label's
    class (NaN: the label decides; ``losses.classification_loss``). Never cached: it is derived."""

    images: np.ndarray
    labels: np.ndarray
    offsets: np.ndarray
    # Set when the set was read from (or written to) the cache.
    cache_path: Path | None = None
    from_cache: bool = False
    soft: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def counts(self) -> dict[str, int]:
        return {
            "positive": int((self.labels == POSITIVE).sum()),
            "part": int((self.labels == PART).sum()),
            "negative": int((self.labels == NEGATIVE).sum()),
        }

    def take(self, index: np.ndarray) -> "SampleSet":
        return SampleSet(self.images[index], self.labels[index], self.offsets[index],
                         soft=None if self.soft is None else self.soft[index])
