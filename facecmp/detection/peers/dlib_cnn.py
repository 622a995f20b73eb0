"""dlib's CNN face detector (MMOD, ``mmod_human_face_detector.dat``, CC0) as a peer: the weights
come from the ``face_recognition_models`` package (found on disk, not imported: its
``__init__`` needs ``pkg_resources``), the network is ``dlib.cnn_face_detection_model_v1`` from
the ``dlib-bin`` wheel the HOG peer uses.

Scores are the MMOD detection confidences. dlib's CNN call has no threshold argument: it keeps
windows above the model's own cut, so calibration chooses a score cut above that (one scan, cut
at each grid point). Slow on CPU (seconds per image): its ``upsample`` stays 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from facecmp.detection.base import Detections, DetectorSettings
from facecmp.detection.peers import detections, import_peer, peer_file

NAME = "dlib-cnn"
WEIGHTS = "models/mmod_human_face_detector.dat"


@dataclass(frozen=True)
class DlibCnnSettings:
    min_confidence: float = 0.0
    upsample: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.upsample <= 2:
            raise ValueError(f"upsample must be 0..2, got {self.upsample}")


class DlibCnnDetector:
    # dlib's CNN runs on a thread pool that a forked child of a process that used it inherits
    # without its threads: detection there hangs. Worker processes are spawned for it instead.
    fork_safe = False

    def __init__(self, settings: DlibCnnSettings = DlibCnnSettings()):
        self.settings = settings
        import_peer("dlib", NAME)
        self.weights = peer_file("face_recognition_models", WEIGHTS, NAME)
        self._net = None

    def __getstate__(self):  # worker processes load their own native network
        return {**self.__dict__, "_net": None}

    def detect(self, image: np.ndarray) -> Detections:
        if self._net is None:
            self._net = import_peer("dlib", NAME).cnn_face_detection_model_v1(str(self.weights))
        found = self._net(np.ascontiguousarray(image, np.uint8), self.settings.upsample)
        kept = [d for d in found if d.confidence >= self.settings.min_confidence]
        boxes = [(d.rect.left(), d.rect.top(), d.rect.right(), d.rect.bottom()) for d in kept]
        return detections(boxes, [d.confidence for d in kept])

    def detect_batch(self, images: Sequence[np.ndarray]) -> list[Detections]:
        return [self.detect(image) for image in images]


def dlib_cnn_at(point: Sequence[float]) -> DlibCnnDetector:
    return DlibCnnDetector(DlibCnnSettings(min_confidence=float(point[0])))


def dlib_cnn(settings: DetectorSettings = DetectorSettings()) -> DlibCnnDetector:
    """``--model dlib-cnn``: every detection above the model's own cut."""
    return DlibCnnDetector()
