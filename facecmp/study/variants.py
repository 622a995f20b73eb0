"""The model variants the study compares, as a small registry.

A variant knows how to produce a ready detector for a ``Workbench`` (training data, dev split,
cache folder, device), training it first if it needs to. Adding one is a function and a
``register(...)`` call; the CLI's ``compare`` and the pytest plugin both read this registry.
"""

from __future__ import annotations

import functools
import hashlib
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from facecmp.atomic import write_json
from facecmp.data.records import Dataset
from facecmp.detection.base import DetectorLike, DetectorSettings
from facecmp.detection.detector import Detector
from facecmp.errors import FacecmpError
from facecmp.detection.reference import FacenetReference

# The packages whose code produces a cached checkpoint or calibration: sample mining, training
# and calibration (training/), the cascade that mines RNet's/ONet's samples and is calibrated
# (detection/), how images and annotations are read (data/) and the AP that calibration
# maximizes (evaluation/). Their source is hashed into every cache key, so any change retrains.
CODE_PACKAGES = ("training", "detection", "data", "evaluation")


@functools.lru_cache(maxsize=None)
def code_fingerprint(packages: tuple[str, ...] = CODE_PACKAGES, root: Path | None = None) -> str:
    """A hash of the source files of ``<root>/<package>`` for each package (paths and bytes);
    ``root`` defaults to the installed ``facecmp`` folder."""
    root = Path(root) if root is not None else Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            digest.update(path.relative_to(root).as_posix().encode() + b"\0")
            digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


@dataclass
class Workbench:
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


@dataclass
class Prepared:
    detector: DetectorLike
    training_seconds: float | None = None
    settings: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Variant:
    name: str
    description: str
    prepare: Callable[[Workbench], Prepared]
    needs_training_data: bool = False


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


