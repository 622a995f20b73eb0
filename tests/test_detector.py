"""Our cascade against facenet-pytorch's MTCNN, and its building blocks."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from facecmp.detection import cascade as C
from facecmp.data.images import read_image
from facecmp.detection.detector import Detector, DetectorSettings, load_detector
from facecmp.errors import ModelError

GRACE_HOPPER = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"


@pytest.fixture(scope="module")
def detector() -> Detector:
    return Detector()


@pytest.fixture(scope="module")
def reference():
    import facenet_pytorch  # the reference: installed by `make install`, never skipped

    return facenet_pytorch.MTCNN(keep_all=True, device="cpu")


def _sorted(boxes: np.ndarray, scores: np.ndarray):
    order = np.lexsort(boxes.T[::-1])
    return boxes[order], scores[order]


def assert_same_detections(ours, reference, image: np.ndarray) -> None:
    from PIL import Image

    ref_boxes, ref_scores = reference.detect(Image.fromarray(image))
    ref_boxes = np.zeros((0, 4)) if ref_boxes is None else ref_boxes
    ref_scores = np.zeros(0) if ref_boxes.size == 0 else np.asarray(ref_scores, dtype=float)
    det = ours.detect(image)
    assert len(det) == len(ref_boxes), "a different number of faces than facenet-pytorch's MTCNN"
    if len(det):
        a_boxes, a_scores = _sorted(det.boxes.astype(float), det.scores.astype(float))
        b_boxes, b_scores = _sorted(ref_boxes.astype(float), ref_scores)
        np.testing.assert_allclose(a_boxes, b_boxes, atol=1.0)
        np.testing.assert_allclose(a_scores, b_scores, atol=1e-4)


def test_parity_on_a_real_photo(detector, reference):
    image = read_image(GRACE_HOPPER)
    assert len(detector.detect(image)) >= 1
    assert_same_detections(detector, reference, image)


@pytest.mark.real_data
def test_parity_on_dexter_frames(detector, reference, dexter_root):
    frames = sorted((dexter_root / "antrenare" / "dexter").glob("*.jpg"))[::100]
    for path in frames:
        assert_same_detections(detector, reference, read_image(path))


def test_parity_at_other_settings(reference):
    image = read_image(GRACE_HOPPER)
    reference.min_face_size, reference.thresholds = 40, [0.5, 0.6, 0.6]
    try:
        ours = Detector(settings=DetectorSettings(min_face_size=40, thresholds=(0.5, 0.6, 0.6)))
        assert_same_detections(ours, reference, image)
    finally:
        reference.min_face_size, reference.thresholds = 20, [0.6, 0.7, 0.7]


def test_batch_equals_one_by_one(detector):
    image = read_image(GRACE_HOPPER)
    flipped = np.ascontiguousarray(image[:, ::-1])
    small = np.ascontiguousarray(image[::2, ::2])
    batch = detector.detect_batch([image, small, flipped])
    for got, img in zip(batch, [image, small, flipped]):
        alone = detector.detect(img)
        np.testing.assert_allclose(got.boxes, alone.boxes, atol=1e-3)
        np.testing.assert_allclose(got.scores, alone.scores, atol=1e-5)


def test_blank_image_has_no_faces(detector):
    assert len(detector.detect(np.full((120, 160, 3), 128, dtype=np.uint8))) == 0


def test_image_smaller_than_min_face(detector):
    assert len(detector.detect(np.zeros((10, 10, 3), dtype=np.uint8))) == 0


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 60), st.integers(0, 40), st.integers(1, 64), st.integers(1, 48)),
        min_size=1,
        max_size=8,
    ),
    st.sampled_from([24, 48]),
)
def test_crop_resize_equals_area_interpolation(windows, size):
    """The summed-area-table resampler agrees with one ``interpolate(mode='area')`` per crop."""
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (2, 3, 48, 64), generator=gen).float()
    wins = np.array([[x, y, min(x + w, 64), min(y + h, 48)] for x, y, w, h in windows])
    wins[:, 2] = np.maximum(wins[:, 2], wins[:, 0] + 1)
    wins[:, 3] = np.maximum(wins[:, 3], wins[:, 1] + 1)
    inds = torch.arange(len(wins)) % 2
    got = C.crop_resize(C.integral_image(images), wins, inds, size)
    for k, (x0, y0, x1, y1) in enumerate(wins):
        want = F.interpolate(images[inds[k] : inds[k] + 1, :, y0:y1, x0:x1], size=(size, size), mode="area")
        torch.testing.assert_close(got[k : k + 1], want, atol=1e-3, rtol=0)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 60), st.integers(1, 70))
def test_area_resize_equals_area_interpolation(out_h, out_w):
    gen = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (2, 3, 45, 61), generator=gen).float()
    got = C.AreaResize(45, 61, (out_h, out_w))(C.integral_image(images))
    want = F.interpolate(images, size=(out_h, out_w), mode="area")
    torch.testing.assert_close(got, want, atol=1e-3, rtol=0)


def test_nms_min_suppresses_contained_boxes():
    boxes = np.array([[0, 0, 99, 99], [10, 10, 40, 40], [200, 200, 260, 260]], dtype=float)
    keep = C.nms_min(boxes, np.array([0.9, 0.8, 0.7]), 0.7)
    # The small box lies inside the big one: min-overlap 1.0 > 0.7 although IoU is ~0.1.
    assert sorted(keep.tolist()) == [0, 2]


def test_square_keeps_centre_and_takes_longer_side():
    out = C.square(torch.tensor([[10.0, 20.0, 30.0, 80.0]]))
    torch.testing.assert_close(out, torch.tensor([[-10.0, 20.0, 50.0, 80.0]]))


def test_pyramid_covers_min_face_to_image():
    scales = C.pyramid_scales(360, 480, 20, 0.709)
    assert scales[0] == pytest.approx(12 / 20)
    assert 360 * scales[-1] >= 12 > 360 * scales[-1] * 0.709


@pytest.mark.parametrize(
    "kwargs",
    [dict(min_face_size=5), dict(factor=1.2), dict(thresholds=(0.6, 0.7)), dict(thresholds=(0.6, 0.7, 1.5))],
)
def test_invalid_settings_are_rejected(kwargs):
    with pytest.raises(ValueError):
        DetectorSettings(**kwargs)


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(ModelError, match="facecmp.json|not found|checkpoint"):
        load_detector(tmp_path / "nope")


def test_pyramid_plans_are_kept_for_the_most_recent_image_sizes_only():
    from facecmp.detection.detector import PYRAMID_PLANS_KEPT

    detector = Detector()
    rng = np.random.default_rng(0)
    sizes = [(40 + i, 50 + i) for i in range(PYRAMID_PLANS_KEPT + 3)]
    for h, w in sizes:
        detector.detect(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    assert list(detector._pyramids) == sizes[-PYRAMID_PLANS_KEPT:]
    image = rng.integers(0, 256, sizes[-PYRAMID_PLANS_KEPT] + (3,), dtype=np.uint8)
    first = detector.detect(image)
    assert list(detector._pyramids)[-1] == sizes[-PYRAMID_PLANS_KEPT]  # used again: now the most recent
    again = detector.detect(image)
    np.testing.assert_array_equal(first.boxes, again.boxes)
