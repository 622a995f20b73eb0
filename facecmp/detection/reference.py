"""facenet-pytorch's own ``MTCNN`` behind our detector interface: the peer we measure against."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from facecmp.detection.base import Detections, DetectorSettings
from facecmp.errors import ModelError


class FacenetReference:
    def __init__(self, settings: DetectorSettings = DetectorSettings()):
        try:
            from facenet_pytorch import MTCNN
        except ImportError as exc:
            raise ModelError(f"facenet-pytorch is not importable ({exc}); run: pip install --no-deps facenet-pytorch==2.6.0 requests tqdm") from None
        self.mtcnn = MTCNN(
            keep_all=True, device=settings.device, min_face_size=settings.min_face_size,
            thresholds=list(settings.thresholds), factor=settings.factor,
        )

    def detect_batch(self, images: Sequence[np.ndarray]) -> list[Detections]:
        from PIL import Image

        out = []
        for image in images:
            boxes, probs, points = self.mtcnn.detect(Image.fromarray(image), landmarks=True)
            if boxes is None:
                out.append(Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 5, 2), np.float32)))
            else:
                out.append(Detections(np.asarray(boxes, np.float32), np.asarray(probs, np.float32), np.asarray(points, np.float32)))
        return out
