"""Choosing the cascade's stage thresholds on a dev split with ground truth.

A grid of ``(pnet, rnet, onet)`` thresholds, each scored by the course AP (``ap_cava``) on the
dev images. The same search runs for the pretrained model, so the study compares a fine-tuned
model at its calibrated thresholds with the pretrained model at *its* best ones.

Scoring a grid point does not re-run the nets. For one PNet threshold the cascade runs once
with the grid's lowest RNet and ONet thresholds, keeping every final candidate's RNet score,
ONet score and regressed box (:class:`CascadeCandidates`). A higher RNet/ONet threshold then
keeps exactly the candidates whose scores pass it: greedy NMS visits boxes in score order, so
the boxes above a threshold suppress one another the same way whether or not lower-scoring
boxes are present. Only the final (min-overlap) NMS is re-run per grid point, because removing
candidates with RNet can change which boxes it keeps. The result equals ``Detector.detect`` at
that grid point (a test checks it).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from facecmp.detection import cascade as C
from facecmp.data.images import read_image
from facecmp.data.records import Dataset
from facecmp.detection.base import Detections, DetectorLike
from facecmp.detection.detector import Detector
from facecmp.errors import DataError
from facecmp.evaluation.evaluator import evaluate, pairwise_iou
from facecmp.detection.inference import detections_to_predictions, require_answers

Thresholds = tuple[float, float, float]

# facenet-pytorch's default first (it wins ties). On cartoons the pretrained RNet/ONet reject
# most faces at 0.7 and AP keeps rising as their thresholds drop, while fine-tuned RNet/ONet are
# best at higher ones (docs/results.md): the grid spans both.
PNET_THRESHOLDS = (0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
LATER_THRESHOLDS = (0.02, 0.05, 0.1, 0.2, 0.4, 0.6, 0.7, 0.8, 0.9, 0.95)
DEFAULT_GRID: tuple[Thresholds, ...] = ((0.6, 0.7, 0.7),) + tuple(
    t for t in itertools.product(PNET_THRESHOLDS, LATER_THRESHOLDS, LATER_THRESHOLDS) if t != (0.6, 0.7, 0.7)
)
# Images run through the cascade together while calibrating.
BATCH_IMAGES = 8


def _decoded(dataset: Dataset, progress: bool) -> list[tuple[str, np.ndarray]]:
    return [(r.key, read_image(r.path)) for r in tqdm(dataset.images, desc="reading dev images", disable=not progress, leave=False)]


def _row(thresholds, per_image: dict[str, Detections], ground_truth) -> dict:
    result = evaluate(detections_to_predictions(per_image), ground_truth)
    return {
        "thresholds": [float(t) for t in thresholds],
        "ap_cava": result.ap_cava,
        "ap_voc": result.ap_voc,
        "recall": result.final_recall,
        "n_detections": result.n_detections,
    }


def _require_calibration_input(grid, dataset: Dataset) -> None:
    if not grid:
        raise ValueError("the calibration grid is empty")
    if dataset.n_faces == 0:
        raise DataError(f"{dataset.name}: the calibration split has no annotated faces; calibrate on images with faces")


def _best_row(table: list[dict]) -> int:
    """The row with the best ``ap_cava``, the first one on ties."""
    return max(range(len(table)), key=lambda i: (table[i]["ap_cava"], -i))


def score_thresholds(detector: Detector, images: Sequence[tuple[str, np.ndarray]], ground_truth) -> dict:
    """Detect on every (key, image) and evaluate: one row of the calibration table."""
    return score_setting(detector.detect, detector.settings.thresholds, images, ground_truth)


def score_setting(
    detect: Callable[[np.ndarray], Detections], point: Sequence[float], images: Sequence[tuple[str, np.ndarray]], ground_truth
) -> dict:
    """One row of a calibration table: ``detect`` (a detector built at grid ``point``) on every (key, image)."""
    return _row(point, {key: detect(image) for key, image in images}, ground_truth)


def best_setting(
    detector_factory: Callable[[tuple[float, ...]], DetectorLike],
    dataset: Dataset,
    grid: Sequence[tuple[float, ...]],
    progress: bool = True,
    name: str = "the detector",
) -> tuple[tuple[float, ...], list[dict]]:
    """Any detector's calibration: the grid point with the best ``ap_cava`` on ``dataset`` (first on
    ties) and the whole table; ``detector_factory(point)`` is built and run once per point.

    The peers (``detection.peers``) calibrate their own knobs this way, with the same evaluator
    and dev split as :func:`best_thresholds`; a point's numbers appear as ``"thresholds"`` in the table.
    """
    _require_calibration_input(grid, dataset)
    images = _decoded(dataset, progress)
    ground_truth = dataset.ground_truth()
    table, detectors = [], []
    for point in tqdm(grid, desc="calibrating", disable=not progress, unit="setting"):
        detectors.append(detector_factory(tuple(point)))
        table.append(score_setting(lambda image, d=detectors[-1]: d.detect_batch([image])[0], point, images, ground_truth))
    if all(row["n_detections"] == 0 for row in table):
        require_answers(name, detectors[0], 0, dataset)
    return tuple(grid[_best_row(table)]), table


# --- one cascade run, many thresholds ----------------------------------------------------------


@dataclass
class CascadeCandidates:
    """One image's final candidates at low RNet/ONet thresholds, before the final NMS."""

    boxes: np.ndarray  # (K, 4) after ONet's regression
    rnet_scores: np.ndarray  # (K,)
    onet_scores: np.ndarray  # (K,)

    def detections(self, rnet: float, onet: float, nms_threshold: float) -> Detections:
        """What the cascade finds with these RNet/ONet thresholds (same PNet threshold)."""
        passed = np.flatnonzero((self.rnet_scores > rnet) & (self.onet_scores > onet))
        keep = passed[C.nms_min(self.boxes[passed], self.onet_scores[passed], nms_threshold)]
        return Detections(self.boxes[keep].astype(np.float32), self.onet_scores[keep].astype(np.float32))


