"""Task 2 (who is it): ground truth, per-character evaluation, the recognizer, its training and the CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from facecmp.data import load_archive
from facecmp.data.predictions import Predictions, save_predictions
from facecmp.data.synthetic import CHARACTERS, generate_dataset
from facecmp.data.task2 import predicted_characters, read_task2_ground_truth, task2_from_dataset
from facecmp.detection.checkpoint import save_checkpoint
from facecmp.detection.models import pretrained_network
from facecmp.detection.recognizer import (
    RecognizerNet, face_crops, face_windows, has_recognizer, load_recognizer, save_recognizer,
)
from facecmp.errors import DataError, FacecmpError, ModelError
from facecmp.evaluation.evaluator import evaluate
from facecmp.evaluation.task2 import NONE, evaluate_task2
from facecmp.training.recognizer import RecognizerSettings, train_recognizer

from tests.test_cli import assert_user_error, run_cli


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    return generate_dataset(tmp_path_factory.mktemp("task2") / "data", n_train_per_character=8, n_test=10, seed=3)


@pytest.fixture(scope="module")
def test_dir(archive) -> Path:
    return archive / "validare"


def gt_as_predictions(gt, score: float = 1.0) -> dict[str, Predictions]:
    out = {}
    for char, per_image in gt.characters.items():
        keys = [k for k, b in per_image.items() for _ in range(len(b))]
        boxes = np.concatenate([b for b in per_image.values() if len(b)]) if keys else np.zeros((0, 4))
        out[char] = Predictions(boxes, np.full(len(keys), score), np.asarray(keys))
    return out


# ----------------------------------------------------------------------------- ground truth


def test_task2_files_are_read_per_character_with_unknown_faces_from_task1(test_dir):
    gt = read_task2_ground_truth(test_dir)
    assert gt.names == tuple(sorted(CHARACTERS))
    assert gt.missing == []
    named = sum(len(b) for g in gt.characters.values() for b in g.values())
    assert 0 < named < sum(len(b) for b in gt.all_faces.values())  # the generated data has unknown faces too


def test_task2_ground_truth_from_labels_equals_the_course_files(archive, test_dir):
    ds = load_archive(archive).test
    from_labels = task2_from_dataset(ds)
    from_files = read_task2_ground_truth(test_dir)
    assert from_labels.names == from_files.names
    for char in from_files.names:
        for key, boxes in from_files.characters[char].items():
            assert sorted(map(tuple, boxes.tolist())) == sorted(map(tuple, from_labels.characters[char][key].tolist()))


def test_a_folder_without_task2_files_is_named(tmp_path):
    (tmp_path / "task1_gt_validare.txt").write_text("0001.jpg 1 1 20 20\n")
    with pytest.raises(DataError, match="task2_<character>_gt_validare.txt"):
        read_task2_ground_truth(tmp_path)


# ----------------------------------------------------------------------------- evaluation


def test_perfect_predictions_score_one_and_the_confusion_is_diagonal(test_dir):
    gt = read_task2_ground_truth(test_dir)
    result = evaluate_task2(gt_as_predictions(gt), gt)
    assert result.map_cava == pytest.approx(1.0) and result.map_voc == pytest.approx(1.0)
    named = result.confusion[: len(gt.names), : len(gt.names)]
    assert np.array_equal(named, np.diag(np.diag(named))) and named.trace() > 0
    assert result.rows[-1] == "unknown" and result.columns[-1] == NONE
    assert result.confusion[-1, -1] == result.confusion[-1].sum()  # unknown faces were predicted as nobody


def test_each_character_is_scored_like_task1_and_swapped_names_show_in_the_confusion(test_dir):
    gt = read_task2_ground_truth(test_dir)
    preds = gt_as_predictions(gt)
    a, b = gt.names[:2]
    swapped = {**preds, a: preds[b], b: preds[a]}
    result = evaluate_task2(swapped, gt)
    for char in gt.names:
        assert result.per_character[char].ap_cava == pytest.approx(evaluate(swapped[char], gt.characters[char]).ap_cava)
    assert result.per_character[a].ap_cava < 0.5
    ia, ib = gt.names.index(a), gt.names.index(b)
    assert result.confusion[ia, ib] == sum(len(x) for x in gt.characters[a].values())
    assert result.confusion[ia, ia] == 0
    assert result.map_cava < 1.0


def test_low_scores_count_as_not_recognised(test_dir):
    gt = read_task2_ground_truth(test_dir)
    result = evaluate_task2(gt_as_predictions(gt, score=0.2), gt, min_score=0.5)
    assert result.confusion[:, -1].sum() == result.confusion.sum()
    assert result.map_cava == pytest.approx(1.0)  # AP depends on the ranking only


def test_ground_truth_for_a_character_without_predictions_names_both_lists(test_dir):
    gt = read_task2_ground_truth(test_dir)
    preds = gt_as_predictions(gt)
    del preds[gt.names[0]]
    with pytest.raises(DataError) as info:
        evaluate_task2(preds, gt)
    assert gt.names[0] in str(info.value) and gt.names[1] in str(info.value)


# ----------------------------------------------------------------------------- the recognizer


def test_the_trunk_gives_onet_s_own_256d_features():
    onet = pretrained_network("onet")
    net = RecognizerNet.from_onet(onet.state_dict(), 3).eval()
    captured = {}
    onet.prelu5.register_forward_hook(lambda m, i, o: captured.setdefault("f", o))
    x = torch.randn(5, 3, 48, 48)
    with torch.no_grad():
        onet(x)
        assert torch.allclose(net.features(x), captured["f"], atol=1e-5)
    assert set(k for k in net.state_dict() if not k.startswith("head.")) <= set(onet.state_dict())


def test_face_windows_are_squares_inside_the_image_even_at_the_border():
    boxes = np.array([[10, 20, 50, 40], [-30, -30, 5, 5], [470, 350, 600, 500]], dtype=np.float64)
    w = face_windows(boxes, 480, 360)
    assert (w[:, 0] >= 0).all() and (w[:, 1] >= 0).all() and (w[:, 2] <= 480).all() and (w[:, 3] <= 360).all()
    assert (w[:, 2] > w[:, 0]).all() and (w[:, 3] > w[:, 1]).all()
    assert w[0, 2] - w[0, 0] == w[0, 3] - w[0, 1]  # grown to a square around its centre
    crops = face_crops(np.full((360, 480, 3), 200, np.uint8), boxes)
    assert crops.shape == (3, 3, 48, 48) and torch.allclose(crops, torch.full_like(crops, 200.0))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("ckpt") / "ft"
    save_checkpoint(folder, {"onet": pretrained_network("onet").state_dict()}, {"thresholds": None})
    return folder


@pytest.fixture(scope="module")
def splits(archive):
    from facecmp.study.finetune import training_split

    return training_split(archive, dev_per_folder=2)


def test_probe_training_is_seeded_resumable_and_balanced(splits, tmp_path):
    train, dev = splits
    onet = pretrained_network("onet").state_dict()
    settings = RecognizerSettings(kind="probe-pretrained", epochs=6, jitters_per_face=1)
    whole = train_recognizer(train, dev, onet, tmp_path / "a", settings, cache_dir=tmp_path / "cache", progress=False)
    half = train_recognizer(train, dev, onet, tmp_path / "b", RecognizerSettings(kind="probe-pretrained", epochs=3, jitters_per_face=1),
                            cache_dir=tmp_path / "cache", progress=False)
    assert len(half.info["history"]) == 3
    resumed = train_recognizer(train, dev, onet, tmp_path / "b", settings, resume=True, cache_dir=tmp_path / "cache", progress=False)
    assert [h["train_loss"] for h in resumed.info["history"]] == [h["train_loss"] for h in whole.info["history"]]
    for k, v in whole.net.state_dict().items():
        assert torch.equal(v, resumed.net.state_dict()[k]), k
    assert whole.classes == tuple(sorted({*CHARACTERS, "unknown"}))
    counts = whole.info["train_faces"]
    assert sum(counts.values()) == sum(1 for r in train.images for lab in r.labels)
    weights = whole.info["class_weights"]
    rare, common = min(counts, key=counts.get), max(counts, key=counts.get)
    assert weights[rare] > weights[common]  # imbalance is weighed against
    # the frozen trunk did not move
    assert torch.equal(whole.net.state_dict()["conv1.weight"], onet["conv1.weight"])
    # the feature standardisation folded into the head: the saved net scores dev as training measured it
    from facecmp.detection.cascade import normalize
    from facecmp.training.recognizer import balanced_accuracy, extract_face_crops

    crops = extract_face_crops(dev, whole.classes, 0, settings, 0, progress=False)
    with torch.no_grad():
        predicted = whole.net(normalize(torch.as_tensor(crops.images).float())).argmax(1).numpy()
    assert balanced_accuracy(predicted, crops.labels, len(whole.classes))[0] == pytest.approx(whole.info["dev_balanced_accuracy"])


def test_end_to_end_training_moves_the_trunk(splits, tmp_path):
    train, dev = splits
    onet = pretrained_network("onet").state_dict()
    result = train_recognizer(train, dev, onet, tmp_path, RecognizerSettings(kind="finetune", epochs=1, jitters_per_face=0),
                              progress=False)
    assert not torch.equal(result.net.state_dict()["conv1.weight"], onet["conv1.weight"])
    assert result.info["dev_balanced_accuracy"] >= 0.0 and result.info["best_epoch"] == 1


def test_unknown_kind_is_refused():
    with pytest.raises(FacecmpError, match="probe-pretrained"):
        RecognizerSettings(kind="svm")


def test_recognizer_round_trips_through_a_checkpoint_folder(checkpoint, tmp_path):
    folder = tmp_path / "ckpt"
    shutil.copytree(checkpoint, folder)
    assert not has_recognizer(folder)
    with pytest.raises(ModelError, match="--stages recognizer"):
        load_recognizer(folder)
    net = RecognizerNet.from_onet(pretrained_network("onet").state_dict(), 3)
    save_recognizer(folder, net, ("a", "b", "unknown"), {"kind": "finetune"})
    loaded = load_recognizer(folder)
    assert loaded.classes == ("a", "b", "unknown") and loaded.characters == ("a", "b")
    assert json.loads((folder / "facecmp.json").read_text())["stages"] == ["onet"]  # the detector part is untouched
    image = np.random.default_rng(0).integers(0, 255, (100, 120, 3), dtype=np.uint8)
    probs = loaded.probabilities(image, np.array([[10.0, 10.0, 60.0, 70.0]]))
    assert probs.shape == (1, 3) and probs.sum() == pytest.approx(1.0)


# ----------------------------------------------------------------------------- command line


@pytest.fixture(scope="module")
def trained(archive, checkpoint, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("rec") / "ft"
    code, stdout, err = run_cli(["finetune", "--data", archive, "--out", out, "--stages", "recognizer", "--from", checkpoint,
                                 "--recognizer", "probe-pretrained", "--epochs", "5", "--dev-per-folder", "2"])
    assert code == 0, err
    assert "training faces per class" in stdout
    return out


def test_detect_characters_then_evaluate_task2(trained, test_dir, tmp_path):
    out = tmp_path / "pred"
    code, stdout, err = run_cli(["detect", "--images", test_dir, "--out", out, "--model", trained, "--characters",
                                 "--workers", "0", "--thresholds", "0.6,0.1,0.1"])
    assert code == 0, err
    assert predicted_characters(out / "task2") == tuple(sorted(CHARACTERS))
    code, stdout, err = run_cli(["evaluate", "--task2", "--pred", out, "--gt-dir", test_dir, "--json", tmp_path / "m.json",
                                 "--plot", tmp_path / "pr.png", "--confusion", tmp_path / "cm.png"])
    assert code == 0, err
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert set(metrics["characters"]) == set(CHARACTERS)
    assert metrics["map_cava"] == pytest.approx(np.mean([v["ap_cava"] for v in metrics["characters"].values()]))
    assert (tmp_path / "pr.png").stat().st_size > 0 and (tmp_path / "cm.png").stat().st_size > 0
    # every face found appears once in every character's file, with its score split by class probability
    all_faces = np.load(out / "scores_all_faces.npy")
    for char in CHARACTERS:
        scores = np.load(out / "task2" / f"scores_{char}.npy")
        assert len(scores) == len(all_faces) and (scores <= all_faces + 1e-12).all()


def test_detect_characters_without_a_recognizer_says_how_to_train_one(checkpoint, test_dir, tmp_path):
    code, _, err = run_cli(["detect", "--images", test_dir, "--out", tmp_path, "--model", checkpoint, "--characters"])
    assert_user_error(code, err, "no character recognizer", "--stages recognizer")


def test_recognizer_stage_alone_needs_a_detector_checkpoint(archive, tmp_path):
    code, _, err = run_cli(["finetune", "--data", archive, "--out", tmp_path / "x", "--stages", "recognizer"])
    assert_user_error(code, err, "--from CKPT")


def test_task2_ground_truth_for_a_character_the_model_does_not_know(trained, test_dir, tmp_path):
    out = tmp_path / "pred"
    for char in CHARACTERS:
        save_predictions(out, Predictions(np.zeros((0, 4)), np.zeros(0), np.zeros(0, dtype=str)), name=char)
    gt_dir = tmp_path / "gt"
    shutil.copytree(test_dir, gt_dir)
    (gt_dir / "task2_zed_gt_validare.txt").write_text("0001.jpg 1 1 30 30\n")
    code, _, err = run_cli(["evaluate", "--task2", "--pred", out, "--gt-dir", gt_dir])
    assert_user_error(code, err, "zed", *CHARACTERS)


def test_task2_needs_a_gt_dir_with_task2_files(trained, tmp_path):
    code, _, err = run_cli(["evaluate", "--task2", "--pred", tmp_path])
    assert_user_error(code, err, "--gt-dir")
    (tmp_path / "gt").mkdir()
    code, _, err = run_cli(["evaluate", "--task2", "--pred", tmp_path, "--gt-dir", tmp_path / "gt"])
    assert_user_error(code, err, "task2_<character>_gt_validare.txt")


def test_scooby_doo_sample_needs_allow_missing_and_scores_the_present_images(shared_datasets, tmp_path):
    gt_dir = shared_datasets / "scooby-doo" / "validare"
    code, _, err = run_cli(["evaluate", "--task2", "--pred", tmp_path, "--gt-dir", gt_dir])
    assert_user_error(code, err, "110 images", "--allow-missing")
    gt = read_task2_ground_truth(gt_dir)
    assert gt.names == ("daphne", "fred", "shaggy", "velma")
    present = gt.restricted_to(set(gt.all_faces) - set(gt.missing))
    for char, preds in gt_as_predictions(present).items():
        save_predictions(tmp_path, preds, name=char)
    code, stdout, err = run_cli(["evaluate", "--task2", "--pred", tmp_path, "--gt-dir", gt_dir, "--allow-missing"])
    assert code == 0, err
    assert "110 ground-truth images missing" in err
    assert "mAP            1.0000   1.0000" in stdout


def test_study_task2_scores_each_kind_on_the_same_detections_and_reports(checkpoint, splits, archive, tmp_path):
    from facecmp.study.recognition import study_task2

    train, dev = splits
    test = load_archive(archive).test
    (tmp_path / "report.md").write_text("# task 1\n")
    results = study_task2(tmp_path, checkpoint, train, dev, test, cache_dir=tmp_path / "cache",
                          kinds=("probe-pretrained", "probe-finetuned"), epochs=3, progress=False)
    assert [r.name for r in results] == ["probe-pretrained", "probe-finetuned"]
    report = (tmp_path / "report.md").read_text()
    assert report.startswith("# task 1") and "## Task 2: who is it" in report and "probe-finetuned" in report
    saved = json.loads((tmp_path / "task2.json").read_text())
    assert [v["name"] for v in saved["variants"]] == ["probe-pretrained", "probe-finetuned"]
    for r in results:
        assert r.evaluation.map_cava == pytest.approx(np.mean([e.ap_cava for e in r.evaluation.per_character.values()]))
        assert (tmp_path / f"task2_confusion_{r.name}.png").is_file()
    # the recognizers are cached: asking again trains nothing and gives the same numbers
    again = study_task2(tmp_path, checkpoint, train, dev, test, cache_dir=tmp_path / "cache",
                        kinds=("probe-pretrained",), epochs=3, progress=False)
    assert again[0].evaluation.map_cava == results[0].evaluation.map_cava


def test_task1_evaluate_still_needs_gt(tmp_path):
    code, _, err = run_cli(["evaluate", "--pred", tmp_path])
    assert_user_error(code, err, "--gt FILE", "--task2")


def test_face_crops_equal_one_area_resize_per_square_crop():
    import torch.nn.functional as F

    image = np.random.default_rng(1).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    boxes = np.array([[30.0, 20.0, 70.0, 80.0], [100.0, 50.0, 130.0, 70.0]])
    crops = face_crops(image, boxes)
    pixels = torch.from_numpy(image).permute(2, 0, 1).float()[None]
    for crop, (x0, y0, x1, y1) in zip(crops, face_windows(boxes, 160, 120)):
        expected = F.interpolate(pixels[:, :, y0:y1, x0:x1], size=(48, 48), mode="area")[0]
        assert torch.allclose(crop, expected, atol=1e-3)


def test_compare_refuses_an_unknown_recognizer_kind_before_any_work(archive, tmp_path):
    code, _, err = run_cli(["compare", "--data", archive, "--out", tmp_path, "--recognizers", "probe-pretrained,svm"])
    assert_user_error(code, err, "svm", "probe-pretrained, probe-finetuned, finetune")
    assert not any(tmp_path.iterdir())


def test_recognition_gates_are_read_checked_and_explain_a_failure(tmp_path):
    from facecmp.bench.gates import GatesFileError, load_gates
    from facecmp.bench.recognition import load_recognition_gates

    path = tmp_path / "gates.toml"
    path.write_text(
        '[default]\nseed = 0\n\n'
        '[[recognition]]\ndataset = "default"\nrecognizer = "finetune"\nmap_cava = 0.8\n\n'
        '[[recognition]]\ndataset = "default"\nrecognizer = "finetune"\nbeats = "probe-pretrained"\nby = 0.05\n\n'
        '[[recognition]]\ndataset = "dexter"\nrecognizer = "finetune"\nmap_cava = 0.9\n'
    )
    assert load_gates(path, "default").found  # the other gates still parse beside [[recognition]]
    gates = load_recognition_gates(path, "default")
    assert len(gates) == 2
    good = {"finetune": {"map_cava": 0.9, "map_voc": 0.9}, "probe-pretrained": {"map_cava": 0.8, "map_voc": 0.8}}
    assert [g.check(good) for g in gates] == [None, None]
    bad = {"finetune": {"map_cava": 0.7, "map_voc": 0.7}, "probe-pretrained": {"map_cava": 0.8, "map_voc": 0.8}}
    messages = [g.check(bad) for g in gates]
    assert "measured 0.700 (short by 0.100)" in messages[0] and "0.700 vs 0.800" in messages[1]
    assert [g.kinds for g in gates] == [{"finetune"}, {"finetune", "probe-pretrained"}]  # a run of one kind checks the first only
    path.write_text('[[recognition]]\nrecognizer = "svm"\nmap_cava = 0.5\n')
    with pytest.raises(GatesFileError, match="recognizer = one of"):
        load_recognition_gates(path, "default")
