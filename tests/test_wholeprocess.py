"""facecmp.bench.wholeprocess: alternating `facecmp detect` processes and the comparison of their outputs."""

from __future__ import annotations

import numpy as np
import pytest

from facecmp.errors import FacecmpError
from facecmp.data.predictions import Predictions, save_predictions
from facecmp.bench.wholeprocess import differing_images, images_under, link_images, time_processes

pytest.importorskip("facenet_pytorch")


def _save(folder, boxes, scores, names):
    save_predictions(folder, Predictions(np.asarray(boxes, float).reshape(-1, 4), np.asarray(scores, float), np.asarray(names, dtype=str)))


def test_differing_images_uses_the_pixel_and_score_tolerances(tmp_path):
    _save(tmp_path / "a", [[0, 0, 10, 10], [5, 5, 20, 20]], [0.9, 0.8], ["x.jpg", "y.jpg"])
    _save(tmp_path / "b", [[0.9, 0, 10, 10], [5, 5, 20, 22]], [0.90005, 0.8], ["x.jpg", "y.jpg"])
    assert differing_images(tmp_path / "a", tmp_path / "b") == ["y.jpg"]  # 2 px off; x is within 1 px / 1e-4
    _save(tmp_path / "c", [[0, 0, 10, 10]], [0.9], ["x.jpg"])
    assert differing_images(tmp_path / "a", tmp_path / "c") == ["y.jpg"]  # y lost its face


def test_time_processes_runs_both_models_and_finds_the_same_faces(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    (tmp_path / "src" / "sub").mkdir(parents=True)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)).save(tmp_path / "src" / "sub" / f"{i}.jpg")
    images = images_under(tmp_path / "src", 10)
    assert [p.name for p in images] == ["0.jpg", "1.jpg"]
    result = time_processes(images, rounds=1)
    assert result.n_images == 2 and result.differing == []
    assert [len(t) for t in result.times.values()] == [1, 1]
    assert link_images(images, tmp_path / "flat") == 2 and sorted(p.name for p in (tmp_path / "flat").iterdir()) == ["sub_0.jpg", "sub_1.jpg"]


def test_time_processes_names_the_models_it_knows():
    with pytest.raises(FacecmpError, match="knows the models pretrained, facenet-reference, .*not my-ckpt"):
        time_processes([], ("pretrained", "my-ckpt"))
