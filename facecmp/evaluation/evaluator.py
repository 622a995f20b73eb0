"""Task-1 evaluation, identical to the course's evaluator, but vectorized.

The course's rule, per detection in ``np.argsort(scores)[::-1]`` order: take the ground-truth box
of its image with the largest IoU (the first one on ties, IoU with the +1 inclusive-pixel
convention); if that IoU >= threshold and the box is still free, the detection is a true
positive and takes the box; otherwise (box already taken, IoU too low, image without faces) it
is a false positive. A duplicate never falls back to another box.

Because the candidate box of a detection does not depend on which boxes are already taken, the
loop splits into (1) a best-box search that is independent per detection, and (2) "the first
detection in score order to claim a box wins", which is ``np.unique(..., return_index=True)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from facecmp.errors import DataError
from facecmp.data.predictions import Predictions

CONVENTIONS = ("inclusive", "continuous")
# IoU pairs computed per chunk in the best-box search (bounds memory to a few hundred MB).
_CHUNK_PAIRS = 2_000_000


def _offset(convention: str) -> float:
    if convention == "inclusive":
        return 1.0  # the course's integer pixels: width = x_max - x_min + 1
    if convention == "continuous":
        return 0.0
    raise ValueError(f"unknown IoU convention {convention!r}; use one of {CONVENTIONS}")


def pairwise_iou(a: np.ndarray, b: np.ndarray, convention: str = "inclusive") -> np.ndarray:
    """IoU of every box of ``a`` with every box of ``b``: shape (len(a), len(b)), float64.

    ``inclusive``: the course's +1 convention (``w = x2 - x1 + 1``); ``continuous``: ``w = x2 - x1``.
    Two zero-area boxes have IoU 0.
    """
    import torch
    from torchvision.ops import box_iou

    shift = np.array([0.0, 0.0, 1.0, 1.0]) * _offset(convention)
    ta = torch.from_numpy(np.asarray(a, dtype=np.float64).reshape(-1, 4) + shift)
    tb = torch.from_numpy(np.asarray(b, dtype=np.float64).reshape(-1, 4) + shift)
    return np.nan_to_num(box_iou(ta, tb).numpy(), nan=0.0)


def _iou_broadcast(a: np.ndarray, b: np.ndarray, offset: float) -> np.ndarray:
    """IoU of boxes ``a[..., :]`` with ``b[..., :]`` under numpy broadcasting (the course's formula)."""
    iw = np.maximum(0.0, np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]) + offset)
    ih = np.maximum(0.0, np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]) + offset)
    inter = iw * ih
    area_a = (a[..., 2] - a[..., 0] + offset) * (a[..., 3] - a[..., 1] + offset)
    area_b = (b[..., 2] - b[..., 0] + offset) * (b[..., 3] - b[..., 1] + offset)
    union = area_a + area_b - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def average_precision_cava(recall: np.ndarray, precision: np.ndarray) -> float:
    """The course's AP: the raw step sum of precision at each recall increase.

    The course code meant to take the precision envelope first, but its loop
    ``range(len(m_pre) - 1, -1, 1)`` is empty, so no envelope is applied. Reproduced as is.
    """
    m_rec = np.concatenate(([0.0], np.asarray(recall, dtype=np.float64), [1.0]))
    m_pre = np.concatenate(([0.0], np.asarray(precision, dtype=np.float64), [0.0]))
    return _step_sum(m_rec, m_pre)


def average_precision_voc(recall: np.ndarray, precision: np.ndarray) -> float:
    """PASCAL VOC (2010+) AP: area under the monotone precision envelope."""
    m_rec = np.concatenate(([0.0], np.asarray(recall, dtype=np.float64), [1.0]))
    m_pre = np.concatenate(([0.0], np.asarray(precision, dtype=np.float64), [0.0]))
    m_pre = np.maximum.accumulate(m_pre[::-1])[::-1]
    return _step_sum(m_rec, m_pre)


def _step_sum(m_rec: np.ndarray, m_pre: np.ndarray) -> float:
    i = np.flatnonzero(m_rec[1:] != m_rec[:-1]) + 1
    return float(np.sum((m_rec[i] - m_rec[i - 1]) * m_pre[i]))


@dataclass
class Evaluation:
    """The outcome of matching detections to ground truth at one IoU threshold."""

    ap_cava: float
    ap_voc: float
    precision: np.ndarray  # cumulative, in descending-score order
    recall: np.ndarray  # cumulative, in descending-score order
    n_detections: int
    n_ground_truth: int
    n_true_positives: int
    is_true_positive: np.ndarray  # bool, in the input order of the predictions
    gt_matched: dict[str, np.ndarray] = field(default_factory=dict)  # key -> bool per GT box
    iou_threshold: float = 0.3
    convention: str = "inclusive"

    @property
    def final_recall(self) -> float:
        """Recall with all detections kept (0 without detections)."""
        return float(self.recall[-1]) if len(self.recall) else 0.0

    @property
    def final_precision(self) -> float:
        """Precision with all detections kept (0 without detections)."""
        return float(self.precision[-1]) if len(self.precision) else 0.0

    def summary(self) -> dict:
        return {
            "ap_cava": float(self.ap_cava),
            "ap_voc": float(self.ap_voc),
            "recall": self.final_recall,
            "precision": self.final_precision,
            "n_detections": int(self.n_detections),
            "n_ground_truth": int(self.n_ground_truth),
            "n_true_positives": int(self.n_true_positives),
        }


