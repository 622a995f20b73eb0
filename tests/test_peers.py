"""Peer detectors (OpenCV's Haar cascade, dlib's HOG and CNN, dlib trained on our boxes, YuNet,
BlazeFace, RetinaFace, animeface) behind our interface.

Each test needs its optional package or environment and is skipped without it, with the line that
says what to install; the missing / broken / silent tests fake those states (hidden packages,
packages that fail to import, Pythons that cannot run a worker, detectors that answer nothing),
so they need no real environment.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torchvision  # noqa: F401  (loaded before pytester's inner run, see tests/test_plugin.py)

from facecmp.data import load_archive, split_dataset
from facecmp.data.images import read_image
from facecmp.data.records import Dataset, ImageRecord
from facecmp.data.synthetic import generate_dataset
from facecmp.detection.base import NAMED_MODELS, Detections
from facecmp.detection.checkpoint import load_checkpoint
from facecmp.detection.detector import load_detector
from facecmp.detection.peers import import_peer
from facecmp.errors import FacecmpError, MissingPeerError, ModelError
from facecmp.evaluation.evaluator import pairwise_iou
from facecmp.study.variants import REGISTRY, VariantContext
from facecmp.training.calibrate import best_setting
from tests.test_cli import assert_user_error, run_cli

pytest_plugins = ["pytester"]

GRACE_HOPPER = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
# Her face as the pretrained MTCNN finds it (x1, y1, x2, y2).
GRACE_FACE = np.array([[174, 120, 356, 340]], np.float64)


def need(module: str, model: str):
    try:
        return import_peer(module, model)
    except MissingPeerError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return generate_dataset(tmp_path_factory.mktemp("data") / "tiny", n_train_per_character=4, n_test=2, seed=3)


@pytest.mark.parametrize("model", ["opencv-haar", "dlib-hog", "blazeface", "blazeface-full", "yunet", "dlib-cnn", "retinaface"])
def test_a_peer_finds_a_real_face(model):
    try:
        found = load_detector(model).detect_batch([read_image(GRACE_HOPPER)])[0]
    except MissingPeerError as exc:
        pytest.skip(str(exc))
    assert isinstance(found, Detections) and found.boxes.shape == (len(found), 4) and len(found) >= 1
    best = int(np.argmax(found.scores))
    assert pairwise_iou(GRACE_FACE, found.boxes[best : best + 1].astype(np.float64))[0, 0] >= 0.5


def test_haar_scores_are_level_weights_or_neighbour_counts():
    need("cv2", "opencv-haar")
    from facecmp.detection.peers.haar import HaarDetector, HaarSettings

    image = read_image(GRACE_HOPPER)
    weights = HaarDetector(HaarSettings(score="level-weight")).detect(image)
    counts = HaarDetector(HaarSettings(score="neighbours", min_neighbors=3)).detect(image)
    assert len(counts) >= 1 and np.all(counts.scores == np.round(counts.scores)) and np.all(counts.scores > 3)
    assert not np.all(weights.scores == np.round(weights.scores))
    top = lambda d: d.boxes[np.argmax(d.scores)]  # noqa: E731
    np.testing.assert_allclose(top(weights), top(counts), atol=2)


@pytest.mark.parametrize("model, module, extra", [("opencv-haar", "cv2", "haar"), ("dlib-hog", "dlib", "dlib")])
def test_a_missing_peer_is_one_line_naming_the_extra(model, module, extra, monkeypatch, tiny, tmp_path):
    monkeypatch.setitem(sys.modules, module, None)  # `import module` now raises ImportError
    code, _out, err = run_cli(["detect", "--images", tiny / "validare" / "validare", "--out", tmp_path / "p", "--model", model])
    assert_user_error(code, err, model, f"pip install 'facecmp[{extra}]'")
    with pytest.raises(MissingPeerError, match=rf"facecmp\[{extra}\]"):
        REGISTRY[model].prepare(VariantContext(None, None, tmp_path, progress=False))


def test_blazeface_without_its_environment_is_one_line(monkeypatch, tiny, tmp_path):
    monkeypatch.setenv("FACECMP_MEDIAPIPE_PYTHON", str(tmp_path / "no-python"))
    code, _out, err = run_cli(["detect", "--images", tiny / "validare" / "validare", "--out", tmp_path / "p", "--model", "blazeface-full"])
    assert_user_error(code, err, "make mediapipe-venv", "no-python")


def test_best_setting_takes_the_best_dev_ap_first_on_ties(tiny):
    dev = load_archive(tiny).train
    truth = dev.ground_truth()
    keys = [r.key for r in dev.images]

    class Oracle:  # point (k,): the true boxes of the first k images
        def __init__(self, point):
            self.k = int(point[0])
            self.seen = 0

        def detect_batch(self, images):
            i, self.seen = self.seen, self.seen + 1
            boxes = truth[keys[i]].astype(np.float32) if i < self.k else np.zeros((0, 4), np.float32)
            return [Detections(boxes, np.ones(len(boxes), np.float32))]

    n = len(keys)
    best, table = best_setting(Oracle, dev, [(0.0,), (float(n // 2),), (float(n),), (float(n + 5),)], progress=False)
    assert best == (float(n),)
    assert [round(r["recall"], 6) for r in table][-2:] == [1.0, 1.0]
    assert table[0]["ap_cava"] == 0.0 < table[1]["ap_cava"] < table[2]["ap_cava"] == table[3]["ap_cava"]


def test_a_calibrated_peer_is_cached(tiny, tmp_path):
    need("cv2", "opencv-haar")
    train, dev = split_dataset(load_archive(tiny).train, per_folder=1, seed=0)
    ctx = VariantContext(train, dev, tmp_path, progress=False)
    first = REGISTRY["opencv-haar"].prepare(ctx)
    cached = list(tmp_path.glob("opencv-haar-settings-*.json"))
    assert len(cached) == 1
    stored = json.loads(cached[0].read_text())
    assert len(stored["table"]) == 6 and stored["thresholds"] == first.settings["thresholds"]
    stamp = cached[0].stat().st_mtime_ns
    again = REGISTRY["opencv-haar"].prepare(ctx)
    assert cached[0].stat().st_mtime_ns == stamp and again.settings == first.settings


# ----------------------------------------------------------------------------- dlib trained


def test_aspect_groups_split_boxes_by_shape():
    from facecmp.training.dlib_train import aspect_groups

    rng = np.random.default_rng(0)
    boxes = []
    for aspect in (0.6, 1.0, 1.6):
        for _ in range(30):
            h = rng.integers(40, 120)
            w = int(round(h * aspect * rng.uniform(0.95, 1.05)))
            boxes.append((10, 10, 10 + w - 1, 10 + h - 1))
    edges, labels = aspect_groups(np.array(boxes), 3)
    assert len(edges) == 2
    assert [set(labels[i * 30 : (i + 1) * 30]) for i in range(3)] == [{0}, {1}, {2}]
    edges, labels = aspect_groups(np.array(boxes), 1)
    assert len(edges) == 0 and set(labels) == {0}


def test_dlib_trains_a_checkpoint_that_detect_runs(tiny, tmp_path):
    need("dlib", "dlib-hog-trained")
    ckpt = tmp_path / "ck"
    code, out, err = run_cli(["finetune", "--data", tiny, "--out", ckpt, "--stages", "dlib-hog", "--dev-per-folder", "1"])
    assert code == 0, err
    meta = json.loads((ckpt / "facecmp.json").read_text())
    assert meta["kind"] == "dlib-hog" and len(meta["detectors"]) == len(meta["groups"]) >= 1
    assert all((ckpt / f).is_file() for f in meta["detectors"]) and not list(ckpt.glob("*.xml"))
    assert meta["timings"]["train"] > 0 and len(meta["calibration"]) == 8  # CALIBRATION_GRID
    with pytest.raises(ModelError, match="a dlib HOG detector"):
        load_checkpoint(ckpt)  # the MTCNN loader names what the folder is
    # It learnt the drawn faces: most of its own training faces are found.
    train = split_dataset(load_archive(tiny).train, per_folder=1, seed=1)[0]
    detector = load_detector(ckpt)
    hit = total = 0
    for record in train.images:
        found = detector.detect_batch([read_image(record.path)])[0]
        total += len(record.boxes)
        if len(found) and len(record.boxes):
            hit += int((pairwise_iou(record.boxes.astype(float), found.boxes.astype(float)).max(axis=1) >= 0.3).sum())
    assert hit >= 0.5 * total, (hit, total)
    code, out, err = run_cli(["detect", "--images", tiny / "validare" / "validare", "--out", tmp_path / "pred", "--model", ckpt])
    assert code == 0, err
    assert (tmp_path / "pred" / "scores_all_faces.npy").is_file()


def test_boxes_a_window_cannot_fit_are_ignored_and_counted(tiny, tmp_path):
    need("dlib", "dlib-hog-trained")
    from facecmp.training.dlib_train import DlibTrainSettings, train_dlib_hog

    train = load_archive(tiny).train
    odd = train.images[0]
    sliver = np.array([[5, 5, 304, 24]])  # 300 x 20: no square-ish window can match it
    images = [ImageRecord(odd.key, odd.path, np.concatenate([odd.boxes, sliver]), odd.labels + ("unknown",))] + train.images[1:]
    folder = train_dlib_hog(Dataset("odd", images), tmp_path / "ck", settings=DlibTrainSettings(aspect_groups=1), progress=False)
    meta = json.loads((folder / "facecmp.json").read_text())
    assert meta["groups"][0]["n_ignored"] >= 1 and meta["groups"][0]["n_boxes"] >= 1
    assert meta["refused_images"] == {}


class FakeDlib:
    """dlib's training entry points; refuses the images in ``refuse`` (in its own words) once each."""

    def __init__(self, refuse):
        self.refuse = list(refuse)

    @staticmethod
    def simple_object_detector_training_options():
        return type("Options", (), {"detection_window_size": 0})()

    def train_simple_object_detector(self, xml, out, options):
        listed = [p for p in self.refuse if p in Path(xml).read_text()]
        if listed:
            raise RuntimeError("Error! An impossible set of object boxes was given for training. All the boxes need to have a "
                               "similar aspect ratio ... The following images contain invalid boxes:\n  " + "\n  ".join(listed))
        Path(out).write_text("trained")


