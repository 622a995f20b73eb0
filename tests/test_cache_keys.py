"""Cache keys cover what their results depend on: data content (image bytes, boxes, labels),
code, library versions and weights (docs/caches-and-gates.md)."""

from __future__ import annotations

import configparser
import json
from pathlib import Path

import numpy as np
import pytest

from facecmp.data.fingerprint import data_fingerprint
from facecmp.data.records import Dataset, ImageRecord

ROOT = Path(__file__).resolve().parent.parent


def _image(path: Path, value: int) -> Path:
    # raw bytes of a fixed length stand in for an image: the fingerprint reads bytes, not pixels
    path.write_bytes(bytes([value]) * 4096)
    return path


@pytest.fixture
def data(tmp_path) -> Dataset:
    records = [
        ImageRecord(f"{c}/0001.jpg", _image(tmp_path / f"{c}.jpg", i), np.array([[10, 10, 60, 60]]), (c,))
        for i, c in enumerate(("ada", "bo"))
    ]
    return Dataset("tiny", records)


def test_relabelling_one_box_changes_the_fingerprint(data):
    before = data_fingerprint(data)
    assert data_fingerprint(data) == before  # the same data, the same key
    data.images[0].labels = ("bo",)  # same boxes, same files: only who it is changed
    assert data_fingerprint(data) != before


def test_other_image_bytes_of_the_same_size_change_the_fingerprint(data):
    before = data_fingerprint(data)
    path = data.images[1].path
    size = path.stat().st_size
    _image(path, 200)
    assert path.stat().st_size == size
    assert data_fingerprint(data) != before


def test_a_moved_box_changes_the_fingerprint(data):
    before = data_fingerprint(data)
    data.images[0].boxes = np.array([[11, 10, 60, 60]])
    assert data_fingerprint(data) != before


def test_relabelled_data_gets_new_samples_and_recognizer_crops(data, monkeypatch):
    from facecmp.training import recognizer as rec
    from facecmp.training.samples import MiningSettings, mining_fingerprint

    key = mining_fingerprint(data, MiningSettings(), 0)
    made = []

    def extract(ds, classes, *args):
        made.append([r.labels for r in ds.images])
        return rec.FaceCrops(np.zeros((1, 3, 48, 48), np.uint8), np.zeros(1, np.int64), tuple(classes))

    monkeypatch.setattr(rec, "extract_face_crops", extract)
    settings = rec.RecognizerSettings()
    cache = data.images[0].path.parent / "cache"
    rec.cached_face_crops(data, ("ada", "bo"), 0, settings, 0, cache, progress=False)
    rec.cached_face_crops(data, ("ada", "bo"), 0, settings, 0, cache, progress=False)
    assert len(made) == 1  # the second call read the cache
    data.images[0].labels = ("bo",)
    rec.cached_face_crops(data, ("ada", "bo"), 0, settings, 0, cache, progress=False)
    assert len(made) == 2 and made[-1][0] == ("bo",)  # relabelled: crops made again, not read
    assert mining_fingerprint(data, MiningSettings(), 0) != key  # and new detector samples too
    monkeypatch.setattr(rec, "library_versions", lambda: {"torch": "0.0-other"})
    rec.cached_face_crops(data, ("ada", "bo"), 0, settings, 0, cache, progress=False)
    assert len(made) == 3  # other libraries: crops made again too


def test_sample_keys_name_the_code_and_the_library_versions(data, monkeypatch):
    from facecmp.training import hard_mining
    from facecmp.training.samples import mining as samples

    key = samples.mining_fingerprint(data, samples.MiningSettings(), 0)
    monkeypatch.setattr(samples, "library_versions", lambda: {"torch": "0.0-other"})
    assert samples.mining_fingerprint(data, samples.MiningSettings(), 0) != key
    monkeypatch.undo()
    monkeypatch.setattr(samples, "code_fingerprint", lambda: "other-code")
    assert samples.mining_fingerprint(data, samples.MiningSettings(), 0) != key
    import inspect

    source = inspect.getsource(hard_mining.hard_mining_fingerprint)
    assert "code_fingerprint()" in source and "library_versions()" in source