@torch.inference_mode()
def cascade_candidates(detector: Detector, images: Sequence[np.ndarray]) -> list[CascadeCandidates]:
    """Run ``detector`` up to RNet, then ONet on every candidate, keeping the scores of both stages.

    ``detector.settings.thresholds`` are the lowest thresholds that will be scored.
    """
    onet_threshold = detector.settings.thresholds[2]
    out = []
    for image, after_rnet in zip(images, detector.detect_batch(list(images), upto="rnet")):
        boxes = torch.as_tensor(after_rnet.boxes, dtype=torch.float32, device=detector.device).reshape(-1, 4)
        rnet_scores = torch.as_tensor(after_rnet.scores, dtype=torch.float32, device=detector.device)
        sat = C.integral_image(torch.as_tensor(image, device=detector.device).permute(2, 0, 1)[None])
        kept, crops = C.stage_crops(sat, boxes, torch.zeros(len(boxes), dtype=torch.long, device=detector.device), "onet")
        if len(kept) == 0:
            out.append(CascadeCandidates(np.zeros((0, 4)), np.zeros(0), np.zeros(0)))
            continue
        offsets, _landmarks, probs = detector.forward["onet"](C.normalize(crops).contiguous(memory_format=torch.channels_last))
        final = C.regress(boxes[kept], offsets).cpu().numpy()
        onet_scores = probs.cpu().numpy()
        passed = onet_scores > onet_threshold
        out.append(CascadeCandidates(final[passed], rnet_scores[kept].cpu().numpy()[passed], onet_scores[passed]))
    return out


def _score_group(detector: Detector, group: Sequence[Thresholds], images, ground_truth) -> list[dict]:
    """Rows for grid points sharing ``detector``'s PNet threshold, from one cascade run."""
    candidates = []
    for start in range(0, len(images), BATCH_IMAGES):
        batch = images[start : start + BATCH_IMAGES]
        candidates += zip([k for k, _ in batch], cascade_candidates(detector, [im for _, im in batch]))
    nms_threshold = detector.settings.nms_thresholds[3]
    return [
        _row(t, {key: c.detections(t[1], t[2], nms_threshold) for key, c in candidates}, ground_truth) for t in group
    ]


def best_thresholds(
    detector_factory: Callable[[Thresholds], Detector],
    dataset: Dataset,
    grid: Sequence[Thresholds] = DEFAULT_GRID,
    progress: bool = True,
) -> tuple[Thresholds, list[dict]]:
    """The grid point with the best ``ap_cava`` on ``dataset`` (first one on ties) and the whole table.

    ``detector_factory(thresholds)`` builds the detector to score, e.g.
    ``lambda t: Detector(settings=DetectorSettings(thresholds=t))`` for the pretrained model.
    It is called once per distinct PNet threshold (with the lowest RNet/ONet thresholds of the
    grid); a factory that does not return a ``Detector`` is called, and run, per grid point.
    """
    _require_calibration_input(grid, dataset)
    grid = [tuple(float(t) for t in point) for point in grid]
    images = _decoded(dataset, progress)
    ground_truth = dataset.ground_truth()
    rows: dict[int, dict] = {}
    by_pnet: dict[float, list[int]] = {}
    for i, point in enumerate(grid):
        by_pnet.setdefault(point[0], []).append(i)
    for pnet, members in tqdm(by_pnet.items(), desc="calibrating thresholds", disable=not progress, unit="pnet threshold"):
        lowest = (pnet, min(grid[i][1] for i in members), min(grid[i][2] for i in members))
        detector = detector_factory(lowest)
        if isinstance(detector, Detector):
            group_rows = _score_group(detector, [grid[i] for i in members], images, ground_truth)
        else:
            group_rows = [score_thresholds(detector_factory(grid[i]), images, ground_truth) for i in members]
        rows.update(zip(members, group_rows))
    table = [rows[i] for i in range(len(grid))]
    return grid[_best_row(table)], table


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
