"""The MTCNN cascade on the networks ``facecmp export --onnx`` writes, with numpy and onnxruntime
only: no torch, for deployment.

    cascade = OnnxCascade("mtcnn_onnx/")     # the export folder (pnet/rnet/onet.onnx, cascade.json)
    faces = cascade.detect(rgb)              # H x W x 3 uint8 RGB -> Detections (boxes, scores, landmarks)

The steps are ``Detector``'s (``detector.py``, ``cascade.py``) written for numpy arrays, with the
same float32 arithmetic in the same order: area-resampled pyramid and crops read off an exact
integer summed-area table, torchvision's IoU NMS (kept in decreasing score order), the same
regressions, and ``geometry``'s pyramid scales, crop windows, landmark points and min-overlap NMS, which both
cascades share. It finds the same faces as the torch cascade (tests/test_onnx_cascade.py). One
image at a time; importing this module imports neither torch nor onnxruntime.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from facecmp.detection.base import Detections
from facecmp.detection.geometry import (
    PNET_CELL, PNET_STRIDE, crop_windows, landmark_points, nms_min, pyramid_scales, scaled_size,
)
from facecmp.errors import FacecmpError, ModelError

SETTINGS_FILE = "cascade.json"
STAGES = ("pnet", "rnet", "onet")
INSTALL_HINT = "pip install 'onnx==1.23.2' 'onnxruntime==1.32.0' (the facecmp[onnx] extra)"


def require_onnx(*modules: str) -> None:
    """A one-line ``FacecmpError`` naming what to install unless every module is importable."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise FacecmpError(f"ONNX needs {' and '.join(missing)}, not installed here: {INSTALL_HINT}")


class OnnxCascade:
    """Runs an exported cascade: ``detect(image)`` -> boxes, scores and landmarks, as ``Detector`` does."""

    def __init__(self, folder: str | os.PathLike, providers: Sequence[str] = ("CPUExecutionProvider",), threads: int | None = None):
        """``threads``: onnxruntime's intra-op threads (default: its own choice, one per core)."""
        folder = Path(folder)
        settings_path = folder / SETTINGS_FILE
        if not settings_path.is_file():
            raise ModelError(f"{folder}: no {SETTINGS_FILE}; pass the folder `facecmp export --onnx` wrote")
        try:
            self.config: dict[str, Any] = json.loads(settings_path.read_text(encoding="utf-8"))
            cascade = self.config["cascade"]
            self.mean, self.scale = float(self.config["input"]["mean"]), float(self.config["input"]["scale"])
            self.min_face_size, self.factor = float(cascade["min_face_size"]), float(cascade["factor"])
            self.thresholds = tuple(float(t) for t in cascade["thresholds"])
            self.nms_thresholds = tuple(float(t) for t in cascade["nms_thresholds"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ModelError(f"{settings_path}: not a facecmp export description ({exc!r}); re-run `facecmp export`") from None
        require_onnx("onnxruntime")
        import onnxruntime

        options = onnxruntime.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = options.inter_op_num_threads = threads
        self.sessions = {}
        for stage in STAGES:
            path = folder / f"{stage}.onnx"
            if not path.is_file():
                raise ModelError(f"{path}: not found; re-run `facecmp export --onnx {folder}`")
            self.sessions[stage] = onnxruntime.InferenceSession(str(path), options, providers=list(providers))

    def detect_batch(self, images: Iterable[np.ndarray]) -> list[Detections]:
        return [self.detect(image) for image in images]

    def detect(self, image: np.ndarray) -> Detections:
        """Faces in one ``H x W x 3`` uint8 RGB image."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an H x W x 3 uint8 RGB image, got shape {image.shape}, dtype {image.dtype}")
        height, width = image.shape[:2]
        sat = integral_image(image)
        boxes, scores = self._propose(sat, height, width)
        boxes, scores = self._refine(sat, boxes, height, width)
        return self._output(sat, boxes, height, width)

    def _run(self, stage: str, pixels: np.ndarray) -> list[np.ndarray]:
        """The stage's network on ``(N, H, W, 3)`` float32 pixel averages."""
        x = np.ascontiguousarray(((pixels - self.mean) * self.scale).transpose(0, 3, 1, 2), dtype=np.float32)
        return self.sessions[stage].run(None, {"image": x})

    def _propose(self, sat: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        all_boxes, all_scores, all_offsets = [], [], []
        for scale in pyramid_scales(height, width, self.min_face_size, self.factor):
            size = scaled_size(height, width, scale)
            ys, ye = area_bins(np.int64(height), size[0])
            xs, xe = area_bins(np.int64(width), size[1])
            level = area_sums(sat, ys[:, None], ye[:, None], xs[None, :], xe[None, :])
            offsets, probs = self._run("pnet", level[None])
            prob = probs[0, 1]
            rows, cols = np.nonzero(prob >= self.thresholds[0])
            cell_xy = np.stack([cols, rows], axis=1).astype(np.float32)
            boxes = np.concatenate(
                [np.floor((PNET_STRIDE * cell_xy + 1) / scale), np.floor((PNET_STRIDE * cell_xy + PNET_CELL) / scale)], axis=1
            )
            keep = nms_iou(boxes, prob[rows, cols], self.nms_thresholds[0])
            all_boxes.append(boxes[keep])
            all_scores.append(prob[rows, cols][keep])
            all_offsets.append(offsets[0][:, rows[keep], cols[keep]].T)
        if not all_boxes:
            return np.zeros((0, 4), np.float32), np.zeros(0, np.float32)
        boxes, scores, offsets = np.concatenate(all_boxes), np.concatenate(all_scores), np.concatenate(all_offsets)
        keep = nms_iou(boxes, scores, self.nms_thresholds[1])
        boxes, offsets = boxes[keep], offsets[keep]
        return square(boxes + offsets * np.tile(boxes[:, 2:4] - boxes[:, 0:2], 2)), scores[keep]

    def _crops(self, stage: str, sat: np.ndarray, boxes: np.ndarray, height: int, width: int):
        """Boxes with a non-empty window, and the stage's outputs on their crops (None if none)."""
        windows = crop_windows(boxes, width, height)
        valid = (windows[:, 2] > windows[:, 0]) & (windows[:, 3] > windows[:, 1])
        boxes, windows = boxes[valid], windows[valid].astype(np.int64)
        if len(boxes) == 0:
            return boxes, None
        side = {"rnet": 24, "onet": 48}[stage]
        x0, y0, x1, y1 = windows.T
        ys, ye = area_bins((y1 - y0)[:, None], side)
        xs, xe = area_bins((x1 - x0)[:, None], side)
        crops = area_sums(
            sat, (y0[:, None] + ys)[:, :, None], (y0[:, None] + ye)[:, :, None],
            (x0[:, None] + xs)[:, None, :], (x0[:, None] + xe)[:, None, :],
        )
        return boxes, self._run(stage, crops)

    def _refine(self, sat: np.ndarray, boxes: np.ndarray, height: int, width: int):
        boxes, out = self._crops("rnet", sat, boxes, height, width)
        if out is None:
            return boxes, np.zeros(0, np.float32)
        offsets, probs = out
        passed = probs[:, 1] > self.thresholds[1]
        boxes, scores, offsets = boxes[passed], probs[passed, 1], offsets[passed]
        keep = nms_iou(boxes, scores, self.nms_thresholds[2])
        return square(regress(boxes[keep], offsets[keep])), scores[keep]

    def _output(self, sat: np.ndarray, boxes: np.ndarray, height: int, width: int) -> Detections:
        boxes, out = self._crops("onet", sat, boxes, height, width)
        if out is None:
            return Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 5, 2), np.float32))
        offsets, landmarks, probs = out
        passed = probs[:, 1] > self.thresholds[2]
        seen, landmarks, scores = boxes[passed], landmarks[passed], probs[passed, 1]
        boxes = regress(seen, offsets[passed])
        keep = nms_min(boxes, scores, self.nms_thresholds[3])
        return Detections(boxes[keep], scores[keep], landmark_points(seen[keep], landmarks[keep]))