def _checkpoint(folder: Path, onet: bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "facecmp.json").write_text(json.dumps({"format": 1, "stages": ["onet"]}))
    (folder / "onet.pt").write_bytes(onet)
    return folder


def test_a_recognizer_is_keyed_by_its_checkpoint_content_not_its_path(data, tmp_path):
    from facecmp.study.recognition import recognizer_key
    from facecmp.training.recognizer import RecognizerSettings

    settings = RecognizerSettings()
    folder = _checkpoint(tmp_path / "ckpt", b"weights one")
    key = recognizer_key(folder, data, None, 0, settings)
    assert recognizer_key(_checkpoint(tmp_path / "elsewhere", b"weights one"), data, None, 0, settings) == key
    (folder / "train_state_onet.pt").write_bytes(b"a run state is not the result")
    assert recognizer_key(folder, data, None, 0, settings) == key
    _checkpoint(folder, b"weights two")  # retrained in place: same path, other weights
    assert recognizer_key(folder, data, None, 0, settings) != key
    assert recognizer_key(_checkpoint(tmp_path / "ckpt", b"weights one"), data, None, 0, RecognizerSettings(threads=7)) == key


def test_robustness_cells_are_keyed_by_code_libraries_and_weights(tmp_path, monkeypatch):
    from facecmp.study.robustness import cells
    from facecmp.study.robustness.cells import Cell, CellCache, GridVariant
    from facecmp.study.robustness.conditions import CLEAN

    variant = GridVariant("v", object(), {"name": "v"})
    cache = CellCache(tmp_path, "data", 0)
    assert set(cache.environment) == {"code", "libraries", "pretrained_weights"}
    assert {"torch", "torchvision", "numpy", "pillow", "imagecorruptions"} <= set(cache.environment["libraries"])
    cache.put(variant, CLEAN, Cell(0.5, 0.5, 1, 1, 1))
    assert cache.get(variant, CLEAN) is not None
    monkeypatch.setattr(cells, "library_versions", lambda *extra: {"torch": "0.0-other"})
    other = CellCache(tmp_path, "data", 0)
    assert other.path(variant, CLEAN) != cache.path(variant, CLEAN) and other.get(variant, CLEAN) is None
    monkeypatch.undo()
    import facecmp.detection.models as models

    monkeypatch.setattr(models, "pretrained_weights_digest", lambda: "other weights")
    assert CellCache(tmp_path, "data", 0).get(variant, CLEAN) is None


def test_checkpoint_and_calibration_keys_name_libraries_and_pretrained_weights(data, tmp_path, monkeypatch):
    from facecmp.study import caching
    from facecmp.study.registry import VariantContext

    ctx = VariantContext(train=data, dev=None, cache_dir=tmp_path)
    folder = caching.checkpoint_folder(ctx, ("pnet",))
    key = caching.environment_key()
    assert set(key) == {"code", "libraries", "pretrained_weights"}
    assert {"torch", "torchvision", "numpy", "pillow"} <= set(key["libraries"])
    monkeypatch.setattr(caching, "library_versions", lambda *extra: {"torch": "0.0-other"})
    assert caching.environment_key() != key and caching.checkpoint_folder(ctx, ("pnet",)) != folder
    monkeypatch.undo()
    import facecmp.detection.models as models

    monkeypatch.setattr(models, "pretrained_weights_digest", lambda: "other weights")
    assert caching.environment_key() != key


def test_tox_gives_each_environment_its_own_cache():
    tox = configparser.ConfigParser(interpolation=None)
    tox.read(ROOT / "tox.ini")
    lines = [line.strip() for line in tox["testenv"]["setenv"].splitlines() if line.strip().startswith("FACECMP_CACHE")]
    assert len(lines) == 1 and "{envdir}" in lines[0], lines
