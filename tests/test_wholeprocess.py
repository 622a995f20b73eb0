"""facecmp.bench.wholeprocess: alternating `facecmp detect` processes and the comparison of their outputs."""

from __future__ import annotations

import numpy as np
import pytest

import facenet_pytorch  # noqa: F401  (the reference; installed by `make install`, never skipped)

from facecmp.bench import wholeprocess
from facecmp.errors import FacecmpError
from facecmp.data.predictions import Predictions, load_predictions, save_predictions
from facecmp.bench.wholeprocess import differing_images, images_under, link_images, time_processes


def _save(folder, boxes, scores, names):
    save_predictions(folder, Predictions(np.asarray(boxes, float).reshape(-1, 4), np.asarray(scores, float), np.asarray(names, dtype=str)))


def test_differing_images_uses_the_pixel_and_score_tolerances(tmp_path):
    _save(tmp_path / "a", [[0, 0, 10, 10], [5, 5, 20, 20]], [0.9, 0.8], ["x.jpg", "y.jpg"])
    _save(tmp_path / "b", [[0.9, 0, 10, 10], [5, 5, 20, 22]], [0.90005, 0.8], ["x.jpg", "y.jpg"])
    assert differing_images(tmp_path / "a", tmp_path / "b") == ["y.jpg"]  # 2 px off; x is within 1 px / 1e-4
    _save(tmp_path / "c", [[0, 0, 10, 10]], [0.9], ["x.jpg"])
    assert differing_images(tmp_path / "a", tmp_path / "c") == ["y.jpg"]  # y lost its face


def test_time_processes_runs_both_models_and_finds_the_same_faces(tmp_path, monkeypatch):
    from facecmp.data.synthetic import generate_dataset

    root = generate_dataset(tmp_path / "data", n_train_per_character=1, n_test=2, seed=0)
    images = images_under(root / "validare", 10)
    assert [p.name for p in images] == ["0001.jpg", "0002.jpg"]
    compared = []

    def spy(a_dir, b_dir, **kwargs):  # what the two processes wrote, seen before it is deleted
        compared.append((load_predictions(a_dir), load_predictions(b_dir)))
        return differing_images(a_dir, b_dir, **kwargs)

    monkeypatch.setattr(wholeprocess, "differing_images", spy)
    result = time_processes(images, rounds=1)
    assert result.n_images == 2 and result.differing == []
    assert [len(t) for t in result.times.values()] == [1, 1]
    (ours, reference), = compared
    # Not empty against empty: both processes found faces on both images, and the same ones.
    assert set(ours.file_names) == set(reference.file_names) == {"validare_0001.jpg", "validare_0002.jpg"}
    assert len(ours) == len(reference) >= 2
    assert link_images(images, tmp_path / "flat") == 2


def test_link_images_names_files_by_their_folder(tmp_path):
    (tmp_path / "src" / "sub").mkdir(parents=True)
    for i in range(2):
        (tmp_path / "src" / "sub" / f"{i}.jpg").write_bytes(b"")
    images = images_under(tmp_path / "src", 10)
    assert link_images(images, tmp_path / "flat") == 2 and sorted(p.name for p in (tmp_path / "flat").iterdir()) == ["sub_0.jpg", "sub_1.jpg"]


def test_time_processes_names_the_models_it_knows():
    with pytest.raises(FacecmpError, match="knows the models pretrained, facenet-reference, .*not my-ckpt"):
        time_processes([], ("pretrained", "my-ckpt"))
