"""The detectors people reach for instead of MTCNN, behind our ``DetectorLike`` interface.

Each peer lives in its own module and imports its package late (inside functions), through
:func:`import_peer`, so a missing optional package is one line naming what to install
(:class:`~facecmp.errors.MissingPeerError`), never an ``ImportError`` in an unrelated run. A
package that is there but does not import (a missing library of its own, a broken wheel) is a
:class:`~facecmp.errors.BrokenPeerError` instead: reinstalling, not installing, is the fix.
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Callable, Sequence

import numpy as np

from facecmp.detection.base import Detections
from facecmp.errors import BrokenPeerError, MissingPeerError

# import name -> (what pip installs, the facecmp extra that brings it)
PEER_PACKAGES: dict[str, tuple[str, str]] = {
    "cv2": ("opencv-python-headless<5", "haar"),
    "dlib": ("dlib-bin", "dlib"),
    "yuface": ("yuface==2023.5.1", "yunet"),
    "face_recognition_models": ("face_recognition_models==0.3.0", "dlib-cnn"),
}


def missing_line(model: str, module: str) -> str:
    package, extra = PEER_PACKAGES[module.split(".")[0]]
    also = "" if extra == "dlib-cnn" else " (or 'facecmp[peers]' for every peer in this environment)"  # `peers` leaves dlib-cnn out
    return f"{model} needs the optional package {package!r}: pip install 'facecmp[{extra}]'{also}"


def broken_line(model: str, module: str, problem: str) -> str:
    package, _extra = PEER_PACKAGES[module.split(".")[0]]
    return f"{model}: {package!r} is installed but does not work ({problem}); reinstall it: pip install --force-reinstall '{package}'"


def _absent(exc: ImportError, module: str) -> bool:
    """Whether ``exc`` says ``module`` itself (or a package above it) is not installed."""
    name = getattr(exc, "name", None)
    return isinstance(exc, ModuleNotFoundError) and bool(name) and (module == name or module.startswith(name + "."))


def import_peer(module: str, model: str) -> ModuleType:
    """``import module`` for peer ``model``: a MissingPeerError naming the extra when it is not
    installed, a BrokenPeerError with the import's own message when it is but fails to import."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        if _absent(exc, module):
            raise MissingPeerError(missing_line(model, module)) from None
        raise BrokenPeerError(broken_line(model, module, f"import {module}: {type(exc).__name__}: {exc}")) from None


def peer_file(module: str, relative: str, model: str) -> Path:
    """A data file shipped inside package ``module`` (found without importing it), or the error
    saying whether the package is missing or lacks the file."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise MissingPeerError(missing_line(model, module))
    for folder in spec.submodule_search_locations:
        path = Path(folder) / relative
        if path.is_file():
            return path
    raise BrokenPeerError(broken_line(model, module, f"{relative} not found in {', '.join(spec.submodule_search_locations)}"))


def detections(boxes, scores, landmarks=None) -> Detections:
    """Our ``Detections`` from any peer's boxes (x1, y1, x2, y2, inclusive pixels), scores and,
    when the model gives them, five (x, y) landmarks per face (eyes, nose, mouth corners)."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    points = None if landmarks is None else np.asarray(landmarks, np.float32).reshape(len(boxes), 5, 2)
    return Detections(boxes, np.asarray(scores, np.float32).reshape(-1), points)


class _ScoreCut:
    """``base``'s detections scoring at least ``threshold``."""

    def __init__(self, base: "_Memo", threshold: float):
        self.base, self.threshold = base, threshold
        self.silent_hint = getattr(base.detector, "silent_hint", "")

    def detect_batch(self, images: Sequence[np.ndarray]) -> list[Detections]:
        out = []
        for found in self.base.detect_batch(images):
            keep = found.scores >= self.threshold
            out.append(Detections(found.boxes[keep], found.scores[keep], None if found.landmarks is None else found.landmarks[keep]))
        return out


class _Memo:
    """A detector whose answer per image object is computed once (calibration reuses the images)."""

    def __init__(self, detector):
        self.detector, self.seen = detector, {}

    def detect_batch(self, images: Sequence[np.ndarray]) -> list[Detections]:
        for image in images:
            if id(image) not in self.seen:
                self.seen[id(image)] = (image, self.detector.detect_batch([image])[0])  # the image kept alive: ids stay unique
        return [self.seen[id(image)][1] for image in images]


def score_cut_calibration(build: Callable[[Sequence[float]], object], grid: Sequence[Sequence[float]]):
    """``point -> detector`` for a calibration ``grid`` whose points end with a score threshold: one
    scan per setting of the other coordinates, built at the lowest threshold the grid pairs with it,
    cut at each higher one. Valid for a peer whose detections at a threshold are exactly its
    detections at a lower one that score at least as much (a filter after its own suppression)."""
    lowest: dict[tuple[float, ...], float] = {}
    for point in grid:
        key = tuple(float(v) for v in point[:-1])
        lowest[key] = min(lowest.get(key, float(point[-1])), float(point[-1]))
    bases: dict[tuple[float, ...], _Memo] = {}

    def at(point: Sequence[float]):
        key = tuple(float(v) for v in point[:-1])
        if key not in bases:
            bases[key] = _Memo(build((*key, lowest[key])))
        return _ScoreCut(bases[key], float(point[-1]))

    return at