@dataclass
class _FlatGroundTruth:
    """All GT boxes in one (G, 4) array, image after image; image i owns rows starts[i]:starts[i]+counts[i]."""

    keys: list[str]
    boxes: np.ndarray
    starts: np.ndarray
    counts: np.ndarray

    @classmethod
    def build(cls, ground_truth: Mapping[str, np.ndarray]) -> "_FlatGroundTruth":
        keys = list(ground_truth)
        per_image = [np.asarray(ground_truth[k], dtype=np.float64).reshape(-1, 4) for k in keys]
        counts = np.array([len(b) for b in per_image], dtype=np.int64)
        starts = np.concatenate(([0], np.cumsum(counts)[:-1])).astype(np.int64) if keys else counts
        boxes = np.concatenate(per_image) if per_image else np.zeros((0, 4))
        return cls(keys, boxes, starts, counts)

    def image_index(self, file_names: np.ndarray) -> np.ndarray:
        """Index into ``keys`` of each file name, -1 for names without ground truth."""
        lookup = {k: i for i, k in enumerate(self.keys)}
        names = np.asarray(file_names).tolist()
        return np.fromiter((lookup.get(k, -1) for k in names), dtype=np.int64, count=len(names))

    def split(self, flags: np.ndarray) -> dict[str, np.ndarray]:
        return {k: flags[s : s + c].copy() for k, s, c in zip(self.keys, self.starts, self.counts)}


def unknown_keys(preds: Predictions, ground_truth: Mapping[str, np.ndarray]) -> list[str]:
    """Image names that have detections but no entry in the ground truth (sorted, unique)."""
    return sorted(set(np.unique(preds.file_names).tolist()) - set(ground_truth))


def evaluate(
    preds: Predictions,
    ground_truth: Mapping[str, np.ndarray],
    iou_threshold: float = 0.3,
    convention: str = "inclusive",
) -> Evaluation:
    """Match ``preds`` to ``ground_truth`` (``key -> (K, 4) boxes``) exactly as the course does.

    Detections on images missing from ``ground_truth`` count as false positives.
    """
    offset = _offset(convention)
    if not 0.0 <= iou_threshold <= 1.0:
        raise ValueError(f"iou_threshold must be in [0, 1], got {iou_threshold}")
    gt = _FlatGroundTruth.build(ground_truth)
    if len(gt.boxes) == 0:
        raise DataError(
            "the ground truth has no face boxes, so recall and AP are undefined; "
            "evaluate on a set of images that contains at least one annotated face."
        )
    order = np.argsort(preds.scores)[::-1]  # exactly the course's call, so score ties fall the same way
    best_gt, best_iou = _best_ground_truth(preds.boxes, gt.image_index(preds.file_names), gt, offset)
    claim = np.where(best_iou >= iou_threshold, best_gt, -1)
    tp_sorted = _first_claims(claim[order])

    cum_tp = np.cumsum(tp_sorted, dtype=np.float64)
    cum_fp = np.cumsum(~tp_sorted, dtype=np.float64)
    recall = cum_tp / len(gt.boxes)
    with np.errstate(invalid="ignore"):
        precision = cum_tp / (cum_tp + cum_fp)

    is_tp = np.zeros(len(preds), dtype=bool)
    is_tp[order] = tp_sorted
    matched = np.zeros(len(gt.boxes), dtype=bool)
    matched[claim[order][tp_sorted]] = True
    return Evaluation(
        ap_cava=average_precision_cava(recall, precision),
        ap_voc=average_precision_voc(recall, precision),
        precision=precision,
        recall=recall,
        n_detections=len(preds),
        n_ground_truth=len(gt.boxes),
        n_true_positives=int(tp_sorted.sum()),
        is_true_positive=is_tp,
        gt_matched=gt.split(matched),
        iou_threshold=float(iou_threshold),
        convention=convention,
    )


def _best_ground_truth(
    boxes: np.ndarray, image: np.ndarray, gt: _FlatGroundTruth, offset: float
) -> tuple[np.ndarray, np.ndarray]:
    """Per detection: the flat index of the GT box of its image with the largest IoU (first on ties), and
    that IoU; (-1, -1.0) when its image has no GT. Detections are grouped by their image's box count so
    each group is a dense (rows, count) IoU computation without padding."""
    boxes = np.asarray(boxes, dtype=np.float64)
    best_gt = np.full(len(boxes), -1, dtype=np.int64)
    best_iou = np.full(len(boxes), -1.0)
    n_boxes = np.where(image >= 0, gt.counts[np.maximum(image, 0)], 0)
    for count in np.unique(n_boxes[n_boxes > 0]):
        rows_all = np.flatnonzero(n_boxes == count)
        step = max(1, _CHUNK_PAIRS // int(count))
        for lo in range(0, len(rows_all), step):
            rows = rows_all[lo : lo + step]
            first = gt.starts[image[rows]]
            candidates = first[:, None] + np.arange(count)
            iou = _iou_broadcast(boxes[rows, None, :], gt.boxes[candidates], offset)
            k = np.argmax(iou, axis=1)  # first maximum, like the course's strict ">" scan
            best_gt[rows] = first + k
            best_iou[rows] = iou[np.arange(len(rows)), k]
    return best_gt, best_iou


def _first_claims(claims: np.ndarray) -> np.ndarray:
    """True where a detection is the first (in the given order) to claim its GT box; -1 claims nothing."""
    is_first = np.zeros(len(claims), dtype=bool)
    valid = np.flatnonzero(claims >= 0)
    _, first = np.unique(claims[valid], return_index=True)
    is_first[valid[first]] = True
    return is_first
