"""facecmp.evaluation.evaluator: IoU conventions, course-exact matching, AP variants, and scale."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from mapcalc import calculate_map
from torchvision.ops import box_iou

from facecmp.errors import DataError
from facecmp.evaluation.evaluator import (
    _iou_broadcast,
    average_precision_cava,
    average_precision_voc,
    evaluate,
    pairwise_iou,
    unknown_keys,
)
from facecmp.data.predictions import Predictions

try:
    from tests.reference_eval import course_ap, course_iou, reference_evaluate
except ImportError:  # tests/ is not a package: pytest puts this folder on sys.path
    from reference_eval import course_ap, course_iou, reference_evaluate

GRID = 15  # small integer canvas for pixel-counting checks


@st.composite
def int_boxes(draw, n_min=0, n_max=6, min_size=0):
    """(n, 4) integer boxes on a GRID x GRID canvas; ``min_size`` = x_max - x_min at least."""
    n = draw(st.integers(n_min, n_max))
    rows = []
    for _ in range(n):
        x1, y1 = draw(st.integers(0, GRID - min_size)), draw(st.integers(0, GRID - min_size))
        x2, y2 = draw(st.integers(x1 + min_size, GRID)), draw(st.integers(y1 + min_size, GRID))
        rows.append([x1, y1, x2, y2])
    return np.array(rows, dtype=np.int64).reshape(n, 4)


def pixel_mask(box, inclusive: bool) -> np.ndarray:
    x1, y1, x2, y2 = box
    mask = np.zeros((GRID + 1, GRID + 1), dtype=bool)
    end = 1 if inclusive else 0
    mask[y1 : y2 + end, x1 : x2 + end] = True
    return mask


def mask_iou(a, b, inclusive: bool) -> np.ndarray:
    out = np.zeros((len(a), len(b)))
    for i, box_a in enumerate(a):
        for j, box_b in enumerate(b):
            ma, mb = pixel_mask(box_a, inclusive), pixel_mask(box_b, inclusive)
            union = (ma | mb).sum()
            out[i, j] = (ma & mb).sum() / union if union else 0.0
    return out


# ---------------------------------------------------------------- IoU


@given(int_boxes(), int_boxes(), st.sampled_from(["inclusive", "continuous"]))
def test_iou_is_symmetric_and_in_unit_interval(a, b, convention):
    iou = pairwise_iou(a, b, convention)
    assert iou.shape == (len(a), len(b))
    np.testing.assert_array_equal(iou, pairwise_iou(b, a, convention).T)
    assert ((iou >= 0) & (iou <= 1)).all()


@given(int_boxes(n_min=1, min_size=1), st.sampled_from(["inclusive", "continuous"]))
def test_iou_of_a_box_with_itself_is_one(a, convention):
    np.testing.assert_allclose(np.diag(pairwise_iou(a, a, convention)), 1.0, rtol=0, atol=1e-12)


@given(int_boxes(n_min=1, n_max=1), st.integers(0, 3), st.sampled_from(["inclusive", "continuous"]))
def test_iou_is_zero_for_disjoint_boxes(a, gap, convention):
    # A box placed right of ``a`` with ``gap`` free columns (inclusive: x_min must exceed x_max).
    x_start = a[0, 2] + gap + (1 if convention == "inclusive" else 0)
    b = np.array([[x_start, a[0, 1], x_start + 4, a[0, 3]]])
    assert pairwise_iou(a, b, convention)[0, 0] == 0.0


@given(int_boxes(), int_boxes())
def test_inclusive_iou_counts_integer_pixels(a, b):
    np.testing.assert_allclose(pairwise_iou(a, b, "inclusive"), mask_iou(a, b, inclusive=True), rtol=0, atol=1e-12)


@given(int_boxes(min_size=1), int_boxes(min_size=1))
def test_continuous_iou_is_area_of_half_open_pixels(a, b):
    np.testing.assert_allclose(
        pairwise_iou(a, b, "continuous"), mask_iou(a, b, inclusive=False), rtol=0, atol=1e-12
    )


@given(
    arrays(np.float64, (5, 4), elements=st.floats(0, 100, allow_nan=False)),
    arrays(np.float64, (3, 4), elements=st.floats(0, 100, allow_nan=False)),
)
def test_continuous_iou_matches_torchvision_on_float_boxes(a, b):
    a = np.concatenate([np.minimum(a[:, :2], a[:, 2:]), np.maximum(a[:, :2], a[:, 2:]) + 0.5], axis=1)
    b = np.concatenate([np.minimum(b[:, :2], b[:, 2:]), np.maximum(b[:, :2], b[:, 2:]) + 0.5], axis=1)
    expected = box_iou(torch.from_numpy(a), torch.from_numpy(b)).numpy()
    np.testing.assert_allclose(pairwise_iou(a, b, "continuous"), expected, rtol=0, atol=1e-12)


@given(int_boxes(), int_boxes(), st.sampled_from(["inclusive", "continuous"]))
def test_evaluator_iou_kernel_agrees_with_pairwise_iou(a, b, convention):
    offset = 1.0 if convention == "inclusive" else 0.0
    kernel = _iou_broadcast(a[:, None, :].astype(float), b[None, :, :].astype(float), offset)
    np.testing.assert_allclose(kernel, pairwise_iou(a, b, convention), rtol=0, atol=1e-12)


@given(int_boxes(n_min=1, n_max=3), int_boxes(n_min=1, n_max=3))
def test_inclusive_iou_equals_course_formula(a, b):
    expected = np.array([[course_iou(x, y) for y in a.tolist()] for x in b.tolist()]).T
    np.testing.assert_allclose(pairwise_iou(a, b), expected, rtol=0, atol=1e-12)


def test_unknown_iou_convention_is_rejected():
    with pytest.raises(ValueError, match="convention"):
        pairwise_iou(np.zeros((1, 4)), np.zeros((1, 4)), "half-open")


# ---------------------------------------------------------------- random scenarios


def random_scenario(seed: int, ties: bool, n_images: int = 5, n_detections: int = 40):
    """Ground truth on a few small images, and detections near GT boxes, random, or on unknown images."""
    rng = np.random.default_rng(seed)
    gt = {}
    for i in range(n_images):
        n = int(rng.integers(0, 5))
        xy = rng.integers(0, 60, size=(n, 2))
        wh = rng.integers(3, 25, size=(n, 2))
        gt[f"{i:04d}.jpg"] = np.concatenate([xy, xy + wh], axis=1)
    keys = list(gt) + ["ghost.jpg"]
    names, boxes = [], []
    for _ in range(n_detections):
        key = keys[int(rng.integers(len(keys)))]
        if len(gt.get(key, [])) and rng.random() < 0.7:
            base = gt[key][int(rng.integers(len(gt[key])))]
            box = base + rng.integers(-4, 5, size=4)
        else:
            xy = rng.integers(0, 60, size=2)
            box = np.concatenate([xy, xy + rng.integers(3, 25, size=2)])
        box[2:] = np.maximum(box[2:], box[:2])
        names.append(key)
        boxes.append(box)
    scores = rng.integers(0, 4, size=n_detections) / 4 if ties else rng.random(n_detections)
    boxes = np.array(boxes, dtype=np.int64).reshape(-1, 4)
    return Predictions(boxes, scores, np.array(names)), gt


scenarios = st.tuples(st.integers(0, 2**32 - 1), st.booleans(), st.integers(1, 6), st.integers(0, 60))


@settings(max_examples=150, deadline=None)
@given(scenarios, st.sampled_from([0.1, 0.3, 0.5, 0.7]))
def test_vectorized_evaluation_equals_the_reference_loop(scenario, threshold):
    seed, ties, n_images, n_det = scenario
    preds, gt = random_scenario(seed, ties, n_images, n_det)
    if sum(len(b) for b in gt.values()) == 0:
        with pytest.raises(DataError, match="no face boxes"):
            evaluate(preds, gt, threshold)
        return
    ev = evaluate(preds, gt, threshold)
    ref = reference_evaluate(preds.boxes, preds.scores, preds.file_names, gt, threshold)
    np.testing.assert_array_equal(ev.is_true_positive[ref["order"]], ref["tp"])
    np.testing.assert_allclose(ev.recall, ref["rec"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(ev.precision, ref["prec"], rtol=0, atol=1e-12)
    assert ev.ap_cava == pytest.approx(ref["ap_cava"], abs=1e-12)
    assert ev.ap_voc == pytest.approx(ref["ap_voc"], abs=1e-12)
    np.testing.assert_array_equal(np.concatenate(list(ev.gt_matched.values())), ref["gt_used"])


@settings(max_examples=100, deadline=None)
@given(scenarios)
def test_matching_invariants(scenario):
    preds, gt = random_scenario(*scenario)
    n_gt = sum(len(b) for b in gt.values())
    assume(n_gt > 0)
    ev = evaluate(preds, gt)
    matched = np.concatenate(list(ev.gt_matched.values()))
    # Each GT box is matched at most once: matched boxes and true positives are in one-to-one correspondence.
    assert matched.sum() == ev.n_true_positives == ev.is_true_positive.sum()
    assert {k: len(v) for k, v in ev.gt_matched.items()} == {k: len(b) for k, b in gt.items()}
    assert ev.n_detections == len(preds) == len(ev.recall) == len(ev.precision)
    assert ev.n_ground_truth == n_gt
    # TP + FP = detections: the last precision is TP / N.
    if len(preds):
        assert ev.final_precision == pytest.approx(ev.n_true_positives / len(preds))
    assert ev.final_recall == pytest.approx(ev.n_true_positives / n_gt)
    assert not ev.is_true_positive[preds.file_names == "ghost.jpg"].any()
    assert 0.0 <= ev.ap_cava <= ev.ap_voc <= 1.0
    assert (np.diff(ev.recall) >= 0).all()


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 6), st.integers(1, 60), st.randoms(use_true_random=False))
def test_distinct_scores_make_the_result_independent_of_input_order(seed, n_images, n_det, rnd):
    preds, gt = random_scenario(seed, False, n_images, n_det)
    assume(sum(len(b) for b in gt.values()) > 0)
    perm = np.array(rnd.sample(range(len(preds)), len(preds)))
    shuffled = Predictions(preds.boxes[perm], preds.scores[perm], preds.file_names[perm])
    a, b = evaluate(preds, gt), evaluate(shuffled, gt)
    assert a.ap_cava == b.ap_cava and a.ap_voc == b.ap_voc
    np.testing.assert_array_equal(a.precision, b.precision)
    np.testing.assert_array_equal(a.is_true_positive[perm], b.is_true_positive)
    for key in gt:
        np.testing.assert_array_equal(a.gt_matched[key], b.gt_matched[key])


@settings(max_examples=100, deadline=None)
@given(scenarios, st.sampled_from([0.1, 0.3, 0.5]))
def test_ap_voc_equals_mapcalc(scenario, threshold):
    """mapcalc 0.2.2 (Cartucho/mAP) uses the same +1 IoU, ``>=`` threshold, first-max-wins and
    duplicate-is-FP rules, and the VOC AP *with* the precision envelope, so it must equal ap_voc.
    It differs in bookkeeping only, which we adapt to: it has no images (one list of GT boxes),
    so each image is shifted 1000 px to the right to keep images apart; it does not sort by score,
    so detections are passed in our ``argsort(scores)[::-1]`` order; it counts IoU 0 as no match,
    which agrees with ours for thresholds > 0."""
    preds, gt = random_scenario(*scenario)
    assume(sum(len(b) for b in gt.values()) > 0)
    shift_of = {key: 1000 * i for i, key in enumerate(list(gt) + ["ghost.jpg"])}

    def shifted(boxes, key):
        return (np.asarray(boxes).reshape(-1, 4) + [shift_of[key], 0, shift_of[key], 0]).tolist()

    gt_boxes = [box for key, boxes in gt.items() for box in shifted(boxes, key)]
    order = np.argsort(preds.scores)[::-1]
    det_boxes = [shifted(preds.boxes[i], preds.file_names[i])[0] for i in order]
    expected = calculate_map(
        {"boxes": gt_boxes, "labels": [1] * len(gt_boxes)},
        {"boxes": det_boxes, "labels": [1] * len(det_boxes), "scores": preds.scores[order].tolist()},
        threshold,
    )
    assert evaluate(preds, gt, threshold).ap_voc == pytest.approx(expected, abs=1e-9)


# ---------------------------------------------------------------- hand-checked cases


def test_duplicate_is_false_positive_and_does_not_fall_back_to_another_box():
    gt = {"a.jpg": np.array([[0, 0, 9, 9], [3, 0, 12, 9]])}
    # Both detections overlap box 0 best (IoU 1) and box 1 enough (IoU 7/13 > 0.3).
    preds = Predictions(np.array([[0, 0, 9, 9], [0, 0, 9, 9]]), np.array([0.9, 0.8]), np.array(["a.jpg"] * 2))
    ev = evaluate(preds, gt)
    np.testing.assert_array_equal(ev.is_true_positive, [True, False])
    np.testing.assert_array_equal(ev.gt_matched["a.jpg"], [True, False])


def test_first_maximum_wins_on_equal_iou():
    # The detection overlaps both GT boxes equally; the course picks the first in GT order.
    gt = {"a.jpg": np.array([[0, 0, 9, 9], [10, 0, 19, 9]])}
    preds = Predictions(np.array([[5, 0, 14, 9]]), np.array([1.0]), np.array(["a.jpg"]))
    np.testing.assert_array_equal(evaluate(preds, gt).gt_matched["a.jpg"], [True, False])


def test_tied_scores_are_taken_last_first_as_the_course_sorts_them():
    """``np.argsort(scores)[::-1]``: of detections with equal scores, the later one in the input
    comes first. Hand-computed, not from the reference loop (which copies the same expression)."""
    gt = {"a.jpg": np.array([[0, 0, 9, 9]])}
    # A true face (input 0) and a false alarm (input 1), same score: the false alarm is taken
    # first. Recall 0 then 1, precision 0 then 1/2: AP = 1 * 1/2 (first-come order would give 1).
    preds = Predictions(np.array([[0, 0, 9, 9], [50, 50, 60, 60]]), np.array([0.5, 0.5]), np.array(["a.jpg"] * 2))
    ev = evaluate(preds, gt)
    np.testing.assert_array_equal(ev.is_true_positive, [True, False])
    np.testing.assert_allclose(ev.precision, [0.0, 0.5])
    np.testing.assert_allclose(ev.recall, [0.0, 1.0])
    assert ev.ap_cava == ev.ap_voc == pytest.approx(0.5, abs=1e-12)
    # Two tied detections on one face: the later one (IoU 90/110) takes it, the exact one
    # (input 0, IoU 1) is the duplicate.
    preds = Predictions(np.array([[0, 0, 9, 9], [1, 0, 10, 9]]), np.array([0.7, 0.7]), np.array(["a.jpg"] * 2))
    np.testing.assert_array_equal(evaluate(preds, gt).is_true_positive, [False, True])


def test_course_ap_skips_the_envelope_and_voc_does_not():
    # Detections FP, TP, TP on 2 faces: recall 0, .5, 1; precision 0, 1/2, 2/3.
    # Course (no envelope): .5 * 1/2 + .5 * 2/3 = 7/12.  VOC envelope: .5 * 2/3 + .5 * 2/3 = 2/3.
    gt = {"a.jpg": np.array([[0, 0, 9, 9], [20, 0, 29, 9]])}
    preds = Predictions(
        np.array([[50, 50, 60, 60], [0, 0, 9, 9], [20, 0, 29, 9]]), np.array([0.9, 0.8, 0.7]), np.array(["a.jpg"] * 3)
    )
    ev = evaluate(preds, gt)
    assert ev.ap_cava == pytest.approx(7 / 12, abs=1e-12)
    assert ev.ap_voc == pytest.approx(2 / 3, abs=1e-12)
    assert ev.summary() == {
        "ap_cava": ev.ap_cava,
        "ap_voc": ev.ap_voc,
        "recall": 1.0,
        "precision": pytest.approx(2 / 3),
        "n_detections": 3,
        "n_ground_truth": 2,
        "n_true_positives": 2,
    }


@given(
    st.lists(st.tuples(st.floats(0, 1), st.floats(0, 1)), max_size=20).map(
        lambda pairs: (np.sort([r for r, _ in pairs]), np.array([p for _, p in pairs]))
    )
)
def test_ap_functions_equal_the_literal_loops(curve):
    rec, prec = curve
    assert average_precision_cava(rec, prec) == pytest.approx(course_ap(rec, prec), abs=1e-12)
    assert average_precision_voc(rec, prec) == pytest.approx(course_ap(rec, prec, envelope=True), abs=1e-12)


def test_no_predictions_give_zero_ap_and_recall():
    ev = evaluate(Predictions.empty(), {"a.jpg": np.array([[0, 0, 9, 9]])})
    assert (ev.ap_cava, ev.ap_voc, ev.final_recall, ev.final_precision) == (0.0, 0.0, 0.0, 0.0)
    np.testing.assert_array_equal(ev.gt_matched["a.jpg"], [False])


def test_ground_truth_without_faces_is_a_data_error():
    preds = Predictions(np.array([[0, 0, 9, 9]]), np.array([1.0]), np.array(["a.jpg"]))
    with pytest.raises(DataError, match="no face boxes"):
        evaluate(preds, {"a.jpg": np.zeros((0, 4))})


def test_detections_on_unknown_images_are_false_positives_and_listed():
    gt = {"a.jpg": np.array([[0, 0, 9, 9]])}
    preds = Predictions(
        np.array([[0, 0, 9, 9]] * 3), np.array([0.9, 0.8, 0.7]), np.array(["zz.jpg", "a.jpg", "b.jpg"])
    )
    np.testing.assert_array_equal(evaluate(preds, gt).is_true_positive, [False, True, False])
    assert unknown_keys(preds, gt) == ["b.jpg", "zz.jpg"]


# ---------------------------------------------------------------- scale


def large_scenario(n_images: int, n_detections: int, seed: int = 0):
    """~n_images images with 0-6 faces each, and n_detections detections spread over them."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, 7, size=n_images)
    gt = {}
    for i, n in enumerate(counts):
        xy = rng.integers(0, 400, size=(n, 2))
        gt[f"img/{i:05d}.jpg"] = np.concatenate([xy, xy + rng.integers(10, 80, size=(n, 2))], axis=1)
    keys = np.array(list(gt))
    names = keys[rng.integers(0, n_images, size=n_detections)]
    xy = rng.integers(0, 400, size=(n_detections, 2))
    boxes = np.concatenate([xy, xy + rng.integers(10, 80, size=(n_detections, 2))], axis=1)
    return Predictions(boxes, rng.random(n_detections), names), gt


@pytest.mark.slow
def test_a_million_detections_agree_with_the_reference_on_a_sample_of_images():
    preds, gt = large_scenario(5000, 1_000_000)
    ev = evaluate(preds, gt)
    assert ev.n_detections == 1_000_000
    assert 0 < ev.n_true_positives == sum(int(m.sum()) for m in ev.gt_matched.values())
    # Images are matched independently, and distinct scores keep the relative order, so the
    # detections of a few images must get the same verdicts as in a separate reference run.
    sample = list(gt)[:40]
    keep = np.isin(preds.file_names, sample)
    sub = Predictions(preds.boxes[keep], preds.scores[keep], preds.file_names[keep])
    ref = reference_evaluate(sub.boxes, sub.scores, sub.file_names, {k: gt[k] for k in sample})
    np.testing.assert_array_equal(ev.is_true_positive[keep][ref["order"]], ref["tp"])
    np.testing.assert_array_equal(np.concatenate([ev.gt_matched[k] for k in sample]), ref["gt_used"])
