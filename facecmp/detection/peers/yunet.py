"""YuNet (libfacedetection's CNN, 5 landmarks) as a peer, from the ``yuface`` wheel (numpy only,
weights compiled into its ``.so``; BSD-3).

``yuface``'s own ``detect`` takes a BGR image and a confidence in [0, 1]; its C function answers
one row per face: confidence (integer percent), x, y, w, h, five (x, y) landmarks and one more
value. We call the C function and keep every row whose confidence reaches ``min_confidence``,
so AP sees the whole precision-recall curve; ``min_confidence`` is calibrated on the dev split.

It runs on OpenMP: its threads are pinned to one (two were slower, and facecmp's workers are the
parallelism), and ``yuface`` warns that it detects worse above 960 px, so larger images are
shrunk to fit 960 px and the boxes scaled back.
"""

from __future__ import annotations

import ctypes
import functools
import glob
import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from facecmp.detection.base import Detections, DetectorSettings
from facecmp.detection.peers import detections, import_peer

NAME = "yunet"
MAX_SIDE = 960  # yuface warns above this


@dataclass(frozen=True)
class YuNetSettings:
    min_confidence: float = 0.3

    def __post_init__(self) -> None:
        if not 0 <= self.min_confidence <= 1:
            raise ValueError(f"min_confidence must be in [0, 1], got {self.min_confidence}")


@functools.lru_cache(maxsize=None)
def _omp_set_num_threads():
    """``omp_set_num_threads`` of the OpenMP runtime yuface's wheel bundles (None if it has none)."""
    package = os.path.dirname(import_peer("yuface", NAME).__file__)
    for path in sorted(glob.glob(os.path.join(package + ".libs", "libgomp*")) + glob.glob(os.path.join(package, "libgomp*"))):
        try:
            return ctypes.CDLL(path).omp_set_num_threads
        except (OSError, AttributeError):
            continue
    return None


def _shrink(image: np.ndarray) -> tuple[np.ndarray, float]:
    """``image`` resized to fit MAX_SIDE (area averaging, via PIL), and the factor applied."""
    height, width = image.shape[:2]
    if max(height, width) <= MAX_SIDE:
        return image, 1.0
    from PIL import Image

    scale = MAX_SIDE / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR)), scale


class YuNetDetector:
    def __init__(self, settings: YuNetSettings = YuNetSettings()):
        self.settings = settings
        import_peer("yuface.yuface", NAME)

    def detect(self, image: np.ndarray) -> Detections:
        c_detect = import_peer("yuface.yuface", NAME).detect
        pin = _omp_set_num_threads()
        if pin is not None:
            pin(1)  # per calling thread in OpenMP: set where the detection runs
        small, scale = _shrink(np.asarray(image, np.uint8))
        rows = np.asarray(c_detect(np.ascontiguousarray(small[:, :, ::-1])), np.float32).reshape(-1, 16)
        rows = rows[rows[:, 0] >= 100 * self.settings.min_confidence]
        x, y, w, h = (rows[:, 1 + i] / scale for i in range(4))
        boxes = np.column_stack([x, y, x + w - 1, y + h - 1])
        landmarks = rows[:, 5:15].reshape(-1, 5, 2) / scale
        return detections(boxes, rows[:, 0] / 100.0, landmarks)

    def detect_batch(self, images: Sequence[np.ndarray]) -> list[Detections]:
        return [self.detect(image) for image in images]


def yunet_at(point: Sequence[float]) -> YuNetDetector:
    return YuNetDetector(YuNetSettings(min_confidence=float(point[0])))


def yunet(settings: DetectorSettings = DetectorSettings()) -> YuNetDetector:
    """``--model yunet``: every face the library returns (its own floor is about 0.25), for AP."""
    return YuNetDetector(YuNetSettings(min_confidence=0.0))
