"""dlib's HOG + linear SVM detectors as peers: the built-in frontal face detector, and detectors
trained on your boxes (``training.dlib_train``) saved in a checkpoint folder.

Scores are the SVM margins from ``run(image, upsample, adjust_threshold)``; a negative
``adjust_threshold`` keeps detections below dlib's default cut so that AP sees the whole
precision-recall curve. ``upsample`` doubles the image that many times: the frontal detector's
80x80 window finds faces from about 80 / 2**upsample px.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from facecmp.detection.base import Detections, DetectorSettings
from facecmp.detection.peers import detections, import_peer, score_cut_calibration
from facecmp.errors import ModelError

# A checkpoint folder of dlib detectors: facecmp.json with "kind": KIND, one .svm file per detector.
KIND = "dlib-hog"
META_FILE = "facecmp.json"
# The dev-split calibration grid, pretrained and trained alike: (upsample, adjust_threshold).
CALIBRATION_GRID: tuple[tuple[float, float], ...] = tuple((float(u), a) for u in (0, 1) for a in (0.0, -0.5, -1.0, -1.5))


@dataclass(frozen=True)
class DlibHogSettings:
    upsample: int = 1
    adjust_threshold: float = -0.5

    def __post_init__(self) -> None:
        if not 0 <= self.upsample <= 3:
            raise ValueError(f"upsample must be 0..3, got {self.upsample}")


class DlibHogDetector:
    """dlib's frontal face detector (``files`` empty) or the trained ``.svm`` detectors in ``files``."""

    def __init__(self, settings: DlibHogSettings = DlibHogSettings(), files: Sequence[Path] = (), name: str = "dlib-hog"):
        self.settings = settings
        self.files = tuple(Path(f) for f in files)
        self.name = name
        import_peer("dlib", name)
        self._detectors = None

    def __getstate__(self):  # worker processes load their own native detectors
        return {**self.__dict__, "_detectors": None}

    def _load(self):
        dlib = import_peer("dlib", self.name)
        if not self.files:
            return [dlib.get_frontal_face_detector()]
        loaded = []
        for f in self.files:
            try:
                loaded.append(dlib.fhog_object_detector(str(f)))
            except RuntimeError as exc:
                raise ModelError(f"{f}: not a dlib HOG detector ({exc}); re-run `facecmp finetune --stages dlib-hog`") from None
        return loaded

    def detect(self, image: np.ndarray) -> Detections:
        dlib = import_peer("dlib", self.name)
        if self._detectors is None:
            self._detectors = self._load()
        image = np.ascontiguousarray(image)
        s = self.settings
        if len(self._detectors) == 1:
            rects, scores, _ = self._detectors[0].run(image, s.upsample, s.adjust_threshold)
        else:  # one window shape per aspect group, with one non-maximum suppression over all of them
            rects, scores, _ = dlib.fhog_object_detector.run_multiple(self._detectors, image, s.upsample, s.adjust_threshold)
        boxes = [(r.left(), r.top(), r.right(), r.bottom()) for r in rects]
        return detections(boxes, scores)

    def detect_batch(self, images: Sequence[np.ndarray]) -> list[Detections]:
        return [self.detect(image) for image in images]


def dlib_hog_at(point: Sequence[float], files: Sequence[Path] = (), name: str = "dlib-hog") -> DlibHogDetector:
    """The detector at a calibration grid point ``(upsample, adjust_threshold)``."""
    return DlibHogDetector(DlibHogSettings(upsample=int(point[0]), adjust_threshold=float(point[1])), files, name=name)


def calibration_detectors(files: Sequence[Path] = (), name: str = "dlib-hog"):
    """``point -> detector`` for :data:`CALIBRATION_GRID`: one scan per upsample, at the grid's lowest
    adjust_threshold, cut at each higher one (dlib keeps the windows above the threshold, then
    suppresses greedily in score order, so a box's fate depends only on boxes that score higher:
    the same detections as running at it)."""
    return score_cut_calibration(lambda point: dlib_hog_at(point, files, name), CALIBRATION_GRID)


def dlib_hog(settings: DetectorSettings = DetectorSettings()) -> DlibHogDetector:
    """``--model dlib-hog``: dlib's frontal face detector, upsampled enough for ``--min-face`` (at most twice)."""
    upsample = 0
    while 80 / 2**upsample > settings.min_face_size and upsample < 2:
        upsample += 1
    return DlibHogDetector(DlibHogSettings(upsample=upsample))


def is_dlib_checkpoint(folder: str | Path) -> bool:
    meta = Path(folder) / META_FILE
    if not meta.is_file():
        return False
    try:
        return json.loads(meta.read_text(encoding="utf-8")).get("kind") == KIND
    except (json.JSONDecodeError, AttributeError):
        return False


def load_dlib_checkpoint(folder: str | Path) -> DlibHogDetector:
    """The detector a ``facecmp finetune --stages dlib-hog`` folder holds, at its calibrated settings."""
    folder = Path(folder)
    meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
    files = [folder / name for name in meta.get("detectors", [])]
    missing = [str(f) for f in files if not f.is_file()]
    if not files or missing:
        raise ModelError(f"{folder}: dlib checkpoint lists detectors {meta.get('detectors')!r} but {missing or 'none'} are missing; re-run `facecmp finetune --stages dlib-hog`")
    settings = meta.get("settings") or {}
    return dlib_hog_at((settings.get("upsample", 0), settings.get("adjust_threshold", -0.5)), files, name="dlib-hog-trained")
