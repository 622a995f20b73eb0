"""Robustness-aware fine-tuning (``facecmp finetune --augment``): the augmentation is seeded per
image, moves boxes with the frame, feeds more samples to every stage's mining under its own cache
keys, leaves the unaugmented path as it was, and never touches the robustness benchmark's
corruption code. Tiny generated data, so it runs in seconds."""

from __future__ import annotations

import ast
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings as hsettings, strategies as st

from facecmp.data import load_archive
from facecmp.data.images import read_image
from facecmp.data.synthetic import generate_dataset
from facecmp.detection.models import pretrained_network
from facecmp.training import AugmentSettings, FinetuneSettings, TrainSettings, finetune
from facecmp.training.augment import augment_frame, frame_seed, training_frames
from facecmp.training.hard_mining import default_hard_mining, hard_mining_fingerprint, mine_hard_samples
from facecmp.training.samples import MiningSettings, mine_samples, mining_fingerprint

PACKAGE = Path(__file__).resolve().parent.parent / "facecmp"
FAST = TrainSettings(epochs=1, batch_size=64, patience=10, threads=2)
OFF = dict(p_color=0.0, p_washout=0.0, p_grayscale=0.0, p_blur=0.0, p_zoom=0.0, p_noise=0.0, p_jpeg=0.0, p_scale=0.0)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = generate_dataset(tmp_path_factory.mktemp("synthetic"), n_train_per_character=3, n_test=3, seed=0)
    return root, load_archive(root)


