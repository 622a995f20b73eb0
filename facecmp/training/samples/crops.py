"""One image's training crops: where the square crops go and how each is labelled.

The MTCNN recipe: for every face, jittered square crops labelled by their IoU with the faces
of the image (positive >= 0.65, part face 0.4-0.65, the 0.3-0.4 band discarded), plus
negatives (IoU < 0.3 with *every* face) taken anywhere in the image and near faces. Crops are
area-resampled to ``crop_size`` (12 for PNet, 24/48 for RNet/ONet) and stored as uint8; they
are normalised only when loaded (``samples.dataset``).

Box targets are the offsets PNet regresses, normalised by the crop side ``s``:
``((gt_x1 - x1) / s, (gt_y1 - y1) / s, (gt_x2 - x2) / s, (gt_y2 - y2) / s)``, in continuous
pixel coordinates where a crop covers ``[x1, x1 + s)`` and an inclusive annotation
``x_min..x_max`` covers ``[x_min, x_max + 1)``. The cascade applies them as ``x1 + dx1 * w``
(facenet-pytorch's ``generateBoundingBox`` + box update), so a positive offset moves a corner
right/down.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.ops import box_iou

from facecmp.training.samples.sample_set import DISCARD, NEGATIVE, PART, POSITIVE


@dataclass(frozen=True)
class MiningSettings:
    crop_size: int = 12
    positive_iou: float = 0.65
    part_iou: float = 0.4
    negative_iou: float = 0.3
    # Jittered crops around a face: side a factor of max(w, h), centre shifted up to this share of w/h.
    side_range: tuple[float, float] = (0.8, 1.25)
    max_shift: float = 0.2
    jitter_tries_per_face: int = 16
    positives_per_face: int = 4
    parts_per_face: int = 4
    # Negatives: crops overlapping the neighbourhood of each face, and crops anywhere in the image.
    near_tries_per_face: int = 8
    near_negatives_per_face: int = 3
    random_tries_per_image: int = 16
    random_negatives_per_image: int = 8
    # Faces smaller than this give no positives/parts (they still veto negatives).
    min_face_size: int = 12
    # Kept ratio negatives : positives : parts (the larger classes are subsampled).
    ratio: tuple[int, int, int] = (3, 1, 1)


# --- labelling -------------------------------------------------------------------------------


def iou_labels(iou: np.ndarray, settings: MiningSettings = MiningSettings()) -> np.ndarray:
    """Label each crop by its best IoU with any face: POSITIVE, PART, NEGATIVE or DISCARD."""
    iou = np.asarray(iou, dtype=np.float64)
    labels = np.full(iou.shape, DISCARD, dtype=np.int8)
    labels[iou < settings.negative_iou] = NEGATIVE
    labels[(iou >= settings.part_iou) & (iou < settings.positive_iou)] = PART
    labels[iou >= settings.positive_iou] = POSITIVE
    return labels


def face_regions(boxes: np.ndarray) -> np.ndarray:
    """Inclusive integer boxes -> continuous ``[x_min, x_max + 1)`` float64 boxes."""
    regions = np.asarray(boxes, dtype=np.float64).reshape(-1, 4).copy()
    regions[:, 2:] += 1
    return regions


def box_offsets(crops: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Offsets that move each square crop ``(x1, y1, x1+s, y1+s)`` onto its face, divided by ``s``."""
    side = (crops[:, 2] - crops[:, 0])[:, None]
    return ((faces - crops) / side).astype(np.float32)


def label_crops(crops: np.ndarray, faces: np.ndarray, settings: MiningSettings) -> tuple[np.ndarray, np.ndarray]:
    """``(labels, offsets)`` for square crops against ALL faces (continuous boxes) of their image.

    Offsets point at the face the crop overlaps most (zero for crops that overlap nothing).
    """
    if len(faces) == 0:
        return np.full(len(crops), NEGATIVE, dtype=np.int8), np.zeros((len(crops), 4), np.float32)
    iou = box_iou(torch.from_numpy(crops), torch.from_numpy(faces)).numpy()
    best = iou.argmax(axis=1)
    labels = iou_labels(iou.max(axis=1), settings)
    offsets = box_offsets(crops, faces[best])
    offsets[labels == NEGATIVE] = 0.0
    return labels, offsets


# --- candidate crops -------------------------------------------------------------------------


def _squares(x1: np.ndarray, y1: np.ndarray, side: np.ndarray) -> np.ndarray:
    return np.stack([x1, y1, x1 + side, y1 + side], axis=1).astype(np.float64)


