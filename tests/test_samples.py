"""Sample mining for PNet: IoU labelling, crop geometry, offsets, flips, balance and the on-disk cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from facecmp.data import load_training
from facecmp.data.synthetic import generate_dataset
from facecmp.errors import DataError
from facecmp.training import augment as training_frames_module
from facecmp.training import samples as S
from facecmp.training.samples import DISCARD, NEGATIVE, PART, POSITIVE, MiningSettings

SETTINGS = MiningSettings()


@pytest.fixture(scope="module")
def tiny_train(tmp_path_factory):
    root = generate_dataset(tmp_path_factory.mktemp("synthetic"), n_train_per_character=4, n_test=2, seed=0)
    return load_training(root / "antrenare")


def continuous_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Reference IoU of continuous boxes, written independently of torchvision."""
    iw = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    ih = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = iw * ih
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter)


# --- labelling ------------------------------------------------------------------------------


@given(st.floats(0.0, 1.0))
def test_iou_labels_follow_the_mtcnn_bands(iou):
    label = S.iou_labels(np.array([iou]))[0]
    if iou >= 0.65:
        assert label == POSITIVE
    elif iou >= 0.4:
        assert label == PART
    elif iou >= 0.3:
        assert label == DISCARD
    else:
        assert label == NEGATIVE


face_boxes = st.tuples(st.integers(0, 300), st.integers(0, 200), st.integers(12, 150), st.integers(12, 150)).map(
    lambda t: (t[0], t[1], t[0] + t[2] - 1, t[1] + t[3] - 1)
)


@settings(max_examples=60, deadline=None)
@given(st.lists(face_boxes, min_size=1, max_size=4), st.integers(0, 2**31 - 1))
def test_selected_crops_are_square_inside_and_labelled_by_their_best_iou(faces, seed):
    width, height = 480, 360
    regions = S.face_regions(np.array(faces))
    crops, labels, offsets = S.select_crops(regions, width, height, SETTINGS, np.random.default_rng(seed))

    side = crops[:, 2] - crops[:, 0]
    np.testing.assert_array_equal(side, crops[:, 3] - crops[:, 1])
    assert (side >= 12).all()
    assert (crops[:, :2] >= 0).all() and (crops[:, 2] <= width).all() and (crops[:, 3] <= height).all()
    assert not (labels == DISCARD).any()

    iou = continuous_iou(crops, regions)
    best = iou.max(axis=1)
    np.testing.assert_array_equal(labels, S.iou_labels(best))
    # Offsets of positives and parts move the crop exactly onto its best face.
    kept = labels != NEGATIVE
    target = regions[iou.argmax(axis=1)][kept]
    restored = crops[kept] + offsets[kept] * side[kept, None]
    np.testing.assert_allclose(restored, target, atol=1e-3)


def test_a_crop_left_of_and_above_its_face_gets_positive_offsets_on_the_top_left():
    crop = np.array([[10.0, 20.0, 110.0, 120.0]])
    face = S.face_regions(np.array([[15, 30, 104, 129]]))  # continuous [15, 105) x [30, 130)
    labels, offsets = S.label_crops(crop, face, SETTINGS)
    assert labels[0] == POSITIVE
    np.testing.assert_allclose(offsets[0], [0.05, 0.10, -0.05, 0.10], atol=1e-6)


def test_a_face_of_another_character_vetoes_a_negative():
    # Two faces: a crop on the second one is not a negative even though it misses the first.
    faces = S.face_regions(np.array([[0, 0, 49, 49], [200, 200, 259, 259]]))
    labels, _ = S.label_crops(np.array([[200.0, 200.0, 260.0, 260.0]]), faces, SETTINGS)
    assert labels[0] == POSITIVE


# --- pixels ---------------------------------------------------------------------------------


def test_extract_crops_matches_area_interpolation_of_each_crop():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)
    crops = np.array([[0, 0, 12, 12], [5, 7, 42, 44], [60, 10, 117, 67]], dtype=np.float64)
    got = S.extract_crops(image, crops, 12)
    assert got.dtype == np.uint8 and got.shape == (3, 3, 12, 12)
    for crop, out in zip(crops.astype(int), got):
        patch = torch.from_numpy(image[crop[1]:crop[3], crop[0]:crop[2]]).permute(2, 0, 1)[None].float()
        expected = F.interpolate(patch, size=(12, 12), mode="area").round()[0].to(torch.uint8).numpy()
        assert np.abs(out.astype(int) - expected.astype(int)).max() <= 1


def test_hflip_mirrors_pixels_and_swaps_x_offsets():
    images = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    offsets = torch.tensor([[0.1, 0.2, -0.3, 0.4], [0.0, -0.1, 0.25, 0.0]])
    flipped, flipped_offsets = S.hflip(images, offsets)
    assert torch.equal(flipped[..., 0], images[..., -1])
    assert torch.allclose(flipped_offsets[0], torch.tensor([0.3, 0.2, -0.1, 0.4]))
    # The flipped offsets are those of the mirrored face in the mirrored crop.
    width = 100.0
    crop = np.array([[10.0, 10.0, 60.0, 60.0]])
    face = np.array([[20.0, 15.0, 55.0, 58.0]])
    mirror = lambda b: np.stack([width - b[:, 2], b[:, 1], width - b[:, 0], b[:, 3]], axis=1)  # noqa: E731
    _, mirrored = S.hflip(torch.zeros(1, 3, 2, 2), torch.from_numpy(S.box_offsets(crop, face)))
    np.testing.assert_allclose(mirrored.numpy(), S.box_offsets(mirror(crop), mirror(face)), atol=1e-6)


