import numpy as np
import pytest

from facecmp.data.facesizes import face_sides, min_face_advice, suggest_min_face_size
from facecmp.data.records import Dataset, ImageRecord
from facecmp.detection.detector import Detector
from facecmp.study.min_face import min_face_tradeoff


def _dataset(sides):
    boxes = np.array([[0, 0, s - 1, s + 9] for s in sides], dtype=np.int64)
    return Dataset("sizes", [ImageRecord("a.jpg", None, boxes, ("x",) * len(sides))])


def test_face_sides_are_the_shorter_inclusive_side():
    np.testing.assert_array_equal(face_sides(_dataset([15, 40])), [15, 40])


def test_suggestion_keeps_the_requested_share_of_faces():
    sides = np.arange(10, 110)  # 100 faces, 10..109 px
    ds = _dataset(sides)
    size = suggest_min_face_size(ds, coverage=0.9)
    assert (face_sides(ds) >= size).mean() >= 0.9
    assert suggest_min_face_size(ds, coverage=0.5) > size


def test_suggestion_is_the_hand_computed_quantile():
    # 100 faces of 10..109 px: the 10% quantile is 10 + 0.1 * 99 = 19.9 -> 19 px keeps 90 of them.
    ds = _dataset(np.arange(10, 110))
    assert suggest_min_face_size(ds, coverage=0.9) == 19.0
    assert (face_sides(ds) >= 19).sum() == 91 and (face_sides(ds) >= 20).sum() == 90


def test_suggestion_never_goes_below_pnet_window():
    assert suggest_min_face_size(_dataset([3, 4, 5])) == 12.0


def test_the_advice_says_what_the_suggestion_truly_keeps():
    # WIDER-like: 41 of 100 faces are below 12 px, so 12 px (the smallest allowed) keeps 59%, not 99%.
    advice = min_face_advice(_dataset([8] * 41 + [30] * 59))
    assert advice.startswith("12 px (keeps 59.0% of faces") and "41.0% are smaller than 12 px" in advice
    assert "99%" not in advice
    assert min_face_advice(_dataset(np.arange(10, 110)), coverage=0.9) == (
        "19 px (keeps 91.0% of faces: those whose shorter side is at least 19 px)")


@pytest.mark.slow
def test_tradeoff_reports_each_size(tmp_path):
    from facecmp.data import load_archive
    from facecmp.data.images import read_image
    from facecmp.data.synthetic import generate_dataset
    from facecmp.detection.inference import detections_to_predictions
    from facecmp.evaluation.evaluator import evaluate

    root = generate_dataset(tmp_path / "ds", n_train_per_character=1, n_test=4, seed=3)
    test = load_archive(root).test
    rows = min_face_tradeoff(Detector(), test, [20, 60])
    assert [r["min_face_size"] for r in rows] == [20.0, 60.0]
    sides = np.concatenate([np.minimum(r.boxes[:, 2] - r.boxes[:, 0], r.boxes[:, 3] - r.boxes[:, 1]) + 1 for r in test.images])
    assert [r["faces_below"] for r in rows] == [int((sides < 20).sum()), int((sides < 60).sum())]
    assert rows[1]["faces_below"] > 0, "the check needs faces below the larger size"
    # Each row is the detector at that size, evaluated: recomputed here without the tradeoff code.
    for row in rows:
        sized = Detector().with_settings(min_face_size=row["min_face_size"])
        found = evaluate(detections_to_predictions({r.key: sized.detect(read_image(r.path)) for r in test.images}), test.ground_truth())
        assert (row["ap_cava"], row["recall"]) == (found.ap_cava, found.final_recall)
        assert row["ms_per_image"] > 0
    assert rows[0]["recall"] > 0
