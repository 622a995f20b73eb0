"""MTCNN's training losses: face/non-face cross-entropy with online hard-example mining, plus box regression.

Labels: 1 positive, 0 negative, -1 part face. Classification uses positives and negatives;
box regression uses positives and part faces (negatives have no box to regress to).

Soft targets (distillation, ``facecmp finetune --retain ... --retain-targets teacher``): a sample
may carry a teacher's face probability instead of a label to classify against; ``targets`` then
has a 5th column holding it (NaN where the label decides). Such a sample's classification loss
is the KL divergence from the teacher's two-class distribution (0 when the student agrees, so
hard-example mining ranks it with the labelled ones), whatever its label; its box target is
still its labelled one. With ``LossWeights.features`` the loop also pulls the stage's last hidden
features towards the teacher's on those samples (:func:`feature_distance`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class LossWeights:
    classification: float = 1.0
    box: float = 0.5
    # Share of the classification examples, hardest first, that the loss keeps per batch.
    hard_ratio: float = 0.7
    # Weight of a taught sample's classification loss against a labelled one's (soft targets).
    soft: float = 1.0
    # Weight of feature distillation: the mean squared distance between the stage's last hidden
    # features and its teacher's on the taught samples (0: none; needs the teacher in the loop).
    features: float = 0.0


def classification_loss(logits: torch.Tensor, labels: torch.Tensor, hard_ratio: float = 0.7,
                        soft: torch.Tensor | None = None, soft_weight: float = 1.0) -> torch.Tensor:
    """Mean over the hardest ``hard_ratio`` of the batch's classified samples: cross-entropy for
    positives and negatives, ``soft_weight`` times the KL divergence from ``soft`` (a teacher's
    face probability; NaN: none) for the samples that have one."""
    taught = torch.zeros_like(labels, dtype=torch.bool) if soft is None else ~torch.isnan(soft)
    mask = (labels >= 0) | taught
    if not mask.any():
        return logits.sum() * 0.0
    losses = F.cross_entropy(logits[mask], labels[mask].clamp_min(0), reduction="none")
    if taught.any():
        p = soft[mask].nan_to_num(0.0)
        teacher = torch.stack([1 - p, p], dim=1)
        kl = (torch.special.xlogy(teacher, teacher) - teacher * F.log_softmax(logits[mask], dim=1)).sum(1)
        losses = torch.where(taught[mask], soft_weight * kl, losses)
    keep = max(1, math.ceil(hard_ratio * len(losses)))
    return losses.topk(keep).values.mean()


def feature_distance(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean squared distance between a stage's hidden features and its teacher's on the same
    (at least one) crops: feature distillation."""
    return F.mse_loss(student, teacher)


def box_loss(predicted: torch.Tensor, targets: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean squared offset error over positives and part faces."""
    mask = labels != 0
    if not mask.any():
        return predicted.sum() * 0.0
    return F.mse_loss(predicted[mask], targets[mask])


def mtcnn_loss(
    logits: torch.Tensor, offsets: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor, weights: LossWeights = LossWeights()
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(total, classification, box)`` for ``(N, 2)`` logits and ``(N, 4)`` offsets; ``targets``
    ``(N, 4)`` box offsets, or ``(N, 5)`` with the soft targets in the last column."""
    soft = targets[:, 4] if targets.shape[1] > 4 else None
    cls = classification_loss(logits, labels, weights.hard_ratio, soft, weights.soft)
    box = box_loss(offsets, targets[:, :4], labels)
    return weights.classification * cls + weights.box * box, cls, box
