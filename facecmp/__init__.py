"""facecmp: pretrained vs fine-tuned MTCNN on a target domain, measured.

The Python API (``from facecmp import load_detector``) is imported on first use (PEP 562), so
``import facecmp`` and the pytest plugin stay free of torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Public name -> the module that defines it, imported when the name is first read.
_LAZY = {
    "load_detector": "facecmp.detection.api",
    "FaceDetector": "facecmp.detection.api",
    "Detections": "facecmp.detection.base",
    "DetectorSettings": "facecmp.detection.base",
}

__all__ = ["__version__", *_LAZY]

if TYPE_CHECKING:
    from facecmp.detection.api import FaceDetector, load_detector
    from facecmp.detection.base import Detections, DetectorSettings


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'facecmp' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
