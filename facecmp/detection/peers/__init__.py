"""The detectors people reach for instead of MTCNN, behind our ``DetectorLike`` interface.

Each peer lives in its own module and imports its package late (inside functions), through
:func:`import_peer`, so a missing optional package is one line naming what to install
(:class:`~facecmp.errors.MissingPeerError`), never an ``ImportError`` in an unrelated run.
"""

from __future__ import annotations

import importlib
from types import ModuleType

import numpy as np

from facecmp.detection.base import Detections
from facecmp.errors import MissingPeerError

# import name -> (what pip installs, the facecmp extra that brings it)
PEER_PACKAGES: dict[str, tuple[str, str]] = {
    "cv2": ("opencv-python-headless<5", "haar"),
    "dlib": ("dlib-bin", "dlib"),
}


def missing_line(model: str, module: str) -> str:
    package, extra = PEER_PACKAGES[module]
    return f"{model} needs the optional package {package!r}: pip install 'facecmp[{extra}]' (or 'facecmp[peers]' for every peer)"


def import_peer(module: str, model: str) -> ModuleType:
    """``import module`` for peer ``model``, or a MissingPeerError naming the extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingPeerError(missing_line(model, module)) from None


def detections(boxes, scores) -> Detections:
    """Our ``Detections`` from any peer's boxes (x1, y1, x2, y2, inclusive pixels) and scores."""
    return Detections(np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(scores, np.float32).reshape(-1))
