"""Choosing the cascade's stage thresholds on a dev split with ground truth.

A grid of ``(pnet, rnet, onet)`` thresholds, each scored by the course AP (``ap_cava``) on the
dev images. The same search runs for the pretrained model, so the study compares a fine-tuned
model at its calibrated thresholds with the pretrained model at *its* best ones.

Scoring a grid point does not re-run the nets. For one PNet threshold the cascade runs once
with the grid's lowest RNet and ONet thresholds, keeping every final candidate's RNet score,
ONet score and regressed box (:class:`CascadeCandidates`). A higher RNet/ONet threshold then
keeps exactly the candidates whose scores pass it: greedy NMS visits boxes in score order, so
the boxes above a threshold suppress one another the same way whether or not lower-scoring
boxes are present. The final (min-overlap) NMS is re-run per RNet threshold, because removing
candidates with RNet can change which boxes it keeps; its boxes are visited in ONet-score order, so
one run at the grid's lowest ONet threshold, cut at each higher one, serves them all
(:meth:`CascadeCandidates.final_nms_by_onet`; an image whose scores tie is run per ONet threshold). The
result equals ``Detector.detect`` at that grid point (tests check it).

The PNet thresholds share one run too (:func:`candidates_by_pnet`): PNet's two NMS steps visit
boxes in PNet-score order, so PNet at a higher threshold proposes exactly the boxes PNet at the
lowest one proposes with a score that passes it; RNet and ONet score each box on its own crop.
So PNet and RNet run once, at the lowest thresholds; per PNet threshold only RNet's NMS is re-run
(its boxes are visited in RNet-score order, and which boxes are present changes what it keeps),
and ONet runs once over the union of what passes for any PNet threshold. (Equal up to float
rounding: NMS shifts each image's boxes by an offset that depends on the largest coordinate present,
so an IoU within ~1e-6 of an NMS threshold may round the other way; the test checks the detections
are the same.)
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
from facecmp.detection.detector import REFINE_BATCH, Detector, run_padded
from facecmp.data.predictions import Predictions
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
    return _scored(thresholds, evaluate(detections_to_predictions(per_image), ground_truth))


def _scored(thresholds, result) -> dict:
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
        return self._kept(passed[C.nms_min(self.boxes[passed], self.onet_scores[passed], nms_threshold)])

    def final_nms_by_onet(self, rnet: float, onets: Sequence[float], nms_threshold: float) -> Detections | dict[float, Detections]:
        """What the cascade keeps at one RNet threshold and the lowest of ``onets``; at a higher ONet
        threshold it keeps those of these boxes whose score passes it. Or, for an image whose scores
        tie, :meth:`detections` at each threshold of ``onets``.

        The final NMS visits boxes in ONet-score order, so the boxes above a higher ONet threshold are
        a prefix of that order and keep what they kept at the lowest one. Exact when no two boxes share
        a score (else the sort may order ties differently in the smaller set).
        """
        lowest = min(onets)
        passed = np.flatnonzero((self.rnet_scores > rnet) & (self.onet_scores > lowest))
        scores = self.onet_scores[passed]
        if len(np.unique(scores)) < len(scores):
            return {onet: self.detections(rnet, onet, nms_threshold) for onet in onets}
        return self._kept(passed[C.nms_min(self.boxes[passed], scores, nms_threshold)])

    def _kept(self, keep: np.ndarray) -> Detections:
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


def _stage_outputs(detector: Detector, stage: str, sat: torch.Tensor, boxes: torch.Tensor, inds: torch.Tensor):
    """``stage``'s outputs for the crops of ``boxes`` (as ``Detector.classify`` runs them): ``(kept index, outputs)``."""
    kept_all, outs = [], []
    for start in range(0, len(boxes), REFINE_BATCH):
        sl = slice(start, start + REFINE_BATCH)
        kept, crops = C.stage_crops(sat, boxes[sl], inds[sl], stage)
        if len(kept):
            kept_all.append(kept + start)
            outs.append(run_padded(detector.forward[stage], C.normalize(crops)))
    if not outs:
        return None, None
    return torch.cat(kept_all), tuple(torch.cat(parts) for parts in zip(*outs))


