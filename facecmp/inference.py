"""Running a detector over a dataset: images in, course-format ``Predictions`` out."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset
from tqdm import tqdm

from .data.images import read_image
from .data.records import Dataset
from .detector import Detections, Detector
from .predictions import Predictions


class _Images(TorchDataset):
    """Decoded images of a dataset, so a DataLoader can overlap decoding with detection."""

    def __init__(self, dataset: Dataset):
        self.records = dataset.images

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int):
        record = self.records[i]
        return record.key, read_image(record.path)


def _as_list(batch):
    return batch


@dataclass
class DetectionRun:
    predictions: Predictions
    per_image: dict[str, Detections]
    seconds: float

    @property
    def images_per_second(self) -> float:
        return len(self.per_image) / self.seconds if self.seconds > 0 else float("inf")

    @property
    def ms_per_image(self) -> float:
        return 1000.0 * self.seconds / max(len(self.per_image), 1)


def run_detector(
    detector: Detector,
    dataset: Dataset,
    *,
    batch_size: int = 1,
    num_workers: int = 0,
    progress: bool = True,
    desc: str = "detect",
) -> DetectionRun:
    """Detect faces in every image of ``dataset`` (in dataset order)."""
    loader = DataLoader(_Images(dataset), batch_size=batch_size, num_workers=num_workers, collate_fn=_as_list)
    per_image: dict[str, Detections] = {}
    start = time.perf_counter()
    with tqdm(total=len(dataset), desc=desc, unit="img", disable=not progress, leave=False) as bar:
        for batch in loader:
            keys = [key for key, _ in batch]
            for key, det in zip(keys, detector.detect_batch([img for _, img in batch])):
                per_image[key] = det
            bar.update(len(batch))
    seconds = time.perf_counter() - start
    return DetectionRun(detections_to_predictions(per_image), per_image, seconds)


def detections_to_predictions(per_image: dict[str, Detections]) -> Predictions:
    boxes = [d.boxes for d in per_image.values()]
    scores = [d.scores for d in per_image.values()]
    names = [np.full(len(d), key, dtype=object) for key, d in per_image.items()]
    if not boxes:
        return Predictions.empty()
    return Predictions(
        boxes=np.concatenate(boxes).reshape(-1, 4).astype(np.float64),
        scores=np.concatenate(scores).astype(np.float64),
        file_names=np.concatenate(names).astype(str) if sum(map(len, names)) else np.zeros(0, dtype=str),
    )


def images_to_detect(path: Path) -> Dataset:
    """A folder of images, or a course test folder / archive whose test images we should run on."""
    from .data import load_archive, load_image_folder
    from .data.images import IMAGE_SUFFIXES
    from .errors import DataError

    path = Path(path)
    if not path.is_dir():
        raise DataError(f"{path}: not a folder; --images expects a folder of images or a course test folder")
    if any(p.suffix.lower() in IMAGE_SUFFIXES for p in path.iterdir()):
        return load_image_folder(path)
    archive = load_archive(path, allow_missing=True)
    if archive.test is not None:
        return archive.test
    raise DataError(f"{path}: no images found (expected image files, or a course test folder such as validare/)")


def detect_dataset(detector: Detector, dataset: Dataset, *, batch_size: int = 1, progress: bool = True) -> Predictions:
    return run_detector(detector, dataset, batch_size=batch_size, progress=progress).predictions
