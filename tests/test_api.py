"""The Python API as a user calls it: ``from facecmp import load_detector``; and the landmarks it returns."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib
import numpy as np
import pytest
from PIL import Image

import facecmp
from facecmp import load_detector
from facecmp.data.images import read_image
from facecmp.detection.checkpoint import save_checkpoint
from facecmp.detection.models import STAGES, pretrained_network
from facecmp.errors import DataError, ModelError

REPO = Path(__file__).resolve().parent.parent
GRACE_HOPPER = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"


def _python(code: str, cwd: Path) -> subprocess.CompletedProcess:
    """``python -c code`` in a fresh interpreter that imports this checkout's facecmp."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def detector() -> facecmp.FaceDetector:
    return load_detector("pretrained")


@pytest.fixture(scope="module")
def reference():
    facenet = pytest.importorskip("facenet_pytorch", reason="pip install --no-deps facenet-pytorch==2.6.0")
    return facenet.MTCNN(keep_all=True, device="cpu")


def assert_same_faces(a, b, box_atol=1e-3, score_atol=1e-5, point_atol=1e-3) -> None:
    assert len(a) == len(b)
    np.testing.assert_allclose(a.boxes, b.boxes, atol=box_atol)
    np.testing.assert_allclose(a.scores, b.scores, atol=score_atol)
    np.testing.assert_allclose(a.landmarks, b.landmarks, atol=point_atol)


# ----------------------------------------------------------------------------- as documented