def _empty_candidates() -> CascadeCandidates:
    return CascadeCandidates(np.zeros((0, 4)), np.zeros(0), np.zeros(0))


@torch.inference_mode()
def candidates_by_pnet(detector: Detector, images: Sequence[np.ndarray], pnet_thresholds: Sequence[float]) -> dict[float, list[CascadeCandidates]]:
    """:func:`cascade_candidates` for every PNet threshold of ``pnet_thresholds`` (each at least
    ``detector``'s own) from one run of PNet and RNet over ``images`` and one of ONet (module docstring)."""
    s = detector.settings
    out = {p: [_empty_candidates() for _ in images] for p in pnet_thresholds}
    for members in _grouped(range(len(images)), lambda i: images[i].shape).values():
        imgs = torch.as_tensor(np.stack([images[i] for i in members]), device=detector.device).permute(0, 3, 1, 2)
        sat = C.integral_image(imgs)
        boxes, pnet_scores, inds = detector._propose(sat)
        kept, rnet_out = _stage_outputs(detector, "rnet", sat, boxes, inds)
        if kept is None:
            continue
        boxes, pnet_scores, inds = boxes[kept], pnet_scores[kept], inds[kept]
        offsets, rnet_scores = rnet_out
        refined = C.square(C.regress(boxes, offsets))  # row by row: the boxes ONet would crop
        passed_rnet = rnet_scores > s.thresholds[1]
        # Per PNet threshold: RNet's NMS over what passes, in its own order (the detector's).
        order = {}
        for p in pnet_thresholds:
            passed = torch.nonzero(passed_rnet & (pnet_scores >= p)).flatten()
            order[p] = passed[C.batched_nms(boxes[passed], rnet_scores[passed], inds[passed], s.nms_thresholds[2])]
        union = torch.unique(torch.cat(list(order.values())))
        kept, onet_out = _stage_outputs(detector, "onet", sat, refined[union], inds[union])
        if kept is None:
            continue
        onet_offsets, _landmarks, onet_probs = onet_out
        rows = union[kept]
        final = C.regress(refined[rows], onet_offsets).cpu().numpy()
        onet_scores = onet_probs.cpu().numpy()
        position = torch.full((len(boxes),), -1, dtype=torch.long)
        position[rows.cpu()] = torch.arange(len(rows))
        rnet_np, inds_np = rnet_scores.cpu().numpy(), inds.cpu().numpy()
        for p, chosen in order.items():
            chosen = chosen.cpu().numpy()
            at = position.numpy()[chosen]
            chosen, at = chosen[at >= 0], at[at >= 0]
            passed = onet_scores[at] > s.thresholds[2]
            chosen, at = chosen[passed], at[passed]
            for b, i in enumerate(members):
                mine = inds_np[chosen] == b
                out[p][i] = CascadeCandidates(final[at[mine]], rnet_np[chosen[mine]], onet_scores[at[mine]])
    return out


def grid_by_pnet(grid: Sequence[Thresholds]) -> tuple[dict[float, list[int]], Thresholds]:
    """The grid's point indices per PNet threshold, and the grid's lowest thresholds: the one
    detector whose cascade run scores every point (``candidates_by_pnet``)."""
    return _grouped(range(len(grid)), lambda i: grid[i][0]), tuple(min(point[k] for point in grid) for k in range(3))


def _grouped(indices, key) -> dict:
    """``indices`` grouped by ``key(index)``, in order of first appearance."""
    groups: dict = {}
    for i in indices:
        groups.setdefault(key(i), []).append(i)
    return groups


