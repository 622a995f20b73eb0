"""``facecmp finetune``: an archive's training images fine-tune the cascade (or train dlib's HOG detector),
calibrated on a dev split of them, a held-out split set aside first."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from facecmp.data import load_archive
from facecmp.data.records import Dataset
from facecmp.errors import DataError
from facecmp.study.splits import carve_splits, report_data_warnings


def training_split(
    root: str | Path, *, seed: int = 0, dev_per_folder: int | None = None, holdout_per_folder: int = 0,
    fmt: str | None = None,
) -> tuple[Dataset, Dataset | None]:
    """``(train, dev)`` of an archive's training images as ``facecmp finetune`` uses them: ``holdout_per_folder``
    images per folder set aside first (seed), then ``dev_per_folder`` for calibration (seed + 1)."""
    archive = load_archive(root, fmt=fmt)
    report_data_warnings(archive.train, archive.test)
    if archive.train is None:
        raise DataError(f"{root}: no training images found; expected antrenare/<character>/ with <character>_annotations.txt")
    splits = carve_splits(archive.train, holdout_per_folder=holdout_per_folder, dev_per_folder=dev_per_folder, seed=seed)
    return splits.train, splits.dev


def recipe_training(recipe: str | None, stages: Sequence[str]):
    """The stages' training settings for ``--recipe`` by name (``facecmp.training.finetune.RECIPES``; None: the
    default recipe, ``FinetuneSettings.training`` None), refused with dlib-hog, which trains with its own."""
    from facecmp.training.finetune import RECIPES

    if recipe is None:
        return None
    if "dlib-hog" in stages:
        raise DataError(f"--recipe {recipe} chooses the MTCNN stages' training; dlib-hog trains with its own (drop --recipe)")
    return RECIPES[recipe]


def finetune_from_archive(
    root: str | Path,
    out: str | Path,
    *,
    stages: Sequence[str] = ("pnet",),
    epochs: int | None = None,
    seed: int = 0,
    device: str = "cpu",
    resume: bool = False,
    from_scratch: bool = False,
    dev_per_folder: int | None = None,
    holdout_per_folder: int = 0,
    fmt: str | None = None,
    dist=None,
    augment: bool = False,
    retain=None,
    recipe: str | None = None,
):
    """``facecmp finetune``: train on the archive's training images, calibrate on a dev split of them.

    ``holdout_per_folder`` images per folder are set aside first and never seen (your own test
    split, the same one ``compare --test split:N`` uses with the same seed). ``augment`` mines
    augmented copies of the training frames too (the default :class:`AugmentSettings`). ``retain``
    (a :class:`facecmp.training.retain.RetainRequest`, ``--retain``) keeps the source domain.
    ``recipe``: the stages' training recipe by name (``facecmp.training.finetune.RECIPES``, ``--recipe``; None: the
    default, ``facecmp.training.finetune.DEFAULT_RECIPE``). ``dev_per_folder`` None: :func:`facecmp.study.splits.default_dev_per_folder`.
    """
    from facecmp.training.augment import AugmentSettings
    from facecmp.training.finetune import FinetuneSettings, finetune

    if "dlib-hog" in stages and tuple(stages) != ("dlib-hog",):
        raise DataError(f"--stages {','.join(stages)}: dlib-hog trains a detector of its own; pass --stages dlib-hog alone")
    if "dlib-hog" in stages and retain is not None:
        raise DataError("--retain keeps the source domain in the MTCNN stages; dlib-hog trains without it (drop --retain)")
    training = recipe_training(recipe, stages)
    if "dlib-hog" in stages and augment:
        raise DataError("--augment mines augmented frames for the MTCNN stages; dlib-hog trains without it (drop --augment)")
    train, dev = training_split(root, seed=seed, dev_per_folder=dev_per_folder, holdout_per_folder=holdout_per_folder, fmt=fmt)
    if "dlib-hog" in stages:
        return _train_dlib(train, out, dev=dev, seed=seed, resume=resume)
    settings = FinetuneSettings(
        stages=tuple(stages), epochs=epochs or None, seed=seed, from_scratch=from_scratch,
        augment=AugmentSettings() if augment else None, retain=retain.settings if retain is not None else None,
        training=training,
    )
    kept = retain.images(seed) if retain is not None else None
    if dist is not None:  # one process of a distributed run (training.distributed)
        return finetune(train, out, settings, dev=dev, device=device, resume=resume, progress=dist.is_main, dist=dist, retain=kept)
    return finetune(train, out, settings, dev=dev, device=device, resume=resume, retain=kept)


def _train_dlib(train: Dataset, out: str | Path, *, dev: Dataset | None, seed: int, resume: bool):
    """``facecmp finetune --stages dlib-hog``: dlib's HOG detector trained instead of MTCNN stages."""
    from facecmp.training.dlib_train import DlibTrainSettings, read_dlib_checkpoint, train_dlib_hog

    return read_dlib_checkpoint(train_dlib_hog(train, out, dev=dev, settings=DlibTrainSettings(seed=seed), resume=resume))
