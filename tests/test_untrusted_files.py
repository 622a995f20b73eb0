"""A file someone sends cannot run code: every file facecmp reads gets a real payload planted in it.

The payload is an object whose unpickling calls ``os.system("touch MARKER")``. Each test asserts the
marker never appears and the user gets one line naming the file (exit 2 through the CLI).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from facecmp.data.predictions import Predictions, load_predictions, save_predictions
from facecmp.data.synthetic import generate_dataset
from facecmp.detection.checkpoint import META_FILE, load_checkpoint, save_checkpoint
from facecmp.detection.models import build_network, pretrained_network
from facecmp.detection.recognizer import RECOGNIZER_FILE, load_recognizer
from facecmp.errors import DataError, FacecmpError, ModelError
from facecmp.training.distributed import require_world_size
from facecmp.training.run_state import load_run_state, read_run_state, run_id_file, save_run_state, state_file
from facecmp.training.samples import SampleSet, cached_samples, load_samples, save_samples
from test_cli import assert_user_error, run_cli


class Payload:
    """Unpickling this runs a shell command that creates ``marker``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture
def marker(tmp_path):
    path = tmp_path / "PAYLOAD_RAN"
    yield path
    assert not path.exists(), "the planted payload ran"


def plant_npy(path: Path, marker: Path) -> None:
    np.save(path, np.array([Payload(marker)] * 3, dtype=object), allow_pickle=True)


def plant_torch(path: Path, marker: Path, around: dict | None = None) -> None:
    torch.save({**(around or {}), "payload": Payload(marker)}, path)


def one_line(exc: pytest.ExceptionInfo, *needles: str) -> str:
    message = str(exc.value)
    assert "\n" not in message, message
    for needle in needles:
        assert needle in message, message
    return message


def test_the_payload_does_run_when_unpickled(tmp_path):
    """The tests below would pass on nothing if the payload were harmless."""
    marker = tmp_path / "ran"
    plant_npy(tmp_path / "x.npy", marker)
    np.load(tmp_path / "x.npy", allow_pickle=True)
    assert marker.exists()


# ----------------------------------------------------------------------------- prediction arrays


@pytest.mark.parametrize("index", [0, 1, 2])
def test_a_payload_in_any_prediction_file_never_runs(tmp_path, marker, index):
    paths = save_predictions(tmp_path / "pred", Predictions(np.array([[0, 0, 9, 9]] * 3), np.ones(3), np.array(["a.jpg"] * 3)))
    plant_npy(paths[index], marker)
    with pytest.raises(DataError) as exc:
        load_predictions(tmp_path / "pred")
    one_line(exc, paths[index].name, "never unpickles")


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    return generate_dataset(tmp_path_factory.mktemp("untrusted"), n_train_per_character=1, n_test=2, seed=0)


def test_evaluate_on_a_planted_file_name_array_is_one_line_and_runs_nothing(tiny_root, tmp_path, marker):
    gt = tiny_root / "validare" / "task1_gt_validare.txt"
    save_predictions(tmp_path, Predictions(np.array([[0, 0, 9, 9]]), np.ones(1), np.array(["001.jpg"])))
    plant_npy(tmp_path / "file_names_all_faces.npy", marker)
    code, _, err = run_cli(["evaluate", "--pred", tmp_path, "--gt", gt])
    assert_user_error(code, err, "file_names_all_faces.npy", ".astype(str)")


# ----------------------------------------------------------------------------- weights and recognizer state


def test_a_payload_in_a_checkpoints_weights_never_runs(tiny_root, tmp_path, marker):
    ckpt = save_checkpoint(tmp_path / "ckpt", {"pnet": pretrained_network("pnet").state_dict()}, {})
    plant_torch(ckpt / "pnet.pt", marker, pretrained_network("pnet").state_dict())
    with pytest.raises(ModelError) as exc:
        load_checkpoint(ckpt)
    one_line(exc, "pnet.pt", "posix.system", "weights_only=True")
    code, _, err = run_cli(["detect", "--images", tiny_root / "validare" / "validare", "--out", tmp_path / "out",
                            "--model", ckpt])
    assert_user_error(code, err, "pnet.pt", "cannot run code")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_a_payload_in_a_recognizer_state_never_runs(tmp_path, marker):
    ckpt = save_checkpoint(tmp_path / "ckpt", {"onet": pretrained_network("onet").state_dict()}, {})
    meta = json.loads((ckpt / META_FILE).read_text())
    meta["recognizer"] = {"classes": ["dad", "mom"], "file": RECOGNIZER_FILE}
    (ckpt / META_FILE).write_text(json.dumps(meta))
    plant_torch(ckpt / RECOGNIZER_FILE, marker)
    with pytest.raises(ModelError) as exc:
        load_recognizer(ckpt)
    one_line(exc, RECOGNIZER_FILE, "posix.system")


