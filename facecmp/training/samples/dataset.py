"""What training reads: a sample set as normalised tensors, and the left-right flip it is augmented with."""

from __future__ import annotations

import numpy as np
import torch

from facecmp.detection.cascade import normalize
from facecmp.training.samples.sample_set import SampleSet


class SampleDataset(torch.utils.data.Dataset):
    """``(normalised float image (3, S, S), label int64, targets float32 (4,))`` per sample: the
    box offsets, and a 5th column with the soft targets when the set has them (``losses.mtcnn_loss``)."""

    def __init__(self, samples: SampleSet) -> None:
        self.images = normalize(torch.from_numpy(samples.images).float())
        self.labels = torch.from_numpy(samples.labels.astype(np.int64))
        self.offsets = torch.from_numpy(samples.offsets)
        if samples.soft is not None:
            self.offsets = torch.cat([self.offsets, torch.from_numpy(samples.soft.astype(np.float32))[:, None]], dim=1)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.images[i], self.labels[i], self.offsets[i]


def hflip(images: torch.Tensor, offsets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mirror ``(N, C, S, S)`` crops left-right and their offsets (dx1, dx2) -> (-dx2, -dx1); a soft
    target column stays as it is (a mirrored face is as much a face)."""
    flipped = offsets.clone()
    flipped[:, 0] = -offsets[:, 2]
    flipped[:, 2] = -offsets[:, 0]
    return images.flip(-1), flipped