# --- a whole dataset --------------------------------------------------------------------------


def test_mining_is_seeded_balanced_and_typed(tiny_train):
    a = S.mine_samples(tiny_train, SETTINGS, seed=3, progress=False)
    b = S.mine_samples(tiny_train, SETTINGS, seed=3, progress=False)
    c = S.mine_samples(tiny_train, SETTINGS, seed=4, progress=False)
    assert a.images.dtype == np.uint8 and a.images.shape == (len(a), 3, 12, 12)
    assert a.labels.dtype == np.int8 and a.offsets.dtype == np.float32 and a.offsets.shape == (len(a), 4)
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert not np.array_equal(a.offsets, c.offsets) or not np.array_equal(a.images, c.images)
    counts = a.counts()
    assert counts["positive"] > 0 and counts["part"] > 0 and counts["negative"] > 0
    unit = min(counts["negative"] / 3, counts["positive"], counts["part"])
    assert counts["negative"] <= round(3 * unit) and counts["positive"] <= round(unit) and counts["part"] <= round(unit)
    assert (a.offsets[a.labels == NEGATIVE] == 0).all()


def test_crop_size_is_a_parameter(tiny_train):
    small = tiny_train.subset([r.key for r in tiny_train.images[:3]])
    s24 = S.mine_samples(small, MiningSettings(crop_size=24), seed=0, progress=False)
    assert s24.images.shape[1:] == (3, 24, 24)


def test_sample_dataset_normalises_like_the_cascade(tiny_train):
    small = tiny_train.subset([r.key for r in tiny_train.images[:2]])
    samples = S.mine_samples(small, SETTINGS, seed=0, progress=False)
    image, label, offsets = S.SampleDataset(samples)[0]
    expected = (torch.from_numpy(samples.images[0]).float() - 127.5) * 0.0078125
    assert torch.allclose(image, expected)
    assert label.item() == samples.labels[0] and torch.equal(offsets, torch.from_numpy(samples.offsets[0]))


def test_batches_cut_by_index_equal_the_collated_ones(tiny_train):
    """``batch_loader`` (one gather per tensor) gives DataLoader's collated batches to the bit, shuffled by
    the same draws of the same generator, contiguous whatever layout the crops were mined in."""
    from torch.utils.data import DataLoader, RandomSampler

    samples = S.mine_samples(tiny_train.subset([r.key for r in tiny_train.images[:4]]), SETTINGS, seed=0, progress=False)
    channels_last = samples.take(np.arange(len(samples)))
    channels_last.images = np.ascontiguousarray(samples.images.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    for mined in (samples, channels_last):
        ds = S.SampleDataset(mined)
        ours, theirs = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
        for _ in range(2):  # two epochs: the generator goes on the same way
            cut = list(S.batch_loader(ds, 7, RandomSampler(ds, generator=ours), ours))
            collated = list(DataLoader(ds, batch_size=7, shuffle=True, generator=theirs))
            assert len(cut) == len(collated) > 1
            for a, b in zip(cut, collated):
                assert all(torch.equal(x, y) and x.is_contiguous() for x, y in zip(a, b))
        assert torch.equal(ours.get_state(), theirs.get_state())


def test_second_mining_call_reads_the_cache(tiny_train, tmp_path, monkeypatch):
    first = S.mine_pnet_samples(tiny_train, SETTINGS, seed=0, cache_dir=tmp_path, progress=False)
    assert not first.from_cache and first.cache_path.is_file()

    def no_decoding(path):
        raise AssertionError("images were decoded although the samples were cached")

    monkeypatch.setattr(training_frames_module, "read_image", no_decoding)  # mining reads its frames there
    second = S.mine_pnet_samples(tiny_train, SETTINGS, seed=0, cache_dir=tmp_path, progress=False)
    assert second.from_cache and second.cache_path == first.cache_path
    np.testing.assert_array_equal(second.images, first.images)
    np.testing.assert_array_equal(second.offsets, first.offsets)
    # Other settings or a different seed are a different cache entry.
    with pytest.raises(AssertionError, match="decoded"):
        S.mine_pnet_samples(tiny_train, SETTINGS, seed=1, cache_dir=tmp_path, progress=False)
    assert list(tmp_path.glob("*.tmp")) == []


def test_a_corrupt_cache_is_a_clear_error(tiny_train, tmp_path):
    first = S.mine_pnet_samples(tiny_train, SETTINGS, seed=0, cache_dir=tmp_path, progress=False)
    first.cache_path.write_bytes(b"not an npz")
    with pytest.raises(DataError, match="unreadable sample cache.*delete it"):
        S.mine_pnet_samples(tiny_train, SETTINGS, seed=0, cache_dir=tmp_path, progress=False)


@pytest.mark.real_data
def test_pretrained_pnet_regresses_towards_the_face_on_real_positives(dexter_root):
    """Offsets follow facenet-pytorch's convention: the pretrained PNet's predictions correlate positively."""
    from facecmp.detection.models import pretrained_network

    data = load_training(dexter_root / "antrenare")
    data = data.subset([r.key for r in data.images[::100]])
    samples = S.mine_samples(data, SETTINGS, seed=0, progress=False)
    ds = S.SampleDataset(samples)
    with torch.no_grad():
        predicted, _ = pretrained_network("pnet")(ds.images)
    predicted = predicted.flatten(1).numpy()
    kept = samples.labels != NEGATIVE
    for k in range(4):
        assert np.corrcoef(predicted[kept, k], samples.offsets[kept, k])[0, 1] > 0.2
