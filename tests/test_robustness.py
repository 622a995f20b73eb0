"""The robustness grid: metrics, workers, the per-cell cache and resume, the CLI and its errors."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from facecmp.data import load_archive
from facecmp.data.records import Dataset, ImageRecord
from facecmp.data.synthetic import generate_dataset
from facecmp.detection.base import DetectorSettings
from facecmp.detection.detector import Detector
from facecmp.errors import DataError, ModelError
from facecmp.study.robustness.cells import Cell, CellCache, GridVariant, variant_identity
from facecmp.study.robustness.compat import missing_dependency
from facecmp.study.robustness.conditions import CLEAN, Condition
from facecmp.study.robustness.grid import RobustnessSettings, run_grid
from facecmp.study.robustness.metrics import summarize
from facecmp.data.fingerprint import data_fingerprint

from test_cli import assert_user_error, run_cli

if missing_dependency():
    pytest.skip(missing_dependency(), allow_module_level=True)

# one benchmark corruption, one extra, one geometric condition
SETTINGS = RobustnessSettings(corruptions=("contrast", "speckle_noise", "mirror"), severities=(1,))


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return generate_dataset(tmp_path_factory.mktemp("rob") / "ds", n_train_per_character=2, n_test=3, seed=2)


@pytest.fixture(scope="module")
def test_set(root) -> Dataset:
    return load_archive(root).test


class Counting:
    """A detector that counts the images it sees (in this process)."""

    def __init__(self, detector):
        self.detector, self.calls = detector, 0
        self.settings = detector.settings

    def detect_batch(self, images):
        self.calls += len(images)
        return self.detector.detect_batch(images)


def grid_variants(thresholds=(0.6, 0.7, 0.7)):
    out = []
    for name, t in (("strict", thresholds), ("loose", (0.5, 0.3, 0.3))):
        detector = Counting(Detector(settings=DetectorSettings(thresholds=t)))
        out.append(GridVariant(name, detector, variant_identity(name, detector, {"thresholds": list(t)})))
    return out


def test_metrics_follow_the_benchmark_definitions():
    cell = lambda ap: Cell(ap, ap + 0.01, 10, 5, 8)  # noqa: E731
    cells = {
        CLEAN: cell(0.8),
        Condition("contrast", 1): cell(0.6), Condition("contrast", 3): cell(0.2),
        Condition("fog", 1): cell(0.7), Condition("fog", 3): cell(0.5),
        Condition("saturate", 3): cell(0.0),  # an extra corruption: reported, not in mPC
        Condition("scale", 2): cell(0.1),  # geometric: reported, not in mPC
    }
    s = summarize(cells)
    assert s["clean_ap"] == 0.8
    assert s["mpc"] == pytest.approx(0.5)
    assert s["rpc"] == pytest.approx(0.5 / 0.8)
    assert s["per_severity"] == {"1": pytest.approx(0.65), "3": pytest.approx(0.35)}
    assert s["per_corruption"]["contrast"] == {"1": 0.6, "3": 0.2} and s["per_corruption"]["scale"] == {"2": 0.1}
    assert s["mpc_corruptions"] == ["fog", "contrast"]
    voc = summarize(cells, "ap_voc")
    assert voc["mpc"] == pytest.approx(0.51)
    assert summarize({CLEAN: cell(0.0)})["rpc"] is None


def test_grid_workers_cache_and_resume(test_set, tmp_path):
    fingerprint = data_fingerprint(test_set)
    variants = grid_variants()
    cache = CellCache(tmp_path / "cells", fingerprint, SETTINGS.seed)
    in_process = run_grid(variants, test_set, SETTINGS, cache, progress=False)
    n_conditions = 1 + 2 + 1  # clean, two corruptions at severity 1, mirror
    assert all(len(cells) == n_conditions for cells in in_process.values())
    assert all(v.detector.calls == n_conditions * len(test_set) for v in variants)
    # the loose thresholds find at least what the strict ones find on clean frames
    assert in_process["loose"][CLEAN].n_true_positives >= in_process["strict"][CLEAN].n_true_positives
    # worker processes give the same cells
    spread = run_grid(grid_variants(), test_set, replace(SETTINGS, workers=2), CellCache(tmp_path / "other", fingerprint, 0), progress=False)
    assert spread == in_process
    # a rerun reuses every cached cell: no detection at all
    again = grid_variants()
    assert run_grid(again, test_set, SETTINGS, cache, progress=False) == in_process
    assert all(v.detector.calls == 0 for v in again)
    # an interrupted run resumes: a deleted cell is recomputed alone
    cache.path(variants[0], Condition("contrast", 1)).unlink()
    resumed = grid_variants()
    assert run_grid(resumed, test_set, SETTINGS, cache, progress=False) == in_process
    assert [v.detector.calls for v in resumed] == [len(test_set), 0]


def test_cached_cells_never_mix_other_checkpoints_seeds_or_data(test_set, tmp_path):
    fingerprint = data_fingerprint(test_set)
    settings = replace(SETTINGS, corruptions=("contrast",), severities=(3,))
    run_grid(grid_variants()[:1], test_set, settings, CellCache(tmp_path, fingerprint, 0), progress=False)
    # other thresholds (another identity), another corruption seed, other data: all recomputed
    for variants, cache in (
        (grid_variants((0.6, 0.7, 0.6))[:1], CellCache(tmp_path, fingerprint, 0)),
        (grid_variants()[:1], CellCache(tmp_path, fingerprint, 1)),
        (grid_variants()[:1], CellCache(tmp_path, "other-data", 0)),
    ):
        run_grid(variants, test_set, settings, cache, progress=False)
        assert variants[0].detector.calls == 2 * len(test_set)
    # a cell file whose stored keys do not match its request is ignored, not trusted
    variant = grid_variants()[0]
    cache = CellCache(tmp_path, fingerprint, 0)
    path = cache.path(variant, CLEAN)
    stored = json.loads(path.read_text())
    stored["keys"]["data"] = "tampered"
    path.write_text(json.dumps(stored))
    assert cache.get(variant, CLEAN) is None


def test_checkpoint_identity_follows_the_weights(tmp_path):
    from facecmp.detection.checkpoint import checkpoint_digest

    folder = tmp_path / "ck"
    folder.mkdir()
    (folder / "facecmp.json").write_text("{}")
    (folder / "pnet.pt").write_bytes(b"a")
    first = checkpoint_digest(folder)
    (folder / "train_state_pnet.pt").write_bytes(b"resume state does not count")
    assert checkpoint_digest(folder) == first
    (folder / "pnet.pt").write_bytes(b"b")
    assert checkpoint_digest(folder) != first


def test_a_corruption_failing_on_an_image_stops_the_run_naming_it(test_set, tmp_path):
    from PIL import Image

    tiny = tmp_path / "tiny.png"
    Image.new("RGB", (20, 20), (128, 128, 128)).save(tiny)
    broken = replace(test_set, images=[*test_set.images[:1], ImageRecord("tiny.png", tiny)])
    settings = replace(SETTINGS, corruptions=("contrast",), severities=(2,))
    with pytest.raises(DataError, match=r"corruption contrast at severity 2 failed on .*tiny\.png.*32x32"):
        run_grid(grid_variants()[:1], broken, settings, CellCache(tmp_path / "c", "x", 0), progress=False)


class Refusing:
    """A detector that cannot run (as a broken peer): every batch raises one ModelError."""

    settings = DetectorSettings()

    def detect_batch(self, images):
        raise ModelError("refusing: rebuild its environment")


@pytest.mark.parametrize("workers", [0, 2])
def test_a_detector_error_in_a_worker_is_raised_as_itself(test_set, tmp_path, workers):
    # In a worker process it travels back as a value (facecmp.errors.returns_errors): the same
    # exception type and line as in process, without the worker's traceback around it.
    variant = GridVariant("refusing", Refusing(), "refusing")
    settings = replace(SETTINGS, corruptions=("contrast",), severities=(2,), workers=workers)
    with pytest.raises(ModelError) as raised:
        run_grid([variant], test_set, settings, CellCache(tmp_path / "c", "x", 0), progress=False)
    assert str(raised.value) == "refusing: rebuild its environment"


def test_cli_writes_the_report_and_resumes(root, tmp_path):
    out = tmp_path / "out"
    argv = ["robustness", "--data", root, "--test", root / "validare", "--out", out, "--variants", "pretrained",
            "--corruptions", "contrast,fog,scale", "--severities", "2,4", "--workers", "0", "--dev-per-folder", "0"]
    code, stdout, stderr = run_cli(argv)
    assert code == 0, stderr
    for name in ("robustness.md", "robustness.json", "heatmap.png", "severity_curves.png", "corruptions.png"):
        assert (out / name).is_file(), name
    report = json.loads((out / "robustness.json").read_text())
    (entry,) = report["variants"]
    assert entry["name"] == "pretrained" and set(entry["per_corruption"]) == {"contrast", "fog", "scale"}
    assert entry["per_corruption"]["contrast"].keys() == {"2", "4"} and entry["per_corruption"]["scale"].keys() == {"2", "4"}
    assert entry["mpc"] == pytest.approx(np.mean([entry["per_corruption"][c][s] for c in ("contrast", "fog") for s in ("2", "4")]))
    assert entry["rpc"] == pytest.approx(entry["mpc"] / entry["clean_ap"])
    assert set(entry["ap_voc"]) >= {"clean_ap", "mpc", "rpc", "per_corruption"}
    assert "| pretrained |" in (out / "robustness.md").read_text()
    cells = sorted((out / "cache" / "robustness").rglob("*.json"))
    assert len(cells) == 1 + 2 + 2 + 2
    stamps = [p.stat().st_mtime_ns for p in cells]
    code, _, stderr = run_cli(argv)
    assert code == 0, stderr
    assert [p.stat().st_mtime_ns for p in cells] == stamps
    assert json.loads((out / "robustness.json").read_text())["variants"] == report["variants"]


@pytest.mark.parametrize(
    "extra, needles",
    [
        (["--corruptions", "contrast,blurr"], ["unknown corruption 'blurr'", "gaussian_noise", "saturate"]),
        (["--severities", "3,6"], ["severity 6 is outside 1-5"]),
        (["--variants", "pretrained,nope"], ["unknown variant", "finetuned-cascade"]),
        (["--checkpoint", "/nonexistent"], ["say which variant"]),
        (["--variants", "finetuned-cascade", "--checkpoint", "/nonexistent"], ["not a facecmp checkpoint"]),
    ],
)
def test_cli_bad_input_is_one_line_exit_2(root, tmp_path, extra, needles):
    code, _, stderr = run_cli(["robustness", "--data", root, "--out", tmp_path / "o", "--variants", "pretrained", *extra])
    assert_user_error(code, stderr, *needles)
