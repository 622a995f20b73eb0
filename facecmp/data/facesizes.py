"""Face sizes in a dataset, and the minimum face size they suggest for the detector.

MTCNN's pyramid starts at the scale where a ``min_face_size`` face fills PNet's 12 px window;
every pixel below that is a larger (slower) first scale. The size that keeps ``coverage`` of
the annotated faces is the largest safe setting for this data.
"""

from __future__ import annotations

import numpy as np

from facecmp.data.records import Dataset

# PNet's window: the pyramid cannot look for faces smaller than this.
SMALLEST = 12.0


def face_sides(dataset: Dataset) -> np.ndarray:
    """The shorter side of every annotated face, in pixels (inclusive coordinates)."""
    boxes = [r.boxes for r in dataset.images if len(r.boxes)]
    if not boxes:
        return np.zeros(0)
    b = np.concatenate(boxes).astype(float)
    return np.minimum(b[:, 2] - b[:, 0] + 1, b[:, 3] - b[:, 1] + 1)


def suggest_min_face_size(dataset: Dataset, coverage: float = 0.99) -> float:
    """The largest min face size that still leaves ``coverage`` of the annotated faces above it."""
    sides = face_sides(dataset)
    if len(sides) == 0:
        return 20.0
    return float(max(SMALLEST, np.floor(np.quantile(sides, 1.0 - coverage))))


def min_face_advice(dataset: Dataset, coverage: float = 0.99) -> str:
    """The suggested min face size and what it truly keeps (measured on the faces, not assumed)."""
    sides = face_sides(dataset)
    size = suggest_min_face_size(dataset, coverage)
    if len(sides) == 0:
        return f"{size:.0f} px (the default: no faces to measure)"
    kept = float((sides >= size).mean())
    text = f"{size:.0f} px (keeps {kept:.1%} of faces: those whose shorter side is at least {size:.0f} px"
    if kept < coverage:
        text += (f"; {1 - kept:.1%} are smaller than {SMALLEST:.0f} px, the smallest min face the detector takes, "
                 "so no setting keeps them")
    return text + ")"