def test_images_dlib_refuses_are_left_out_and_named(tiny, tmp_path, monkeypatch):
    from facecmp.training import dlib_train

    train = load_archive(tiny).train
    refused = [train.images[1], train.images[3]]
    fake = FakeDlib(str(Path(r.path).resolve()) for r in refused)
    monkeypatch.setattr(dlib_train, "import_peer", lambda module, model: fake)
    folder = dlib_train.train_dlib_hog(train, tmp_path / "ck", settings=dlib_train.DlibTrainSettings(aspect_groups=1), progress=False)
    meta = json.loads((folder / "facecmp.json").read_text())
    assert meta["refused_images"] == {"0": [r.key for r in refused]}
    assert (folder / "group0.svm").read_text() == "trained" and not list(folder.glob("*.xml"))


def test_a_refusal_naming_no_known_image_is_one_clear_error(tiny, tmp_path, monkeypatch):
    from facecmp.training import dlib_train

    fake = FakeDlib(["antrenare"])  # every XML names images under antrenare/; the message names none of ours
    monkeypatch.setattr(fake, "train_simple_object_detector", lambda xml, out, options: (_ for _ in ()).throw(RuntimeError("image index 9999999 oops")))
    monkeypatch.setattr(dlib_train, "import_peer", lambda module, model: fake)
    train = load_archive(tiny).train
    with pytest.raises(FacecmpError, match="dlib refused aspect group 0 .*oops"):
        dlib_train.train_dlib_hog(train, tmp_path / "ck", settings=dlib_train.DlibTrainSettings(aspect_groups=1), progress=False)
    assert not list((tmp_path / "ck").glob("*.svm"))


