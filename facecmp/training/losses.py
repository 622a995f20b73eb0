"""MTCNN's training losses: face/non-face cross-entropy with online hard-example mining, plus box regression.

Labels: 1 positive, 0 negative, -1 part face. Classification uses positives and negatives;
box regression uses positives and part faces (negatives have no box to regress to).
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


def classification_loss(logits: torch.Tensor, labels: torch.Tensor, hard_ratio: float = 0.7) -> torch.Tensor:
    """Mean cross-entropy over the hardest ``hard_ratio`` of the batch's positives and negatives."""
    mask = labels >= 0
    if not mask.any():
        return logits.sum() * 0.0
    losses = F.cross_entropy(logits[mask], labels[mask], reduction="none")
    keep = max(1, math.ceil(hard_ratio * len(losses)))
    return losses.topk(keep).values.mean()


def box_loss(predicted: torch.Tensor, targets: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean squared offset error over positives and part faces."""
    mask = labels != 0
    if not mask.any():
        return predicted.sum() * 0.0
    return F.mse_loss(predicted[mask], targets[mask])


def mtcnn_loss(
    logits: torch.Tensor, offsets: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor, weights: LossWeights = LossWeights()
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(total, classification, box)`` for ``(N, 2)`` logits and ``(N, 4)`` offsets."""
    cls = classification_loss(logits, labels, weights.hard_ratio)
    box = box_loss(offsets, targets, labels)
    return weights.classification * cls + weights.box * box, cls, box
