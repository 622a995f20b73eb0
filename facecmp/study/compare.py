"""The study end to end (``facecmp compare``): choose splits, prepare each variant, detect, evaluate, report."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

from facecmp.data.records import Dataset
from facecmp.errors import DataError
from facecmp.evaluation.evaluator import evaluate
from facecmp.detection.inference import require_answers, run_detector
from facecmp.data.predictions import save_predictions
from facecmp.study.report import VariantResult, data_note, results_table, variant_notes, write_report
from facecmp.study.splits import choose_splits
from facecmp.study.variants import Prepared, VariantContext, get_variants

COMPARE_VARIANTS = ("pretrained", "pretrained-calibrated", "finetuned-pnet")
# `compare --cascade` adds the RNet/ONet fine-tunes (minutes more on CPU).
CASCADE_VARIANTS = ("finetuned-pnet-rnet", "finetuned-cascade")
# `compare --peers` adds the detectors people reach for instead (optional extras, facecmp[peers]).
PEER_VARIANTS = (
    "opencv-haar", "dlib-hog", "dlib-hog-trained", "blazeface", "blazeface-full", "yunet", "dlib-cnn", "retinaface", "animeface",
)
# The fine-tuned MTCNN variant each set of stages makes (a --checkpoint stands in for the one its stages name).
FINETUNED_BY_STAGES = {("pnet",): "finetuned-pnet", ("pnet", "rnet"): "finetuned-pnet-rnet", ("pnet", "rnet", "onet"): "finetuned-cascade"}
# The report's ms/image: the variants timed in turn on this many test images (the fastest of SPEED_ROUNDS each).
SPEED_IMAGES = 10
SPEED_ROUNDS = 3


def with_checkpoint(variants: Sequence[str], checkpoint: Path) -> tuple[tuple[str, ...], dict[str, Path]]:
    """``(variants, checkpoints)`` for a study that reuses ``checkpoint`` instead of training: it is
    the fine-tuned variant its stages name, in place of the fine-tuned MTCNN variants asked for
    (which would otherwise train)."""
    from facecmp.detection.checkpoint import load_checkpoint

    loaded = load_checkpoint(checkpoint)
    stages = loaded.stages
    name = FINETUNED_BY_STAGES.get(stages)
    if name is None:
        raise DataError(f"--checkpoint {checkpoint}: stages {', '.join(stages)} are none of "
                        f"{'; '.join(','.join(k) for k in FINETUNED_BY_STAGES)}")
    recipe = loaded.meta.get("settings") or {}
    if name == "finetuned-cascade" and recipe.get("retain"):  # `finetune --retain`: the variant that keeps the source domain
        name = "finetuned-cascade-retain"
    elif name == "finetuned-cascade" and recipe.get("augment"):  # `finetune --augment`
        name = "finetuned-cascade-augmented"
    tuned = set(FINETUNED_BY_STAGES.values()) | {"finetuned-cascade-retain", "finetuned-cascade-augmented"}
    kept = [v for v in variants if v not in tuned]
    at = next((i for i, v in enumerate(variants) if v in tuned), len(variants))
    kept.insert(sum(1 for v in variants[:at] if v not in tuned), name)
    return tuple(kept), {name: Path(checkpoint)}


def evaluate_prepared(
    name: str, prepared: Prepared, test: Dataset, *, workers: int = 0, progress: bool = True
) -> VariantResult:
    """Detect with a ready variant on every test image and evaluate against the ground truth."""
    run = run_detector(prepared.detector, test, workers=workers, progress=progress, desc=name)
    if not prepared.settings.get("dev_detections"):  # it found faces on the dev split: it answers, this set has none for it
        require_answers(name, prepared.detector, len(run.predictions.scores), test)
    evaluation = evaluate(run.predictions, test.ground_truth())
    return VariantResult(name, run.predictions, evaluation, run.ms_per_image, prepared.training_seconds, dict(prepared.settings))


def timed_interleaved(results: Sequence[VariantResult], detectors, test: Dataset,
                      n_images: int = SPEED_IMAGES, rounds: int = SPEED_ROUNDS) -> list[VariantResult]:
    """``results`` with ms/image timed interleaved (:func:`interleaved_ms_per_image`) on the first
    ``n_images`` test images, and how, in each result's ``ms_per_image_source``. Variants timed one
    after the other over the whole test set are not comparable on a machine whose load changes."""
    import torch

    from facecmp.data.images import read_image
    from facecmp.detection.inference import INTERLEAVED_NOTE, interleaved_ms_per_image

    images = [read_image(r.path) for r in test.images[:n_images]]
    ms = interleaved_ms_per_image(detectors, images, rounds)
    source = INTERLEAVED_NOTE.format(n=len(images), rounds=rounds, threads=torch.get_num_threads())
    return [dataclasses.replace(r, ms_per_image=ms[r.name], settings={**r.settings, "ms_per_image_source": source})
            for r in results]


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
    fmt: str | None = None,
    recognizers: Sequence[str] = (),
    source_test: str | Path | None = None,
    source_split: str | None = None,
) -> Path:
    """The study; with ``source_test`` every variant is also scored on that source-domain test set
    (:mod:`facecmp.study.source`), its detections in ``out/source/<variant>/``."""
    out = Path(out)
    variants, checkpoints = with_checkpoint(variants, checkpoint) if checkpoint else (tuple(variants), {})
    splits = choose_splits(root, test, seed=seed, allow_missing=allow_missing, fmt=fmt)
    source = None
    if source_test is not None:
        from facecmp.study.source import load_source_domain, retain_context

        source = load_source_domain(source_test, split=source_split, seed=seed)  # bad source data fails before training
    ctx = VariantContext(
        train=splits.train, dev=splits.dev, cache_dir=Path(cache_dir) if cache_dir else out / "cache",
        device=device, seed=seed, epochs=epochs,
        checkpoints=checkpoints,
        **(retain_context(source, splits.test) if source is not None else {}),
    )
    results, detectors, source_results = [], {}, {}
    for variant in get_variants(variants):
        prepared = variant.prepare(ctx)
        result = evaluate_prepared(variant.name, prepared, splits.test)
        save_predictions(out / "predictions" / variant.name, result.predictions)
        results.append(result)
        detectors[variant.name] = prepared.detector
        if source is not None:
            from facecmp.study.source import score_source

            source_results[variant.name] = score_source(variant.name, prepared, source, out=out / "source" / variant.name)
    results = timed_interleaved(results, detectors, splits.test)
    notes = [data_note(splits, seed=seed), *variant_notes(results)]
    write_report(out, results, dataset=splits.test, title=title, notes=notes,
                 source=source_results, source_note=source.describe() if source else None)
    print(results_table(results))
    if source is not None:
        from facecmp.study.report import source_table

        print(source.describe())
        print(source_table(results, source_results))
    if recognizers:  # task 2 on the detections of the last fine-tuned variant
        from facecmp.study.recognition import study_task2, task2_table

        tuned = [r for r in results if r.settings.get("checkpoint")]
        if not tuned or splits.train is None:
            raise DataError("task 2 in compare needs a fine-tuned variant and training images to train recognizers on")
        task2 = study_task2(out, tuned[-1].settings["checkpoint"], splits.train, splits.dev, splits.test, kinds=recognizers,
                            cache_dir=ctx.cache_dir, seed=seed, detector_name=tuned[-1].name, device=device)
        print(task2_table(task2, tuned[-1].name))
    return out