@dataclass
class _OnetCuts:
    """Every dev image's detections at one PNet and one RNet threshold, image after image in flat
    arrays, from which each ONet threshold's predictions are one mask: a row with ``only_at`` NaN is
    kept at every ONet threshold its score passes, any other row at that threshold alone (an image
    whose scores tie, :meth:`CascadeCandidates.final_nms_by_onet`)."""

    boxes: np.ndarray
    scores: np.ndarray
    names: np.ndarray
    only_at: np.ndarray

    @classmethod
    def build(cls, found: Sequence[tuple[str, CascadeCandidates]], rnet: float, onets: Sequence[float], nms_threshold: float):
        parts = []
        for key, candidates in found:
            kept = candidates.final_nms_by_onet(rnet, onets, nms_threshold)
            for only_at, d in kept.items() if isinstance(kept, dict) else [(np.nan, kept)]:
                parts.append((d.boxes.reshape(-1, 4), d.scores, np.full(len(d), key), np.full(len(d), only_at)))
        if not parts:
            return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, str), np.zeros(0))
        return cls(*(np.concatenate(column) for column in zip(*parts)))

    def predictions(self, onet: float) -> Predictions:
        """Exactly ``detections_to_predictions`` of every image's ``detections(rnet, onet, ...)``."""
        keep = np.where(np.isnan(self.only_at), self.scores > onet, self.only_at == onet)
        return Predictions(self.boxes[keep].astype(np.float64), self.scores[keep].astype(np.float64), self.names[keep])


def _score_all_groups(detector: Detector, by_pnet: dict[float, list[int]], grid, images, ground_truth,
                      progress: bool = False) -> dict[int, dict]:
    """Rows for every grid point from one cascade run (:func:`candidates_by_pnet`) at the grid's lowest thresholds."""
    found: dict[float, list] = {p: [] for p in by_pnet}
    starts = range(0, len(images), BATCH_IMAGES)
    for start in tqdm(starts, desc="calibrating: cascade on dev images", disable=not progress, unit="batch"):
        batch = images[start : start + BATCH_IMAGES]
        for p, candidates in candidates_by_pnet(detector, [im for _, im in batch], list(by_pnet)).items():
            found[p] += zip([k for k, _ in batch], candidates)
    nms_threshold = detector.settings.nms_thresholds[3]
    rows = {}
    scoring = tqdm(total=len(grid), desc="calibrating: scoring thresholds", disable=not progress, unit="setting")
    for p, members in by_pnet.items():
        # one final NMS per RNet threshold serves its ONet thresholds
        for r, points in _grouped(members, lambda i: grid[i][1]).items():
            cuts = _OnetCuts.build(found[p], r, sorted({grid[i][2] for i in points}), nms_threshold)
            for i in points:
                rows[i] = _scored(grid[i], evaluate(cuts.predictions(grid[i][2]), ground_truth))
            scoring.update(len(points))
    scoring.close()
    return rows


def best_thresholds(
    detector_factory: Callable[[Thresholds], Detector],
    dataset: Dataset,
    grid: Sequence[Thresholds] = DEFAULT_GRID,
    progress: bool = True,
) -> tuple[Thresholds, list[dict]]:
    """The grid point with the best ``ap_cava`` on ``dataset`` (first one on ties) and the whole table.

    ``detector_factory(thresholds)`` builds the detector to score, e.g.
    ``lambda t: Detector(settings=DetectorSettings(thresholds=t))`` for the pretrained model.
    It is called once, with the grid's lowest thresholds, and that one cascade run scores every
    point (module docstring); a factory that does not return a ``Detector`` is called, and run,
    per grid point.
    """
    _require_calibration_input(grid, dataset)
    grid = [tuple(float(t) for t in point) for point in grid]
    images = _decoded(dataset, progress)
    ground_truth = dataset.ground_truth()
    rows: dict[int, dict] = {}
    by_pnet, lowest = grid_by_pnet(grid)
    detector = detector_factory(lowest)
    if isinstance(detector, Detector):
        rows = _score_all_groups(detector, by_pnet, grid, images, ground_truth, progress)
    else:
        for i in tqdm(range(len(grid)), desc="calibrating thresholds", disable=not progress, unit="setting"):
            rows[i] = score_thresholds(detector_factory(grid[i]), images, ground_truth)
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
