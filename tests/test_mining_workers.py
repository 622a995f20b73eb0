"""Mining in worker processes (``workers`` > 0, facecmp.training.samples.batches) gives the samples
that mining in the run's own process gives: PNet's crops, RNet's and ONet's hard-mined ones, with
augmented copies, and a bad image is one error naming it, not a worker's traceback."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from facecmp.data import load_archive
from facecmp.data.synthetic import generate_dataset
from facecmp.detection.models import pretrained_network
from facecmp.errors import FacecmpError
from facecmp.training.augment import AugmentSettings, frames_at, training_frames
from facecmp.training.hard_mining import default_hard_mining, mine_hard_samples
from facecmp.training.samples import MiningSettings
from facecmp.training.samples import batches, mining
from facecmp.training.samples.mining import mine_samples


@pytest.fixture(scope="module")
def train(tmp_path_factory):
    root = generate_dataset(tmp_path_factory.mktemp("synthetic"), n_train_per_character=3, n_test=1, seed=0)
    return load_archive(root).train


def nets():
    return {stage: pretrained_network(stage) for stage in ("pnet", "rnet", "onet")}


def same(a, b):
    assert len(a) == len(b) > 0
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.offsets, b.offsets)


@pytest.fixture
def loaders(monkeypatch):
    """Small batches, so every worker gets several, and the DataLoaders made (workers really ran)."""
    made = []

    class Counted(batches.DataLoader):
        def __init__(self, *args, **kwargs):
            made.append(kwargs["num_workers"])
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(batches, "DataLoader", Counted)
    monkeypatch.setattr(mining, "FRAMES_PER_BATCH", 3)
    return made


@pytest.mark.parametrize("augment", [None, AugmentSettings(copies=1)])
def test_pnet_samples_from_workers_are_the_ones_mined_here(train, augment, loaders):
    same(mine_samples(train, MiningSettings(), seed=3, progress=False, augment=augment, workers=0),
         mine_samples(train, MiningSettings(), seed=3, progress=False, augment=augment, workers=2))
    assert loaders == [2]


@pytest.mark.parametrize("stage", ["rnet", "onet"])
def test_hard_mined_samples_from_workers_are_the_ones_mined_here(train, stage, loaders):
    # batches of 3 images: the last batch is short, and each worker gets several
    recipe = dataclasses.replace(default_hard_mining(stage), max_images=None, batch_images=3)
    same(mine_hard_samples(train, nets(), stage, recipe, seed=1, progress=False, workers=0),
         mine_hard_samples(train, nets(), stage, recipe, seed=1, progress=False, workers=2))
    assert loaders == [2]


def test_frames_at_cuts_the_frame_sequence_anywhere(train):
    augment = AugmentSettings(copies=2)
    whole = list(training_frames(train.images[:3], augment, seed=5))
    part = frames_at(train.images[:3], augment, 5, range(2, 7))
    assert [f.key for f in part] == [f.key for f in whole[2:7]] == [(0, 2), (1,), (1, 1), (1, 2), (2,)]
    for a, b in zip(part, whole[2:7]):
        np.testing.assert_array_equal(a.image, b.image)


def test_an_unreadable_image_in_a_worker_is_one_error_naming_it(train, tmp_path, loaders):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    records = list(train.images)
    records[4] = dataclasses.replace(records[4], path=broken)
    damaged = dataclasses.replace(train, images=records)
    with pytest.raises(FacecmpError) as caught:
        mine_samples(damaged, MiningSettings(), seed=0, progress=False, workers=2)
    assert "broken.jpg" in str(caught.value)
    assert "Traceback" not in str(caught.value) and loaders == [2]
