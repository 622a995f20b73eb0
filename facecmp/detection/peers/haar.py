"""OpenCV's Haar cascade (``haarcascade_frontalface_default.xml``, Viola-Jones) as a peer detector.

The cascade has no score of its own. ``score="level-weight"`` (the default) calls
``detectMultiScale3(..., outputRejectLevels=True)``: every window that reaches the cascade's last
stage is kept with that stage's weight sum, grouped with ``min_neighbors``, and the group's weight
is the score; it is continuous and orders detections by how face-like the last stage found them.
``score="neighbours"`` uses ``detectMultiScale2``'s neighbour count (how many raw windows the
group merged), a small integer with many ties. Both are calibrated on the dev split (see
``study.variants``); docs/results.md "Peers" gives the measured AP of each.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from facecmp.detection.base import Detections, DetectorSettings
from facecmp.detection.peers import detections, import_peer
from facecmp.errors import MissingPeerError

CASCADE_FILE = "haarcascade_frontalface_default.xml"
SCORES = ("level-weight", "neighbours")


@dataclass(frozen=True)
class HaarSettings:
    min_face_size: float = 20.0
    scale_factor: float = 1.1
    min_neighbors: int = 3
    score: str = "level-weight"

    def __post_init__(self) -> None:
        if self.score not in SCORES:
            raise ValueError(f"score must be one of {', '.join(SCORES)}, got {self.score!r}")
        if self.scale_factor <= 1:
            raise ValueError(f"scale_factor must be > 1, got {self.scale_factor}")
        if self.min_neighbors < 0:
            raise ValueError(f"min_neighbors must be >= 0, got {self.min_neighbors}")


def cascade_path() -> Path:
    cv2 = import_peer("cv2", "opencv-haar")
    path = Path(cv2.data.haarcascades) / CASCADE_FILE
    if not path.is_file():
        raise MissingPeerError(
            f"opencv-haar: {path} not found (OpenCV {cv2.__version__}; 5.x dropped the cascades): "
            "pip install 'facecmp[haar]' (opencv-python-headless<5)"
        )
    return path


class HaarDetector:
    def __init__(self, settings: HaarSettings = HaarSettings()):
        self.settings = settings
        self._path = cascade_path()
        self._cascade = None

    def __getstate__(self):  # worker processes build their own native cascade
        return {**self.__dict__, "_cascade": None}

    def detect(self, image: np.ndarray) -> Detections:
        cv2 = import_peer("cv2", "opencv-haar")
        if self._cascade is None:
            cv2.setNumThreads(1)  # one thread per image, like every detector in a facecmp worker
            self._cascade = cv2.CascadeClassifier(str(self._path))
        s = self.settings
        gray = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
        size = (int(round(s.min_face_size)),) * 2
        if s.score == "level-weight":
            rects, _levels, scores = self._cascade.detectMultiScale3(
                gray, scaleFactor=s.scale_factor, minNeighbors=s.min_neighbors, minSize=size, outputRejectLevels=True
            )
        else:
            rects, scores = self._cascade.detectMultiScale2(gray, scaleFactor=s.scale_factor, minNeighbors=s.min_neighbors, minSize=size)
        rects = np.asarray(rects, np.float32).reshape(-1, 4)
        boxes = np.column_stack([rects[:, 0], rects[:, 1], rects[:, 0] + rects[:, 2] - 1, rects[:, 1] + rects[:, 3] - 1])
        return detections(boxes, scores)

    def detect_batch(self, images: Sequence[np.ndarray]) -> list[Detections]:
        return [self.detect(image) for image in images]


def haar(settings: DetectorSettings = DetectorSettings()) -> HaarDetector:
    """``--model opencv-haar``: the cascade at OpenCV's usual settings, searching faces from ``--min-face``."""
    return HaarDetector(HaarSettings(min_face_size=settings.min_face_size))
