"""What training reads: a sample set as normalised tensors, and the left-right flip it is augmented with."""

from __future__ import annotations

import numpy as np
import torch

from facecmp.detection.cascade import normalize
from facecmp.training.samples.sample_set import SampleSet


class SampleDataset(torch.utils.data.Dataset):
    """``(normalised float image (3, S, S), label int64, offsets float32 (4,))`` per sample."""

    def __init__(self, samples: SampleSet) -> None:
        self.images = normalize(torch.from_numpy(samples.images).float())
        self.labels = torch.from_numpy(samples.labels.astype(np.int64))
        self.offsets = torch.from_numpy(samples.offsets)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.images[i], self.labels[i], self.offsets[i]


def hflip(images: torch.Tensor, offsets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mirror ``(N, C, S, S)`` crops left-right and their offsets (dx1, dx2) -> (-dx2, -dx1)."""
    flipped = offsets.clone()
    flipped[:, 0] = -offsets[:, 2]
    flipped[:, 2] = -offsets[:, 0]
    return images.flip(-1), flipped
