"""Speed benchmarks (pytest-benchmark): per-image detection of every variant on the same decoded
images, a bounded fine-tuning run, and the evaluation of a large prediction set. Speed gates are
ratios between variants timed in this run (``[[speed]]`` in gates.toml), never absolute seconds;
their timings are interleaved image by image so that a busy machine slows both sides alike.

Run the usual pytest-benchmark way: ``pytest benchmarks/test_speed.py --benchmark-autosave``,
later ``--benchmark-compare``.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from facecmp.bench.plugin import skip_unless_selected
from facecmp.bench.gates import check

SPEED_IMAGES = 20  # decoded once, the same for every variant
PROCESS_ROUNDS = 3  # whole-process runs of each model
FINETUNE_IMAGES_PER_FOLDER = 2
FINETUNE_EPOCHS = 1
EVAL_IMAGES, EVAL_DETECTIONS_PER_IMAGE, EVAL_FACES_PER_IMAGE = 1000, 1000, 5  # 1M detections


@pytest.mark.benchmark(group="detect-per-image")
def test_detect_speed(benchmark, facecmp_variant, facecmp_prepared, facecmp_session):
    images = facecmp_session.timings.speed_images(SPEED_IMAGES)
    cycle = itertools.cycle(img for _, img in images)
    detector = facecmp_prepared.detector
    benchmark.extra_info.update(variant=facecmp_variant, dataset=facecmp_session.dataset_key, n_images=len(images))
    # One image per round; the warm-up round takes the last image, so the timed rounds see each
    # once, as a detector sees new images in use.
    benchmark.pedantic(
        lambda image: detector.detect_batch([image]), setup=lambda: ((next(cycle),), {}),
        rounds=len(images), warmup_rounds=1,
    )
    if benchmark.stats:  # None under --benchmark-disable
        # The median: robust to other processes stealing the CPU for a few images.
        facecmp_session.timings.record(
            facecmp_variant, benchmark.stats.stats.median * 1000.0, f"pytest-benchmark, median of {len(images)} images"
        )


@pytest.mark.benchmark(group="finetune")
def test_finetune_speed(benchmark, facecmp_splits, facecmp_session, tmp_path):
    """Mining + one epoch on a few images: a bounded stand-in for the full fine-tuning time (in the table)."""
    from facecmp.data import split_dataset
    from facecmp.training.finetune import FinetuneSettings, finetune

    if facecmp_splits.train is None:
        pytest.skip("the dataset has no training images")
    _, small = split_dataset(facecmp_splits.train, per_folder=FINETUNE_IMAGES_PER_FOLDER, seed=facecmp_session.options.seed)
    rounds = itertools.count()

    def fresh_folder():
        out = tmp_path / f"round{next(rounds)}"
        return (small, out), {"cache_dir": out / "cache"}

    checkpoint = benchmark.pedantic(
        lambda train, out, cache_dir: finetune(
            train, out, FinetuneSettings(epochs=FINETUNE_EPOCHS, seed=facecmp_session.options.seed),
            device=facecmp_session.options.device, cache_dir=cache_dir, progress=False,
        ),
        setup=fresh_folder, rounds=1,
    )
    benchmark.extra_info.update(
        dataset=facecmp_session.dataset_key, n_images=len(small), epochs=FINETUNE_EPOCHS,
        samples=checkpoint.meta["samples"],
    )


@pytest.fixture(scope="module")
def large_prediction_set():
    """1M scored boxes on 1000 images with 5 faces each: a third near a face, the rest anywhere."""
    from facecmp.data.predictions import Predictions

    rng = np.random.default_rng(0)
    keys = [f"{i:04d}.jpg" for i in range(EVAL_IMAGES)]
    xy = rng.uniform(0, 400, size=(EVAL_IMAGES, EVAL_FACES_PER_IMAGE, 2))
    side = rng.uniform(20, 120, size=(EVAL_IMAGES, EVAL_FACES_PER_IMAGE, 1))
    faces = np.round(np.concatenate([xy, xy + side], axis=2)).astype(np.int64)
    ground_truth = dict(zip(keys, faces))
    n = EVAL_DETECTIONS_PER_IMAGE
    near = faces[:, rng.integers(0, EVAL_FACES_PER_IMAGE, size=n // 3)] + rng.normal(0, 8, size=(EVAL_IMAGES, n // 3, 4))
    xy = rng.uniform(0, 400, size=(EVAL_IMAGES, n - n // 3, 2))
    anywhere = np.concatenate([xy, xy + rng.uniform(20, 120, size=(EVAL_IMAGES, n - n // 3, 1))], axis=2)
    boxes = np.concatenate([near, anywhere], axis=1).reshape(-1, 4)
    names = np.repeat(np.array(keys), n)
    return Predictions(boxes, rng.random(len(boxes)), names), ground_truth


@pytest.mark.benchmark(group="evaluate")
def test_evaluate_speed(benchmark, large_prediction_set):
    from facecmp.evaluation.evaluator import evaluate

    predictions, ground_truth = large_prediction_set
    benchmark.extra_info.update(n_detections=len(predictions), n_images=len(ground_truth))
    result = benchmark.pedantic(evaluate, args=(predictions, ground_truth), rounds=3)
    assert result.n_detections == len(predictions)


def test_speed_gate(facecmp_speed_gate, facecmp_session, record_property):
    """Speed ratio between two variants, timed image by image in turn on the same images.

    Not from the separate benchmarks above: on a shared machine another process can slow one of
    them for seconds, and a ratio of two separate runs would then gate on noise.
    """
    gate = facecmp_speed_gate
    skip_unless_selected(facecmp_session, gate.variants)
    ms = facecmp_session.timings.paired_ms_per_image(gate.variants, SPEED_IMAGES)
    values = {v: {"ms_per_image": t} for v, t in ms.items()}
    record_property("measured_ratio", gate.ratio(values))  # read by benchmarks/measure_gates.py
    check(gate, values)


def test_process_speed_gate(facecmp_process_gate, facecmp_session, record_property):
    """Whole ``facecmp detect`` processes, as users run them, over every test image.

    Runs alternate between the two models (a, b, b, a, ...) and each side's time is the median
    of its runs (facecmp.bench.wholeprocess); both must also find the same faces. Timed with a plain
    clock rather than pytest-benchmark, which times one callable: the alternation between two
    programs is what keeps a busy machine from deciding the ratio.
    """
    gate = facecmp_process_gate
    skip_unless_selected(facecmp_session, gate.variants)
    result = facecmp_session.timings.process_times(gate.variants, rounds=PROCESS_ROUNDS)
    assert not result.differing, f"detections differ on {len(result.differing)} images, e.g. {result.differing[:3]}"
    values = {v: {"seconds": result.median(v)} for v in gate.variants}
    record_property("measured_ratio", gate.ratio(values))  # read by benchmarks/measure_gates.py
    check(gate, values)
