"""One cell of the robustness grid (a variant on one condition over the test set), what identifies
it, and its cache.

Each finished (variant, condition) cell is written to the cache at once (atomically), keyed by
the variant's identity (name, detector settings, checkpoint bytes), the condition, the
corruption seed and the test data's fingerprint, so an interrupted run resumes where it
stopped and never mixes results of other checkpoints or data.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Mapping

from facecmp.atomic import write_json
from facecmp.data.fingerprint import CODE_PACKAGES, code_fingerprint, library_versions
from facecmp.study.robustness.conditions import Condition

# Bump when a change makes cached cells stale (the corruptions, the grid, the metrics).
ROBUSTNESS_VERSION = 1


@dataclass(frozen=True)
class Cell:
    """One variant's result on one condition over the whole test set."""

    ap_cava: float
    ap_voc: float
    n_detections: int
    n_true_positives: int
    n_ground_truth: int


@dataclass
class GridVariant:
    """A variant ready for the grid: its detector and what identifies its results."""

    name: str
    detector: object
    identity: dict = field(default_factory=dict)

    @property
    def key(self) -> str:
        return _digest(self.identity)


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:20]


def variant_identity(name: str, detector, settings: Mapping) -> dict:
    """What a variant's results depend on: name, detector settings and class, checkpoint content."""
    identity = {"name": name, "class": type(detector).__name__, "thresholds": settings.get("thresholds")}
    detector_settings = getattr(detector, "settings", None)
    if detector_settings is not None:
        identity["detector"] = asdict(detector_settings)
        identity["detector"].pop("device", None)
    if settings.get("checkpoint"):
        from facecmp.detection.checkpoint import checkpoint_digest  # torch: only once a variant is ready

        identity["checkpoint"] = checkpoint_digest(settings["checkpoint"])
    return identity


# Beyond the core libraries, what a cell's pixels and detections depend on: the corruptions'
# libraries and the peers' packages (BlazeFace runs in its own environment, not covered here).
CELL_LIBRARIES = ("imagecorruptions", "scikit-image", "scipy", "opencv-python-headless", "dlib-bin")


def cell_environment() -> dict:
    """The code (the cascade, data, evaluation, this package: the corruptions and the grid), library versions and
    pretrained weights every cell depends on, whichever variant made it."""
    from facecmp.detection.models import pretrained_weights_digest  # torch: only once cells are cached

    return {
        "code": code_fingerprint((*CODE_PACKAGES, "study/robustness")),
        "libraries": library_versions(*CELL_LIBRARIES),
        "pretrained_weights": pretrained_weights_digest(),
    }


class CellCache:
    """One JSON file per (variant, condition, data): written atomically, read only when every key matches."""

    def __init__(self, folder: Path, data_fingerprint: str, seed: int, environment: dict | None = None):
        self.folder = Path(folder)
        self.data = data_fingerprint
        self.seed = seed
        self.environment = cell_environment() if environment is None else environment

    def _keys(self, variant: GridVariant, condition: Condition) -> dict:
        return {
            "version": ROBUSTNESS_VERSION, "variant": variant.identity, "condition": condition.label,
            "seed": self.seed, "data": self.data, "environment": self.environment,
        }

    def path(self, variant: GridVariant, condition: Condition) -> Path:
        where = _digest([self.data, self.seed, self.environment])
        return self.folder / f"{variant.name}-{variant.key}" / f"{condition.label}-{where}.json"

    def get(self, variant: GridVariant, condition: Condition) -> Cell | None:
        path = self.path(variant, condition)
        try:
            stored = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        if stored.get("keys") != json.loads(json.dumps(self._keys(variant, condition), default=str)):
            return None
        return Cell(**stored["cell"])

    def put(self, variant: GridVariant, condition: Condition, cell: Cell) -> None:
        write_json(self.path(variant, condition), {"keys": self._keys(variant, condition), "cell": asdict(cell)})