def jittered_crops(face: np.ndarray, n: int, settings: MiningSettings, rng: np.random.Generator) -> np.ndarray:
    """Square crops of side 0.8-1.25 x max(w, h), centre shifted by up to ±max_shift of w/h."""
    w, h = face[2] - face[0], face[3] - face[1]
    side = np.round(rng.uniform(*settings.side_range, n) * max(w, h))
    cx = (face[0] + face[2]) / 2 + rng.uniform(-settings.max_shift, settings.max_shift, n) * w
    cy = (face[1] + face[3]) / 2 + rng.uniform(-settings.max_shift, settings.max_shift, n) * h
    return _squares(np.round(cx - side / 2), np.round(cy - side / 2), side)


def near_crops(face: np.ndarray, n: int, width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """Crops of random side whose corner lies within one side of the face's corner (MTCNN's near negatives)."""
    hi = max(13, min(width, height) // 2)
    side = rng.integers(12, hi, n).astype(np.float64)
    dx = np.floor(rng.uniform(-side, face[2] - face[0]))
    dy = np.floor(rng.uniform(-side, face[3] - face[1]))
    return _squares(face[0] + dx, face[1] + dy, side)


def random_crops(n: int, width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """Crops of side 12..min(W, H)/2 anywhere in the image."""
    hi = max(13, min(width, height) // 2)
    side = rng.integers(12, hi, n).astype(np.float64)
    x1 = np.floor(rng.uniform(0, np.maximum(width - side, 0) + 1))
    y1 = np.floor(rng.uniform(0, np.maximum(height - side, 0) + 1))
    return _squares(x1, y1, side)


def inside(crops: np.ndarray, width: int, height: int, min_side: int) -> np.ndarray:
    side = crops[:, 2] - crops[:, 0]
    return (crops[:, 0] >= 0) & (crops[:, 1] >= 0) & (crops[:, 2] <= width) & (crops[:, 3] <= height) & (side >= min_side)


def pick(mask: np.ndarray, limit: int, rng: np.random.Generator) -> np.ndarray:
    """The indices where ``mask`` holds, at most ``limit`` of them (drawn at random when there are more)."""
    idx = np.flatnonzero(mask)
    return idx if len(idx) <= limit else rng.choice(idx, limit, replace=False)


def select_crops(
    faces: np.ndarray, width: int, height: int, settings: MiningSettings, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Crops of one image with their labels and offsets (no DISCARD left). Pixels are not touched."""
    chosen = []
    min_side = min(12, settings.crop_size)
    for face in faces:
        if min(face[2] - face[0], face[3] - face[1]) >= settings.min_face_size:
            jitter = jittered_crops(face, settings.jitter_tries_per_face, settings, rng)
            jitter = jitter[inside(jitter, width, height, min_side)]
            labels, offsets = label_crops(jitter, faces, settings)
            keep = np.concatenate([
                pick(labels == POSITIVE, settings.positives_per_face, rng),
                pick(labels == PART, settings.parts_per_face, rng),
            ])
            chosen.append((jitter[keep], labels[keep], offsets[keep]))
        near = near_crops(face, settings.near_tries_per_face, width, height, rng)
        near = near[inside(near, width, height, min_side)]
        labels, offsets = label_crops(near, faces, settings)
        keep = pick(labels == NEGATIVE, settings.near_negatives_per_face, rng)
        chosen.append((near[keep], labels[keep], offsets[keep]))
    anywhere = random_crops(settings.random_tries_per_image, width, height, rng)
    anywhere = anywhere[inside(anywhere, width, height, min_side)]
    labels, offsets = label_crops(anywhere, faces, settings)
    keep = pick(labels == NEGATIVE, settings.random_negatives_per_image, rng)
    chosen.append((anywhere[keep], labels[keep], offsets[keep]))
    crops, labels, offsets = (np.concatenate(parts) for parts in zip(*chosen))
    return crops.reshape(-1, 4), labels.astype(np.int8), offsets.reshape(-1, 4).astype(np.float32)


def extract_crops(image: np.ndarray, crops: np.ndarray, size: int) -> np.ndarray:
    """Area-resample integer square crops (inside the image) of an ``H x W x 3`` image: uint8 ``(N, 3, size, size)``.

    One ``interpolate(mode="area")`` per crop, as the cascade resamples its crops.
    """
    pixels = torch.from_numpy(image).permute(2, 0, 1).float()
    out = np.zeros((len(crops), 3, size, size), np.uint8)
    for i, (x1, y1, x2, y2) in enumerate(crops.astype(np.int64)):
        patch = pixels[None, :, y1:y2, x1:x2]
        out[i] = F.interpolate(patch, size=(size, size), mode="area")[0].round().clamp(0, 255).to(torch.uint8).numpy()
    return out
