"""End-to-end acceptance tests of the ``facecmp`` command line, good inputs and bad.

Most tests call ``facecmp.cli.main`` in-process; a few run the installed console script in a
subprocess to prove what a user sees: a non-zero exit, one ``facecmp: error: ...`` line, no traceback.
Data is generated (``facecmp.data.synthetic``); detection runs on few, small images to stay fast.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facecmp.cli import main
from facecmp.data import read_ground_truth
from facecmp.errors import DataError
from facecmp.evaluation.evaluator import evaluate
from facecmp.data.predictions import Predictions, load_predictions, save_predictions
from facecmp.data.synthetic import generate_dataset

PRED_FILES = ("detections_all_faces.npy", "scores_all_faces.npy", "file_names_all_faces.npy")
SMALL_SIZE = (240, 180)  # half the generated frames: faces stay >= 20 px, detection is ~4x faster


# ----------------------------------------------------------------------------- helpers


def run_cli(argv) -> tuple[int, str, str]:
    """``main(argv)`` in-process: (exit code, stdout, stderr); argparse exits become their code."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as exc:
            code = exc.code
    return code, out.getvalue(), err.getvalue()


def assert_user_error(code: int, err: str, *needles: str, exit_code: int = 2) -> str:
    """A user-facing failure: the exit code, exactly one ``facecmp: error:`` line, no traceback,
    and every needle (file names, line numbers) somewhere in the message. Returns the message."""
    assert code == exit_code, err
    assert "Traceback" not in err
    error_lines = [line for line in err.splitlines() if line.startswith("facecmp: error: ")]
    assert len(error_lines) == 1, err
    for needle in needles:
        assert str(needle) in err, f"{needle!r} not in {err!r}"
    return err


def copy_tree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def sorted_by_image(preds: Predictions):
    """Per image: boxes and scores sorted by descending score (detectors may order ties differently)."""
    out = {}
    for key in np.unique(preds.file_names):
        p = preds.for_image(key)
        order = np.argsort(-p.scores, kind="stable")
        out[str(key)] = (p.boxes[order].astype(np.float64), p.scores[order].astype(np.float64))
    return out


def assert_same_detections(a: Predictions, b: Predictions, box_px: float, score_tol: float) -> None:
    da, db = sorted_by_image(a), sorted_by_image(b)
    assert da.keys() == db.keys()
    for key in da:
        (boxes_a, scores_a), (boxes_b, scores_b) = da[key], db[key]
        assert boxes_a.shape == boxes_b.shape, key
        np.testing.assert_allclose(boxes_a, boxes_b, atol=box_px, rtol=0, err_msg=key)
        np.testing.assert_allclose(scores_a, scores_b, atol=score_tol, rtol=0, err_msg=key)


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def dataset(tmp_path_factory) -> Path:
    return generate_dataset(tmp_path_factory.mktemp("cli") / "ds", n_train_per_character=3, n_test=6, seed=0)


@pytest.fixture(scope="session")
def test_dir(dataset) -> Path:
    return dataset / "validare"


@pytest.fixture(scope="session")
def gt_file(test_dir) -> Path:
    return test_dir / "task1_gt_validare.txt"


@pytest.fixture(scope="session")
def detected(test_dir, tmp_path_factory):
    """``facecmp detect`` on the generated course test folder, run once: (out folder, stdout)."""
    out = tmp_path_factory.mktemp("detected")
    code, stdout, stderr = run_cli(["detect", "--images", test_dir, "--out", out])
    assert code == 0, stderr
    return out, stdout


@pytest.fixture(scope="session")
def small_images(test_dir, tmp_path_factory) -> Path:
    """A bare folder (no annotations) of the first three test images at half size."""
    folder = tmp_path_factory.mktemp("small")
    for path in sorted((test_dir / "validare").glob("*.jpg"))[:3]:
        Image.open(path).resize(SMALL_SIZE, Image.BILINEAR).save(folder / path.with_suffix(".png").name)
    return folder


