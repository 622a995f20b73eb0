"""Choosing the cascade's stage thresholds on a dev split with ground truth.

A small grid of ``(pnet, rnet, onet)`` thresholds, each scored by the course AP (``ap_cava``)
on the dev images. The same search runs for the pretrained model, so the study compares a
fine-tuned model at its calibrated thresholds with the pretrained model at *its* best ones.
Images are decoded once and kept in memory for the whole grid.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from ..data.images import read_image
from ..data.records import Dataset
from ..detector import Detector
from ..errors import DataError
from ..evaluation import evaluate, pairwise_iou
from ..inference import detections_to_predictions

Thresholds = tuple[float, float, float]

# facenet-pytorch's default first. On cartoons RNet/ONet reject most faces at 0.7 and AP keeps
# rising as their thresholds drop (measured on Dexter: 0.19 at the default -> 0.42 at 0.05 for
# the pretrained cascade), so the grid reaches low RNet/ONet thresholds and varies PNet's there.
DEFAULT_GRID: tuple[Thresholds, ...] = (
    (0.6, 0.7, 0.7),
    (0.6, 0.4, 0.4),
    (0.6, 0.2, 0.2),
    (0.6, 0.1, 0.1),
    (0.4, 0.1, 0.1),
    (0.6, 0.05, 0.05),
    (0.4, 0.05, 0.05),
    (0.8, 0.05, 0.05),
)


def _decoded(dataset: Dataset, progress: bool) -> list[tuple[str, np.ndarray]]:
    return [(r.key, read_image(r.path)) for r in tqdm(dataset.images, desc="reading dev images", disable=not progress, leave=False)]


def score_thresholds(detector: Detector, images: Sequence[tuple[str, np.ndarray]], ground_truth) -> dict:
    """Detect on every (key, image) and evaluate: one row of the calibration table."""
    per_image = {key: detector.detect(image) for key, image in images}
    result = evaluate(detections_to_predictions(per_image), ground_truth)
    return {
        "thresholds": list(detector.settings.thresholds),
        "ap_cava": result.ap_cava,
        "ap_voc": result.ap_voc,
        "recall": result.final_recall,
        "n_detections": result.n_detections,
    }


def best_thresholds(
    detector_factory: Callable[[Thresholds], Detector],
    dataset: Dataset,
    grid: Sequence[Thresholds] = DEFAULT_GRID,
    progress: bool = True,
) -> tuple[Thresholds, list[dict]]:
    """The grid point with the best ``ap_cava`` on ``dataset`` (first one on ties) and the whole table.

    ``detector_factory(thresholds)`` builds the detector to score, e.g.
    ``lambda t: Detector(settings=DetectorSettings(thresholds=t))`` for the pretrained model.
    """
    if not grid:
        raise ValueError("the threshold grid is empty")
    if dataset.n_faces == 0:
        raise DataError(f"{dataset.name}: the calibration split has no annotated faces; calibrate on images with faces")
    images = _decoded(dataset, progress)
    ground_truth = dataset.ground_truth()
    table = []
    for thresholds in tqdm(grid, desc="calibrating thresholds", disable=not progress, unit="setting"):
        table.append(score_thresholds(detector_factory(tuple(thresholds)), images, ground_truth))
    best = max(range(len(table)), key=lambda i: (table[i]["ap_cava"], -i))
    return tuple(float(t) for t in grid[best]), table


@torch.inference_mode()
def stage_recall(detector: Detector, dataset: Dataset, iou_threshold: float = 0.3, progress: bool = True) -> dict[str, float]:
    """Share of annotated faces still covered (IoU >= ``iou_threshold``) after PNet, RNet and ONet.

    Tells which stage loses the faces: a fine-tuned PNet cannot help if RNet/ONet reject them.
    """
    covered = {"pnet": 0, "rnet": 0, "onet": 0}
    total = 0
    for record in tqdm(dataset.images, desc="stage recall", disable=not progress, leave=False):
        if len(record.boxes) == 0:
            continue
        image = read_image(record.path)
        after = {stage: detector.detect_batch([image], upto=stage)[0].boxes for stage in covered}
        total += len(record.boxes)
        for stage, found in after.items():
            if len(found):
                iou = pairwise_iou(record.boxes.astype(np.float64), found.astype(np.float64))
                covered[stage] += int((iou.max(axis=1) >= iou_threshold).sum())
    return {stage: covered[stage] / max(total, 1) for stage in covered}
