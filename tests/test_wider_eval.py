"""WIDER FACE's official protocol (facecmp.evaluation.wider) and its files (facecmp.data.wider_protocol).

The vectorised evaluator is checked against tests/reference_wider.py (a literal loop, as the
reference script runs) on generated cases, and on hand-computed cases, one per quirk of the
protocol. The .mat readers are checked on files written here with scipy.io.savemat in the
official structure, and on the real ones when ../shared/datasets/wider-face is there.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from facecmp.data.wider_protocol import (
    DIFFICULTIES,
    read_submission,
    read_wider_ground_truth,
    to_submission_boxes,
    write_submission,
)
from facecmp.errors import DataError
from facecmp.evaluation.wider import evaluate_wider, last_passing, normalise_scores, overlaps, score_submission, thresholds
from reference_wider import reference_evaluate, reference_iou

scipy_io = pytest.importorskip("scipy.io", reason="the WIDER FACE protocol needs scipy: pip install 'facecmp[wider]'")

FACE = [10.0, 10.0, 20.0, 20.0]  # x y w h
OTHER_FACE = [60.0, 60.0, 20.0, 20.0]
BACKGROUND = [200.0, 200.0, 20.0, 20.0]


def det(box, score):
    return [*box, score]


def ap(submission, faces, counted=None, difficulty="easy"):
    counted = counted or {difficulty: {k: np.arange(len(v)) for k, v in faces.items()}}
    faces = {k: np.asarray(v, dtype=float).reshape(-1, 4) for k, v in faces.items()}
    submission = {k: np.asarray(v, dtype=float).reshape(-1, 5) for k, v in submission.items()}
    return evaluate_wider(submission, faces, counted).curves[difficulty].ap


# ----------------------------------------------------------------------------- hand-computed quirks


def test_iou_uses_x_plus_w_then_the_plus_one_convention():
    # pred x 0..10 (+1: 11 px), gt x 5..15: overlap 6 x 11 of 121 + 121 - 66
    assert overlaps([[0, 0, 10, 10]], [[5, 0, 10, 10]])[0, 0] == pytest.approx(66 / 176)
    assert reference_iou([0, 0, 10, 10], [5, 0, 15, 10]) == pytest.approx(66 / 176)
    assert overlaps([[0, 0, 5, 5]], [[50, 50, 5, 5]])[0, 0] == 0.0


def test_a_detection_on_an_ignored_face_is_neither_true_nor_false_positive():
    faces = {"e/a": [FACE, OTHER_FACE]}
    counted = {"easy": {"e/a": np.array([0])}}  # OTHER_FACE is ignored at this difficulty
    on_ignored = {"e/a": [det(OTHER_FACE, 0.9), det(FACE, 0.8)]}
    on_background = {"e/a": [det(BACKGROUND, 0.9), det(FACE, 0.8)]}
    assert ap(on_ignored, faces, counted) == pytest.approx(1.0)
    # the same top-scored detection off any face is a false positive: precision 1/2 at recall 1
    assert ap(on_background, faces, counted) == pytest.approx(0.5)


def test_an_ignored_face_is_not_deleted_a_detection_near_it_does_not_match_another_face():
    # the detection's best face is the ignored one, so it never falls back to the counted face
    faces = {"e/a": [[10, 10, 20, 20], [12, 10, 20, 20]]}
    counted = {"easy": {"e/a": np.array([0])}}
    preds = {"e/a": [det([12, 10, 20, 20], 0.9), det([100, 100, 5, 5], 0.1)]}
    ev = evaluate_wider({k: np.asarray(v) for k, v in preds.items()},
                        {k: np.asarray(v, float) for k, v in faces.items()}, counted)
    assert np.nanmax(ev.curves["easy"].recall) == 0.0
    assert ev.curves["easy"].ap == 0.0


def test_detections_on_an_image_without_faces_are_not_false_positives():
    faces = {"e/no-faces": np.zeros((0, 4)), "e/one": [FACE]}
    preds = {"e/no-faces": [det(BACKGROUND, 0.95)], "e/one": [det(FACE, 0.5)]}
    assert ap(preds, faces) == pytest.approx(1.0)


def test_an_image_without_predictions_counts_its_faces_as_missed():
    faces = {"e/a": [FACE, OTHER_FACE], "e/b": [FACE, OTHER_FACE]}
    preds = {"e/a": np.zeros((0, 5)), "e/b": [det(FACE, 0.9), det(OTHER_FACE, 0.7)]}
    assert ap(preds, faces) == pytest.approx(0.5)
    assert ap({"e/b": preds["e/b"]}, {"e/b": faces["e/b"]}) == pytest.approx(1.0)


def test_scores_are_min_max_normalised_with_the_range_started_at_one_and_zero():
    out = normalise_scores({"a": np.array([det(FACE, 2.0)]), "b": np.array([det(FACE, 4.0)])})
    assert out["a"][0, 4] == pytest.approx(1 / 3) and out["b"][0, 4] == pytest.approx(1.0)  # min(1, 2) = 1
    out = normalise_scores({"a": np.array([det(FACE, 0.2), det(FACE, 0.6)])})
    assert out["a"][:, 4].tolist() == pytest.approx([0.0, 1.0])
    out = normalise_scores({"a": np.array([det(FACE, -1.0), det(FACE, -0.5)])})
    assert out["a"][:, 4].tolist() == pytest.approx([0.0, 0.5])  # max(0, -0.5) = 0


def test_normalisation_spans_the_whole_submission_and_the_curve_has_1000_steps():
    # Alone, 0.9005 and 0.9 normalise to 1 and 0: the true positive ranks first, AP 0.5.
    faces = {"e/a": [FACE, OTHER_FACE]}
    preds = {"e/a": [det(FACE, 0.9005), det(BACKGROUND, 0.9)]}
    assert ap(preds, faces) == pytest.approx(0.5)
    # A detection scored 0 on an image outside the ground truth stretches the range: both now
    # normalise above 0.999, fall in the first of the 1,000 steps together, precision 1/2: AP 0.25.
    assert ap({**preds, "e/elsewhere": [det(FACE, 0.0)]}, faces) == pytest.approx(0.25)


def test_equal_scores_everywhere_normalise_to_nothing_and_score_zero():
    faces = {"e/a": [FACE]}
    assert ap({"e/a": [det(FACE, 0.9)]}, faces) == 0.0  # min = max: 0/0, no threshold is reached


def test_the_curve_follows_file_order_not_score_order():
    faces = {"e/a": [FACE]}
    unsorted = {"e/a": [det(BACKGROUND, 0.2), det(FACE, 0.9)]}
    assert ap(unsorted, faces) == pytest.approx(0.5)  # the later, better detection drags the first one in
    assert ap({"e/a": unsorted["e/a"][::-1]}, faces) == pytest.approx(1.0)


def test_a_duplicate_on_a_recalled_face_is_a_false_positive():
    faces = {"e/a": [FACE]}
    assert ap({"e/a": [det(FACE, 0.9), det(FACE, 0.1)]}, faces) == pytest.approx(1.0)
    assert ap({"e/a": [det(FACE, 0.9), det(FACE, 0.8), det(BACKGROUND, 0.0)]}, faces) == pytest.approx(1.0)
    ev = evaluate_wider({"e/a": np.array([det(FACE, 0.9), det(FACE, 0.1)])}, {"e/a": np.array([FACE])},
                        {"easy": {"e/a": np.array([0])}})
    assert ev.curves["easy"].precision[-1] == pytest.approx(0.5)


def test_thresholds_and_last_passing_detection():
    thr = thresholds()
    assert len(thr) == 1000 and thr[0] == 1 - 1 / 1000 and thr[-1] == 0.0
    last = last_passing(np.array([1.0, 0.0005, 0.9995, np.nan]), thr)
    assert last[0] == 2 and last[998] == 2 and last[999] == 2  # the last in file order passing each threshold
    assert (last_passing(np.array([0.0]), thr)[:999] == -1).all() and last_passing(np.array([0.0]), thr)[999] == 0


# ----------------------------------------------------------------------------- against the reference loop

coord = st.integers(0, 40).map(float)
box = st.tuples(coord, coord, st.integers(0, 20).map(float), st.integers(0, 20).map(float)).map(list)
score = st.one_of(st.sampled_from([0.0, 0.5, 0.9, 0.9005, 1.0, 2.0]), st.floats(-1, 2, allow_nan=False))


@st.composite
def cases(draw):
    n_images = draw(st.integers(1, 4))
    faces, submission, counted = {}, {}, {d: {} for d in DIFFICULTIES}
    for i in range(n_images):
        gt = draw(st.lists(box, max_size=4))
        near = st.sampled_from(gt) if gt else box
        preds = draw(st.lists(st.tuples(st.one_of(box, near), score).map(lambda t: [*t[0], t[1]]), max_size=6))
        key = f"e{i % 2}/img{i}"
        faces[key] = np.asarray(gt, dtype=float).reshape(-1, 4)
        submission[key] = np.asarray(preds, dtype=float).reshape(-1, 5)
        for d in DIFFICULTIES:
            counted[d][key] = np.asarray(sorted(draw(st.sets(st.integers(0, max(len(gt) - 1, 0)), max_size=len(gt)))), dtype=np.int64)
    if draw(st.booleans()):
        submission["x/outside"] = np.asarray([[0, 0, 5, 5, draw(score)]], dtype=float)
    return submission, faces, counted


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_vectorised_evaluation_equals_the_reference_loop(case):
    submission, faces, counted = case
    ours = evaluate_wider(submission, faces, counted)
    theirs = reference_evaluate(submission, faces, counted)
    for d in DIFFICULTIES:
        ref_ap, ref_precision, ref_recall = theirs[d]
        curve = ours.curves[d]
        assert (math.isnan(curve.ap) and math.isnan(ref_ap)) or curve.ap == pytest.approx(ref_ap, abs=1e-12)
        np.testing.assert_allclose(curve.precision, ref_precision, rtol=0, atol=1e-12, equal_nan=True)
        np.testing.assert_allclose(curve.recall, ref_recall, rtol=0, atol=1e-12, equal_nan=True)


# ----------------------------------------------------------------------------- files


def write_mat_ground_truth(folder: Path, events: dict[str, dict[str, list]], counted: dict[str, dict[str, list]]) -> Path:
    """The official .mat structure: per event a cell of names and a cell of N x 4 int32 boxes;
    per difficulty a cell of 1-based index columns."""
    folder.mkdir(parents=True, exist_ok=True)

    def cells(items):
        out = np.empty((len(items), 1), dtype=object)
        for i, item in enumerate(items):
            out[i, 0] = item
        return out

    names = list(events)
    scipy_io.savemat(folder / "wider_face_val.mat", {
        "event_list": cells([np.array([e]) for e in names]),
        "file_list": cells([cells([np.array([n]) for n in events[e]]) for e in names]),
        "face_bbx_list": cells([cells([np.asarray(b, dtype=np.int32).reshape(-1, 4) for b in events[e].values()]) for e in names]),
    })
    for d in DIFFICULTIES:
        scipy_io.savemat(folder / f"wider_{d}_val.mat", {
            "event_list": cells([np.array([e]) for e in names]),
            "gt_list": cells([cells([np.asarray(counted[d].get(f"{e}/{n}", []), dtype=np.uint8).reshape(-1, 1)
                                     for n in events[e]]) for e in names]),
        })
    return folder


EVENTS = {"0--Parade": {"p_1": [FACE, OTHER_FACE], "p_2": [FACE]}, "1--Meeting": {"m_1": [OTHER_FACE]}}
COUNTED = {"easy": {"0--Parade/p_1": [1], "0--Parade/p_2": [1]},
           "medium": {"0--Parade/p_1": [1, 2], "0--Parade/p_2": [1], "1--Meeting/m_1": [1]},
           "hard": {"0--Parade/p_1": [1, 2], "0--Parade/p_2": [1], "1--Meeting/m_1": [1]}}


@pytest.fixture
def mat_dir(tmp_path):
    return write_mat_ground_truth(tmp_path / "ground_truth", EVENTS, COUNTED)


def test_mat_ground_truth_is_read_in_file_order_with_zero_based_indices(mat_dir):
    gt = read_wider_ground_truth(mat_dir)
    assert gt.keys == ["0--Parade/p_1", "0--Parade/p_2", "1--Meeting/m_1"]
    np.testing.assert_array_equal(gt.boxes["0--Parade/p_1"], [FACE, OTHER_FACE])
    assert gt.counted["easy"]["0--Parade/p_1"].tolist() == [0]
    assert gt.counted["easy"]["1--Meeting/m_1"].tolist() == []
    assert gt.counted["hard"]["0--Parade/p_1"].tolist() == [0, 1]


def test_a_mat_without_a_field_names_the_file_and_the_field(mat_dir):
    scipy_io.savemat(mat_dir / "wider_hard_val.mat", {"event_list": np.zeros((1, 1))})
    with pytest.raises(DataError, match=r"wider_hard_val\.mat.*'gt_list' missing"):
        read_wider_ground_truth(mat_dir)


def test_a_missing_mat_and_a_broken_mat_are_named(mat_dir):
    (mat_dir / "wider_easy_val.mat").unlink()
    with pytest.raises(DataError, match=r"wider_easy_val\.mat: not found"):
        read_wider_ground_truth(mat_dir)
    (mat_dir / "wider_easy_val.mat").write_bytes(b"not a mat file at all, sorry")
    with pytest.raises(DataError, match=r"wider_easy_val\.mat: not a readable MATLAB"):
        read_wider_ground_truth(mat_dir)


def test_submission_round_trip_keeps_every_image_and_sorts_by_score(tmp_path):
    rows = to_submission_boxes(np.array([[10, 10, 29, 29], [0, 0, 9, 19]]), np.array([0.5, 0.75]))
    assert rows.tolist() == [[0, 0, 10, 20, 0.75], [10, 10, 20, 20, 0.5]]  # inclusive pixels: w = x_max - x_min + 1
    write_submission(tmp_path / "wider", {"0--Parade/p_1": rows, "1--Meeting/m_1": np.zeros((0, 5))})
    text = (tmp_path / "wider" / "0--Parade" / "p_1.txt").read_text().splitlines()
    assert text[:2] == ["p_1", "2"] and text[2].split() == ["0.00", "0.00", "10.00", "20.00", "0.75000000"]
    back = read_submission(tmp_path)  # the folder above wider/ works too
    assert set(read_submission(tmp_path / "wider")) == set(back)  # and event folders written by another detector
    assert set(back) == {"0--Parade/p_1", "1--Meeting/m_1"} and back["1--Meeting/m_1"].shape == (0, 5)
    np.testing.assert_allclose(back["0--Parade/p_1"], rows)


@pytest.mark.parametrize("content, line", [
    ("p_1\n1\n1 2 3 four 0.5\n", 3),
    ("p_1\n1\n1 2 3 4\n", 3),
    ("p_1\nmany\n", 2),
    ("p_1\n2\n1 2 3 4 0.5\n", 2),
])
def test_a_submission_line_that_does_not_parse_names_its_file_and_line(tmp_path, content, line):
    (tmp_path / "0--Parade").mkdir()
    (tmp_path / "0--Parade" / "p_1.txt").write_text(content)
    with pytest.raises(DataError, match=rf"p_1\.txt:{line}: "):
        read_submission(tmp_path)


def test_missing_images_are_an_error_unless_allowed_and_strangers_are_named(mat_dir):
    gt = read_wider_ground_truth(mat_dir)
    submission = {"0--Parade/p_1": np.array([det(FACE, 0.9), det(OTHER_FACE, 0.4)]), "9--Elsewhere/x": np.zeros((0, 5))}
    with pytest.raises(DataError, match=r"2 of its 3 ground-truth images have no prediction file.*0--Parade/p_2.*--allow-missing"):
        score_submission(submission, gt)
    score = score_submission(submission, gt, allow_missing=True)
    assert score.missing == ("0--Parade/p_2", "1--Meeting/m_1") and score.strangers == ("9--Elsewhere/x",)
    assert score.evaluation.n_images == 1
    easy, hard = score.evaluation.curves["easy"], score.evaluation.curves["hard"]
    assert (easy.n_faces, hard.n_faces) == (1, 2)  # the missing images' faces are not counted
    assert easy.ap == pytest.approx(1.0)  # the 0.4 detection is on a face easy ignores: no proposal
    assert hard.ap == pytest.approx(1.0)
    warnings = score.warnings("PRED", "GT")
    assert len(warnings) == 2 and "9--Elsewhere/x" in warnings[1]


# ----------------------------------------------------------------------------- the command line


def test_cli_evaluate_protocol_wider_writes_json_and_plot(mat_dir, tmp_path):
    from test_cli import run_cli

    sub = {"0--Parade/p_1": np.array([det(FACE, 0.9), det(OTHER_FACE, 0.8)]), "0--Parade/p_2": np.array([det(FACE, 0.7)]),
           "1--Meeting/m_1": np.array([det(BACKGROUND, 0.2)])}
    write_submission(tmp_path / "pred" / "wider", sub)
    code, out, err = run_cli(["evaluate", "--protocol", "wider", "--pred", tmp_path / "pred", "--gt", mat_dir,
                              "--json", tmp_path / "m.json", "--plot", tmp_path / "pr.png"])
    assert code == 0, err
    metrics = json.loads((tmp_path / "m.json").read_text())["wider"]
    ours = score_submission(read_submission(tmp_path / "pred"), read_wider_ground_truth(mat_dir)).evaluation
    for d in DIFFICULTIES:
        assert metrics[d] == pytest.approx(ours.curves[d].ap)
        assert f"{d:<7} AP {ours.curves[d].ap:.4f}" in out
    assert metrics["n_images"] == 3 and metrics["missing_images"] == 0
    assert (tmp_path / "pr.png").stat().st_size > 1000


def test_cli_evaluate_protocol_wider_missing_images_is_one_error_line(mat_dir, tmp_path):
    from test_cli import assert_user_error, run_cli

    write_submission(tmp_path / "pred" / "wider", {"0--Parade/p_1": np.array([det(FACE, 0.9), det(FACE, 0.1)])})
    code, _, err = run_cli(["evaluate", "--protocol", "wider", "--pred", tmp_path / "pred", "--gt", mat_dir])
    assert_user_error(code, err, "2 of its 3", "0--Parade/p_2", "--allow-missing")
    code, out, err = run_cli(["evaluate", "--protocol", "wider", "--pred", tmp_path / "pred", "--gt", mat_dir, "--allow-missing"])
    assert code == 0 and "warning: 2 ground-truth images" in err and "1 images" in out


def test_cli_evaluate_protocol_wider_without_a_submission_folder(mat_dir, tmp_path):
    from test_cli import assert_user_error, run_cli

    (tmp_path / "pred").mkdir()
    code, _, err = run_cli(["evaluate", "--protocol", "wider", "--pred", tmp_path / "pred", "--gt", mat_dir])
    assert_user_error(code, err, "no WIDER FACE submission", "wider/<event>/<name>.txt")
    write_submission(tmp_path / "pred" / "wider", {"0--Parade/p_1": np.array([det(FACE, 0.9)])})
    code, _, err = run_cli(["evaluate", "--protocol", "wider", "--pred", tmp_path / "pred", "--gt", tmp_path / "nowhere"])
    assert_user_error(code, err, "nowhere", "wider_face_val.mat")


# ----------------------------------------------------------------------------- the real files


def wider_root() -> Path:
    import os

    root = Path(os.environ.get("FACECMP_SHARED_DATASETS", Path(__file__).resolve().parents[2] / "shared" / "datasets")) / "wider-face"
    if not (root / "eval_tools" / "ground_truth" / "wider_face_val.mat").is_file():
        pytest.skip(f"{root}: the WIDER FACE sample is not here")
    return root


def test_the_official_mat_files_agree_with_the_sample_text_ground_truth():
    from facecmp.data.formats import wider
    from facecmp.data.formats.common import inclusive_to_xywh

    root = wider_root()
    gt = read_wider_ground_truth(root / "eval_tools" / "ground_truth")
    assert len(gt.keys) == 3226
    sample = wider.read(root)
    test = next(iter(sample.values()))
    assert len(test.images) == 500
    for record in test.images[:50]:
        key = record.key.removesuffix(".jpg")
        assert [inclusive_to_xywh(b) for b in record.boxes] == gt.boxes[key].astype(int).tolist()


def make_wider_dataset(tmp_path: Path, n_images: int = 3) -> Path:
    """A small WIDER-layout dataset of generated frames (one event), with its .mat ground truth in eval_tools/."""
    import shutil

    from facecmp.data import load_test
    from facecmp.data.formats.common import inclusive_to_xywh
    from facecmp.data.synthetic import generate_dataset
    from test_cli import SMALL_SIZE

    course = generate_dataset(tmp_path / "course", n_train_per_character=1, n_test=n_images, seed=0, size=SMALL_SIZE)
    test = load_test(course / "validare")
    root = tmp_path / "wider-face"
    events, lines = {"7--Cheering": {}}, []
    for record in test.images:
        name = Path(record.key).stem
        (root / "WIDER_val" / "images" / "7--Cheering").mkdir(parents=True, exist_ok=True)
        shutil.copy(record.path, root / "WIDER_val" / "images" / "7--Cheering" / f"{name}.jpg")
        boxes = [inclusive_to_xywh(b) for b in record.boxes]
        events["7--Cheering"][name] = boxes
        lines += [f"7--Cheering/{name}.jpg", str(len(boxes))] + [" ".join(map(str, [*b, 0, 0, 0, 0, 0, 0])) for b in boxes]
    (root / "wider_face_split").mkdir()
    (root / "wider_face_split" / "wider_face_val_bbx_gt.txt").write_text("\n".join(lines) + "\n")
    every = {f"7--Cheering/{n}": list(range(1, len(b) + 1)) for n, b in events["7--Cheering"].items()}
    write_mat_ground_truth(root / "eval_tools" / "ground_truth", events, {d: every for d in DIFFICULTIES})
    return root


def test_detect_on_a_wider_dataset_writes_the_submission_format_that_evaluate_reads(tmp_path):
    """End to end on a small WIDER-layout dataset made of generated frames: `facecmp detect` writes
    wider/<event>/<name>.txt for every image (with or without faces), and `evaluate --protocol wider` scores it."""
    from facecmp.data.predictions import load_predictions
    from test_cli import run_cli

    root = make_wider_dataset(tmp_path)
    mats = root / "eval_tools" / "ground_truth"
    code, out, err = run_cli(["detect", "--images", root, "--out", tmp_path / "pred", "--workers", 0])
    assert code == 0, err
    written = sorted((tmp_path / "pred" / "wider" / "7--Cheering").glob("*.txt"))
    assert len(written) == 3 and "wider/<event>/<name>.txt for 3 images" in out
    submission = read_submission(tmp_path / "pred")
    npy = load_predictions(tmp_path / "pred")
    assert sum(len(v) for v in submission.values()) == len(npy)
    code, out, err = run_cli(["evaluate", "--protocol", "wider", "--pred", tmp_path / "pred", "--gt", mats,
                              "--json", tmp_path / "m.json"])
    assert code == 0, err
    assert json.loads((tmp_path / "m.json").read_text())["wider"]["easy"] > 0.5  # the pretrained cascade finds generated faces
