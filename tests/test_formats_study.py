"""The study on a converted dataset: the same fine-tune and the same report as on the original.

A converted copy has the same records (keys, boxes, labels, order) and hard-linked images, so
training (seeded, samples drawn image by image in record order) must give the same weights, and
the comparison the same numbers. Tiny settings keep it cheap: 3 training images per character,
1 epoch per stage, 1 dev image per folder, one cache of trained checkpoints for both compare runs.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from facecmp.data import load_archive
from facecmp.data.convert import convert
from facecmp.data.synthetic import generate_dataset
from facecmp.detection.checkpoint import load_checkpoint
from facecmp.detection.detector import Detector
from facecmp.detection.inference import run_detector
from facecmp.evaluation.coco import available as coco_available
from facecmp.evaluation.evaluator import evaluate
from facecmp.study import compare as study_compare
from tests.test_cli import run_cli

METRICS = ("ap_cava", "ap_voc", "recall", "precision", "n_detections", "n_ground_truth", "n_true_positives")


@pytest.fixture(scope="module")
def original(tmp_path_factory) -> Path:
    return generate_dataset(tmp_path_factory.mktemp("study") / "ds", n_train_per_character=3, n_test=4, seed=0)


@pytest.fixture(scope="module")
def as_coco(original, tmp_path_factory) -> Path:
    return convert(original, "coco", tmp_path_factory.mktemp("study_coco") / "coco").out


def _finetune(data: Path, out: Path) -> Path:
    code, _, err = run_cli(["finetune", "--data", data, "--out", out, "--epochs", "1", "--dev-per-folder", "1"])
    assert code == 0, err
    return out


@pytest.mark.slow
def test_finetune_from_a_converted_copy_gives_the_same_weights_and_ap(original, as_coco, tmp_path):
    a = load_checkpoint(_finetune(original, tmp_path / "ft_original"))
    b = load_checkpoint(_finetune(as_coco, tmp_path / "ft_copy"))
    assert a.meta["data_fingerprint"] == b.meta["data_fingerprint"]  # same keys, boxes and image bytes
    assert a.thresholds == b.thresholds
    pa, pb = torch.load(tmp_path / "ft_original" / "pnet.pt"), torch.load(tmp_path / "ft_copy" / "pnet.pt")
    assert pa.keys() == pb.keys() and all(torch.equal(pa[k], pb[k]) for k in pa)
    test = load_archive(original).test
    aps = []
    for folder in (tmp_path / "ft_original", tmp_path / "ft_copy"):
        run = run_detector(Detector.from_checkpoint(folder), test, progress=False)
        aps.append(evaluate(run.predictions, test.ground_truth()).ap_cava)
    assert aps[0] == aps[1]


@pytest.mark.slow
def test_compare_cascade_on_a_coco_folder_gives_the_same_report(original, as_coco, tmp_path, monkeypatch):
    """`facecmp compare --data their_coco_folder --cascade`, against the same run on the course layout.

    Both runs share one cache of trained checkpoints, keyed by the data's fingerprint (keys, boxes,
    image bytes) and the settings: the COCO run must find every checkpoint the course run trained
    (its training and dev splits are the same data) and train nothing, then detect, evaluate and
    report on its own test part. That training itself gives the same weights from a converted copy
    is the test above.
    """
    # the CLI's dev split is 25 images per folder; this dataset has 3
    monkeypatch.setattr(study_compare, "choose_splits", functools.partial(study_compare.choose_splits, dev_per_folder=1))
    cache = tmp_path / "cache"
    monkeypatch.setattr(study_compare, "run_comparison", functools.partial(study_compare.run_comparison, cache_dir=cache))
    reports, trained = {}, {}
    for name, data in (("course", original), ("coco", as_coco)):
        code, out, err = run_cli(["compare", "--data", data, "--out", tmp_path / name, "--cascade", "--epochs", "1"])
        assert code == 0, err
        reports[name] = json.loads((tmp_path / name / "results.json").read_text())
        trained[name] = sorted(p.name for p in cache.iterdir())
    assert trained["coco"] == trained["course"]  # nothing new trained or calibrated for the COCO folder
    assert sum(n.startswith("finetuned-") for n in trained["coco"]) == 3
    course_variants, coco_variants = reports["course"]["variants"], reports["coco"]["variants"]
    assert [v["name"] for v in coco_variants] == [v["name"] for v in course_variants] == [
        "pretrained", "pretrained-calibrated", "finetuned-pnet", "finetuned-pnet-rnet", "finetuned-cascade"]
    for a, b in zip(course_variants, coco_variants):
        assert {k: a[k] for k in METRICS} == {k: b[k] for k in METRICS}, a["name"]
        assert a["settings"]["thresholds"] == b["settings"]["thresholds"]
        assert ("coco" in a) == ("coco" in b) == coco_available()
        assert a.get("coco") == b.get("coco")
    assert reports["course"]["n_faces"] == reports["coco"]["n_faces"]
    report = (tmp_path / "coco" / "report.md").read_text()
    assert "finetuned-cascade" in report and ("AP50" in report or "pycocotools" in report)
    for name in ("course", "coco"):
        reports[name] = [np.load(tmp_path / name / "predictions" / "finetuned-cascade" / f)
                         for f in ("detections_all_faces.npy", "scores_all_faces.npy")]
    assert all(np.array_equal(x, y) for x, y in zip(reports["course"], reports["coco"]))


def test_detect_and_compare_take_their_test_images_from_any_format(original, as_coco, tmp_path):
    """`detect --images` and `compare --test DIR` read a converted copy's test part like the course's."""
    from facecmp.detection.inference import images_to_detect

    course = load_archive(original).test
    for chosen in (images_to_detect(as_coco), study_compare.choose_splits(original, str(as_coco), dev_per_folder=1).test):
        assert [r.key for r in chosen.images] == [r.key for r in course.images]
        assert all(np.array_equal(chosen.ground_truth()[k], v) for k, v in course.ground_truth().items())
    code, out, err = run_cli(["detect", "--images", as_coco, "--out", tmp_path / "det"])
    assert code == 0, err
    assert len(np.load(tmp_path / "det" / "file_names_all_faces.npy")) == len(np.load(tmp_path / "det" / "scores_all_faces.npy"))