# ----------------------------------------------------------------------------- run states


def run_objects():
    net = build_network("pnet")
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=0.9)
    return net, optimizer, scheduler, torch.Generator().manual_seed(0)


RUN_ID = {"stage": "pnet", "seed": 0, "n_samples": 10, "world_size": 1, "settings": {"lr": 1e-3, "flip": True}}


def test_a_saved_run_state_is_tensors_and_plain_values_and_loads_with_weights_only(tmp_path):
    net, optimizer, scheduler, generator = run_objects()
    net(torch.zeros(1, 3, 12, 12))[0].sum().backward()
    optimizer.step()
    scheduler.step()
    path = tmp_path / state_file("pnet")
    best = {"val_loss": 0.5, "epoch": 1, "state_dict": net.state_dict()}
    # numpy numbers, as the DDP loop's losses reduced across ranks are: saved as Python numbers
    history = [{"epoch": 1, "val_loss": np.float64(0.5), "val_accuracy": np.float32(0.25)}]
    save_run_state(path, RUN_ID, net, optimizer, scheduler, generator, history, best, 0, False,
                   extra={"start_val_loss": np.float64("nan")})
    torch.load(path, weights_only=True)  # raises on anything but tensors and plain values
    assert json.loads(run_id_file(path).read_text())["run_id"] == RUN_ID
    history, best, bad, stopped, extra = load_run_state(path, RUN_ID, *run_objects())
    assert history == [{"epoch": 1, "val_loss": 0.5, "val_accuracy": 0.25}] and best["epoch"] == 1 and not stopped
    assert type(history[0]["val_loss"]) is float and math.isnan(extra["start_val_loss"])


def test_a_payload_in_a_run_state_never_runs_on_resume(tmp_path, marker):
    path = tmp_path / state_file("pnet")
    plant_torch(path, marker, {"run_id": RUN_ID})
    with pytest.raises(ModelError) as exc:
        load_run_state(path, RUN_ID, *run_objects())
    one_line(exc, path.name, "posix.system", "drop --resume")


def test_require_world_size_reads_the_run_id_beside_the_state_not_the_state(tmp_path, marker):
    path = tmp_path / state_file("pnet")
    plant_torch(path, marker, {"run_id": {**RUN_ID, "world_size": 2}})
    run_id_file(path).write_text(json.dumps({"run_id": {**RUN_ID, "world_size": 2}}))
    require_world_size(tmp_path, 2)  # the state itself is not opened
    with pytest.raises(FacecmpError) as exc:
        require_world_size(tmp_path, 3)
    one_line(exc, path.name, "2 process(es)")


def test_require_world_size_on_a_planted_state_without_its_run_id_is_refused(tmp_path, marker):
    path = tmp_path / state_file("onet")
    plant_torch(path, marker, {"run_id": {**RUN_ID, "world_size": 2}})
    with pytest.raises(FacecmpError) as exc:
        require_world_size(tmp_path, 2)
    one_line(exc, path.name, "posix.system")
    with pytest.raises(FacecmpError):
        read_run_state(path)


# ----------------------------------------------------------------------------- sample caches


def test_a_payload_in_a_sample_cache_never_runs(tmp_path, marker):
    path = tmp_path / "samples12_x.npz"
    objects = np.array([Payload(marker)], dtype=object)
    np.savez(path, images=objects, labels=objects, offsets=objects)
    with pytest.raises(DataError) as exc:
        load_samples(path)
    one_line(exc, path.name, "delete it")
    with pytest.raises(DataError):
        cached_samples(path, lambda: pytest.fail("a cache file present is read, not re-mined"))


def test_a_payload_in_a_recognizer_crop_cache_never_runs_and_the_crops_are_remade(tiny_root, tmp_path, marker):
    from facecmp.data import load_archive
    from facecmp.training.recognizer import RecognizerSettings, cached_face_crops

    train = load_archive(tiny_root).train
    settings = RecognizerSettings()
    made = cached_face_crops(train, train.characters, 1, settings, 0, tmp_path, progress=False)
    [cache] = list(tmp_path.glob("recognizer_crops_*.npz"))
    objects = np.array([Payload(marker)], dtype=object)
    np.savez(cache, images=objects, labels=objects)
    again = cached_face_crops(train, train.characters, 1, settings, 0, tmp_path, progress=False)
    assert np.array_equal(again.images, made.images) and np.array_equal(again.labels, made.labels)


def test_a_sample_cache_written_by_facecmp_reads_back(tmp_path):
    samples = SampleSet(np.zeros((2, 3, 12, 12), np.uint8), np.array([0, 1], np.int8), np.zeros((2, 4), np.float32))
    save_samples(tmp_path / "s.npz", samples)
    assert np.array_equal(load_samples(tmp_path / "s.npz").labels, samples.labels)