@pytest.fixture(scope="session")
def small_detected(small_images, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("small_detected")
    code, _, stderr = run_cli(["detect", "--images", small_images, "--out", out, "--batch-size", "1"])
    assert code == 0, stderr
    return out


# ----------------------------------------------------------------------------- detect


def test_detect_on_course_test_folder_writes_the_three_files(detected, test_dir):
    out, stdout = detected
    assert sorted(p.name for p in out.glob("*.npy")) == sorted(PRED_FILES)
    preds = load_predictions(out)
    assert len(preds) > 0
    assert np.load(out / "detections_all_faces.npy").dtype.kind == "i"  # course format: integer boxes
    image_names = {p.name for p in (test_dir / "validare").iterdir()}
    assert set(preds.file_names) <= image_names
    assert "6 images" in stdout and "images/s" in stdout
    assert f"{len(preds)} faces" in stdout


def test_detect_then_evaluate_round_trips(detected, gt_file, tmp_path):
    out, _ = detected
    metrics_file, plot_file = tmp_path / "m.json", tmp_path / "pr.png"
    code, stdout, stderr = run_cli(["evaluate", "--pred", out, "--gt", gt_file, "--json", metrics_file, "--plot", plot_file])
    assert code == 0, stderr
    metrics = json.loads(metrics_file.read_text())
    assert {"ap_cava", "ap_voc", "recall", "precision", "n_detections", "n_ground_truth"} <= metrics.keys()
    # The CLI reports exactly what the library computes from the files it wrote.
    gt, _ = read_ground_truth(gt_file)
    expected = evaluate(load_predictions(out), gt, iou_threshold=0.3).summary()
    assert {k: metrics[k] for k in expected} == pytest.approx(expected)  # (+ "coco" with pycocotools)
    assert metrics["n_ground_truth"] == len(gt_file.read_text().split("\n")) - 1  # one line per face
    assert metrics["n_detections"] == len(load_predictions(out))
    for word in ("ap_cava", "ap_voc", "recall", "precision", "detections", "ground truth"):
        assert word in stdout
    assert f"{metrics['ap_cava']:.6f}" in stdout
    assert plot_file.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_evaluate_ground_truth_as_predictions_is_perfect(gt_file, tmp_path):
    gt, _ = read_ground_truth(gt_file)
    names = [k for k, boxes in gt.items() for _ in boxes]
    boxes = np.concatenate(list(gt.values()))
    save_predictions(tmp_path, Predictions(boxes, np.linspace(1, 0.5, len(boxes)), np.array(names)))
    code, _, stderr = run_cli(["evaluate", "--pred", tmp_path, "--gt", gt_file, "--json", tmp_path / "m.json"])
    assert code == 0, stderr
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["ap_cava"] == metrics["ap_voc"] == metrics["recall"] == metrics["precision"] == 1.0
    assert metrics["n_detections"] == metrics["n_ground_truth"] == len(boxes)


def test_evaluate_iou_threshold_changes_the_result(gt_file, tmp_path):
    gt, _ = read_ground_truth(gt_file)
    names = [k for k, b in gt.items() for _ in b]
    boxes = np.concatenate(list(gt.values())).astype(np.int64)
    widths = boxes[:, 2] - boxes[:, 0]
    shifted = boxes + np.stack([widths // 2, 0 * widths, widths // 2, 0 * widths], axis=1)  # IoU ~ 1/3
    save_predictions(tmp_path, Predictions(shifted, np.ones(len(boxes)), np.array(names)))
    recalls = {}
    for iou in ("0.1", "0.9"):
        code, _, stderr = run_cli(["evaluate", "--pred", tmp_path, "--gt", gt_file, "--iou", iou, "--json", tmp_path / f"{iou}.json"])
        assert code == 0, stderr
        recalls[iou] = json.loads((tmp_path / f"{iou}.json").read_text())["recall"]
    assert recalls == {"0.1": 1.0, "0.9": 0.0}


def test_detect_on_a_bare_folder_keys_by_file_name(small_detected, small_images):
    preds = load_predictions(small_detected)
    assert len(preds) > 0
    assert set(preds.file_names) <= {p.name for p in small_images.iterdir()}


def test_batch_size_does_not_change_detections(small_images, small_detected, tmp_path):
    code, _, stderr = run_cli(["detect", "--images", small_images, "--out", tmp_path, "--batch-size", "4"])
    assert code == 0, stderr
    one, four = load_predictions(small_detected), load_predictions(tmp_path)
    assert len(one) > 0
    np.testing.assert_array_equal(one.file_names, four.file_names)
    assert_same_detections(one, four, box_px=1, score_tol=1e-4)


def test_worker_processes_do_not_change_detections(small_images, small_detected, tmp_path):
    code, _, stderr = run_cli(["detect", "--images", small_images, "--out", tmp_path, "--workers", "2"])
    assert code == 0, stderr
    one, parallel = load_predictions(small_detected), load_predictions(tmp_path)
    np.testing.assert_array_equal(one.file_names, parallel.file_names)
    assert_same_detections(one, parallel, box_px=1, score_tol=1e-4)


def test_detect_options_are_applied(small_images, small_detected, tmp_path):
    """A stricter ONet threshold keeps exactly the default run's detections above it; a larger
    smallest face finds fewer, but not none."""
    default = load_predictions(small_detected)
    code, _, stderr = run_cli(["detect", "--images", small_images, "--out", tmp_path / "t", "--thresholds", "0.6,0.7,0.99",
                               "--device", "cpu"])
    assert code == 0, stderr
    strict = load_predictions(tmp_path / "t")
    kept = default.scores > 0.99
    assert 0 < kept.sum() < len(default), "the check needs detections on both sides of 0.99"
    assert_same_detections(strict, Predictions(default.boxes[kept], default.scores[kept], default.file_names[kept]),
                           box_px=1, score_tol=1e-4)
    code, _, stderr = run_cli(["detect", "--images", small_images, "--out", tmp_path / "m", "--min-face", "40"])
    assert code == 0, stderr
    larger = load_predictions(tmp_path / "m")
    assert 0 < len(larger) < len(default)


def test_grayscale_palette_and_rgba_images_are_converted(small_images, small_detected, tmp_path):
    preds = load_predictions(small_detected)
    best = int(np.argmax(preds.scores))
    x0, y0, x1, y1 = preds.boxes[best]
    cx, cy, side = (x0 + x1) // 2, (y0 + y1) // 2, 2 * max(x1 - x0, y1 - y0)  # a small crop around a face
    rgb = Image.open(small_images / preds.file_names[best]).convert("RGB").crop((cx - side, cy - side, cx + side, cy + side))
    folder = tmp_path / "modes"
    folder.mkdir()
    rgb.save(folder / "rgb.png")
    rgb.convert("RGBA").save(folder / "rgba.png")
    rgb.convert("L").save(folder / "gray.png")
    rgb.convert("P").save(folder / "palette.png")
    code, stdout, stderr = run_cli(["detect", "--images", folder, "--out", tmp_path / "out"])
    assert code == 0, stderr
    assert "4 images" in stdout
    preds = load_predictions(tmp_path / "out")
    # An opaque RGBA image is the RGB image once converted: identical detections.
    assert len(preds.for_image("rgb.png")) > 0
    np.testing.assert_array_equal(preds.for_image("rgba.png").boxes, preds.for_image("rgb.png").boxes)
    np.testing.assert_array_equal(preds.for_image("rgba.png").scores, preds.for_image("rgb.png").scores)
    # Grayscale and palette images are read as the RGB image of their own pixels: the same
    # detections as that RGB image saved and detected on its own.
    for name, mode in (("gray.png", "L"), ("palette.png", "P")):
        as_rgb = tmp_path / "as_rgb" / name
        as_rgb.parent.mkdir(exist_ok=True)
        Image.open(folder / name).convert("RGB").save(as_rgb)
        assert Image.open(folder / name).mode == mode
    code, _, stderr = run_cli(["detect", "--images", tmp_path / "as_rgb", "--out", tmp_path / "out_rgb"])
    assert code == 0, stderr
    converted = load_predictions(tmp_path / "out_rgb")
    for name in ("gray.png", "palette.png"):
        assert len(preds.for_image(name)) > 0, f"{name}: the face is still there after conversion"
        np.testing.assert_array_equal(preds.for_image(name).boxes, converted.for_image(name).boxes)
        np.testing.assert_array_equal(preds.for_image(name).scores, converted.for_image(name).scores)


def test_facenet_reference_model_matches_pretrained(small_images, small_detected, tmp_path):
    import facenet_pytorch  # noqa: F401  (the reference: installed by `make install`, never skipped)

    code, _, stderr = run_cli(["detect", "--images", small_images, "--out", tmp_path, "--model", "facenet-reference"])
    assert code == 0, stderr
    ours, reference = load_predictions(small_detected), load_predictions(tmp_path)
    assert len(ours) > 0
    assert_same_detections(ours, reference, box_px=1, score_tol=1e-4)


# ----------------------------------------------------------------------------- check


def test_check_clean_generated_data_exits_zero(dataset):
    code, stdout, stderr = run_cli(["check", "--data", dataset])
    assert code == 0, stdout + stderr
    assert "No problems found" in stdout
    assert "antrenare: 12 images" in stdout and "validare: 6 images, 9 faces" in stdout


def test_check_reports_a_malformed_line_with_file_and_line(dataset, tmp_path):
    root = copy_tree(dataset, tmp_path / "ds")
    gt = root / "validare" / "task1_gt_validare.txt"
    n_lines = len(gt.read_text().splitlines())
    with gt.open("a") as f:
        f.write("0001.jpg 1 2 three 4\n")
    code, stdout, _ = run_cli(["check", "--data", root])
    assert code == 1
    assert f"{gt}:{n_lines + 1}: error: non-integer coordinate" in stdout
    assert stdout.count(f"{gt}:{n_lines + 1}") == 1  # listed once, not twice


def test_check_warns_about_a_box_outside_the_image(dataset, tmp_path):
    root = copy_tree(dataset, tmp_path / "ds")
    ann = root / "antrenare" / "ada_annotations.txt"
    n_lines = len(ann.read_text().splitlines())
    with ann.open("a") as f:
        f.write("0002.jpg 400 300 600 500 ada\n")
    code, stdout, _ = run_cli(["check", "--data", root])
    assert code == 1
    assert f"{ann}:{n_lines + 1}: warning: 1 box(es) reach outside the image" in stdout
    assert "box [400, 300, 600, 500] of 0002.jpg (480x360), clipped to [400, 300, 479, 359]" in stdout


def test_check_reports_images_missing_from_disk(dataset, tmp_path):
    root = copy_tree(dataset, tmp_path / "ds")
    (root / "validare" / "validare" / "0004.jpg").unlink()
    ann = root / "antrenare" / "bo_annotations.txt"
    n_lines = len(ann.read_text().splitlines())
    with ann.open("a") as f:
        f.write("0099.jpg 10 10 50 50 bo\n")
    code, stdout, _ = run_cli(["check", "--data", root])
    assert code == 1
    assert "1 images listed in the ground truth are missing from the image folder (0004.jpg)" in stdout
    assert f"{ann}:{n_lines + 1}: error: annotated image bo/0099.jpg not found" in stdout


def test_check_lists_every_problem_even_beyond_the_summary(dataset, tmp_path):
    root = copy_tree(dataset, tmp_path / "ds")
    gt = root / "validare" / "task1_gt_validare.txt"
    first = len(gt.read_text().splitlines()) + 1
    with gt.open("a") as f:
        f.writelines("0001.jpg 1 2 3\n" for _ in range(40))
    code, stdout, _ = run_cli(["check", "--data", root])
    assert code == 1
    for line in range(first, first + 40):
        assert f"{gt}:{line}: error: 4 columns" in stdout


def test_check_reports_a_corrupt_image(dataset, tmp_path):
    root = copy_tree(dataset, tmp_path / "ds")
    bad = root / "antrenare" / "cy" / "0002.jpg"
    bad.write_bytes(bad.read_bytes()[:2000])
    code, stdout, _ = run_cli(["check", "--data", root])
    assert code == 1
    assert f"{bad}: error:" in stdout


@pytest.mark.real_data
def test_check_real_dexter_names_the_known_bad_line(dexter_root):
    code, stdout, _ = run_cli(["check", "--data", dexter_root])
    assert code == 1
    assert "mom_annotations.txt:83" in stdout
    assert "4000 images, 5813 faces" in stdout


@pytest.mark.real_data
def test_check_real_scooby_doo_reports_missing_images(shared_datasets):
    root = shared_datasets / "scooby-doo"
    if not (root / "validare").is_dir():
        pytest.skip(f"{root} not found")
    code, stdout, _ = run_cli(["check", "--data", root])
    assert code == 1
    assert "110 images listed in the ground truth are missing" in stdout
    assert "90 images" in stdout


# ----------------------------------------------------------------------------- bad inputs: evaluate


def _break_scores_length(d: Path) -> str:
    np.save(d / "scores_all_faces.npy", np.load(d / "scores_all_faces.npy")[:-1])
    return "scores_all_faces.npy has"


def _break_box_columns(d: Path) -> str:
    np.save(d / "detections_all_faces.npy", np.load(d / "detections_all_faces.npy")[:, :3])
    return str(d / "detections_all_faces.npy")


def _remove_scores(d: Path) -> str:
    (d / "scores_all_faces.npy").unlink()
    return "scores_all_faces.npy"


def _nan_score(d: Path) -> str:
    scores = np.load(d / "scores_all_faces.npy").astype(float)
    scores[1] = np.nan
    np.save(d / "scores_all_faces.npy", scores)
    return str(d / "scores_all_faces.npy")


def _nan_box(d: Path) -> str:
    boxes = np.load(d / "detections_all_faces.npy").astype(float)
    boxes[0, 2] = np.nan
    np.save(d / "detections_all_faces.npy", boxes)
    return str(d / "detections_all_faces.npy")


def _numeric_names(d: Path) -> str:
    np.save(d / "file_names_all_faces.npy", np.arange(len(np.load(d / "scores_all_faces.npy"))))
    return str(d / "file_names_all_faces.npy")


def _garbage_scores(d: Path) -> str:
    (d / "scores_all_faces.npy").write_bytes(b"not a numpy file\n")
    return str(d / "scores_all_faces.npy")


def _inverted_box(d: Path) -> str:
    boxes = np.load(d / "detections_all_faces.npy")
    boxes[0] = boxes[0][[2, 3, 0, 1]]
    np.save(d / "detections_all_faces.npy", boxes)
    return str(d / "detections_all_faces.npy")


@pytest.mark.parametrize(
    "breaker",
    [_break_scores_length, _break_box_columns, _remove_scores, _nan_score, _nan_box, _numeric_names,
     _garbage_scores, _inverted_box],
)
def test_evaluate_rejects_broken_prediction_files(breaker, gt_file, tmp_path):
    gt, _ = read_ground_truth(gt_file)
    names = [k for k, b in gt.items() for _ in b]
    save_predictions(tmp_path, Predictions(np.concatenate(list(gt.values())), np.linspace(1, 0.5, len(names)), np.array(names)))
    needle = breaker(tmp_path)
    code, stdout, stderr = run_cli(["evaluate", "--pred", tmp_path, "--gt", gt_file, "--json", tmp_path / "m.json"])
    assert_user_error(code, stderr, needle, str(tmp_path))
    assert len(stderr.strip().splitlines()) == 1
    assert not (tmp_path / "m.json").exists()
    assert stdout == ""


def test_evaluate_rejects_a_malformed_ground_truth_line(detected, gt_file, tmp_path):
    bad = tmp_path / "gt.txt"
    bad.write_text(gt_file.read_text() + "0001.jpg 10 20 30\n")
    line = len(gt_file.read_text().splitlines()) + 1
    code, _, stderr = run_cli(["evaluate", "--pred", detected[0], "--gt", bad])
    assert_user_error(code, stderr, f"{bad}:{line}", "IMAGE X_MIN Y_MIN X_MAX Y_MAX")


def test_evaluate_missing_ground_truth_file(detected, tmp_path):
    code, _, stderr = run_cli(["evaluate", "--pred", detected[0], "--gt", tmp_path / "nope.txt"])
    assert_user_error(code, stderr, str(tmp_path / "nope.txt"))


def test_evaluate_rejects_an_unknown_plot_format_before_work(detected, gt_file, tmp_path):
    code, _, stderr = run_cli(["evaluate", "--pred", detected[0], "--gt", gt_file, "--plot", tmp_path / "pr.xyz"])
    assert_user_error(code, stderr, str(tmp_path / "pr.xyz"), ".png")


def test_evaluate_warns_about_predicted_images_not_in_the_ground_truth(gt_file, tmp_path):
    gt, _ = read_ground_truth(gt_file)
    key, boxes = next(iter(gt.items()))
    save_predictions(tmp_path, Predictions(np.concatenate([boxes, boxes]), np.ones(2 * len(boxes)),
                                           np.array([key] * len(boxes) + ["stranger.jpg"] * len(boxes))))
    code, _, stderr = run_cli(["evaluate", "--pred", tmp_path, "--gt", gt_file])
    assert code == 0
    assert "warning: 1 predicted image names are not in" in stderr and "stranger.jpg" in stderr


# ----------------------------------------------------------------------------- bad inputs: detect


@pytest.mark.parametrize("damage, workers", [("truncated", "0"), ("garbage", "0"), ("garbage", "2")])
def test_detect_names_a_corrupt_image_and_writes_nothing(damage, workers, small_images, tmp_path):
    folder = copy_tree(small_images, tmp_path / "imgs")
    bad = folder / "0000_bad.jpg"  # sorts first: detection fails before any work
    good = next(iter(sorted(folder.glob("*.png")))).read_bytes()
    bad.write_bytes(good[:3000] if damage == "truncated" else b"garbage\n")
    code, _, stderr = run_cli(["detect", "--images", folder, "--out", tmp_path / "out", "--workers", workers])
    assert_user_error(code, stderr, f"{bad}: cannot decode image")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_detect_on_a_test_folder_with_a_corrupt_image_names_it(dataset, tmp_path):
    root = copy_tree(dataset / "validare", tmp_path / "validare")
    bad = root / "validare" / "0003.jpg"
    bad.write_bytes(b"garbage\n")
    code, _, stderr = run_cli(["detect", "--images", root, "--out", tmp_path / "out"])
    assert_user_error(code, stderr, str(bad))


def test_detect_on_a_test_folder_with_a_malformed_ground_truth_names_the_line(dataset, tmp_path):
    root = copy_tree(dataset / "validare", tmp_path / "validare")
    gt = root / "task1_gt_validare.txt"
    line = len(gt.read_text().splitlines()) + 1
    with gt.open("a") as f:
        f.write("0001.jpg 1 2 3 4 5 6\n")
    code, _, stderr = run_cli(["detect", "--images", root, "--out", tmp_path / "out"])
    assert_user_error(code, stderr, f"{gt}:{line}")


@pytest.mark.parametrize(
    "option, value",
    [("--thresholds", "0.6,0.7"), ("--thresholds", "0.6,0.7,1.5"), ("--thresholds", "a,b,c"),
     ("--min-face", "5"), ("--min-face", "nan"), ("--batch-size", "0"), ("--workers", "-1"), ("--device", "bogus"), ("--device", "cuda:99")],
)
def test_detect_bad_options_are_usage_errors(option, value, small_images, tmp_path):
    code, stdout, stderr = run_cli(["detect", "--images", small_images, "--out", tmp_path, option, value])
    assert code == 2
    assert "usage: facecmp detect" in stderr
    assert f"argument {option}:" in stderr and "Traceback" not in stderr
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("value", ["1.5", "-0.1", "x"])
def test_evaluate_bad_iou_is_a_usage_error(value, detected, gt_file):
    code, _, stderr = run_cli(["evaluate", "--pred", detected[0], "--gt", gt_file, "--iou", value])
    assert code == 2
    assert "argument --iou:" in stderr and "Traceback" not in stderr


def test_detect_missing_model_is_a_clear_model_error(small_images, tmp_path):
    code, _, stderr = run_cli(["detect", "--images", small_images, "--out", tmp_path / "out", "--model", "/nonexistent"])
    assert_user_error(code, stderr, "/nonexistent", "pretrained", "facecmp finetune")


def test_detect_unfinished_checkpoint_is_a_clear_model_error(small_images, tmp_path):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "pnet.pt").write_bytes(b"junk")
    code, _, stderr = run_cli(["detect", "--images", small_images, "--out", tmp_path / "out", "--model", ckpt])
    assert_user_error(code, stderr, str(ckpt))


@pytest.mark.parametrize("what", ["a file", "missing", "empty", "training folder"])
def test_detect_images_must_be_a_folder_of_images(what, dataset, small_images, tmp_path):
    images = {
        "a file": next(iter(small_images.iterdir())),
        "missing": tmp_path / "nope",
        "empty": tmp_path / "empty",
        "training folder": dataset / "antrenare",
    }[what]
    (tmp_path / "empty").mkdir()
    code, _, stderr = run_cli(["detect", "--images", images, "--out", tmp_path / "out"])
    assert_user_error(code, stderr, str(images), "--images")


def test_detect_out_must_not_be_a_file(small_images, tmp_path):
    out = tmp_path / "out.txt"
    out.write_text("keep me")
    code, _, stderr = run_cli(["detect", "--images", small_images, "--out", out])
    assert_user_error(code, stderr, str(out), "--out")
    assert out.read_text() == "keep me"


def test_debug_shows_the_traceback(tmp_path, gt_file):
    with pytest.raises(DataError, match="missing prediction file"):
        main(["--debug", "evaluate", "--pred", str(tmp_path), "--gt", str(gt_file)])


# ----------------------------------------------------------------------------- the real console script


def _console(*args) -> subprocess.CompletedProcess:
    script = Path(sys.executable).with_name("facecmp")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "facecmp.cli"]
    return subprocess.run([*command, *map(str, args)], capture_output=True, text=True, timeout=300)


def test_console_script_error_is_one_line_without_traceback(tmp_path, gt_file):
    proc = _console("evaluate", "--pred", tmp_path, "--gt", gt_file)
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("facecmp: error: ")
    assert str(tmp_path) in lines[0] and "detections_all_faces.npy" in lines[0]


def test_module_entry_point_reports_a_corrupt_image_without_traceback(tmp_path):
    (tmp_path / "imgs").mkdir()
    bad = tmp_path / "imgs" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    proc = subprocess.run([sys.executable, "-m", "facecmp.cli", "detect", "--images", str(tmp_path / "imgs"),
                           "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"facecmp: error: {bad}: cannot decode image")


def test_module_entry_point_finishes_its_output_before_the_quick_exit(tmp_path):
    """``run`` ends the process with os._exit: the printed summary and the .npy files must be complete."""
    from PIL import Image

    (tmp_path / "imgs").mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)).save(tmp_path / "imgs" / f"{i}.jpg")
    proc = subprocess.run([sys.executable, "-m", "facecmp.cli", "detect", "--images", str(tmp_path / "imgs"),
                           "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1].startswith(f"wrote {tmp_path / 'out'}/detections_all_faces.npy")
    load_predictions(tmp_path / "out")  # all three files present and consistent


# ----------------------------------------------------------------------------- finetune, compare, demo (tiny settings)


@pytest.fixture(scope="session")
def finetuned(dataset, tmp_path_factory):
    """``facecmp finetune`` on the generated archive: 1 dev image per folder, one epoch."""
    out = tmp_path_factory.mktemp("ft") / "ckpt"
    code, stdout, stderr = run_cli(["finetune", "--data", dataset, "--out", out, "--epochs", "1", "--dev-per-folder", "1"])
    assert code == 0, stderr
    return out, stdout


def test_finetune_writes_a_checkpoint_that_detect_uses(finetuned, small_images, small_detected, tmp_path):
    from facecmp.detection.checkpoint import load_checkpoint

    out, stdout = finetuned
    assert f"checkpoint: {out}" in stdout
    ckpt = load_checkpoint(out)
    assert ckpt.stages == ("pnet",) and ckpt.meta["epochs"] == 1 and ckpt.thresholds is not None
    assert ckpt.meta["calibration"]["n_images"] == 4  # one dev image from each generated character folder
    code, _, stderr = run_cli(["detect", "--images", small_images, "--out", tmp_path, "--model", out])
    assert code == 0, stderr
    tuned, pretrained = load_predictions(tmp_path), load_predictions(small_detected)
    assert len(tuned) > 0
    # The fine-tuned PNet at its own thresholds is a different detector from the pretrained one.
    assert len(tuned) != len(pretrained) or not np.allclose(np.sort(tuned.scores), np.sort(pretrained.scores))


def test_finetune_resume_continues_to_more_epochs(dataset, tmp_path):
    """On a recipe whose PNet decays per epoch (``fast``) a resume with more epochs trains only the new ones."""
    from facecmp.detection.checkpoint import load_checkpoint

    first, out = tmp_path / "first", tmp_path / "ckpt"
    args = ["finetune", "--data", dataset, "--dev-per-folder", "1", "--recipe", "fast"]
    code, _, stderr = run_cli([*args, "--out", first, "--epochs", "1"])
    assert code == 0, stderr
    shutil.copytree(first, out)
    code, _, stderr = run_cli([*args, "--out", out, "--epochs", "2", "--resume"])
    assert code == 0, stderr
    history = load_checkpoint(out).meta["history"]
    assert [h["epoch"] for h in history] == [1, 2]
    assert history[0] == load_checkpoint(first).meta["history"][0]  # epoch 1 was not trained again


def test_finetune_resume_of_a_one_cycle_run_with_other_epochs_is_one_error_line(dataset, tmp_path):
    """The short recipe's PNet runs one cycle over its epochs: a resume with more is refused, saying why."""
    out = tmp_path / "ckpt"
    args = ["finetune", "--data", dataset, "--out", out, "--dev-per-folder", "1", "--recipe", "short"]
    code, _, stderr = run_cli([*args, "--epochs", "1"])
    assert code == 0, stderr
    code, _, err = run_cli([*args, "--epochs", "2", "--resume"])
    assert_user_error(code, err, "one-cycle", "--recipe fast")


def test_finetune_bad_stage_is_a_usage_error(dataset, tmp_path):
    code, _, err = run_cli(["finetune", "--data", dataset, "--out", tmp_path / "x", "--stages", "pnet,lnet", "--dev-per-folder", "1"])
    assert_user_error(code, err, "lnet", "--stages")


@pytest.fixture
def one_dev_image_per_folder(monkeypatch):
    """`compare` calibrates on 25 dev images per folder; the tiny archive has 3."""
    import functools

    from facecmp.study import compare

    monkeypatch.setattr(compare, "choose_splits", functools.partial(compare.choose_splits, dev_per_folder=1))


@pytest.mark.slow
def test_compare_reuses_the_checkpoint_and_reports_what_evaluate_finds(dataset, finetuned, gt_file, tmp_path, one_dev_image_per_folder):
    out = tmp_path / "report"
    code, stdout, stderr = run_cli(["compare", "--data", dataset, "--out", out, "--checkpoint", finetuned[0]])
    assert code == 0, stderr
    assert f"report: {out / 'report.md'}" in stdout
    results = {v["name"]: v for v in json.loads((out / "results.json").read_text())["variants"]}
    assert list(results) == ["pretrained", "pretrained-calibrated", "finetuned-pnet"]
    assert results["finetuned-pnet"]["settings"]["checkpoint"] == str(finetuned[0])  # reused, not trained
    assert not list((out / "cache").glob("finetuned-*")), "--checkpoint must not train"
    for name, row in results.items():
        # The table's numbers are what `facecmp evaluate` gives on the predictions compare saved.
        code, _, stderr = run_cli(["evaluate", "--pred", out / "predictions" / name, "--gt", gt_file, "--json", tmp_path / f"{name}.json"])
        assert code == 0, stderr
        again = json.loads((tmp_path / f"{name}.json").read_text())
        assert (again["ap_cava"], again["recall"]) == pytest.approx((row["ap_cava"], row["recall"]))
    assert results["pretrained"]["ap_cava"] > 0
    assert {p.name for p in out.iterdir()} >= {"report.md", "results.json", "pr_curves.png", "speed.png", "samples.png"}


@pytest.mark.slow
def test_demo_runs_every_variant_on_generated_data(tmp_path, monkeypatch, one_dev_image_per_folder):
    """`facecmp demo`, on a tiny generated dataset and one epoch per stage (the real one takes a minute)."""
    import importlib

    from facecmp.data import synthetic

    ft = importlib.import_module("facecmp.training.finetune")  # the module (the package exports the function)

    monkeypatch.setattr(synthetic, "ensure_default_dataset", lambda seed=0: generate_dataset(
        tmp_path / "data", n_train_per_character=3, n_test=4, seed=seed))
    for stage, settings in ft.DEFAULT_TRAINING.items():
        monkeypatch.setitem(ft.DEFAULT_TRAINING, stage, dataclasses.replace(settings, epochs=1))
    code, stdout, stderr = run_cli(["demo", "--out", tmp_path / "demo"])
    assert code == 0, stderr
    results = json.loads((tmp_path / "demo" / "results.json").read_text())["variants"]
    assert [v["name"] for v in results] == [
        "pretrained", "pretrained-calibrated", "finetuned-pnet", "finetuned-pnet-rnet", "finetuned-cascade"]
    assert all(v["n_detections"] > 0 for v in results)
    assert f"report: {tmp_path / 'demo' / 'report.md'}" in stdout