def integral_image(image: np.ndarray) -> np.ndarray:
    """``(H + 1, W + 1, 3)`` int32 summed-area table with a zero row and column in front (exact)."""
    sums = image.cumsum(0, dtype=np.int32).cumsum(1, dtype=np.int32)
    return np.pad(sums, ((1, 0), (1, 0), (0, 0)))


def area_bins(length: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Adaptive-average-pool bins of ``length`` cells into ``size``: start = floor(i L / S), end = ceil((i+1) L / S)."""
    i = np.arange(size)
    return (i * length) // size, ((i + 1) * length + size - 1) // size


def area_sums(sat: np.ndarray, ys, ye, xs, xe) -> np.ndarray:
    """Float32 averages of the rectangles ``[ys, ye) x [xs, xe)`` (broadcast), with their channels last."""
    total = sat[ye, xe] - sat[ys, xe] - sat[ye, xs] + sat[ys, xs]
    area = ((ye - ys) * (xe - xs))[..., None]
    return total.astype(np.float32) / area.astype(np.float32)


def nms_iou(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
    """Greedy IoU NMS as torchvision's ``nms`` computes it (areas without +1; a box goes when its
    IoU with a kept one exceeds ``threshold``); kept indices in decreasing score order."""
    order = np.argsort(-scores, kind="stable")
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1) * (y2 - y1)
    keep = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(i)
        w = np.maximum(0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]))
        h = np.maximum(0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]))
        inter = w * h
        order = rest[~(inter / (areas[i] + areas[rest] - inter) > threshold)]
    return np.asarray(keep, dtype=np.int64)


def regress(boxes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """RNet/ONet regression: offsets scaled by the inclusive width/height."""
    return boxes + offsets * np.tile(boxes[:, 2:4] - boxes[:, 0:2] + 1, 2)


def square(boxes: np.ndarray) -> np.ndarray:
    """Grow each box to a square around its centre (side = its longer side)."""
    wh = boxes[:, 2:4] - boxes[:, 0:2]
    side = wh.max(axis=1)
    top_left = boxes[:, 0:2] + wh * 0.5 - side[:, None] * 0.5
    return np.concatenate([top_left, top_left + side[:, None]], axis=1)