def test_import_facecmp_does_not_import_torch(tmp_path):
    done = _python("import sys, facecmp; from facecmp import load_detector; print('torch' in sys.modules)", tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_the_documented_example_runs_as_written(tmp_path, detector):
    page = (REPO / "docs" / "api.md").read_text(encoding="utf-8")
    section = page.split("\n## Python API\n", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert "from facecmp import load_detector" in code and '"photo.jpg"' in code
    shutil.copy(GRACE_HOPPER, tmp_path / "photo.jpg")
    done = _python(code, tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    faces = detector.detect(GRACE_HOPPER)
    assert len(faces) >= 1 and len(lines) == len(faces)
    # What it printed is this face: the box, the score, the five points.
    assert str(faces.boxes[0].round(1)) in lines[0]
    assert str(round(float(faces.scores[0]), 3)) in lines[0]
    assert str(faces.landmarks[0].round(1).tolist()) in lines[0]


def test_results_are_arrays_of_documented_shapes(detector):
    faces = detector.detect(GRACE_HOPPER)
    k = len(faces)
    assert k >= 1
    assert faces.boxes.shape == (k, 4) and faces.scores.shape == (k,) and faces.landmarks.shape == (k, 5, 2)
    # The points lie on the face: inside its box.
    x1, y1, x2, y2 = faces.boxes[0]
    xs, ys = faces.landmarks[0].T
    assert ((x1 <= xs) & (xs <= x2) & (y1 <= ys) & (ys <= y2)).all()
    empty = detector.detect(np.full((120, 160, 3), 128, np.uint8))
    assert empty.boxes.shape == (0, 4) and empty.scores.shape == (0,) and empty.landmarks.shape == (0, 5, 2)


# ----------------------------------------------------------------------------- inputs


def test_path_pil_and_array_give_the_same_faces(detector):
    by_path = detector.detect(GRACE_HOPPER)
    assert len(by_path) >= 1
    with Image.open(GRACE_HOPPER) as im:
        im.load()
        assert_same_faces(detector.detect(im), by_path)
        assert_same_faces(detector.detect(im.convert("RGBA")), by_path)  # alpha dropped
    assert_same_faces(detector.detect(str(GRACE_HOPPER)), by_path)
    assert_same_faces(detector.detect(read_image(GRACE_HOPPER)), by_path)


def test_a_grayscale_pil_image_is_converted_to_rgb(detector):
    with Image.open(GRACE_HOPPER) as im:
        gray = im.convert("L")
    faces = detector.detect(gray)
    assert len(faces) >= 1
    assert_same_faces(faces, detector.detect(np.repeat(np.asarray(gray)[:, :, None], 3, axis=2)))


def test_detect_batch_equals_detect_in_order(tmp_path):
    detector = load_detector("pretrained", batch_size=2)  # chunks of 2: the 5 images span 3 calls
    image = read_image(GRACE_HOPPER)
    flipped = np.ascontiguousarray(image[:, ::-1])
    small = Image.fromarray(np.ascontiguousarray(image[::2, ::2]))
    blank = np.full((90, 120, 3), 200, np.uint8)
    images = [GRACE_HOPPER, flipped, small, blank, str(GRACE_HOPPER)]
    batch = detector.detect_batch(iter(images))  # any iterable
    assert len(batch) == len(images)
    for got, given in zip(batch, images):
        assert_same_faces(got, detector.detect(given))
    assert len(batch[0]) >= 1 and len(batch[1]) >= 1 and len(batch[3]) == 0


def test_settings_overrides_and_checkpoint_thresholds(tmp_path):
    assert load_detector("pretrained", min_face_size=40).settings.min_face_size == 40
    ckpt = save_checkpoint(tmp_path / "ft", {"pnet": pretrained_network("pnet").state_dict()}, {"thresholds": (0.5, 0.6, 0.65)})
    assert load_detector(ckpt).settings.thresholds == (0.5, 0.6, 0.65)
    assert load_detector(str(ckpt), thresholds=(0.6, 0.7, 0.7)).settings.thresholds == (0.6, 0.7, 0.7)


# ----------------------------------------------------------------------------- bad input


def test_bad_images_are_one_clear_error(detector, tmp_path):
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match=r"corrupt\.jpg: cannot decode image"):
        detector.detect(corrupt)
    with pytest.raises(DataError, match=r"missing\.jpg: image file not found"):
        detector.detect(tmp_path / "missing.jpg")
    with pytest.raises(DataError, match=r"H x W x 3 uint8 RGB; got shape \(20, 20, 3\), dtype float32"):
        detector.detect(np.zeros((20, 20, 3), np.float32))
    with pytest.raises(DataError, match=r"images\[2\]: .*got shape \(20, 20\)"):
        detector.detect_batch([GRACE_HOPPER, GRACE_HOPPER, np.zeros((20, 20), np.uint8)])
    with pytest.raises(DataError, match="got list"):
        detector.detect([[0, 0, 0]])


def test_missing_or_unfinished_checkpoint_is_one_clear_error(tmp_path):
    with pytest.raises(ModelError, match=r"nope: no such checkpoint folder; the model is 'pretrained'"):
        load_detector(tmp_path / "nope")
    (tmp_path / "unfinished").mkdir()
    with pytest.raises(ModelError, match=r"unfinished: no facecmp\.json"):
        load_detector(tmp_path / "unfinished")
    broken = tmp_path / "broken"
    save_checkpoint(broken, {"onet": pretrained_network("onet").state_dict()}, {})
    (broken / "onet.pt").write_bytes(b"garbage")
    with pytest.raises(ModelError, match=r"onet\.pt: not a readable PyTorch state dict"):
        load_detector(broken)


# ----------------------------------------------------------------------------- landmarks vs facenet-pytorch


def assert_same_landmarks(faces, reference, image: np.ndarray) -> None:
    """Our faces and facenet-pytorch's, matched by box: landmarks within 1 px."""
    ref_boxes, _, ref_points = reference.detect(Image.fromarray(image), landmarks=True)
    if ref_boxes is None:
        assert len(faces) == 0
        return
    ref_boxes, ref_points = np.asarray(ref_boxes, float), np.asarray(ref_points, float)
    assert len(faces) == len(ref_boxes)
    for box, points in zip(faces.boxes, faces.landmarks):
        match = np.abs(ref_boxes - box).max(axis=1).argmin()
        np.testing.assert_allclose(ref_boxes[match], box, atol=1.0)
        np.testing.assert_allclose(points, ref_points[match], atol=1.0)


def test_landmarks_equal_facenet_pytorch_on_a_photo(detector, reference):
    image = read_image(GRACE_HOPPER)
    faces = detector.detect(image)
    assert len(faces) >= 1
    assert_same_landmarks(faces, reference, image)


@pytest.mark.real_data
def test_landmarks_equal_facenet_pytorch_on_dexter_frames(detector, reference, dexter_root):
    frames = sorted((dexter_root / "antrenare" / "dexter").glob("*.jpg"))[::100]
    found = 0
    for path in frames:
        image = read_image(path)
        faces = detector.detect(image)
        found += len(faces)
        assert_same_landmarks(faces, reference, image)
    assert found >= 1, "no faces on these frames: the comparison compared nothing"


def test_landmarks_only_after_the_last_stage():
    from facecmp.detection.detector import Detector

    image = read_image(GRACE_HOPPER)
    cascade = Detector()
    for stage in STAGES[:2]:
        assert cascade.detect_batch([image], upto=stage)[0].landmarks is None
    assert cascade.detect_batch([image], upto="onet")[0].landmarks.shape[1:] == (5, 2)
