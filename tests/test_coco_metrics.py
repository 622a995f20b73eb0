"""COCO metrics (pycocotools) beside the course AP: a hand-computed case, agreement where the conventions
coincide, the documented difference where they do not, and the CLI's ``evaluate --json``."""

from __future__ import annotations

import json

import numpy as np
import pytest

from facecmp.data.predictions import Predictions, load_predictions, save_predictions
from facecmp.evaluation import coco as coco_module
from facecmp.evaluation.coco import KEYS, coco_metrics
from facecmp.evaluation.evaluator import evaluate
from tests.test_cli import run_cli

pytest.importorskip("pycocotools", reason="COCO metrics need pycocotools: pip install 'facecmp[coco]'")


def interpolated_ap_101(recall: np.ndarray, precision: np.ndarray) -> float:
    """COCO's AP of one precision-recall curve: the monotone envelope sampled at recall 0, 0.01, ..., 1.

    ``recall`` / ``precision`` are cumulative, in descending-score order (as our evaluator gives them).
    """
    if not len(recall):
        return 0.0
    envelope = np.maximum.accumulate(np.asarray(precision, dtype=np.float64)[::-1])[::-1]
    points = np.linspace(0.0, 1.0, 101)
    index = np.searchsorted(recall, points, side="left")
    return float(np.sum(np.where(index < len(recall), envelope[np.minimum(index, len(recall) - 1)], 0.0)) / 101)


def inclusive(x, y, w, h):
    """A continuous COCO box ``[x, y, w, h]`` as our inclusive ``x_min, y_min, x_max, y_max``."""
    return [x, y, x + w - 1, y + h - 1]


def test_hand_computed_case():
    # Two 50x50 faces (area 2500: "medium"). d1 overlaps face 1 with IoU 0.77, d2 face 2 with IoU 0.62, d3 nothing.
    gt = {"a.jpg": np.array([inclusive(0, 0, 50, 50), inclusive(100, 0, 50, 50)])}
    preds = Predictions(
        np.array([inclusive(0, 0, 50, 38.5), inclusive(100, 0, 50, 31), inclusive(200, 200, 40, 40)], dtype=float),
        np.array([0.9, 0.8, 0.7]), np.array(["a.jpg"] * 3),
    )
    m = coco_metrics(preds, gt)
    # IoU thresholds .50 .55 .60: both faces found at precision 1 -> AP 1 (all 101 recall points).
    # .65 .70 .75: only face 1 (recall 0.5, precision 1) -> 51 of 101 recall points (0, 0.01, ..., 0.50) -> 51/101.
    # .80 ... .95: nothing -> 0.
    assert m["ap50"] == pytest.approx(1.0)
    assert m["ap75"] == pytest.approx(51 / 101)
    assert m["ap"] == pytest.approx((3 * 1.0 + 3 * 51 / 101 + 4 * 0.0) / 10)
    assert m["ar100"] == pytest.approx((3 * 1.0 + 3 * 0.5) / 10)
    assert m["ap_medium"] == pytest.approx(m["ap"])
    assert m["ap_small"] is None and m["ap_large"] is None  # no face in those size ranges: COCO's -1
    assert tuple(m) == KEYS
    # the course's AP at IoU 0.5 (all-point, with the envelope) agrees here: both faces, precision 1
    assert evaluate(preds, gt, iou_threshold=0.5).ap_voc == pytest.approx(1.0)


def test_no_detections_is_zero_not_an_error():
    gt = {"a.jpg": np.array([inclusive(0, 0, 50, 50)])}
    m = coco_metrics(Predictions.empty(), gt)
    assert m["ap"] == 0.0 and m["ap50"] == 0.0 and m["ar100"] == 0.0


