"""A peer asked for by name that cannot run fails with one line saying why, and the three reasons
read differently: missing (install it), broken (it is there but does not work: reinstall or
rebuild it), silent (it runs but finds nothing on a set with faces). Every state is faked here
(hidden or planted packages, Pythons that cannot run a worker, a detector that answers nothing):
no real peer environment is needed.
"""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import numpy as np
import pytest
import torchvision  # noqa: F401  (loaded before pytester's inner run, see tests/test_plugin.py)

from facecmp.data import load_archive
from facecmp.data.synthetic import generate_dataset
from facecmp.detection.base import Detections
from facecmp.detection.peers import import_peer, peer_file
from facecmp.errors import BrokenPeerError, MissingPeerError, SilentPeerError
from facecmp.study.compare import evaluate_prepared
from facecmp.study.variants import REGISTRY, Prepared, VariantContext
from facecmp.training.calibrate import best_setting
from tests.test_cli import assert_user_error, run_cli

pytest_plugins = ["pytester"]


@pytest.fixture(scope="module")
def faces(tmp_path_factory) -> Path:
    """A generated archive with faces on more than SILENT_MIN_IMAGES images."""
    return generate_dataset(tmp_path_factory.mktemp("data") / "faces", n_train_per_character=6, n_test=24, seed=5)


def _plant(tmp_path: Path, monkeypatch, package: str, body: str) -> None:
    """A package ``package`` on sys.path whose ``__init__`` runs ``body``."""
    folder = tmp_path / "site" / package
    folder.mkdir(parents=True)
    (folder / "__init__.py").write_text(body)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    for name in [m for m in sys.modules if m == package or m.startswith(package + ".")]:
        monkeypatch.delitem(sys.modules, name)


def _fake_python(tmp_path: Path, script: str) -> Path:
    path = tmp_path / "python"
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


# -- missing -----------------------------------------------------------------------------------
def test_a_missing_package_is_missing(monkeypatch, faces, tmp_path):
    monkeypatch.setitem(sys.modules, "yuface", None)
    monkeypatch.setitem(sys.modules, "yuface.yuface", None)
    code, _out, err = run_cli(["detect", "--images", faces / "validare" / "validare", "--out", tmp_path / "p", "--model", "yunet"])
    assert_user_error(code, err, "yunet needs the optional package 'yuface==2023.5.1'", "pip install 'facecmp[yunet]'")


def test_missing_model_weights_are_missing(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "face_recognition_models" else real(name, *a))
    with pytest.raises(MissingPeerError, match=r"pip install 'facecmp\[dlib-cnn\]'"):
        peer_file("face_recognition_models", "models/mmod_human_face_detector.dat", "dlib-cnn")


@pytest.mark.parametrize("model, variable, target", [
    ("retinaface", "FACECMP_RETINAFACE_PYTHON", "make retinaface-venv"),
    ("animeface", "FACECMP_ANIMEFACE_PYTHON", "make animeface-venv"),
])
def test_a_missing_environment_is_missing(model, variable, target, monkeypatch, faces, tmp_path):
    monkeypatch.setenv(variable, str(tmp_path / "no-python"))
    code, _out, err = run_cli(["detect", "--images", faces / "validare" / "validare", "--out", tmp_path / "p", "--model", model])
    assert_user_error(code, err, target, "no-python", "environment of its own")


def test_an_environment_without_its_package_is_missing(monkeypatch):
    monkeypatch.setenv("FACECMP_RETINAFACE_PYTHON", sys.executable)  # this Python has no tensorflow
    from facecmp.detection.peers.retinaface_tf import retinaface

    with pytest.raises(MissingPeerError, match="python has no 'retinaface'.*make retinaface-venv"):
        retinaface().detect(np.zeros((64, 64, 3), np.uint8))


# -- broken ------------------------------------------------------------------------------------
def test_a_package_that_fails_to_import_is_broken_not_missing(monkeypatch, faces, tmp_path):
    _plant(tmp_path, monkeypatch, "yuface", "raise ImportError('libfacedetection.so: cannot open shared object file')\n")
    with pytest.raises(BrokenPeerError) as caught:
        import_peer("yuface.yuface", "yunet")
    assert not isinstance(caught.value, MissingPeerError)
    code, _out, err = run_cli(["detect", "--images", faces / "validare" / "validare", "--out", tmp_path / "p", "--model", "yunet"])
    assert_user_error(code, err, "is installed but does not work", "libfacedetection.so", "--force-reinstall")
    assert "needs the optional package" not in err


def test_a_package_missing_one_of_its_own_imports_is_broken(monkeypatch, tmp_path):
    _plant(tmp_path, monkeypatch, "dlib", "import a_module_nobody_has\n")
    with pytest.raises(BrokenPeerError, match="No module named 'a_module_nobody_has'"):
        import_peer("dlib", "dlib-cnn")


