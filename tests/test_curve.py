"""``facecmp curve`` (facecmp.study.curve): nested subsets, the files it writes, resuming, bad input.

On a tiny generated archive (8 training frames, 1 dev frame per folder, 3 test images, at half
the default size), PNet only and one epoch, so a point trains in seconds.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from facecmp.data import load_archive
from facecmp.data.synthetic import generate_dataset
from facecmp.errors import DataError
from facecmp.study import curve as C
from tests.test_cli import assert_user_error, run_cli

SETTINGS = dict(stages=("pnet",), epochs=1, dev_per_folder=1)
SIZE = (240, 180)
POINT_KEYS = {"frames", "faces", "ap_cava", "ap_voc", "recall", "train_s", "checkpoint"}


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    return generate_dataset(tmp_path_factory.mktemp("curve") / "ds", n_train_per_character=3, n_test=3, seed=0, size=SIZE)


TRAIN_POINT = C.train_point


class Interrupted(Exception):
    """A curve stopped mid-way (a crash, Ctrl-C, the machine going down)."""


class Trainings:
    """Counts the points ``run_curve`` trains; ``fail_at``: stop (Interrupted) at that point."""

    def __init__(self, monkeypatch, fail_at: int | None = None):
        self.frames: list[int] = []
        self.fail_at = fail_at
        real = TRAIN_POINT

        def counted(subset, folder, **kw):
            self.frames.append(len(subset))
            if self.fail_at is not None and len(subset) == self.fail_at:
                raise Interrupted
            return real(subset, folder, **kw)

        monkeypatch.setattr(C, "train_point", counted)


@pytest.fixture(scope="module")
def small_curve(archive, tmp_path_factory):
    out = tmp_path_factory.mktemp("curve_out") / "c"
    C.run_curve(archive, out, C.CurveSettings(frames="2,4", **SETTINGS), progress=False)
    return out


# --- the subsets ---------------------------------------------------------------------------


def test_subsets_are_nested_seeded_and_draw_on_every_folder(archive):
    train = load_archive(archive).train
    order = C.nested_order(train, seed=0)
    assert sorted(order) == sorted(r.key for r in train.images)  # every frame once
    assert order == C.nested_order(train, seed=0)
    assert order != C.nested_order(train, seed=1)
    assert {k.split("/")[0] for k in order[:4]} == {"ada", "bo", "cy", "dot"}
    sizes = [1, 2, 5, len(train)]
    subsets = [{r.key for r in C.nested_subset(train, order, n).images} for n in sizes]
    assert [len(s) for s in subsets] == sizes
    assert all(small < large for small, large in zip(subsets, subsets[1:]))


def test_frame_sizes_default_fits_the_training_set():
    assert C.frame_sizes(None, 120) == [25, 50, 100, 120]
    assert C.frame_sizes(None, 800) == [25, 50, 100, 200, 400, 800]
    assert C.frame_sizes("all,10, 3", 40) == [3, 10, 40]


@pytest.mark.parametrize("text, needle", [("0", "at least 1"), ("9", "9 frames asked for"), ("2,2", "listed twice"),
                                          ("8,all", "listed twice"), ("two", "'two' is not a number"), ("2.5", "not a number")])
def test_frame_sizes_refuses_bad_sizes_saying_what_is_available(text, needle):
    with pytest.raises(DataError) as info:
        C.frame_sizes(text, 8)
    assert needle in str(info.value)
    assert "the training set has 8 frames" in str(info.value)


# --- what a curve writes -------------------------------------------------------------------


@pytest.mark.slow
def test_curve_json_schema_and_files(small_curve):
    curve = json.loads((small_curve / C.CURVE_FILE).read_text())
    points = curve["points"]
    assert [p["frames"] for p in points] == [2, 4]
    for p in points:
        assert POINT_KEYS <= set(p)
        assert all(0.0 <= p[k] <= 1.0 for k in ("ap_cava", "ap_voc", "recall"))
        assert p["train_s"] > 0 and p["faces"] >= p["frames"] // 2
        assert (Path(p["checkpoint"]) / "pnet.pt").is_file()
    assert points[0]["faces"] <= points[1]["faces"]
    assert set(curve["baselines"]) == {"pretrained", "pretrained-calibrated"}
    assert curve["train_frames"] == 8
    assert (small_curve / C.PLOT_FILE).stat().st_size > 0
    assert "| 4 |" in (small_curve / C.REPORT_FILE).read_text()
    assert not list(small_curve.glob(".*.tmp")), "writes are atomic"


@pytest.mark.slow
def test_every_point_trains_on_its_subset_and_calibrates_on_the_same_dev_split(small_curve):
    metas = [json.loads((Path(p["checkpoint"]) / "facecmp.json").read_text())
             for p in json.loads((small_curve / C.CURVE_FILE).read_text())["points"]]
    assert [m["n_train_images"] for m in metas] == [2, 4]
    assert len({json.dumps({k: m["calibration"][k] for k in ("dataset", "n_images")}) for m in metas}) == 1


# --- resuming ------------------------------------------------------------------------------


@pytest.mark.slow
def test_an_interrupted_curve_resumes_without_retraining_finished_points(archive, tmp_path, monkeypatch):
    out = tmp_path / "c"
    settings = C.CurveSettings(frames="2,4", **SETTINGS)
    first = Trainings(monkeypatch, fail_at=4)
    with pytest.raises(Interrupted):
        C.run_curve(archive, out, settings, progress=False)
    assert first.frames == [2, 4]
    kept = json.loads((out / C.CURVE_FILE).read_text())["points"]
    assert [p["frames"] for p in kept] == [2]

    code, _, err = run_cli(["curve", "--data", archive, "--out", out, "--frames", "2,4", "--stages", "pnet", "--epochs", "1",
                            "--dev-per-folder", "1"])
    assert_user_error(code, err, "--resume")  # never silently over an existing curve

    again = Trainings(monkeypatch)
    curve = C.run_curve(archive, out, settings, resume=True, progress=False)
    assert again.frames == [4]  # the finished point is not retrained
    assert curve["points"][0] == kept[0]
    assert [p["frames"] for p in curve["points"]] == [2, 4]


@pytest.mark.slow
def test_resume_refuses_a_curve_of_other_data(archive, small_curve, tmp_path):
    other = generate_dataset(tmp_path / "other", n_train_per_character=3, n_test=3, seed=5, size=SIZE)
    with pytest.raises(DataError, match="other data"):
        C.run_curve(other, small_curve, C.CurveSettings(frames="2", **SETTINGS), resume=True, progress=False)


def test_resume_refuses_a_curve_of_another_recipe_and_each_point_trains_the_curves(archive, small_curve, monkeypatch):
    from facecmp.training.finetune import DEFAULT_RECIPE

    assert json.loads((small_curve / C.CURVE_FILE).read_text())["spec"]["recipe"] == DEFAULT_RECIPE  # named or not
    for point in json.loads((small_curve / C.CURVE_FILE).read_text())["points"]:
        assert json.loads((Path(point["checkpoint"]) / "facecmp.json").read_text())["settings"]["recipe"] == DEFAULT_RECIPE
    Trainings(monkeypatch, fail_at=-1)
    with pytest.raises(DataError, match="recipe"):
        C.run_curve(archive, small_curve, C.CurveSettings(frames="2,4", recipe="classic", **SETTINGS), resume=True, progress=False)


# --- bad input on the command line ---------------------------------------------------------


@pytest.mark.parametrize("frames, needle", [("0", "at least 1"), ("99", "99 frames asked for"), ("2,4,2", "listed twice"),
                                            ("a,b", "not a number")])
def test_cli_bad_frames_is_one_line_naming_what_is_available(archive, tmp_path, frames, needle, monkeypatch):
    Trainings(monkeypatch, fail_at=-1)
    code, _, err = run_cli(["curve", "--data", archive, "--out", tmp_path / "c", "--frames", frames, "--stages", "pnet",
                            "--dev-per-folder", "1"])
    assert_user_error(code, err, needle, "the training set has 8 frames")
    assert not (tmp_path / "c").exists()


def test_cli_refuses_a_test_set_sharing_a_training_frame(archive, tmp_path):
    copy = shutil.copytree(archive, tmp_path / "ds")
    shutil.copyfile(copy / "antrenare" / "bo" / "0002.jpg", copy / "validare" / "validare" / "0002.jpg")
    code, _, err = run_cli(["curve", "--data", copy, "--out", tmp_path / "c", "--frames", "2", "--stages", "pnet",
                            "--dev-per-folder", "1"])
    assert_user_error(code, err, "0002.jpg", "bo/0002.jpg", "training frame")
    assert not (tmp_path / "c").exists()
