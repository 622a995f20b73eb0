"""Fine-tuning helps, shown in `make test`: PNet fine-tuned from the pretrained weights on a few
generated images finds the faces of other generated images better than the pretrained cascade
at the same thresholds (the benchmarks measure it at full size; this is the small, fast version).
And the splits never leak test images into training.

Measured with these settings (6 training images per character, 12 held-out test images, 3 epochs,
default thresholds 0.6/0.7/0.7; `pytest tests/test_finetune_helps.py -s`, 2026-11-30) on seeds
0, 1, 2: AP (course) pretrained 0.435 / 0.436 / 0.591, fine-tuned 0.565 / 0.560 / 0.636, gains
+0.130 / +0.124 / +0.045 (mean +0.100). With 8 training images per character, 20 test images and
5 epochs the gains were +0.051 / +0.086 / +0.027 / +0.000 (seeds 0-3): small generated sets are
noisy, so the test asks for a gain on every seed and +0.05 on average, half the measured mean.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from facecmp.data import load_archive
from facecmp.data.images import read_image
from facecmp.data.synthetic import generate_dataset
from facecmp.detection.base import DetectorSettings
from facecmp.detection.detector import Detector
from facecmp.detection.inference import detections_to_predictions
from facecmp.detection.models import STAGES, pretrained_network
from facecmp.evaluation.evaluator import evaluate
from facecmp.data.records import Dataset, ImageRecord
from facecmp.study.splits import DEFAULT_DEV_PER_FOLDER, DEV_SHARE_LIMIT, choose_splits, default_dev_per_folder
from facecmp.training import TrainSettings, train_stage
from facecmp.training.samples import MiningSettings, mine_samples

SEEDS = (0, 1, 2)
MIN_MEAN_GAIN = 0.05  # AP (course) over pretrained, mean over the seeds (and > 0 on each)
N_TRAIN_PER_CHARACTER, N_TEST, EPOCHS = 6, 12, 3


def _ap(detector: Detector, test) -> float:
    found = {r.key: detector.detect(read_image(r.path)) for r in test.images}
    return evaluate(detections_to_predictions(found), test.ground_truth()).ap_cava


def _gain(seed: int, tmp_path_factory) -> tuple[float, float]:
    """(pretrained AP, fine-tuned AP) on the held-out images of the dataset generated with ``seed``."""
    root = generate_dataset(tmp_path_factory.mktemp(f"helps{seed}"), n_train_per_character=N_TRAIN_PER_CHARACTER,
                            n_test=N_TEST, seed=seed)
    archive = load_archive(root)
    assert not {r.path for r in archive.train.images} & {r.path for r in archive.test.images}
    samples = mine_samples(archive.train, MiningSettings(), seed=seed, progress=False)
    nets = {stage: pretrained_network(stage) for stage in STAGES}
    result = train_stage(nets, "pnet", samples, tmp_path_factory.mktemp(f"train{seed}"),
                         TrainSettings(epochs=EPOCHS), seed=seed, progress=False)
    assert result.best_epoch > 0, "no epoch beat the pretrained weights on validation"
    settings = DetectorSettings()  # the same thresholds for both: the pretrained model's defaults
    return _ap(Detector(settings=settings), archive.test), _ap(Detector({"pnet": nets["pnet"]}, settings), archive.test)


@pytest.mark.slow
def test_finetuned_pnet_beats_pretrained_on_held_out_images(tmp_path_factory):
    aps = {seed: _gain(seed, tmp_path_factory) for seed in SEEDS}
    gains = {seed: ft - pre for seed, (pre, ft) in aps.items()}
    shown = ", ".join(f"seed {s}: {pre:.3f} -> {ft:.3f} ({gains[s]:+.3f})" for s, (pre, ft) in aps.items())
    print(shown)
    assert min(gains.values()) > 0, f"fine-tuning did not help on every seed: {shown}"
    assert np.mean(list(gains.values())) >= MIN_MEAN_GAIN, f"mean gain under +{MIN_MEAN_GAIN}: {shown}"


# ---------------------------------------------------------------- no leaks between the splits


@pytest.fixture(scope="module")
def archive_root(tmp_path_factory):
    return generate_dataset(tmp_path_factory.mktemp("leak"), n_train_per_character=8, n_test=5, seed=4)


def _assert_disjoint(splits):
    parts = {"train": splits.train, "dev": splits.dev, "test": splits.test}
    keys = {name: {r.key for r in ds.images} for name, ds in parts.items()}
    paths = {name: {r.path.resolve() for r in ds.images} for name, ds in parts.items()}
    for a, b in (("train", "dev"), ("train", "test"), ("dev", "test")):
        assert not keys[a] & keys[b], f"{a} and {b} share images {sorted(keys[a] & keys[b])[:3]}"
        assert not paths[a] & paths[b], f"{a} and {b} share files {sorted(paths[a] & paths[b])[:3]}"
    return keys


def test_archive_test_set_is_apart_from_train_and_dev(archive_root):
    splits = choose_splits(archive_root, None, seed=0, dev_per_folder=2)
    keys = _assert_disjoint(splits)
    assert keys["test"] == {r.key for r in load_archive(archive_root).test.images}
    assert len(keys["train"]) + len(keys["dev"]) == len(load_archive(archive_root).train)


@pytest.mark.parametrize("n", [1, 3])
def test_split_test_set_is_apart_from_train_and_dev(archive_root, n):
    splits = choose_splits(archive_root, f"split:{n}", seed=0, dev_per_folder=2)
    keys = _assert_disjoint(splits)
    folders = {k.split("/")[0] for k in keys["train"]}
    assert len(keys["test"]) == n * len(folders) and len(keys["dev"]) == 2 * len(folders)
    assert keys["train"] | keys["dev"] | keys["test"] == {r.key for r in load_archive(archive_root).train.images}
    # The same seed always holds out the same test images (the split CI and the gates rely on).
    again = choose_splits(archive_root, f"split:{n}", seed=0, dev_per_folder=2)
    assert {r.key for r in again.test.images} == keys["test"]
    assert np.all([k.split("/")[0] in folders for k in keys["test"]])


@pytest.mark.parametrize("test, per_folder", [(None, 8), ("split:3", 5)])
def test_a_run_that_names_no_dev_count_keeps_a_quarter_of_the_smallest_folder_at_most(archive_root, test, per_folder):
    """The default dev count: 100 per folder, or a quarter of the smallest folder's frames left after
    the held-out test images (8 frames a folder here: 2 dev; 5 after split:3: 1 dev)."""
    splits = choose_splits(archive_root, test, seed=0)
    keys = _assert_disjoint(splits)
    folders = {k.split("/")[0] for k in keys["train"]}
    assert len(keys["dev"]) == (per_folder // DEV_SHARE_LIMIT) * len(folders)


def test_the_default_dev_count_is_100_per_folder_on_large_folders():
    records = [ImageRecord(f"{f}/{i:04d}.jpg", Path(f"/x/{f}/{i:04d}.jpg")) for f, n in (("a", 950), ("b", 1000)) for i in range(n)]
    large = Dataset("large", records)
    assert default_dev_per_folder(large) == DEFAULT_DEV_PER_FOLDER == 100
    small = Dataset("small", records[:399] + records[950:])
    assert default_dev_per_folder(small) == 99
