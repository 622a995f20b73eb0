"""What a data-aware minimum face size trades in AP for speed, measured.

``facecmp.data.facesizes.suggest_min_face_size`` proposes a size from the training faces;
``min_face_tradeoff`` runs the detector at several sizes on images with ground truth and
reports AP and ms/image for each, so the choice rests on numbers, not on an assumption.
It runs a detector and scores it, so it sits in the study, after detection and evaluation.
"""

from __future__ import annotations

import time
from typing import Sequence

from facecmp.data.facesizes import face_sides
from facecmp.data.images import read_image
from facecmp.data.records import Dataset
from facecmp.detection.detector import Detector
from facecmp.detection.inference import detections_to_predictions
from facecmp.evaluation.evaluator import evaluate


def min_face_tradeoff(detector: Detector, dataset: Dataset, sizes: Sequence[float]) -> list[dict]:
    """AP and ms/image of ``detector`` at each min face size on ``dataset`` (images decoded once)."""
    images = [(r.key, read_image(r.path)) for r in dataset.images]
    truth = dataset.ground_truth()
    rows = []
    for size in sizes:
        sized = detector.with_settings(min_face_size=float(size))
        start = time.perf_counter()
        per_image = {key: sized.detect(image) for key, image in images}
        seconds = time.perf_counter() - start
        result = evaluate(detections_to_predictions(per_image), truth)
        rows.append(
            {
                "min_face_size": float(size),
                "faces_below": int((face_sides(dataset) < size).sum()),
                "ap_cava": result.ap_cava,
                "recall": result.final_recall,
                "ms_per_image": 1000.0 * seconds / max(len(images), 1),
            }
        )
    return rows


__all__ = ["min_face_tradeoff"]
