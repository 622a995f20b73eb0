"""A plain, per-detection transliteration of the course's task-1 evaluator (in our own words).

It is deliberately slow and literal: the tests check facecmp.evaluation.evaluator's vectorized version
against it. Ground truth is flattened in mapping order, image after image, which plays the role
of the course's ground-truth file order.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np


def course_iou(box_a, box_b) -> float:
    """The course's IoU on inclusive integer pixels: widths and heights get +1."""
    x_a = max(box_a[0], box_b[0])
    y_a = max(box_a[1], box_b[1])
    x_b = min(box_a[2], box_b[2])
    y_b = min(box_a[3], box_b[3])
    inter = max(0, x_b - x_a + 1) * max(0, y_b - y_a + 1)
    area_a = (box_a[2] - box_a[0] + 1) * (box_a[3] - box_a[1] + 1)
    area_b = (box_b[2] - box_b[0] + 1) * (box_b[3] - box_b[1] + 1)
    return inter / float(area_a + area_b - inter)


def course_ap(rec, prec, envelope: bool = False) -> float:
    """The course's AP. With ``envelope=False`` the envelope loop does not run, as in the course
    (its ``range(len - 1, -1, 1)`` is empty); ``envelope=True`` runs the intended backward loop (VOC)."""
    m_rec = [0.0] + [float(r) for r in rec] + [1.0]
    m_pre = [0.0] + [float(p) for p in prec] + [0.0]
    if envelope:
        for i in range(len(m_pre) - 2, -1, -1):
            m_pre[i] = max(m_pre[i], m_pre[i + 1])
    total = 0.0
    for i in range(1, len(m_rec)):
        if m_rec[i] != m_rec[i - 1]:
            total += (m_rec[i] - m_rec[i - 1]) * m_pre[i]
    return total


def reference_evaluate(boxes, scores, file_names, ground_truth: Mapping[str, np.ndarray], iou_threshold=0.3):
    """Return a dict: order, tp (in sorted order), rec, prec, ap_cava, ap_voc, gt_used (flat, GT order)."""
    gt_names, gt_boxes = [], []
    for key, key_boxes in ground_truth.items():
        for box in np.asarray(key_boxes).reshape(-1, 4).tolist():
            gt_names.append(key)
            gt_boxes.append(box)
    gt_used = [False] * len(gt_boxes)

    order = np.argsort(np.asarray(scores))[::-1]
    boxes = np.asarray(boxes).reshape(-1, 4)[order].tolist()
    file_names = np.asarray(file_names)[order].tolist()
    tp = [0.0] * len(order)
    fp = [0.0] * len(order)
    for d, (box, name) in enumerate(zip(boxes, file_names)):
        best_overlap, best_index = -1.0, -1
        for g, (gt_name, gt_box) in enumerate(zip(gt_names, gt_boxes)):
            if gt_name != name:
                continue
            overlap = course_iou(box, gt_box)
            if overlap > best_overlap:
                best_overlap, best_index = overlap, g
        if best_overlap >= iou_threshold and not gt_used[best_index]:
            tp[d] = 1.0
            gt_used[best_index] = True
        else:
            fp[d] = 1.0  # a duplicate, a poor overlap, or an image without faces

    cum_tp = np.cumsum(tp)
    cum_fp = np.cumsum(fp)
    rec = cum_tp / len(gt_boxes)
    prec = cum_tp / (cum_tp + cum_fp)
    return {
        "order": order,
        "tp": np.array(tp, dtype=bool),
        "rec": rec,
        "prec": prec,
        "ap_cava": course_ap(rec, prec),
        "ap_voc": course_ap(rec, prec, envelope=True),
        "gt_used": np.array(gt_used, dtype=bool),
    }