def _separated_case(rng: np.random.Generator, n_images: int = 12):
    """Faces on a grid (never overlapping), at most one detection near each face, false alarms far from all
    faces, distinct scores, < 100 detections per image: COCO's matching and the course's then coincide."""
    gt, boxes, scores, names = {}, [], [], []
    for i in range(n_images):
        key = f"{i:03d}.jpg"
        faces = []
        for cell in rng.choice(16, size=rng.integers(1, 8), replace=False):
            x, y = (cell % 4) * 150 + 10, (cell // 4) * 150 + 10
            w, h = rng.uniform(20, 120, size=2)
            face = inclusive(x, y, round(w), round(h))
            faces.append(face)
            if rng.random() < 0.8:
                jitter = rng.normal(0, 0.15, size=4) * [w, h, w, h]
                boxes.append(np.array(face, dtype=float) + jitter)
                scores.append(rng.random())
                names.append(key)
        gt[key] = np.array(faces)
        for _ in range(rng.integers(0, 4)):
            x, y = rng.uniform(700, 900, size=2)
            boxes.append([x, y, x + 30, y + 30])
            scores.append(rng.random())
            names.append(key)
    return gt, Predictions(np.array(boxes), np.array(scores), np.array(names))


@pytest.mark.parametrize("seed", range(6))
def test_ap50_equals_our_curve_with_coco_interpolation_where_conventions_coincide(seed):
    gt, preds = _separated_case(np.random.default_rng(seed))
    ours = evaluate(preds, gt, iou_threshold=0.5)
    theirs = coco_metrics(preds, gt)
    # Same IoUs (+1 pixel on our side = continuous w on theirs) and the same matches: only the
    # interpolation differs, so COCO's 101-point sampling of our curve is their AP50 exactly...
    assert interpolated_ap_101(ours.recall, ours.precision) == pytest.approx(theirs["ap50"], abs=1e-12)
    # ...and our all-point AP differs from it by the sampling alone (at most one recall step of 1/100).
    assert abs(ours.ap_voc - theirs["ap50"]) <= 0.011


def test_where_the_conventions_differ_a_duplicate_falls_back_in_coco_only():
    # Two overlapping faces; the second detection's best face is the first face (already taken), but it
    # also overlaps face 2 with IoU >= 0.5. COCO matches it to face 2; the course counts a false positive.
    gt = {"a.jpg": np.array([inclusive(0, 0, 100, 100), inclusive(30, 0, 100, 100)])}
    preds = Predictions(np.array([inclusive(0, 0, 100, 100), inclusive(15, 0, 100, 100)], dtype=float),
                        np.array([0.9, 0.8]), np.array(["a.jpg", "a.jpg"]))
    assert coco_metrics(preds, gt)["ap50"] == pytest.approx(1.0)
    assert evaluate(preds, gt, iou_threshold=0.5).ap_voc == pytest.approx(0.5)


def test_evaluate_json_has_the_coco_object(tmp_path):
    gt, preds = _separated_case(np.random.default_rng(0), n_images=4)
    gt_file = tmp_path / "gt.txt"
    gt_file.write_text("".join(f"{k} {' '.join(str(int(v)) for v in b)}\n" for k, boxes in gt.items() for b in boxes))
    save_predictions(tmp_path / "pred", preds)
    code, out, err = run_cli(["evaluate", "--pred", tmp_path / "pred", "--gt", gt_file, "--json", tmp_path / "m.json"])
    assert code == 0, err
    written = json.loads((tmp_path / "m.json").read_text())
    assert tuple(written["coco"]) == KEYS
    stored = load_predictions(tmp_path / "pred")  # the course's files hold integer boxes
    assert written["coco"] == pytest.approx(coco_metrics(stored, gt))
    assert "coco      ap " in out


def test_without_pycocotools_one_line_says_what_to_install(tmp_path, monkeypatch):
    gt, preds = _separated_case(np.random.default_rng(1), n_images=3)
    gt_file = tmp_path / "gt.txt"
    gt_file.write_text("".join(f"{k} {' '.join(str(int(v)) for v in b)}\n" for k, boxes in gt.items() for b in boxes))
    save_predictions(tmp_path / "pred", preds)
    monkeypatch.setattr(coco_module, "available", lambda: False)
    code, out, err = run_cli(["evaluate", "--pred", tmp_path / "pred", "--gt", gt_file, "--json", tmp_path / "m.json"])
    assert code == 0, err
    assert [line for line in err.splitlines() if "pycocotools" in line] == [coco_module.INSTALL_NOTE]
    written = json.loads((tmp_path / "m.json").read_text())
    assert "coco" not in written and "ap_cava" in written


def test_study_report_and_results_json_carry_the_coco_metrics(tmp_path):
    from facecmp.data import load_archive
    from facecmp.data.synthetic import generate_dataset
    from facecmp.study.report import VariantResult, write_report

    test = load_archive(generate_dataset(tmp_path / "ds", n_train_per_character=1, n_test=3, seed=0)).test
    gt = test.ground_truth()
    perfect = Predictions(np.concatenate([b for b in gt.values()]).astype(float),
                          np.linspace(1, 0.5, test.n_faces), np.concatenate([[k] * len(b) for k, b in gt.items()]))
    results = [VariantResult(name, p, evaluate(p, gt), 1.0) for name, p in (("perfect", perfect), ("none", Predictions.empty()))]
    write_report(tmp_path / "report", results, dataset=test)
    variants = json.loads((tmp_path / "report" / "results.json").read_text())["variants"]
    assert variants[0]["coco"]["ap"] == pytest.approx(1.0) and variants[0]["coco"]["ap50"] == pytest.approx(1.0)
    assert variants[1]["coco"]["ap50"] == 0.0
    report = (tmp_path / "report" / "report.md").read_text()
    assert "AP@[.5:.95]" in report and "| perfect" in report