def test_mixing_dlib_with_mtcnn_stages_is_a_usage_error(tiny, tmp_path):
    code, _out, err = run_cli(["finetune", "--data", tiny, "--out", tmp_path / "ck", "--stages", "pnet,dlib-hog"])
    assert_user_error(code, err, "--stages dlib-hog alone")


NEW_PEERS = ("yunet", "dlib-cnn", "retinaface", "animeface")


def test_peers_are_named_models():
    assert {"opencv-haar", "dlib-hog", "blazeface", "blazeface-full", *NEW_PEERS} <= set(NAMED_MODELS)
    assert {"opencv-haar", "dlib-hog", "dlib-hog-trained", "blazeface", "blazeface-full", *NEW_PEERS} <= set(REGISTRY)
    from facecmp.study.compare import PEER_VARIANTS

    assert set(NEW_PEERS) <= set(PEER_VARIANTS)


MISSING_PEER = """
from facecmp.detection.peers import missing_line
from facecmp.errors import MissingPeerError
from facecmp.study.variants import Variant, register


def absent(ctx):
    raise MissingPeerError(missing_line("absent-peer", "dlib"))


register(Variant("absent-peer", "a peer whose package is not installed", absent))
"""


def _run_plugin(pytester, tiny, conftest: str, *options: str):
    saved = dict(REGISTRY)
    try:
        pytester.makeconftest("from facecmp.study.variants import REGISTRY\nREGISTRY.clear()\n" + conftest)
        pytester.makepyfile(test_peer="def test_evaluated(facecmp_variant, facecmp_result):\n    pass\n")
        return pytester.runpytest(
            "-p", "no:cacheprovider", "-rsf", "--facecmp-data", str(tiny), "--facecmp-dev", "0",
            "--facecmp-cache", str(pytester.path / "cache"), *options,
        )
    finally:
        REGISTRY.clear()
        REGISTRY.update(saved)


