"""COCO detection metrics beside the course's AP, computed by ``pycocotools`` (the optional extra ``coco``).

``pycocotools`` is the COCO API that defines these numbers (the leaderboard's and torchvision's
reference scripts use it), so nothing here re-implements them: we only turn our records into its
input. Faces are one class (``face``), as in the course's task 1. The keys:

=============  ==========================================================================
``ap``         AP averaged over IoU 0.50, 0.55, ..., 0.95 (COCO's primary metric)
``ap50``       AP at IoU 0.50
``ap75``       AP at IoU 0.75
``ap_small``   AP over faces of area < 32² px, ``ap_medium`` 32²–96², ``ap_large`` > 96²
``ar100``      recall averaged over the ten IoU thresholds, at most 100 detections per image
=============  ==========================================================================

A value is ``None`` where COCO reports -1: no ground-truth face in that size range.

Where COCO's AP50 and our AP at IoU 0.5 differ, and why (the tests pin the cases where they agree):

- Boxes: ours are inclusive integer pixels, COCO's continuous ``[x, y, w, h]``; we pass
  ``w = x_max - x_min + 1``, so the IoUs are identical to our default (``+1``) convention.
- Interpolation: COCO samples the monotone precision envelope at 101 recall points
  (0, 0.01, ..., 1) and averages; ``ap_voc`` integrates the same envelope over every recall step
  (all-point), and ``ap_cava`` takes no envelope at all. One face found of two at precision 1:
  ``ap_voc`` 0.5, AP50 51/101 = 0.505.
- Matching: COCO lets a detection whose best face is taken fall back to the next best free face
  of its image; the course counts it as a false positive. COCO also keeps only the 100
  highest-scoring detections per image (``maxDets``) and breaks score ties per image first.
- Size ranges filter both faces and unmatched detections by area (``ap_small`` ...); the course
  has no size ranges.
With distinct scores, at most 100 detections per image and no detection whose best face is
already taken, the matches coincide and AP50 equals the 101-point AP of our own curve exactly.
"""

from __future__ import annotations

import contextlib
import io
from typing import Mapping

import numpy as np

from facecmp.data.predictions import Predictions

KEYS = ("ap", "ap50", "ap75", "ap_small", "ap_medium", "ap_large", "ar100")
_STATS_INDEX = {"ap": 0, "ap50": 1, "ap75": 2, "ap_small": 3, "ap_medium": 4, "ap_large": 5, "ar100": 8}
INSTALL_NOTE = "COCO metrics skipped: they need pycocotools; install it with pip install 'facecmp[coco]'"


def available() -> bool:
    try:
        import pycocotools.cocoeval  # noqa: F401
    except ImportError:
        return False
    return True


def _xywh(boxes: np.ndarray) -> np.ndarray:
    """Inclusive ``x_min, y_min, x_max, y_max`` -> continuous ``x, y, w, h``."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.column_stack([b[:, 0], b[:, 1], b[:, 2] - b[:, 0] + 1.0, b[:, 3] - b[:, 1] + 1.0])


def coco_eval(preds: Predictions, ground_truth: Mapping[str, np.ndarray]):
    """pycocotools' ``COCOeval`` after ``evaluate()`` and ``accumulate()`` (``summarize()`` fills ``stats``)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    names = list(ground_truth) + sorted(set(np.unique(preds.file_names).tolist()) - set(ground_truth))
    image_id = {name: i + 1 for i, name in enumerate(names)}
    annotations = []
    for name, boxes in ground_truth.items():
        for x, y, w, h in _xywh(boxes).tolist():
            annotations.append({"id": len(annotations) + 1, "image_id": image_id[name], "category_id": 1,
                                "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0})
    gt = COCO()
    gt.dataset = {"images": [{"id": i} for i in image_id.values()], "annotations": annotations,
                  "categories": [{"id": 1, "name": "face"}]}
    rows = np.column_stack([
        [image_id[n] for n in preds.file_names.tolist()], _xywh(preds.boxes),
        np.asarray(preds.scores, dtype=np.float64), np.ones(len(preds)),
    ]) if len(preds) else np.array([[1, 0.0, 0.0, 1.0, 1.0, 0.0, 1]])  # no detections: one worthless one (AP 0)
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        gt.createIndex()
        dt = gt.loadRes(rows)
        evaluator = COCOeval(gt, dt, "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator


def coco_metrics(preds: Predictions, ground_truth: Mapping[str, np.ndarray]) -> dict[str, float | None]:
    """The seven COCO numbers of the module docstring for ``preds`` against ``key -> (K, 4)`` inclusive boxes."""
    stats = coco_eval(preds, ground_truth).stats
    return {k: (None if stats[i] < 0 else float(stats[i])) for k, i in _STATS_INDEX.items()}


def coco_metrics_or_none(preds: Predictions, ground_truth: Mapping[str, np.ndarray]) -> dict | None:
    """:func:`coco_metrics`, or None when pycocotools is not installed (see :data:`INSTALL_NOTE`)."""
    return coco_metrics(preds, ground_truth) if available() else None


def coco_table(per_variant: Mapping[str, Mapping[str, float | None]], fmt: str = "github") -> str:
    from tabulate import tabulate

    headers = ("variant", "AP@[.5:.95]", "AP50", "AP75", "AP small", "AP medium", "AP large", "AR@100")
    rows = [[name, *("-" if m[k] is None else f"{m[k]:.3f}" for k in KEYS)] for name, m in per_variant.items()]
    return tabulate(rows, headers=headers, tablefmt=fmt, disable_numparse=True)
