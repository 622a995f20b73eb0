"""The Python API for deployment: ``from facecmp import load_detector``.

::

    detector = load_detector("pretrained")   # or a checkpoint folder from `facecmp finetune`
    faces = detector.detect("photo.jpg")     # a path, a PIL image or an H x W x 3 uint8 RGB array
    faces.boxes, faces.scores, faces.landmarks   # (K, 4) x1 y1 x2 y2, (K,), (K, 5, 2) x y

A thin layer over the cascade (``detector.Detector``): it turns what users hold into the RGB
arrays the cascade takes (decoding through ``data.images``), and nothing else; detections are
the cascade's, unchanged. Importing this module does not import torch; ``load_detector`` does.
"""

from __future__ import annotations

import os
from typing import Iterable, Iterator, TypeVar

from facecmp.data.images import ImageInput, as_rgb_array
from facecmp.detection.base import Detections, DetectorLike, DetectorSettings, require_model

# Images decoded and sent through the networks at once by ``detect_batch``: bounds memory on long
# lists; images of equal size in one chunk share the networks' calls.
DEFAULT_BATCH_SIZE = 16

T = TypeVar("T")


class FaceDetector:
    """Finds faces in images given as paths, PIL images (any mode) or ``H x W x 3`` uint8 RGB arrays."""

    def __init__(self, detector: DetectorLike, batch_size: int = DEFAULT_BATCH_SIZE):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.detector = detector
        self.batch_size = batch_size

    @property
    def settings(self) -> DetectorSettings | None:
        """The cascade's settings (thresholds, min face size, ...), as loaded."""
        return getattr(self.detector, "settings", None)

    def detect(self, image: ImageInput) -> Detections:
        """Faces in one image: ``boxes`` ``(K, 4)`` float x1, y1, x2, y2 in pixels, ``scores``
        ``(K,)`` face probabilities, ``landmarks`` ``(K, 5, 2)`` x, y of the left eye, right eye,
        nose, left and right mouth corner."""
        return self.detector.detect_batch([as_rgb_array(image)])[0]

    def detect_batch(self, images: Iterable[ImageInput]) -> list[Detections]:
        """``detect`` for each image, in order; ``batch_size`` images are decoded and run at once."""
        results: list[Detections] = []
        for start, chunk in _chunks(images, self.batch_size):
            arrays = [as_rgb_array(image, where=f"images[{start + i}]") for i, image in enumerate(chunk)]
            results.extend(self.detector.detect_batch(arrays))
        return results


def _chunks(items: Iterable[T], size: int) -> Iterator[tuple[int, list[T]]]:
    """``(index of the first, items)`` for consecutive runs of ``size`` items."""
    chunk: list[T] = []
    start = 0
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield start, chunk
            start, chunk = start + size, []
    if chunk:
        yield start, chunk


def load_detector(
    model: str | os.PathLike = "pretrained",
    *,
    min_face_size: float | None = None,
    thresholds: tuple[float, float, float] | None = None,
    device: str = "cpu",
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> FaceDetector:
    """A detector for ``model``: ``"pretrained"`` (facenet-pytorch's weights), a checkpoint folder
    written by ``facecmp finetune`` (its fine-tuned stages and calibrated thresholds), or
    ``"facenet-reference"`` (facenet-pytorch's own MTCNN).

    ``min_face_size`` (px, >= 12) and ``thresholds`` (PNet, RNet, ONet) override the defaults
    (20; 0.6, 0.7, 0.7) or the checkpoint's stored values; ``device`` is a torch device.
    Raises ``facecmp.errors.ModelError`` for a missing or invalid checkpoint.
    """
    from facecmp.detection import detector

    require_model(model)
    overrides = {"min_face_size": min_face_size, "thresholds": thresholds, "device": device}
    return FaceDetector(detector.load_detector(model, **overrides), batch_size=batch_size)
