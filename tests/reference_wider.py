"""A plain, per-detection, per-threshold transliteration of WIDER FACE's Python evaluation (in our own words).

Deliberately slow and literal, loop for loop as the reference script runs: the tests check
facecmp.evaluation.wider's vectorised version against it, and benchmarks/wider_parity.py runs it
on real submission folders. Inputs are the same mappings the vectorised evaluator takes.
"""

from __future__ import annotations

import numpy as np


def reference_iou(a, b) -> float:
    """IoU of two ``x1 y1 x2 y2`` boxes with the +1 pixel convention (0 when they do not overlap)."""
    iw = min(a[2], b[2]) - max(a[0], b[0]) + 1
    if iw <= 0:
        return 0.0
    ih = min(a[3], b[3]) - max(a[1], b[1]) + 1
    if ih <= 0:
        return 0.0
    union = (a[2] - a[0] + 1) * (a[3] - a[1] + 1) + (b[2] - b[0] + 1) * (b[3] - b[1] + 1) - iw * ih
    return iw * ih / float(union)


def reference_normalise(submission):
    low, high = 1.0, 0.0
    for rows in submission.values():
        for row in rows:
            low = min(low, row[4])
            high = max(high, row[4])
    out = {}
    for key, rows in submission.items():
        new = []
        for row in rows:
            row = [float(v) for v in row]
            with np.errstate(invalid="ignore", divide="ignore"):
                row[4] = float(np.float64(row[4] - low) / np.float64(high - low))
            new.append(row)
        out[key] = new
    return out


def reference_image(pred, gt, counts, iou_threshold):
    """Per detection (file order): faces recalled so far, and whether it is a proposal."""
    pred_xyxy = [[p[0], p[1], p[0] + p[2], p[1] + p[3]] for p in pred]
    gt_xyxy = [[g[0], g[1], g[0] + g[2], g[1] + g[3]] for g in gt]
    state = [0] * len(gt)  # 0 unseen, 1 recalled, -1 hit while ignored
    recalled_so_far, is_proposal = [], []
    for box in pred_xyxy:
        ious = [reference_iou(box, g) for g in gt_xyxy]
        best = max(ious)
        face = ious.index(best)
        proposal = True
        if best >= iou_threshold:
            if not counts[face]:
                state[face] = -1
                proposal = False
            elif state[face] == 0:
                state[face] = 1
        recalled_so_far.append(sum(1 for s in state if s == 1))
        is_proposal.append(proposal)
    return recalled_so_far, is_proposal


def reference_evaluate(submission, faces, counted, iou_threshold=0.5, n_thresholds=1000):
    """``{difficulty: (ap, precision list, recall list)}`` exactly as the reference loops compute them."""
    normed = reference_normalise(submission)
    out = {}
    for difficulty, per_key in counted.items():
        n_faces = 0
        curve = [[0.0, 0.0] for _ in range(n_thresholds)]
        for key, gt in faces.items():
            pred = normed[key]
            keep = [int(i) for i in per_key[key]]
            n_faces += len(keep)
            if len(gt) == 0 or len(pred) == 0:
                continue
            counts = [i in keep for i in range(len(gt))]
            recalled_so_far, is_proposal = reference_image(pred, np.asarray(gt).tolist(), counts, iou_threshold)
            for t in range(n_thresholds):
                threshold = 1 - (t + 1) / n_thresholds
                passing = [i for i, row in enumerate(pred) if row[4] >= threshold]
                if not passing:
                    continue
                last = passing[-1]
                curve[t][0] += sum(1 for p in is_proposal[: last + 1] if p)
                curve[t][1] += recalled_so_far[last]
        precision, recall = [], []
        with np.errstate(invalid="ignore", divide="ignore"):
            for proposals, recalled in curve:
                precision.append(float(np.float64(recalled) / np.float64(proposals)))
                recall.append(float(np.float64(recalled) / np.float64(n_faces)))
        out[difficulty] = (reference_voc_ap(recall, precision), precision, recall)
    return out


def reference_voc_ap(recall, precision) -> float:
    m_rec = [0.0] + list(recall) + [1.0]
    m_pre = [0.0] + list(precision) + [0.0]
    for i in range(len(m_pre) - 1, 0, -1):
        m_pre[i - 1] = float(np.maximum(m_pre[i - 1], m_pre[i]))
    total = 0.0
    for i in range(len(m_rec) - 1):
        if m_rec[i + 1] != m_rec[i]:
            total += (m_rec[i + 1] - m_rec[i]) * m_pre[i + 1]
    return total
