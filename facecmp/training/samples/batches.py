"""Mining the training frames batch by batch, in this process or in DataLoader worker processes.

Every stage's mining walks the same sequence of frames (:func:`facecmp.training.augment.training_frames`:
each image, then its augmented copies) in batches, and mines each frame with a generator seeded from
its key, so a batch's result does not depend on where it runs. With ``workers`` > 0 the batches are
mined in that many DataLoader workers, one thread each (as ``facecmp detect`` runs the cascade): on a
few CPU cores small convolutions and numpy crop cutting use them better so than one process with
intra-op threads (docs/price.md has the measurement). The batches come back in order, so the samples
are the same either way.
"""

from __future__ import annotations

from typing import Callable, Sequence

from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset
from tqdm.auto import tqdm

from facecmp.data.records import ImageRecord
from facecmp.detection.inference import single_threaded
from facecmp.errors import raise_returned, returns_errors
from facecmp.training.augment import AugmentSettings, Frame, frames_at, frames_per_record

# One frame's mined samples: (crops N x 3 x S x S uint8, labels N, offsets N x 4).
Mined = tuple
MineBatch = Callable[[list[Frame]], list[Mined]]


class FrameBatches(TorchDataset):
    """Item ``b``: the mined samples of frames ``b * batch ... (b + 1) * batch - 1``, one per frame.

    A data error travels back as a value, so the main process raises it without a worker's
    traceback in the message (as ``facecmp.detection.inference`` does for detection)."""

    def __init__(self, records: Sequence[ImageRecord], augment: AugmentSettings | None, seed: int, batch: int, mine: MineBatch):
        self.records, self.augment, self.seed, self.batch, self.mine = records, augment, seed, batch, mine
        self.n_frames = len(records) * frames_per_record(augment)

    def __len__(self) -> int:
        return -(-self.n_frames // self.batch)

    @returns_errors
    def __getitem__(self, b: int):
        indices = range(b * self.batch, min((b + 1) * self.batch, self.n_frames))
        return self.mine(frames_at(self.records, self.augment, self.seed, indices))


def _as_is(item):
    return item


def mine_frames(records: Sequence[ImageRecord], augment: AugmentSettings | None, seed: int, mine: MineBatch, *, batch: int,
                workers: int = 0, desc: str = "mining", progress: bool = True, extras: list | None = None) -> tuple[list, list, list]:
    """Every frame's ``(crops, labels, offsets)`` in frame order, as three lists; ``mine`` maps a
    batch of frames to their samples. ``workers`` > 0 mines in that many forked worker processes.
    ``extras``: a list that receives, in frame order, what ``mine`` returned for a frame after its samples."""
    batches = FrameBatches(records, augment, seed, batch, mine)
    if workers > 0 and len(batches) > 1:
        items = DataLoader(batches, batch_size=None, num_workers=workers, worker_init_fn=single_threaded, collate_fn=_as_is)
    else:
        items = (batches[b] for b in range(len(batches)))
    per_frame: list[Mined] = []
    with tqdm(total=batches.n_frames, desc=desc, disable=not progress, unit="img") as bar:
        for item in raise_returned(items):
            per_frame.extend(item)
            bar.update(len(item))
    if extras is not None:
        extras.extend(mined[3:] for mined in per_frame)
    return columns(per_frame)


def columns(per_frame: Sequence[Mined]) -> tuple[list, list, list]:
    """Frames' ``(crops, labels, offsets)`` as three lists in the same order."""
    crops, labels, offsets = [], [], []
    for im, lab, off, *_ in per_frame:
        crops.append(im)
        labels.append(lab)
        offsets.append(off)
    return crops, labels, offsets