def _fingerprint(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _dataset_fingerprint(ds: Dataset | None) -> str | None:
    from facecmp.training.samples import data_fingerprint

    return None if ds is None else data_fingerprint(ds)


# -- pretrained ---------------------------------------------------------------------------
def _pretrained(bench: Workbench) -> Prepared:
    settings = DetectorSettings(device=bench.device)
    return Prepared(Detector(settings=settings), settings={"thresholds": list(settings.thresholds)})


def _pretrained_calibrated(bench: Workbench) -> Prepared:
    """The pretrained cascade at the thresholds that score best on the dev split (cached)."""
    from facecmp.training.calibrate import best_thresholds

    if bench.dev is None:
        raise FacecmpError("pretrained-calibrated needs a dev split with ground truth to choose thresholds on")
    path = bench.cache_dir / f"pretrained-thresholds-{_fingerprint(code_fingerprint(), _dataset_fingerprint(bench.dev))}.json"
    if path.is_file():
        stored = json.loads(path.read_text())
    else:
        start = time.perf_counter()
        thresholds, table = best_thresholds(
            lambda t: Detector(settings=DetectorSettings(thresholds=t, device=bench.device)), bench.dev, progress=bench.progress
        )
        stored = {"thresholds": list(thresholds), "table": table, "seconds": time.perf_counter() - start}
        write_json(path, stored)
    settings = DetectorSettings(thresholds=tuple(stored["thresholds"]), device=bench.device)
    return Prepared(Detector(settings=settings), stored["seconds"], {"thresholds": stored["thresholds"]})


# -- facenet-pytorch's own MTCNN, the peer we measure against -------------------------------
def _facenet_reference(bench: Workbench) -> Prepared:
    settings = DetectorSettings(device=bench.device)
    return Prepared(FacenetReference(settings), settings={"thresholds": list(settings.thresholds)})


# -- fine-tuned -----------------------------------------------------------------------------
def _checkpoint_folder(bench: Workbench, stages: tuple[str, ...]) -> Path:
    key = _fingerprint(code_fingerprint(), stages, _dataset_fingerprint(bench.train), _dataset_fingerprint(bench.dev), bench.seed, bench.epochs)
    return bench.cache_dir / f"finetuned-{'-'.join(stages)}-{key}"


def _reuse_finished_stages(bench: Workbench, stages: tuple[str, ...], folder: Path) -> None:
    """Start ``folder`` from the training states of a cached run over a prefix of ``stages``.

    Stage-wise training makes the PNet of the ``pnet`` checkpoint the same as the PNet of the
    ``pnet,rnet,onet`` one (same data, settings and seed), so the longer run resumes from it
    instead of training it again.
    """
    for k in range(len(stages) - 1, 0, -1):
        prefix = _checkpoint_folder(bench, stages[:k])
        states = [prefix / f"train_state_{stage}.pt" for stage in stages[:k]]
        if all(p.is_file() for p in states):
            folder.mkdir(parents=True, exist_ok=True)
            for p in states:
                if not (folder / p.name).exists():
                    shutil.copyfile(p, folder / p.name)
            return


def finetuned_checkpoint(bench: Workbench, name: str, stages: tuple[str, ...]) -> Path:
    """The checkpoint for ``stages`` on this workbench's data: reused when cached, else trained (resumably)."""
    from facecmp.training.finetune import finetune

    if name in bench.checkpoints:
        return bench.checkpoints[name]
    if bench.train is None:
        raise FacecmpError(f"{name} needs training images (an archive with antrenare/) or an existing checkpoint")
    folder = _checkpoint_folder(bench, stages)
    if not (folder / "facecmp.json").is_file():
        _reuse_finished_stages(bench, stages, folder)
        kwargs = {"epochs": bench.epochs} if bench.epochs else {}
        finetune(
            bench.train, folder, dev=bench.dev, stages=stages, seed=bench.seed, device=bench.device,
            resume=any(folder.glob("train_state_*.pt")), cache_dir=bench.cache_dir / f"samples-{code_fingerprint()}",
            progress=bench.progress, **kwargs,
        )
    return folder


def _from_checkpoint(name: str, stages: tuple[str, ...]) -> Callable[[Workbench], Prepared]:
    def prepare(bench: Workbench) -> Prepared:
        from facecmp.detection.checkpoint import load_checkpoint

        folder = finetuned_checkpoint(bench, name, stages)
        meta = load_checkpoint(folder).meta
        timings = meta.get("timings") or {}
        detector = Detector.from_checkpoint(folder, device=bench.device)
        return Prepared(
            detector,
            training_seconds=sum(float(v) for v in timings.values()) if timings else None,
            settings={"thresholds": list(detector.settings.thresholds), "checkpoint": str(folder)},
        )

    return prepare


register(Variant("pretrained", "facenet-pytorch's pretrained weights in our cascade, default thresholds", _pretrained))
register(Variant("facenet-reference", "facenet-pytorch's own MTCNN (the peer we measure against)", _facenet_reference))
register(
    Variant(
        "pretrained-calibrated", "pretrained cascade at the thresholds best on the dev split", _pretrained_calibrated,
        needs_training_data=True,
    )
)
register(
    Variant(
        "finetuned-pnet", "PNet fine-tuned on the target domain, RNet/ONet pretrained and frozen",
        _from_checkpoint("finetuned-pnet", ("pnet",)), needs_training_data=True,
    )
)
register(
    Variant(
        "finetuned-pnet-rnet", "PNet then RNet fine-tuned on the target domain (RNet on PNet's proposals), ONet pretrained",
        _from_checkpoint("finetuned-pnet-rnet", ("pnet", "rnet")), needs_training_data=True,
    )
)
register(
    Variant(
        "finetuned-cascade", "the whole cascade fine-tuned stage by stage (RNet/ONet on the earlier stages' candidates)",
        _from_checkpoint("finetuned-cascade", ("pnet", "rnet", "onet")), needs_training_data=True,
    )
)