def test_a_python_that_cannot_start_the_worker_is_broken(monkeypatch, faces, tmp_path):
    python = _fake_python(tmp_path, "echo 'ImportError: libtensorflow_framework.so.2: cannot open shared object file' >&2\nexit 1\n")
    monkeypatch.setenv("FACECMP_RETINAFACE_PYTHON", str(python))
    code, _out, err = run_cli(["detect", "--images", faces / "validare" / "validare", "--out", tmp_path / "p", "--model", "retinaface"])
    assert_user_error(code, err, "its environment", "is broken", "libtensorflow_framework.so.2", "make retinaface-venv")


def test_animeface_on_a_pillow_it_answers_nothing_on_is_broken(monkeypatch):
    import PIL

    if tuple(int(v) for v in PIL.__version__.split(".")[:2]) <= (11, 3):
        pytest.skip(f"this environment's Pillow {PIL.__version__} is one animeface answers on")
    monkeypatch.setenv("FACECMP_ANIMEFACE_PYTHON", sys.executable)  # the worker checks Pillow before animeface
    from facecmp.detection.peers.animeface_nvxs import animeface

    with pytest.raises(BrokenPeerError, match=rf"answers nothing on Pillow {PIL.__version__}.*make animeface-venv"):
        animeface().detect(np.zeros((64, 64, 3), np.uint8))


# -- silent ------------------------------------------------------------------------------------
class Silent:
    """Runs, answers nothing."""

    silent_hint = "rebuild its environment: make quiet-venv"

    def detect_batch(self, images):
        return [Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32)) for _ in images]


def test_a_detector_that_finds_nothing_on_a_set_with_faces_is_silent(faces):
    train = load_archive(faces).train
    with pytest.raises(SilentPeerError, match=r"quiet found no face on any of the 24 images .* answers nothing.*make quiet-venv"):
        evaluate_prepared("quiet", Prepared(Silent()), train, progress=False)
    with pytest.raises(SilentPeerError, match="quiet found no face"):
        best_setting(lambda point: Silent(), train, [(0.0,), (0.5,)], progress=False, name="quiet")


def test_finding_nothing_on_a_few_images_is_a_result_not_a_silence(faces):
    train = load_archive(faces).train
    few = train.subset([r.key for r in train.images[:5]])
    assert evaluate_prepared("quiet", Prepared(Silent()), few, progress=False).evaluation.ap_cava == 0.0


SILENT_PEER = """
import numpy as np
from facecmp.detection.base import Detections
from facecmp.study.variants import Prepared, Variant, register


class Silent:
    def detect_batch(self, images):
        return [Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32)) for _ in images]


register(Variant("quiet-peer", "a peer that answers nothing", lambda ctx: Prepared(Silent())))
"""


def test_the_benchmark_plugin_fails_a_silent_peer_even_unrequested(pytester, faces):
    from tests.test_peers import _run_plugin

    result = _run_plugin(pytester, faces, SILENT_PEER)
    result.assert_outcomes(errors=1)  # its fixture fails: an error, never a skip
    result.stdout.fnmatch_lines(["*quiet-peer found no face on any of the 24 images*"])


def test_compare_fails_on_a_peer_it_cannot_run(monkeypatch, faces, tmp_path):
    from facecmp.study import compare

    choose = compare.choose_splits
    monkeypatch.setattr(compare, "choose_splits", lambda *a, **k: choose(*a, **{**k, "dev_per_folder": 1}))

    monkeypatch.setitem(sys.modules, "yuface", None)
    monkeypatch.setitem(sys.modules, "yuface.yuface", None)
    with pytest.raises(MissingPeerError, match="facecmp\\[yunet\\]"):
        compare.run_comparison(faces, tmp_path / "out", variants=("yunet",))
    assert not (tmp_path / "out" / "report.md").exists()


PARENT_STATE: list[str] = []  # filled by the test in this process: a forked worker inherits it, a spawned one does not


class NotForkSafe:
    """Says its native library cannot run in a forked copy; scores 1 in a worker started afresh."""

    fork_safe = False

    def detect_batch(self, images):
        spawned = float(not PARENT_STATE)
        return [Detections(np.array([[0, 0, 9, 9]], np.float32), np.array([spawned], np.float32)) for _ in images]


def test_a_detector_that_is_not_fork_safe_runs_in_spawned_workers(faces):
    from facecmp.detection.inference import run_detector

    few = load_archive(faces).test
    few = few.subset([r.key for r in few.images[:2]])
    PARENT_STATE.append("used here")
    try:
        run = run_detector(NotForkSafe(), few, workers=1, progress=False)
    finally:
        PARENT_STATE.clear()
    assert [float(d.scores[0]) for d in run.per_image.values()] == [1.0, 1.0]


def test_a_detector_that_answered_on_the_dev_split_is_not_silent_where_it_finds_nothing(faces):
    train = load_archive(faces).train  # a human-face detector on cartoons may find nothing on the test set
    result = evaluate_prepared("quiet", Prepared(Silent(), settings={"dev_detections": 6}), train, progress=False)
    assert result.evaluation.ap_cava == 0.0
