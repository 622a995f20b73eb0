"""An option given is an option used: ``--threads``, ``--format`` and ``--device`` reach every stage.

Each command is run through ``main`` with the library call it makes replaced by a recorder (no
training, no data); the training functions themselves are run on a handful of random samples.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from facecmp.cli import main
from facecmp.data.records import Dataset, ImageRecord

DEVICE = "cpu:0"  # a device torch accepts here that differs from the default "cpu"
THREADS = 3


class Called(Exception):
    """Raised by a recorder: the command got as far as the library call."""


@pytest.fixture(autouse=True)
def keep_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def recorder(seen: dict, name: str, stop: bool = True):
    def call(*args, **kwargs):
        seen[name] = {**kwargs, "threads": torch.get_num_threads()}
        if stop:
            raise Called(name)

    return call


def run(argv) -> None:
    with pytest.raises(Called):
        main([str(a) for a in argv])


def test_finetune_passes_threads_format_and_device(monkeypatch, tmp_path):
    from facecmp.study import finetune

    seen = {}
    monkeypatch.setattr(finetune, "finetune_from_archive", recorder(seen, "detector"))
    run(["--threads", THREADS, "finetune", "--data", tmp_path, "--out", tmp_path / "o", "--format", "coco", "--device", DEVICE])
    assert seen["detector"]["fmt"] == "coco" and seen["detector"]["device"] == DEVICE and seen["detector"]["threads"] == THREADS


def test_finetune_with_a_recognizer_passes_format_and_device_to_both_stages(monkeypatch, tmp_path):
    from facecmp.study import finetune, recognition

    seen = {}
    monkeypatch.setattr(finetune, "finetune_from_archive", recorder(seen, "detector", stop=False))
    monkeypatch.setattr(recognition, "recognizer_from_archive", recorder(seen, "recognizer"))
    run(["--threads", THREADS, "finetune", "--data", tmp_path, "--out", tmp_path / "o", "--stages", "pnet,recognizer",
         "--format", "coco", "--device", DEVICE])
    for stage in ("detector", "recognizer"):
        assert (seen[stage]["fmt"], seen[stage]["device"], seen[stage]["threads"]) == ("coco", DEVICE, THREADS), stage


def test_compare_and_robustness_pass_threads_format_and_device(monkeypatch, tmp_path):
    from facecmp.study import compare
    from facecmp.study.robustness import run as robustness

    seen = {}
    monkeypatch.setattr(compare, "run_comparison", recorder(seen, "compare"))
    monkeypatch.setattr(robustness, "run_robustness", recorder(seen, "robustness"))
    run(["--threads", THREADS, "compare", "--data", tmp_path, "--out", tmp_path / "o", "--format", "voc", "--device", DEVICE])
    run(["--threads", THREADS, "robustness", "--data", tmp_path, "--out", tmp_path / "r", "--format", "voc", "--device", DEVICE])
    for command in ("compare", "robustness"):
        assert (seen[command]["fmt"], seen[command]["device"], seen[command]["threads"]) == ("voc", DEVICE, THREADS), command


def test_check_and_convert_pass_the_format(monkeypatch, tmp_path):
    import facecmp.data
    import facecmp.data.convert

    seen = {}
    check = recorder(seen, "check")
    monkeypatch.setattr(facecmp.data, "check_dataset", lambda data, fmt: check(fmt=fmt))
    monkeypatch.setattr(facecmp.data.convert, "convert", recorder(seen, "convert"))
    run(["check", "--data", tmp_path, "--format", "yolo"])
    run(["convert", "--data", tmp_path, "--to", "coco", "--out", tmp_path / "c", "--format", "yolo"])
    assert seen["check"]["fmt"] == "yolo" and seen["convert"]["fmt"] == "yolo"


def test_detect_passes_the_device_and_runs_on_threads_workers(monkeypatch, tmp_path):
    from facecmp.detection import detector, inference

    seen = {}
    images = Dataset("imgs", [ImageRecord(f"{i}.jpg", tmp_path / f"{i}.jpg") for i in range(20)])
    monkeypatch.setattr(inference, "images_to_detect", lambda path: images)
    monkeypatch.setattr(detector, "load_detector", lambda model, **kw: seen.setdefault("load", kw))
    monkeypatch.setattr(inference, "run_detector", recorder(seen, "run"))
    run(["--threads", THREADS, "detect", "--images", tmp_path, "--out", tmp_path / "o", "--device", DEVICE])
    assert seen["load"]["device"] == DEVICE and seen["run"]["workers"] == THREADS


# -- the training functions keep what they are given -----------------------------------------------
def _samples(n: int = 40):
    from facecmp.training.samples import SampleSet

    rng = np.random.default_rng(0)
    labels = np.array([1, 0, -1, 0] * (n // 4), np.int8)
    return SampleSet(rng.integers(0, 255, (n, 3, 12, 12), dtype=np.uint8), labels, rng.normal(0, 0.1, (n, 4)).astype(np.float32))


def test_stage_training_keeps_the_processes_thread_count(tmp_path):
    from facecmp.detection.models import build_network
    from facecmp.training.loop import TrainSettings, train_stage

    torch.set_num_threads(THREADS)
    train_stage({"pnet": build_network("pnet")}, "pnet", _samples(), tmp_path, TrainSettings(epochs=1, batch_size=16), progress=False)
    assert torch.get_num_threads() == THREADS  # the recipe's default no longer resets it to 2
    train_stage({"pnet": build_network("pnet")}, "pnet", _samples(), tmp_path / "b", TrainSettings(epochs=1, batch_size=16, threads=1),
                progress=False)
    assert torch.get_num_threads() == 1  # a recipe that names a number still gets it


def test_recognizer_training_uses_the_threads_and_device_it_is_given(monkeypatch, tmp_path):
    from facecmp.detection.models import build_network
    from facecmp.training import recognizer as rec

    rng = np.random.default_rng(0)
    crops = rec.FaceCrops(rng.integers(0, 255, (8, 3, 48, 48), dtype=np.uint8), np.array([0, 1] * 4), ("a", "b"))
    monkeypatch.setattr(rec, "cached_face_crops", lambda *args, **kwargs: crops)
    moved = []
    to = rec.RecognizerNet.to
    monkeypatch.setattr(rec.RecognizerNet, "to", lambda self, *a, **k: moved.append(str(a[0] if a else k.get("device"))) or to(self, *a, **k))
    data = Dataset("d", [ImageRecord("a/1.jpg", tmp_path / "1.jpg", np.array([[0, 0, 40, 40]]), ("a",))])
    torch.set_num_threads(THREADS)
    result = rec.train_recognizer(data, data, build_network("onet").state_dict(), tmp_path, rec.RecognizerSettings(epochs=1),
                                  classes=("a", "b"), progress=False, device=DEVICE)
    assert DEVICE in moved and torch.get_num_threads() == THREADS
    assert next(result.net.parameters()).device.type == "cpu"


def test_study_recognizers_train_on_the_studys_device(monkeypatch, tmp_path):
    import json

    from facecmp.study import recognition

    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "facecmp.json").write_text(json.dumps({"format": 1}))
    (folder / "onet.pt").write_bytes(b"weights")
    image = tmp_path / "1.jpg"
    image.write_bytes(b"x" * 64)
    data = Dataset("d", [ImageRecord("a/1.jpg", image, np.array([[0, 0, 40, 40]]), ("a",))])
    seen = {}
    monkeypatch.setattr(recognition, "add_recognizer", recorder(seen, "add"))
    with pytest.raises(Called):
        recognition.recognizer_variants(folder, data, None, tmp_path / "cache", kinds=("finetune",), device=DEVICE)
    assert seen["add"]["device"] == DEVICE


def test_dlib_training_threads_default_to_the_processes():
    from facecmp.training.dlib_train import DlibTrainSettings
    from facecmp.training.loop import TrainSettings, training_threads
    from facecmp.training.recognizer import RecognizerSettings

    torch.set_num_threads(THREADS)
    for settings in (DlibTrainSettings(), RecognizerSettings(), TrainSettings()):
        assert training_threads(settings.threads) == THREADS, type(settings).__name__
    assert training_threads(1) == 1
