"""The geometric conditions' pixels and boxes: downscaling and mirroring a frame, its ground truth
mapped with it in the course's inclusive-pixel convention."""

from __future__ import annotations

import numpy as np


def scale_image(image: np.ndarray, factor: float) -> np.ndarray:
    """Downscale by ``factor`` (antialiased bilinear, as a video scaler does), at least 1x1 px."""
    from PIL import Image

    height, width = image.shape[:2]
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))


def scale_boxes(boxes: np.ndarray, old_size: tuple[int, int], new_size: tuple[int, int]) -> np.ndarray:
    """Inclusive-pixel boxes ``(K, 4)`` of a ``old_size`` (W, H) image mapped onto ``new_size``.

    Box ``x_min..x_max`` covers the continuous span ``[x_min, x_max + 1)``; that span is scaled
    and rounded back to whole pixels, so a box keeps covering what it covered.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    sx, sy = new_size[0] / old_size[0], new_size[1] / old_size[1]
    x0 = np.floor(boxes[:, 0] * sx + 0.5)
    y0 = np.floor(boxes[:, 1] * sy + 0.5)
    x1 = np.floor((boxes[:, 2] + 1) * sx + 0.5) - 1
    y1 = np.floor((boxes[:, 3] + 1) * sy + 0.5) - 1
    out = np.stack([x0, y0, np.maximum(x1, x0), np.maximum(y1, y0)], axis=1)
    out[:, [0, 2]] = out[:, [0, 2]].clip(0, new_size[0] - 1)
    out[:, [1, 3]] = out[:, [1, 3]].clip(0, new_size[1] - 1)
    return out.astype(np.int64)


def mirror_boxes(boxes: np.ndarray, width: int) -> np.ndarray:
    """Inclusive-pixel boxes of a ``width``-pixel-wide image after a horizontal flip."""
    boxes = np.asarray(boxes, dtype=np.int64).reshape(-1, 4)
    return np.stack([width - 1 - boxes[:, 2], boxes[:, 1], width - 1 - boxes[:, 0], boxes[:, 3]], axis=1)
