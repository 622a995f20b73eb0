"""What training reads: a sample set as normalised tensors, and the left-right flip it is augmented with."""

from __future__ import annotations

import numpy as np
import torch

from facecmp.detection.cascade import normalize
from facecmp.training.samples.sample_set import SampleSet


class SampleDataset(torch.utils.data.Dataset):
    """``(normalised float image (3, S, S), label int64, targets float32 (4,))`` per sample: the
    box offsets, and a 5th column with the soft targets when the set has them (``losses.mtcnn_loss``).

    Indexed with a list of sample indices it returns the batch, ``(B, 3, S, S), (B,), (B, 4|5)``, cut
    from its tensors in one gather each (what :func:`batch_loader` reads)."""

    def __init__(self, samples: SampleSet) -> None:
        # Contiguous, whatever the layout mining left the crops in (freshly cut crops are channels-last,
        # cached ones are not): a batch's layout must not depend on where its samples came from.
        self.images = normalize(torch.from_numpy(np.ascontiguousarray(samples.images)).float())
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


def batch_loader(dataset: SampleDataset, batch_size: int, sampler=None, generator: torch.Generator | None = None):
    """A DataLoader of ``dataset``'s batches in ``sampler``'s order (default: in order), each batch cut
    from the dataset's tensors by its indices instead of collated sample by sample.

    The batches equal ``DataLoader(dataset, batch_size, sampler=sampler, generator=generator)``'s, to the
    bit, and the same random draws are made from ``generator`` (a shuffling ``sampler`` draws from it too);
    on small crops collating was a quarter of a training step (docs/price.md).
    """
    sampler = torch.utils.data.SequentialSampler(dataset) if sampler is None else sampler
    batches = torch.utils.data.BatchSampler(sampler, batch_size, drop_last=False)
    return torch.utils.data.DataLoader(dataset, sampler=batches, batch_size=None, generator=generator)