def test_the_benchmark_plugin_skips_a_missing_peer_nobody_asked_for(pytester, tiny):
    result = _run_plugin(pytester, tiny, MISSING_PEER)  # every registered variant: absent-peer only
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*absent-peer needs the optional package 'dlib-bin': pip install 'facecmp?dlib?'*"])


def test_a_missing_peer_asked_for_by_name_fails_the_run_with_its_line(pytester, tiny):
    result = _run_plugin(pytester, tiny, MISSING_PEER, "--facecmp-variants", "absent-peer")
    result.assert_outcomes(errors=1)  # its fixture fails: an error, never a skip
    result.stdout.fnmatch_lines(["*absent-peer needs the optional package 'dlib-bin': pip install 'facecmp?dlib?'*asked for by name*"])
    assert "Traceback" not in result.stdout.str()


def test_dlib_calibration_cuts_one_scan_into_what_each_threshold_finds():
    need("dlib", "dlib-hog")
    from facecmp.detection.peers.dlib_hog import CALIBRATION_GRID, calibration_detectors, dlib_hog_at

    images = [read_image(GRACE_HOPPER)[::2, ::2].copy(), read_image(GRACE_HOPPER)[::3, ::3].copy()]
    shared = calibration_detectors()
    for point in CALIBRATION_GRID:
        for cut, direct in zip(shared(point).detect_batch(images), dlib_hog_at(point).detect_batch(images)):
            np.testing.assert_array_equal(cut.boxes, direct.boxes)
            np.testing.assert_allclose(cut.scores, direct.scores, rtol=1e-6)


# ----------------------------------------------------------------------------- issue #23 peers


