"""facecmp.data.predictions: the course's three .npy files, round trips and validation on read."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from facecmp.errors import DataError
from facecmp.data.predictions import Predictions, load_predictions, prediction_paths, save_predictions


def sample_predictions() -> Predictions:
    return Predictions(
        boxes=np.array([[10.4, 20.6, 50.5, 60.2], [0, 0, 5, 5], [7, 8, 9, 10]]),
        scores=np.array([0.9, 0.2, 0.5]),
        file_names=np.array(["dad/0001.jpg", "mom/0001.jpg", "dad/0001.jpg"]),
    )


def write_course_files(folder: Path, boxes, scores, names, name: str = "all_faces") -> None:
    """Write files the way a course script would: plain np.save, pickle allowed."""
    det, sc, fn = prediction_paths(folder, name)
    np.save(det, boxes, allow_pickle=True)
    np.save(sc, scores, allow_pickle=True)
    np.save(fn, names, allow_pickle=True)


# ---------------------------------------------------------------- round trips


def test_round_trip_rounds_boxes_and_keeps_scores_and_names(tmp_path):
    preds = sample_predictions()
    paths = save_predictions(tmp_path, preds)
    assert [p.name for p in paths] == ["detections_all_faces.npy", "scores_all_faces.npy", "file_names_all_faces.npy"]
    loaded = load_predictions(tmp_path)
    assert loaded.boxes.dtype == np.int64
    np.testing.assert_array_equal(loaded.boxes, np.rint(preds.boxes))
    np.testing.assert_array_equal(loaded.scores, preds.scores)
    np.testing.assert_array_equal(loaded.file_names, preds.file_names)
    # Saved without pickle: a strict reader can open every file.
    for p in paths:
        np.load(p, allow_pickle=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in paths)  # no temp files left


@settings(max_examples=30, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.lists(st.integers(-10_000, 10_000), min_size=4, max_size=4),
            st.floats(-1e6, 1e6, allow_nan=False),
            st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=12),
        ),
        max_size=20,
    ),
    st.sampled_from(["all_faces", "dad", "deedee"]),
)
def test_round_trip_of_integer_boxes_is_exact(rows, name):
    corners = np.array([r[0] for r in rows], dtype=np.int64).reshape(-1, 2, 2)
    boxes = np.concatenate([corners.min(axis=1), corners.max(axis=1)], axis=1)  # x_min <= x_max
    preds = Predictions(
        boxes,
        np.array([r[1] for r in rows], dtype=np.float64),
        np.array([r[2] for r in rows], dtype=str),
    )
    with tempfile.TemporaryDirectory() as d:
        save_predictions(d, preds, name)
        loaded = load_predictions(d, name)
    np.testing.assert_array_equal(loaded.boxes, preds.boxes)
    np.testing.assert_array_equal(loaded.scores, preds.scores)
    assert loaded.file_names.tolist() == preds.file_names.tolist()


def test_course_files_with_pickled_file_names_are_refused_with_how_to_resave_them(tmp_path):
    names = np.array(["001.jpg", "002.jpg"], dtype=object)  # needs pickle to load: never unpickled
    write_course_files(tmp_path, np.array([[1, 2, 3, 4], [5, 6, 7, 8]]), np.array([0.3, 0.1]), names)
    with pytest.raises(DataError) as err:
        load_predictions(tmp_path)
    message = str(err.value)
    assert "\n" not in message and "file_names_all_faces.npy" in message
    assert "np.save(path, np.asarray(names).astype(str))" in message
    # ... and the re-saved file is read
    np.save(tmp_path / "file_names_all_faces.npy", names.astype(str))
    assert load_predictions(tmp_path).file_names.tolist() == ["001.jpg", "002.jpg"]


def test_empty_predictions_round_trip(tmp_path):
    save_predictions(tmp_path, Predictions.empty(), "dexter")
    loaded = load_predictions(tmp_path, "dexter")
    assert len(loaded) == 0 and loaded.boxes.shape == (0, 4)


# ---------------------------------------------------------------- bad files


@pytest.mark.parametrize("absent", [0, 1, 2])
def test_a_missing_file_is_named_with_what_the_three_files_are(tmp_path, absent):
    paths = save_predictions(tmp_path, sample_predictions())
    paths[absent].unlink()
    with pytest.raises(DataError) as err:
        load_predictions(tmp_path)
    message = str(err.value)
    assert f"missing prediction file(s) {paths[absent].name}" in message
    for p in paths:
        assert p.name in message  # the explanation lists all three


def bad_case(tmp_path: Path, which: str):
    """Overwrite one file of a good submission with a bad array; return (bad file, expected phrase)."""
    det, sc, fn = save_predictions(tmp_path, sample_predictions())
    cases = {
        "lengths": (sc, np.array([0.1, 0.2]), "disagree in length"),
        "columns": (det, np.zeros((3, 5), dtype=np.int64), "N x 4"),
        "nan score": (sc, np.array([0.1, np.nan, 0.3]), "row 1 is not finite"),
        "inf box": (det, np.array([[0, 0, 1, 1], [0, 0, 1, 1], [0, 0, np.inf, 1]]), "row 2 is not finite"),
        "inverted box": (det, np.array([[0, 0, 1, 1], [5, 0, 1, 1], [0, 0, 1, 1]]), "row 1 box"),
        "object boxes": (det, np.array([[0, 0, 1, 1]] * 3, dtype=object), "pickled object array"),
        "text scores": (sc, np.array(["a", "b", "c"]), "must be numbers"),
        "2-D scores": (sc, np.ones((3, 1)), "1-D array of N scores"),
        "numeric names": (fn, np.arange(3), "image name strings"),
        "object names": (fn, np.array(["a.jpg", 3, "b.jpg"], dtype=object), "pickled object array"),
    }
    path, array, phrase = cases[which]
    np.save(path, array, allow_pickle=True)
    return path, phrase


@pytest.mark.parametrize(
    "which",
    [
        "lengths",
        "columns",
        "nan score",
        "inf box",
        "inverted box",
        "object boxes",
        "text scores",
        "2-D scores",
        "numeric names",
        "object names",
    ],
)
def test_each_bad_file_is_a_data_error_naming_the_file(tmp_path, which):
    path, phrase = bad_case(tmp_path, which)
    with pytest.raises(DataError) as err:
        load_predictions(tmp_path)
    assert path.name in str(err.value)
    assert phrase in str(err.value)


@pytest.mark.parametrize("index", [0, 1, 2])
def test_a_corrupt_file_is_a_data_error_naming_the_file(tmp_path, index):
    path = save_predictions(tmp_path, sample_predictions())[index]
    path.write_bytes(b"this is not numpy")
    with pytest.raises(DataError, match=path.name):
        load_predictions(tmp_path)


def test_unsafe_prediction_names_are_refused(tmp_path):
    with pytest.raises(ValueError, match="prediction name"):
        save_predictions(tmp_path, sample_predictions(), "../escape")


def test_predictions_that_could_not_be_read_back_are_not_saved(tmp_path):
    preds = sample_predictions()
    preds.scores[0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        save_predictions(tmp_path, preds)
    inverted = sample_predictions()
    inverted.boxes[1] = [5, 5, 0, 0]
    with pytest.raises(ValueError, match="x_max < x_min"):
        save_predictions(tmp_path, inverted)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- the in-memory container


def test_concatenate_empty_and_for_image():
    preds = sample_predictions()
    both = Predictions.concatenate([preds, Predictions.empty(), preds])
    assert len(both) == 6
    np.testing.assert_array_equal(both.scores, np.tile(preds.scores, 2))
    assert len(Predictions.concatenate([])) == 0
    dad = preds.for_image("dad/0001.jpg")
    np.testing.assert_array_equal(dad.scores, [0.9, 0.5])
    assert len(preds.for_image("nobody.jpg")) == 0


def test_inconsistent_arrays_are_refused_in_memory():
    with pytest.raises(ValueError, match="disagree"):
        Predictions(np.zeros((2, 4)), np.zeros(3), np.array(["a", "b"]))
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        Predictions(np.zeros((2, 3)), np.zeros(2), np.array(["a", "b"]))
