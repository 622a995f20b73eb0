"""WIDER FACE's official evaluation (easy / medium / hard AP), vectorised; pure: arrays in, numbers out.

The rules, as the official eval_tools and its widely used Python port compute them:

- **Scores** are min-max normalised over the whole submission (every image of it, in the ground
  truth or not), with the range started at [1, 0]: ``min = min(1, lowest score)``,
  ``max = max(0, highest score)``. Equal scores give 0/0: no threshold is ever reached.
- **Matching**, per image, the detections in *file order*: each takes the face of largest IoU
  (``x2 = x + w``, then the +1 pixel convention; the first face on ties). At IoU >= 0.5 on a face
  the difficulty ignores, the detection is not a proposal at all; on a counted face it recalls it
  (a second detection on it is a false positive); below 0.5 it is a false positive.
- **Images without faces, or without detections,** add nothing to the curve (a detection on a
  face-less image is no false positive); their counted faces still count in the recall.
- **The curve** is sampled at 1,000 thresholds ``1 - (t + 1) / 1000``: at each, an image
  contributes the proposals and recalled faces *up to its last detection scoring at least the
  threshold, in file order* (so unsorted files count lower-scored detections before it too).
  Precision = recalled / proposals, recall = recalled / counted faces.
- **AP** is VOC's area under the monotone envelope of that curve.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

DIFFICULTIES = ("easy", "medium", "hard")
IOU_THRESHOLD = 0.5
N_THRESHOLDS = 1000


@dataclass(frozen=True)
class WiderCurve:
    """One difficulty: AP and the sampled curve (index t: threshold ``1 - (t + 1) / 1000``)."""

    ap: float
    precision: np.ndarray
    recall: np.ndarray
    n_faces: int  # the faces that count at this difficulty, over the evaluated images


@dataclass(frozen=True)
class WiderEvaluation:
    curves: Mapping[str, WiderCurve]
    n_images: int
    n_detections: int

    def summary(self) -> dict:
        out: dict = {d: float(c.ap) for d, c in self.curves.items()}
        out["n_faces"] = {d: c.n_faces for d, c in self.curves.items()}
        out.update(n_images=self.n_images, n_detections=self.n_detections, iou=IOU_THRESHOLD, thresholds=N_THRESHOLDS)
        return out


def thresholds(n: int = N_THRESHOLDS) -> np.ndarray:
    """``1 - (t + 1) / n`` for t = 0 .. n-1: 0.999 down to 0.0 (the same doubles as the reference's loop)."""
    return 1 - np.arange(1, n + 1) / n


def normalise_scores(submission: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Copies of the ``(N, 5)`` arrays with column 4 min-max normalised over all of them."""
    scores = [np.asarray(v, dtype=np.float64)[:, 4] for v in submission.values() if len(v)]
    low, high = 1.0, 0.0
    if scores:
        every = np.concatenate(scores)
        low, high = min(float(every.min()), 1.0), max(float(every.max()), 0.0)
    out = {}
    with np.errstate(invalid="ignore", divide="ignore"):
        for key, v in submission.items():
            v = np.array(v, dtype=np.float64).reshape(-1, 5)
            v[:, 4] = (v[:, 4] - low) / (high - low) if len(v) else v[:, 4]
            out[key] = v
    return out


def overlaps(pred_xywh: np.ndarray, gt_xywh: np.ndarray) -> np.ndarray:
    """The protocol's IoU, (N, K): ``x2 = x + w`` and then widths ``x2 - x1 + 1``."""
    p = np.asarray(pred_xywh, dtype=np.float64).reshape(-1, 1, 4)
    g = np.asarray(gt_xywh, dtype=np.float64).reshape(1, -1, 4)
    px2, py2 = p[..., 0] + p[..., 2], p[..., 1] + p[..., 3]
    gx2, gy2 = g[..., 0] + g[..., 2], g[..., 1] + g[..., 3]
    iw = np.minimum(px2, gx2) - np.maximum(p[..., 0], g[..., 0]) + 1
    ih = np.minimum(py2, gy2) - np.maximum(p[..., 1], g[..., 1]) + 1
    inter = iw * ih
    union = (px2 - p[..., 0] + 1) * (py2 - p[..., 1] + 1) + (gx2 - g[..., 0] + 1) * (gy2 - g[..., 1] + 1) - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((iw > 0) & (ih > 0), inter / union, 0.0)


def last_passing(scores: np.ndarray, thr: np.ndarray) -> np.ndarray:
    """Per threshold, the index (in file order) of the last detection scoring >= it; -1 when none does."""
    ascending = thr[::-1]
    passed = np.searchsorted(ascending, scores, side="right")  # how many thresholds each score reaches
    passed[np.isnan(scores)] = 0
    first = len(thr) - passed  # the first threshold index it reaches (len(thr): none)
    last = np.full(len(thr) + 1, -1, dtype=np.int64)
    np.maximum.at(last, first, np.arange(len(scores)))
    return np.maximum.accumulate(last)[: len(thr)]


def voc_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    m_rec = np.concatenate(([0.0], recall, [1.0]))
    m_pre = np.maximum.accumulate(np.concatenate(([0.0], precision, [0.0]))[::-1])[::-1]
    i = np.flatnonzero(m_rec[1:] != m_rec[:-1])
    return float(np.sum((m_rec[i + 1] - m_rec[i]) * m_pre[i + 1]))


def evaluate_wider(
    submission: Mapping[str, np.ndarray],
    faces: Mapping[str, np.ndarray],
    counted: Mapping[str, Mapping[str, np.ndarray]],
    *,
    iou_threshold: float = IOU_THRESHOLD,
    n_thresholds: int = N_THRESHOLDS,
) -> WiderEvaluation:
    """AP per difficulty of ``submission`` (``key -> (N, 5) x y w h score``, file order) on the images
    of ``faces`` (``key -> (K, 4) x y w h``), ``counted[difficulty][key]`` the 0-based indices of
    the faces that count. Every image of ``faces`` must be in ``submission`` (an empty array for an
    image without detections); the submission's other images only take part in the normalisation."""
    absent = [k for k in faces if k not in submission]
    if absent:
        raise KeyError(f"{len(absent)} ground-truth images have no entry in the submission, e.g. {absent[:3]}")
    normed = normalise_scores(submission)
    thr = thresholds(n_thresholds)
    proposals = {d: np.zeros(n_thresholds) for d in counted}
    recalled = {d: np.zeros(n_thresholds) for d in counted}
    n_faces = {d: 0 for d in counted}
    for key, gt in faces.items():
        pred = normed[key]
        for d in counted:
            n_faces[d] += len(counted[d][key])
        if len(gt) == 0 or len(pred) == 0:
            continue
        iou = overlaps(pred[:, :4], gt)
        best, face = iou.max(axis=1), iou.argmax(axis=1)
        hit = best >= iou_threshold
        last = last_passing(pred[:, 4], thr)
        reached = last >= 0
        at = np.where(reached, last, 0)
        for d in counted:
            counts = np.zeros(len(gt), dtype=bool)
            counts[counted[d][key]] = True
            proposal = ~(hit & ~counts[face])
            claims = np.flatnonzero(hit & counts[face])
            new = np.zeros(len(pred))
            new[claims[np.unique(face[claims], return_index=True)[1]]] = 1
            proposals[d] += np.where(reached, np.cumsum(proposal)[at], 0)
            recalled[d] += np.where(reached, np.cumsum(new)[at], 0)
    curves = {}
    with np.errstate(invalid="ignore", divide="ignore"):
        for d in counted:
            precision = recalled[d] / proposals[d]
            recall = recalled[d] / n_faces[d]
            curves[d] = WiderCurve(voc_ap(recall, precision), precision, recall, n_faces[d])
    return WiderEvaluation(curves, len(faces), int(sum(len(normed[k]) for k in faces)))


@dataclass(frozen=True)
class WiderScore:
    """A submission scored on the ground-truth images it covers, and what did not match."""

    evaluation: WiderEvaluation
    missing: tuple[str, ...]  # ground-truth images without a prediction file (scored only with allow_missing)
    strangers: tuple[str, ...]  # prediction files for images not in the ground truth

    def warnings(self, pred: str, gt: str) -> list[str]:
        out = []
        if self.missing:
            out.append(f"{len(self.missing)} ground-truth images of {gt} have no prediction file in {pred} "
                       f"({_some(self.missing)}); scoring the {self.evaluation.n_images} present ones only")
        if self.strangers:
            out.append(f"{len(self.strangers)} prediction files in {pred} are for images not in {gt} ({_some(self.strangers)}): "
                       "not scored, as in the official evaluation, but their scores take part in the normalisation")
        return out


def _some(keys, n: int = 3) -> str:
    return ", ".join(keys[:n]) + (", ..." if len(keys) > n else "")


def score_submission(submission: Mapping[str, np.ndarray], gt, *, allow_missing: bool = False,
                     pred: str = "the submission") -> WiderScore:
    """Score ``submission`` on ``gt`` (a :class:`facecmp.data.wider_protocol.WiderGroundTruth`).

    Ground-truth images without a prediction file are a DataError naming them, unless
    ``allow_missing``: then they are left out (evaluating the present images only)."""
    from facecmp.errors import DataError

    missing = tuple(k for k in gt.keys if k not in submission)
    strangers = tuple(k for k in submission if k not in gt.boxes)
    if missing and not allow_missing:
        raise DataError(f"{gt.source}: {len(missing)} of its {len(gt.keys)} ground-truth images have no prediction file in "
                        f"{pred} ({_some(missing)}); predict every image (one without faces is a file with count 0), or "
                        "score the present images only with --allow-missing")
    if missing:
        gt = gt.restricted_to(k for k in gt.keys if k in submission)
        if not gt.keys:
            raise DataError(f"{pred}: none of its {len(submission)} prediction files is for an image of {gt.source} "
                            f"({_some(strangers)}); are the prediction folders named <event>/<name>.txt as in the ground truth?")
    return WiderScore(evaluate_wider(submission, gt.boxes, gt.counted), missing, strangers)