def _grace_found(model: str):
    try:
        found = load_detector(model).detect_batch([read_image(GRACE_HOPPER)])[0]
    except MissingPeerError as exc:
        pytest.skip(str(exc))
    return found


@pytest.mark.parametrize("model", ["yunet", "retinaface"])
def test_cnn_peers_give_five_landmarks_inside_the_face(model):
    found = _grace_found(model)
    assert found.landmarks is not None and found.landmarks.shape == (len(found), 5, 2)
    best = int(np.argmax(found.scores))
    (x1, y1, x2, y2), points = found.boxes[best], found.landmarks[best]
    assert np.all((points[:, 0] >= x1) & (points[:, 0] <= x2) & (points[:, 1] >= y1) & (points[:, 1] <= y2))
    assert points[0, 0] < points[1, 0] and points[2, 1] < points[3, 1]  # eyes left to right, nose above the mouth


def test_yunet_pins_its_threads_and_shrinks_images_it_would_warn_about():
    need("yuface", "yunet")
    import warnings

    from facecmp.detection.peers.yunet import MAX_SIDE, _omp_set_num_threads, yunet_at

    assert _omp_set_num_threads() is not None  # the wheel's own OpenMP runtime, pinned to 1 thread per call
    image = read_image(GRACE_HOPPER)
    big = np.repeat(np.repeat(image, 2, axis=0), 2, axis=1)  # 1200 x 1024: above the 960 px it warns at
    assert max(big.shape[:2]) > MAX_SIDE
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # yuface's own warning would be an error here
        found = yunet_at((0.0,)).detect(big)
    best = int(np.argmax(found.scores))
    assert pairwise_iou(2 * GRACE_FACE, found.boxes[best : best + 1].astype(np.float64))[0, 0] >= 0.5


@pytest.mark.parametrize("model, build, grid", [
    ("yunet", "facecmp.detection.peers.yunet:yunet_at", "YUNET_GRID"),
    ("retinaface", "facecmp.detection.peers.retinaface_tf:retinaface_at", "RETINAFACE_GRID"),
])
def test_a_score_cut_calibration_finds_what_each_point_finds(model, build, grid):
    import importlib

    from facecmp.detection.peers import score_cut_calibration
    from facecmp.study import variants

    module, _, attr = build.partition(":")
    at = getattr(importlib.import_module(module), attr)
    points = getattr(variants, grid)
    images = [read_image(GRACE_HOPPER), read_image(GRACE_HOPPER)[::2, ::2].copy()]
    try:
        shared = score_cut_calibration(at, points)
        for point in points:
            for cut, direct in zip(shared(point).detect_batch(images), at(point).detect_batch(images)):
                np.testing.assert_allclose(cut.boxes, direct.boxes, atol=1e-3)
                np.testing.assert_allclose(cut.scores, direct.scores, rtol=1e-6)
    except MissingPeerError as exc:
        pytest.skip(str(exc))


def test_dlib_cnn_reads_its_weights_without_importing_face_recognition_models():
    need("dlib", "dlib-cnn")
    from facecmp.detection.peers.dlib_cnn import DlibCnnDetector

    try:
        detector = DlibCnnDetector()
    except MissingPeerError as exc:
        pytest.skip(str(exc))
    assert detector.weights.name == "mmod_human_face_detector.dat" and detector.weights.stat().st_size > 100_000
    assert "face_recognition_models" not in sys.modules  # its __init__ needs pkg_resources


def test_animeface_runs_in_its_environment_on_a_pillow_it_answers_on():
    try:
        detector = load_detector("animeface")
        found = detector.detect_batch([read_image(GRACE_HOPPER)])[0]  # a photo: no anime face expected
    except MissingPeerError as exc:
        pytest.skip(str(exc))
    pillow = tuple(int(v) for v in detector.version.split("Pillow ")[1].split(".")[:2])
    assert pillow <= (11, 3) and found.boxes.shape == (len(found), 4)
