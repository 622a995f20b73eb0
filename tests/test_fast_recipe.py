"""Pieces of issue #25's fast fine-tuning (docs/price.md): the image caps on what a stage mines
(a setting, off by default), channels-last batches for ONet's training and one cascade run scoring every PNet threshold of the calibration
grid. Tiny generated data, so it runs in seconds."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from facecmp.data import load_archive
from facecmp.data.images import read_image
from facecmp.data.synthetic import generate_dataset
from facecmp.detection.detector import Detector, DetectorSettings
from facecmp.detection.models import pretrained_network
from facecmp.training.calibrate import candidates_by_pnet, cascade_candidates
from facecmp.training.finetune import mine_for_stage
from facecmp.training.hard_mining import capped_images, default_hard_mining, mining_images
from facecmp.training.loop import net_outputs
from facecmp.training.samples import MiningSettings


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = generate_dataset(tmp_path_factory.mktemp("synthetic"), n_train_per_character=3, n_test=4, seed=0)
    return load_archive(root)


def test_a_cap_keeps_a_seeded_subset_in_order_and_leaves_smaller_sets_alone(tiny):
    n = len(tiny.train.images)
    assert capped_images(tiny.train, None, 0) is tiny.train
    assert capped_images(tiny.train, n, 0) is tiny.train
    few = capped_images(tiny.train, 5, 0)
    keys = [r.key for r in tiny.train.images]
    chosen = [r.key for r in few.images]
    assert len(chosen) == 5 and len(set(chosen)) == 5
    assert chosen == [k for k in keys if k in set(chosen)], "the subset keeps the dataset's order"
    assert chosen == [r.key for r in capped_images(tiny.train, 5, 0).images], "seeded"
    assert chosen != [r.key for r in capped_images(tiny.train, 5, 1).images] or n <= 5
    # Hard mining picks its images the same way.
    settings = dataclasses.replace(default_hard_mining("rnet"), max_images=5)
    assert [r.key for r in mining_images(tiny.train, settings, 0)] == chosen


def test_pnet_mines_only_its_capped_images(tiny):
    mining = MiningSettings()
    common = dict(mining=mining, hard_mining=None, seed=0, cache_dir=None, device="cpu", progress=False, min_face_size=20.0)
    few = mine_for_stage("pnet", tiny.train, {}, pnet_max_images=4, **common)
    from facecmp.training.samples import mine_samples

    expected = mine_samples(capped_images(tiny.train, 4, 0), mining, 0, progress=False)
    np.testing.assert_array_equal(few.images, expected.images)
    assert len(few) < len(mine_for_stage("pnet", tiny.train, {}, pnet_max_images=None, **common))


@pytest.mark.parametrize("stage, channels_last, size", [("onet", None, 48), ("rnet", True, 24)])
def test_channels_last_batches_give_the_same_outputs_and_gradients(stage, channels_last, size):
    """ONet's by default, RNet's when TrainSettings.channels_last asks (finetune --recipe fast)."""
    torch.manual_seed(0)
    x = torch.randn(16, 3, size, size)
    plain = lambda net, x: (lambda out: (out[-1].flatten(1), out[0].flatten(1)))(net(x, logits=True))  # noqa: E731
    trained = lambda net, x: net_outputs(net, x, channels_last)  # noqa: E731
    results, layouts = [], []
    for outputs in (plain, trained):  # the default layout, then what training runs
        net = pretrained_network(stage).train()
        net.conv1.register_forward_pre_hook(
            lambda _m, args: layouts.append(args[0].is_contiguous(memory_format=torch.channels_last)))
        logits, offsets = outputs(net, x)
        (logits.square().sum() + offsets.square().sum()).backward()
        results.append((logits.detach(), offsets.detach(), [p.grad.clone() for p in net.parameters() if p.grad is not None]))
    assert layouts == [False, True]
    (l0, o0, g0), (l1, o1, g1) = results
    assert len(g0) == len(g1) > 0
    torch.testing.assert_close(l0, l1, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(o0, o1, rtol=1e-5, atol=1e-5)
    # oneDNN's float32 channels-last weight gradients of the first convolutions round more than the
    # default layout's (against float64: ~7e-4 of the gradient's norm vs ~5e-7; in float64 the two
    # layouts agree to 1e-15): noise far below a batch's, but not bitwise the same.
    for a, b in zip(g0, g1):
        assert float((a - b).norm() / a.norm()) < 3e-3


def test_one_run_for_every_pnet_threshold_equals_a_run_per_threshold(tiny):
    """candidates_by_pnet against cascade_candidates of a detector at each PNet threshold."""
    images = [read_image(r.path) for r in tiny.test.images]
    thresholds = (0.4, 0.6, 0.8)
    shared = candidates_by_pnet(Detector(settings=DetectorSettings(thresholds=(0.4, 0.05, 0.1))), images, thresholds)
    seen = 0
    for p in thresholds:
        alone = cascade_candidates(Detector(settings=DetectorSettings(thresholds=(p, 0.05, 0.1))), images)
        for got, want in zip(shared[p], alone):
            order_got, order_want = np.lexsort(got.boxes.T), np.lexsort(want.boxes.T)
            np.testing.assert_allclose(got.boxes[order_got], want.boxes[order_want], atol=1e-3)
            np.testing.assert_allclose(got.rnet_scores[order_got], want.rnet_scores[order_want], atol=1e-5)
            np.testing.assert_allclose(got.onet_scores[order_got], want.onet_scores[order_want], atol=1e-5)
            seen += len(want.boxes)
    assert seen > 0, "the check needs candidates"
