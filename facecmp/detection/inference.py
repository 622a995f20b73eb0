"""Running a detector over a dataset: images in, course-format ``Predictions`` out."""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset
from tqdm import tqdm

from facecmp.data.images import read_image
from facecmp.data.records import Dataset
from facecmp.detection.base import Detections, DetectorLike
from facecmp.errors import SilentPeerError, raise_returned, returns_errors
from facecmp.data.predictions import Predictions


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


class _Detected(TorchDataset):
    """Batches of images decoded *and detected* inside DataLoader workers.

    Each worker runs the cascade single-threaded on its own images: on a few CPU cores this
    uses them far better than intra-op threads on small tensors. Data errors travel back as
    values so the main process can raise them without a worker traceback in the message, and
    so do the errors of a peer detector that cannot run.
    """

    def __init__(self, dataset: Dataset, detector, batch_size: int):
        self.records = dataset.images
        self.detector = detector
        self.batch_size = batch_size

    def __len__(self) -> int:
        return -(-len(self.records) // self.batch_size)

    @returns_errors  # data errors, and a peer that cannot run (missing, broken)
    def __getitem__(self, b: int):
        records = self.records[b * self.batch_size : (b + 1) * self.batch_size]
        images = [read_image(r.path) for r in records]
        return [(r.key, d) for r, d in zip(records, self.detector.detect_batch(images))]


def single_threaded(_worker_id: int) -> None:
    torch.set_num_threads(1)


# Fewer images than this are run in the calling process: starting workers would cost more.
MIN_IMAGES_FOR_WORKERS = 16


def default_workers(n_images: int, device: str, threads: int) -> int:
    """Worker processes for running the cascade over ``n_images`` (``facecmp detect``, and mining
    for ``facecmp finetune``): on the CPU one per thread the run may use, none for a handful of
    images or on a GPU."""
    return threads if torch.device(device).type == "cpu" and n_images >= MIN_IMAGES_FOR_WORKERS else 0


def _detected_batches(detector, dataset: Dataset, batch_size: int, workers: int):
    """Yield lists of ``(key, Detections)`` in dataset order."""
    if workers > 0:
        # A detector whose native library cannot be used in a forked copy of a process that has
        # used it (dlib's CNN thread pool hangs there) says so; its workers are spawned instead.
        context = None if getattr(detector, "fork_safe", True) else "spawn"
        loader = DataLoader(
            _Detected(dataset, detector, batch_size), batch_size=None, num_workers=workers,
            worker_init_fn=single_threaded, multiprocessing_context=context,
        )
        yield from raise_returned(loader)
        return
    loader = DataLoader(_Images(dataset), batch_size=batch_size, collate_fn=_as_list)
    for batch in loader:
        yield list(zip([key for key, _ in batch], detector.detect_batch([img for _, img in batch])))


def run_detector(
    detector: DetectorLike,
    dataset: Dataset,
    *,
    batch_size: int = 1,
    workers: int = 0,
    progress: bool = True,
    desc: str = "detect",
) -> DetectionRun:
    """Detect faces in every image of ``dataset`` (in dataset order).

    ``workers > 0`` decodes and detects in that many worker processes (one thread each);
    the detections are the same either way.
    """
    per_image: dict[str, Detections] = {}
    start = time.perf_counter()
    with tqdm(total=len(dataset), desc=desc, unit="img", disable=not progress, leave=False) as bar:
        for batch in _detected_batches(detector, dataset, batch_size, workers):
            per_image.update(batch)
            bar.update(len(batch))
    seconds = time.perf_counter() - start
    return DetectionRun(detections_to_predictions(per_image), per_image, seconds)


# How interleaved_ms_per_image measures, for charts and reports ({n} images, {rounds} rounds).
INTERLEAVED_NOTE = ("median over {n} test images of the fastest of {rounds} rounds, the variants timed in turn "
                    "image by image in one process ({threads} torch threads)")


def interleaved_ms_per_image(detectors: Mapping[str, DetectorLike], images: Sequence[np.ndarray], rounds: int = 3) -> dict[str, float]:
    """Median over ``images`` of each detector's fastest of ``rounds`` timings, the detectors timed
    image by image in turn (a, b, a, b, ...), after one warm-up pass over every image.

    Interleaving makes a ratio between detectors robust to other processes taking the CPU for a
    while, which would skew one detector's separate timing but not the other's; the fastest of a
    few rounds drops the runs another process interrupted. The warm-up pays the one-off set-up
    of each new tensor shape (pyramid levels, crop batches), which is not per-image cost.
    """
    for detector in detectors.values():
        for image in images:
            detector.detect_batch([image])
    fastest: dict[str, list[float]] = {n: [math.inf] * len(images) for n in detectors}
    for _ in range(rounds):
        for i, image in enumerate(images):
            for name, detector in detectors.items():
                start = time.perf_counter()
                detector.detect_batch([image])
                fastest[name][i] = min(fastest[name][i], time.perf_counter() - start)
    return {n: 1000.0 * statistics.median(t) for n, t in fastest.items()}


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


def wider_submission(per_image: dict[str, Detections]) -> dict[str, np.ndarray]:
    """Per-image detections as WIDER FACE submission rows (``<event>/<name> -> x y w h score``, best first)."""
    from facecmp.data.wider_protocol import image_key, to_submission_boxes

    return {image_key(key): to_submission_boxes(d.boxes, d.scores) for key, d in per_image.items()}


def is_wider_dataset(path: Path) -> bool:
    """Whether ``images_to_detect(path)`` reads a WIDER FACE dataset (so detect also writes its submission format)."""
    from facecmp.data.archive import find_formats
    from facecmp.data.images import IMAGE_SUFFIXES

    path = Path(path)
    if not path.is_dir() or any(p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES for p in path.iterdir()):
        return False
    return list(find_formats(path)) == ["wider"]


def images_to_detect(path: Path) -> Dataset:
    """A folder of images, or a labelled dataset (a course test folder or archive, COCO, VOC,
    YOLO, WIDER FACE) whose test images we should run on."""
    from facecmp.data import load_archive, load_image_folder
    from facecmp.data.archive import find_formats
    from facecmp.data.images import IMAGE_SUFFIXES
    from facecmp.errors import DataError

    path = Path(path)
    if not path.is_dir():
        raise DataError(f"{path}: not a folder; --images expects a folder of images or a course test folder")
    if any(p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES for p in path.iterdir()):
        return load_image_folder(path)
    test = load_archive(path, allow_missing=True).test if find_formats(path) else None
    if test is None:
        raise DataError(
            f"{path}: no test images found; --images expects a folder of image files ({', '.join(IMAGE_SUFFIXES)}), "
            "a course test folder such as validare/ (with task1_gt_validare.txt and validare/ inside), or a "
            "COCO / VOC / YOLO / WIDER FACE dataset with a test part (a training part alone: give its image folder)"
        )
    return test


# A set this large with faces, on which a detector finds nothing at all, means a detector that
# answers nothing (an environment that runs but is broken), not a result to report as AP 0.
SILENT_MIN_IMAGES = 20


def require_answers(name: str, detector, n_detections: int, dataset: Dataset) -> None:
    """A SilentPeerError when ``detector`` (called ``name``) found ``n_detections == 0`` faces on
    ``dataset``, which has faces on at least SILENT_MIN_IMAGES images."""
    with_faces = sum(1 for r in dataset.images if len(r.boxes))
    if n_detections == 0 and with_faces >= SILENT_MIN_IMAGES:
        hint = getattr(detector, "silent_hint", "") or "check that it runs on one of these images with `facecmp detect`"
        raise SilentPeerError(
            f"{name} found no face on any of the {len(dataset)} images of {dataset.name}, which has {dataset.n_faces} faces "
            f"on {with_faces} images: it answers nothing, so its AP would mean nothing; {hint}"
        )
