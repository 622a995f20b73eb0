"""The cascade's steps that need no torch: pyramid scales, crop windows, landmark points,
min-overlap NMS and the constants.

``cascade.py`` (torch, what ``Detector`` runs) and ``onnx_cascade.py`` (numpy and onnxruntime, for
deployment without torch) both use them, so the two cascades plan the same pyramid and keep the
same final boxes. numpy only.
"""

from __future__ import annotations

import numpy as np

PNET_STRIDE = 2
PNET_CELL = 12
# (x - 127.5) / 128, as the pretrained nets were trained.
PIXEL_MEAN = 127.5
PIXEL_SCALE = 0.0078125


def pyramid_scales(height: int, width: int, min_face_size: float, factor: float) -> list[float]:
    """Scales at which a 12 px PNet window covers faces from ``min_face_size`` up to the image."""
    m = 12.0 / min_face_size
    min_side = min(height, width) * m
    scales = []
    scale = m
    while min_side >= 12:
        scales.append(scale)
        scale *= factor
        min_side *= factor
    return scales


def scaled_size(height: int, width: int, scale: float) -> tuple[int, int]:
    return int(height * scale + 1), int(width * scale + 1)


def crop_windows(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    """Integer crop windows ``(N, 4)`` as 0-based ``x0, y0, x1, y1`` (end exclusive), clipped to the image.

    Box corners are truncated, the start is treated as 1-based and clipped at 1, the end
    clipped to the image size: facenet-pytorch's ``pad`` followed by its slicing.
    """
    b = np.trunc(boxes).astype(np.int32)
    x0 = np.maximum(b[:, 0], 1) - 1
    y0 = np.maximum(b[:, 1], 1) - 1
    x1 = np.minimum(b[:, 2], width)
    y1 = np.minimum(b[:, 3], height)
    return np.stack([x0, y0, x1, y1], axis=1)


def landmark_points(boxes: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """ONet's landmark outputs ``(N, 10)`` (x0..x4, y0..y4 as fractions of the box it saw) ->
    pixel points ``(N, 5, 2)``. ``boxes`` are the boxes ONet classified, before its regression;
    inclusive width/height and the 1-based shift follow facenet-pytorch's ``detect_face``."""
    size = boxes[:, 2:4] - boxes[:, 0:2] + 1
    return landmarks.reshape(-1, 2, 5).transpose(0, 2, 1) * size[:, None, :] + boxes[:, None, 0:2] - 1


def nms_min(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
    """Greedy NMS where overlap is intersection over the *smaller* box (MTCNN's last stage).

    torchvision has only IoU-based NMS. Inclusive-pixel areas and ``np.argsort`` tie order
    follow facenet-pytorch so the same boxes survive.
    """
    if len(boxes) == 0:
        return np.zeros(0, dtype=np.int64)
    x1, y1, x2, y2 = boxes.T
    area = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(scores)
    keep = []
    while order.size > 0:
        i = order[-1]
        keep.append(i)
        rest = order[:-1]
        iw = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
        ih = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
        overlap = iw * ih / np.minimum(area[i], area[rest])
        order = rest[overlap <= threshold]
    return np.asarray(keep, dtype=np.int64)
