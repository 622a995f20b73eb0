"""The study end to end: choose splits, prepare each variant, detect, evaluate, report."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from facecmp.data import load_archive, load_test, split_dataset
from facecmp.data.records import Dataset
from facecmp.errors import DataError
from facecmp.evaluation.evaluator import evaluate
from facecmp.detection.inference import run_detector
from facecmp.data.predictions import save_predictions
from facecmp.study.report import VariantResult, results_table, write_report
from facecmp.study.variants import Prepared, Variant, Workbench, get_variants

COMPARE_VARIANTS = ("pretrained", "pretrained-calibrated", "finetuned-pnet")
# `compare --cascade` adds the RNet/ONet fine-tunes (minutes more on CPU).
CASCADE_VARIANTS = ("finetuned-pnet-rnet", "finetuned-cascade")
DEFAULT_TEST_PER_FOLDER = 50
DEFAULT_DEV_PER_FOLDER = 25


@dataclass
class Splits:
    train: Dataset | None
    dev: Dataset | None
    test: Dataset


def parse_split(spec: str) -> int | None:
    """``split`` -> default count, ``split:N`` -> N, anything else -> None (a path)."""
    if spec == "split":
        return DEFAULT_TEST_PER_FOLDER
    if spec.startswith("split:"):
        try:
            n = int(spec.split(":", 1)[1])
        except ValueError:
            n = 0
        if n < 1:
            raise DataError(f"--test {spec!r}: expected split:N with N a positive number of images per training folder")
        return n
    return None


def choose_splits(
    root: str | Path, test: str | None = None, *, seed: int = 0, dev_per_folder: int = DEFAULT_DEV_PER_FOLDER,
    allow_missing: bool = False,
) -> Splits:
    """Train / dev / test images for a study. A test split carved from the training images is never trained on."""
    archive = load_archive(root, allow_missing=allow_missing)
    train_all = archive.train
    if test is None:
        test_ds = archive.test
        if test_ds is None:
            test = f"split:{DEFAULT_TEST_PER_FOLDER}"
    if test is not None:
        per_folder = parse_split(test)
        if per_folder is None:
            test_ds = load_test(Path(test), allow_missing=allow_missing)
        else:
            if train_all is None:
                raise DataError(f"{root}: --test {test} needs training images (antrenare/) to split")
            train_all, test_ds = split_dataset(train_all, per_folder=per_folder, seed=seed)
    dev = None
    train = train_all
    if train_all is not None and dev_per_folder > 0:
        train, dev = split_dataset(train_all, per_folder=dev_per_folder, seed=seed + 1)
    return Splits(train, dev, test_ds)


def evaluate_prepared(
    name: str, prepared: Prepared, test: Dataset, *, workers: int = 0, progress: bool = True
) -> VariantResult:
    """Detect with a ready variant on every test image and evaluate against the ground truth."""
    run = run_detector(prepared.detector, test, workers=workers, progress=progress, desc=name)
    evaluation = evaluate(run.predictions, test.ground_truth())
    return VariantResult(name, run.predictions, evaluation, run.ms_per_image, prepared.training_seconds, dict(prepared.settings))


def evaluate_variant(variant: Variant, bench: Workbench, test: Dataset, *, progress: bool = True) -> VariantResult:
    return evaluate_prepared(variant.name, variant.prepare(bench), test, progress=progress)


def run_comparison(
    root: str | Path,
    out: str | Path,
    *,
    test: str | None = None,
    checkpoint: Path | None = None,
    epochs: int | None = None,
    seed: int = 0,
    device: str = "cpu",
    allow_missing: bool = False,
    variants: Sequence[str] = COMPARE_VARIANTS,
    cache_dir: Path | None = None,
    title: str = "facecmp: pretrained vs fine-tuned MTCNN",
    recognizers: Sequence[str] = (),
) -> Path:
    out = Path(out)
    splits = choose_splits(root, test, seed=seed, allow_missing=allow_missing)
    bench = Workbench(
        train=splits.train, dev=splits.dev, cache_dir=Path(cache_dir) if cache_dir else out / "cache",
        device=device, seed=seed, epochs=epochs,
        checkpoints={"finetuned-pnet": checkpoint} if checkpoint else {},
    )
    results = []
    for variant in get_variants(variants):
        result = evaluate_variant(variant, bench, splits.test)
        save_predictions(out / "predictions" / variant.name, result.predictions)
        results.append(result)
    notes = [
        f"training images: {len(splits.train) if splits.train else 0}, dev (threshold calibration): "
        f"{len(splits.dev) if splits.dev else 0}, test: {len(splits.test)}; seed {seed}.",
        *(f"{r.name}: thresholds {r.settings.get('thresholds')}" for r in results),
    ]
    write_report(out, results, dataset=splits.test, title=title, notes=notes)
    print(results_table(results))
    if recognizers:  # task 2 on the detections of the last fine-tuned variant
        from facecmp.study.recognition import study_task2, task2_table

        tuned = [r for r in results if r.settings.get("checkpoint")]
        if not tuned or splits.train is None:
            raise DataError("task 2 in compare needs a fine-tuned variant and training images to train recognizers on")
        task2 = study_task2(out, tuned[-1].settings["checkpoint"], splits.train, splits.dev, splits.test, kinds=recognizers,
                            cache_dir=bench.cache_dir, seed=seed, detector_name=tuned[-1].name)
        print(task2_table(task2, tuned[-1].name))
    return out


def training_split(
    root: str | Path, *, seed: int = 0, dev_per_folder: int = DEFAULT_DEV_PER_FOLDER, holdout_per_folder: int = 0,
) -> tuple[Dataset, Dataset | None]:
    """``(train, dev)`` of an archive's training images as ``facecmp finetune`` uses them: ``holdout_per_folder``
    images per folder set aside first (seed), then ``dev_per_folder`` for calibration (seed + 1)."""
    archive = load_archive(root)
    if archive.train is None:
        raise DataError(f"{root}: no training images found; expected antrenare/<character>/ with <character>_annotations.txt")
    train = archive.train
    if holdout_per_folder > 0:
        train, _ = split_dataset(train, per_folder=holdout_per_folder, seed=seed)
    dev = None
    if dev_per_folder > 0:
        train, dev = split_dataset(train, per_folder=dev_per_folder, seed=seed + 1)
    return train, dev


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
    dev_per_folder: int = DEFAULT_DEV_PER_FOLDER,
    holdout_per_folder: int = 0,
):
    """``facecmp finetune``: train on the archive's training images, calibrate on a dev split of them.

    ``holdout_per_folder`` images per folder are set aside first and never seen (your own test
    split, the same one ``compare --test split:N`` uses with the same seed).
    """
    from facecmp.training.finetune import finetune

    train, dev = training_split(root, seed=seed, dev_per_folder=dev_per_folder, holdout_per_folder=holdout_per_folder)
    kwargs = {"epochs": epochs} if epochs else {}
    return finetune(
        train, out, dev=dev, stages=tuple(stages), seed=seed, device=device, resume=resume,
        from_scratch=from_scratch, **kwargs,
    )


def run_demo(out: str | Path, *, seed: int = 0) -> Path:
    """The comparison on the built-in generated dataset (made once, cached)."""
    from facecmp.data.synthetic import ensure_default_dataset

    root = ensure_default_dataset(seed=seed)
    return run_comparison(
        root, out, seed=seed, variants=COMPARE_VARIANTS + CASCADE_VARIANTS, title="facecmp demo (generated cartoon faces)",
        recognizers=("probe-pretrained", "probe-finetuned", "finetune"),
    )