def a_frame(height=90, width=120, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


BOXES = np.array([[10, 20, 49, 69], [60, 5, 99, 44]])


# --- the augmentation ---------------------------------------------------------------------


def test_same_seed_same_pixels_and_another_seed_other_pixels():
    settings = AugmentSettings()
    first, boxes1 = augment_frame(a_frame(), BOXES, settings, 7)
    again, boxes2 = augment_frame(a_frame(), BOXES, settings, 7)
    other, _ = augment_frame(a_frame(), BOXES, settings, 8)
    assert np.array_equal(first, again) and np.array_equal(boxes1, boxes2)
    assert first.shape != other.shape or not np.array_equal(first, other)


def test_the_callers_torch_random_state_is_left_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    augment_frame(a_frame(), BOXES, AugmentSettings(), 1)
    assert torch.equal(torch.rand(3), expected)


def test_each_copy_depends_on_the_image_not_on_the_order_it_is_mined_in(tiny):
    _, archive = tiny
    records = archive.train.images[:4]
    settings = AugmentSettings(copies=2)
    forward = {(f.record.key, f.key[1:]): f for f in training_frames(records, settings, seed=3)}
    backward = {(f.record.key, f.key[1:]): f for f in training_frames(records[::-1], settings, seed=3)}
    assert forward.keys() == backward.keys() and len(forward) == 4 * 3
    for name, frame in forward.items():
        assert np.array_equal(frame.image, backward[name].image)
        assert np.array_equal(frame.boxes, backward[name].boxes)
    # The two copies of an image differ, and so do other seeds.
    key = records[0].key
    assert not np.array_equal(forward[(key, (1,))].image, forward[(key, (2,))].image)
    assert frame_seed(settings, 3, key, 1) != frame_seed(settings, 4, key, 1)


def test_another_process_makes_the_same_pixels(tmp_path):
    image = a_frame()
    np.save(tmp_path / "frame.npy", image)
    code = (
        "import sys, numpy as np; from facecmp.training.augment import AugmentSettings, augment_frame;"
        f"im, b = augment_frame(np.load(r'{tmp_path / 'frame.npy'}'), np.array({BOXES.tolist()}), AugmentSettings(), 11);"
        f"np.save(r'{tmp_path / 'out.npy'}', im)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=PACKAGE.parent)
    here, _ = augment_frame(image, BOXES, AugmentSettings(), 11)
    assert np.array_equal(np.load(tmp_path / "out.npy"), here)


def test_clean_frames_come_first_with_the_mining_keys_they_always_had(tiny):
    _, archive = tiny
    records = archive.train.images[:3]
    plain = list(training_frames(records, None, seed=0))
    assert [f.key for f in plain] == [(0,), (1,), (2,)]
    for frame, record in zip(plain, records):
        assert np.array_equal(frame.image, read_image(record.path)) and frame.boxes is record.boxes
    augmented = list(training_frames(records, AugmentSettings(), seed=0))
    assert [f.key for f in augmented] == [(0,), (0, 1), (1,), (1, 1), (2,), (2, 1)]
    assert all(np.array_equal(a.image, p.image) for a, p in zip(augmented[::2], plain))


@hsettings(max_examples=30, deadline=None)
@given(
    height=st.integers(40, 160), width=st.integers(40, 160), seed=st.integers(0, 2**31),
    low=st.floats(0.2, 1.0), span=st.floats(0.0, 0.8),
)
def test_downscaling_scales_the_boxes_with_the_frame(height, width, seed, low, span):
    """A box covering the continuous pixels [x_min, x_max + 1) covers the same part of the smaller frame."""
    high = min(1.0, low + span)
    settings = AugmentSettings(**{**OFF, "p_scale": 1.0, "scale": (low, high)})
    rng = np.random.default_rng(seed)
    x1, y1 = rng.integers(0, width // 2), rng.integers(0, height // 2)
    boxes = np.array([[x1, y1, rng.integers(x1, width), rng.integers(y1, height)]])
    image, scaled = augment_frame(a_frame(height, width, seed % 100), boxes, settings, seed)
    new_h, new_w = image.shape[:2]
    assert abs(new_h / height - new_w / width) <= 1.0 / min(height, width) + 1e-9  # one factor, both sides
    assert low * min(height, width) - 1 <= min(new_h / height, new_w / width) * min(height, width) <= high * min(height, width) + 1
    expected = np.array([
        boxes[0, 0] * new_w / width, boxes[0, 1] * new_h / height,
        (boxes[0, 2] + 1) * new_w / width - 1, (boxes[0, 3] + 1) * new_h / height - 1,
    ])
    np.testing.assert_allclose(scaled[0], expected, atol=1e-4)


def test_without_scaling_the_frame_keeps_its_size_and_boxes_but_not_its_pixels():
    settings = AugmentSettings(**{**OFF, "p_washout": 1.0, "p_noise": 1.0, "p_jpeg": 1.0})
    image = a_frame()
    out, boxes = augment_frame(image, BOXES, settings, 3)
    assert out.shape == image.shape and out.dtype == np.uint8
    np.testing.assert_allclose(boxes, BOXES)
    assert np.abs(out.astype(int) - image.astype(int)).mean() > 5


def test_washout_cuts_the_contrast():
    image = a_frame()
    out, _ = augment_frame(image, BOXES, AugmentSettings(**{**OFF, "p_washout": 1.0, "washout_contrast": (0.1, 0.1)}), 0)
    assert out.std() < 0.2 * image.std()


def test_colour_washout_keeps_each_channels_mean_and_grey_washout_drains_the_colour():
    """The default washout blends each channel towards its own mean (the frame keeps its colour cast);
    ``washout_towards="grey"`` blends towards the mean grey, as ColorJitter's contrast does."""
    image = a_frame()
    image[..., 0] = np.clip(image[..., 0].astype(int) + 80, 0, 255)  # a red cast
    cut = {**OFF, "p_washout": 1.0, "washout_contrast": (0.2, 0.2)}
    colour, _ = augment_frame(image, BOXES, AugmentSettings(**cut), 0)
    grey, _ = augment_frame(image, BOXES, AugmentSettings(**cut, washout_towards="grey"), 0)
    means = image.reshape(-1, 3).mean(axis=0)
    np.testing.assert_allclose(colour.reshape(-1, 3).mean(axis=0), means, atol=1.0)
    np.testing.assert_allclose(colour.reshape(-1, 3).std(axis=0), 0.2 * image.reshape(-1, 3).std(axis=0), rtol=0.1, atol=0.5)
    grey_means = grey.reshape(-1, 3).mean(axis=0)
    assert np.ptp(grey_means) < 0.5 * np.ptp(means)  # channels pulled towards one grey: less cast


def test_zoom_blur_smears_the_edges_more_than_the_centre_and_keeps_the_boxes():
    """A radial blur: pixels far from the centre move most under the zoom, so they blur most."""
    image = np.kron(a_frame(12, 16), np.ones((10, 10, 1), dtype=np.uint8))  # 10-px blocks: smooth at the centre
    settings = AugmentSettings(**{**OFF, "p_zoom": 1.0, "zoom": (1.3, 1.3)})
    out, boxes = augment_frame(image, BOXES, settings, 0)
    assert out.shape == image.shape and out.dtype == np.uint8
    np.testing.assert_allclose(boxes, BOXES)
    change = np.abs(out.astype(int) - image.astype(int)).mean(axis=2)
    centre, edge = change[56:64, 76:84].mean(), np.concatenate([change[:15].ravel(), change[-15:].ravel()]).mean()
    assert edge > 20 and centre < 0.25 * edge
    assert np.diff(out.astype(int), axis=1)[:15].std() < 0.6 * np.diff(image.astype(int), axis=1)[:15].std()


@pytest.mark.parametrize("bad", [
    {"copies": 0}, {"p_blur": 1.5}, {"scale": (0.0, 1.0)}, {"scale": (0.5, 1.2)}, {"zoom": (0.9, 1.2)}, {"zoom_steps": 0},
    {"washout_towards": "blue"},
])
def test_impossible_settings_are_refused(bad):
    with pytest.raises(ValueError):
        AugmentSettings(**bad)


# --- mining --------------------------------------------------------------------------------


def test_augmented_pnet_mining_adds_samples_under_another_cache_key(tiny, tmp_path):
    _, archive = tiny
    plain = mine_samples(archive.train, MiningSettings(), seed=0, progress=False)
    augmented = mine_samples(archive.train, MiningSettings(), seed=0, progress=False, augment=AugmentSettings())
    assert len(augmented) > len(plain) and augmented.counts()["positive"] > plain.counts()["positive"]
    default_key = mining_fingerprint(archive.train, MiningSettings(), 0)
    assert mining_fingerprint(archive.train, MiningSettings(), 0, None) == default_key
    assert mining_fingerprint(archive.train, MiningSettings(), 0, AugmentSettings()) != default_key
    assert mining_fingerprint(archive.train, MiningSettings(), 0, AugmentSettings(seed=1)) != mining_fingerprint(
        archive.train, MiningSettings(), 0, AugmentSettings())


def test_augmented_hard_mining_runs_the_cascade_on_the_copies_too(tiny):
    _, archive = tiny
    nets = {stage: pretrained_network(stage) for stage in ("pnet", "rnet", "onet")}
    recipe = dataclasses.replace(default_hard_mining("rnet"), max_images=None)
    plain = mine_hard_samples(archive.train, nets, "rnet", recipe, seed=0, progress=False)
    augmented = mine_hard_samples(archive.train, nets, "rnet", recipe, seed=0, progress=False, augment=AugmentSettings())
    assert len(augmented) > len(plain)
    key = hard_mining_fingerprint(archive.train, nets, "rnet", recipe, 0)
    assert hard_mining_fingerprint(archive.train, nets, "rnet", recipe, 0, None) == key
    assert hard_mining_fingerprint(archive.train, nets, "rnet", recipe, 0, AugmentSettings()) != key


@pytest.mark.slow
def test_finetune_records_the_augmentation_and_caches_its_samples_apart(tiny, tmp_path):
    _, archive = tiny
    cache = tmp_path / "cache"
    plain = finetune(archive.train, tmp_path / "plain", FinetuneSettings(training=FAST), cache_dir=cache, progress=False)
    settings = FinetuneSettings(training=FAST, augment=AugmentSettings(p_blur=0.5))
    augmented = finetune(archive.train, tmp_path / "aug", settings, cache_dir=cache, progress=False)
    assert plain.meta["settings"]["augment"] is None
    assert augmented.meta["settings"]["augment"] == json.loads(json.dumps(dataclasses.asdict(settings.augment)))
    assert augmented.meta["samples"]["positive"] > plain.meta["samples"]["positive"]
    assert len(list(cache.glob("samples12_*.npz"))) == 2  # one cache file each, never shared


# --- the CLI and the variant -----------------------------------------------------------------


@pytest.mark.slow
def test_cli_augment_writes_the_settings_into_the_checkpoint(tiny, tmp_path):
    from facecmp.cli import main

    root, _ = tiny
    out = tmp_path / "ckpt"
    assert main(["finetune", "--data", str(root), "--out", str(out), "--epochs", "1", "--dev-per-folder", "1", "--augment"]) == 0
    meta = json.loads((out / "facecmp.json").read_text())
    assert meta["settings"]["augment"] == json.loads(json.dumps(dataclasses.asdict(AugmentSettings())))


def test_cli_augment_with_dlib_is_a_usage_error(tiny, tmp_path, capsys):
    from facecmp.cli import main

    root, _ = tiny
    code = main(["finetune", "--data", str(root), "--out", str(tmp_path / "x"), "--stages", "dlib-hog", "--augment"])
    err = capsys.readouterr().err
    assert code == 2 and "--augment" in err and "Traceback" not in err


def test_the_augmented_variant_trains_into_its_own_folder(tiny, tmp_path):
    from facecmp.study.caching import checkpoint_folder
    from facecmp.study.variants import REGISTRY, VariantContext

    _, archive = tiny
    assert "finetuned-cascade-augmented" in REGISTRY and REGISTRY["finetuned-cascade-augmented"].needs_training_data
    ctx = VariantContext(train=archive.train, dev=None, cache_dir=tmp_path)
    stages = ("pnet", "rnet", "onet")
    plain, augmented = checkpoint_folder(ctx, stages), checkpoint_folder(ctx, stages, AugmentSettings())
    assert plain != augmented and "augmented" in augmented.name and "augmented" not in plain.name


# --- honesty: the benchmark's corruptions never reach training --------------------------------


def test_training_never_imports_the_benchmark_corruptions():
    """Neither in the source of facecmp/training (any import, even inside a function) nor at run time."""
    forbidden = ("facecmp.study.robustness", "imagecorruptions")
    found = []
    for path in sorted((PACKAGE / "training").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            found += [f"{path.name}:{node.lineno} {n}" for n in names if n.startswith(forbidden) or n.endswith(".corruptions")]
    assert found == []
    code = (
        "import sys, facecmp.training, facecmp.training.augment, facecmp.training.finetune, facecmp.training.hard_mining;"
        "print([m for m in sys.modules if 'corruptions' in m or m.startswith('facecmp.study')])"
    )
    loaded = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, cwd=PACKAGE.parent)
    assert loaded.stdout.strip() == "[]"


def test_the_robustness_report_says_what_augmentation_costs_and_buys():
    from facecmp.study.robustness.report import augmentation_notes

    def summary(name, clean, cells):
        mpc = sum(cells.values()) / len(cells)
        return {"name": name, "clean_ap": clean, "mpc": mpc, "rpc": mpc / clean, "mpc_corruptions": list(cells),
                "per_corruption": {c: {"3": ap} for c, ap in cells.items()}}

    plain = summary("finetuned-cascade", 0.96, {"contrast": 0.02, "fog": 0.10})
    augmented = summary("finetuned-cascade-augmented", 0.94, {"contrast": 0.70, "fog": 0.50})
    other = summary("pretrained", 0.5, {"contrast": 0.1, "fog": 0.1})
    [note] = augmentation_notes([other, plain, augmented])
    assert "clean AP -0.020 (0.960 -> 0.940)" in note and "mPC +0.540 (0.060 -> 0.600)" in note
    assert "worst cell contrast s3 0.020 -> fog s3 0.500" in note
    assert augmentation_notes([plain, other]) == []
