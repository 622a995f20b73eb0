"""The registry the study's model variants are kept in: what a variant is, what it gets to prepare
with, what it returns. The variants themselves are registered by :mod:`facecmp.study.variants`
(import the registry from there: importing it registers them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from facecmp.data.records import Dataset
from facecmp.detection.base import DetectorLike
from facecmp.errors import FacecmpError


@dataclass
class VariantContext:
    """Everything a variant may need to get ready."""

    train: Dataset | None
    dev: Dataset | None
    cache_dir: Path
    device: str = "cpu"
    seed: int = 0
    epochs: int | None = None
    progress: bool = True
    # variant name -> an existing checkpoint folder to use instead of training
    checkpoints: dict[str, Path] = field(default_factory=dict)
    # Source-domain images a ``-retain`` variant keeps (facecmp.training.retain), and the test sets
    # (what, images) they must not share an image with.
    retain: Dataset | None = None
    retain_excluded: tuple[tuple[str, Dataset | None], ...] = ()


@dataclass
class Prepared:
    detector: DetectorLike
    training_seconds: float | None = None
    settings: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Variant:
    name: str
    description: str
    prepare: Callable[[VariantContext], Prepared]
    needs_training_data: bool = False
    # Trains on source-domain images (a ``-retain`` variant): a benchmark run without
    # --facecmp-source-data leaves it out unless it is asked for by name.
    needs_source_data: bool = False


REGISTRY: dict[str, Variant] = {}


def register(variant: Variant) -> Variant:
    REGISTRY[variant.name] = variant
    return variant


def get_variants(names: Sequence[str] | None = None) -> list[Variant]:
    if names is None:
        return list(REGISTRY.values())
    unknown = [n for n in names if n not in REGISTRY]
    if unknown:
        raise FacecmpError(f"unknown variant(s) {', '.join(unknown)}; available: {', '.join(REGISTRY)}")
    return [REGISTRY[n] for n in names]
