"""The source domain in the study (facecmp.study.source): every variant scored on a second test set,
in `compare --source-test` and the benchmark session (`--facecmp-source-data`), reported beside the
target domain. Small generated data; the pretrained variant only (no training)."""

from __future__ import annotations

import json

import pytest

from facecmp.bench import gates
from facecmp.study import source as source_module
from test_wider_eval import make_wider_dataset

pytest.importorskip("scipy.io", reason="the WIDER FACE protocol needs scipy: pip install 'facecmp[wider]'")


@pytest.fixture(scope="module")
def wider_root(tmp_path_factory):
    return make_wider_dataset(tmp_path_factory.mktemp("source"), n_images=4)


@pytest.fixture(scope="module")
def target_root(tmp_path_factory):
    from facecmp.data.synthetic import generate_dataset
    from test_cli import SMALL_SIZE

    # compare keeps 25 images per training folder for threshold calibration
    return generate_dataset(tmp_path_factory.mktemp("target") / "ds", n_train_per_character=26, n_test=4, seed=0, size=SMALL_SIZE)


def test_the_gates_know_the_source_metrics():
    assert gates.SOURCE_METRICS == source_module.SOURCE_METRICS


def test_a_wider_source_uses_the_protocol_and_a_split_is_seeded_per_event(wider_root):
    whole = source_module.load_source_domain(wider_root)
    assert whole.protocol == "wider" and len(whole.test) == 4 and whole.key == "wider-face"
    part = source_module.load_source_domain(wider_root, split="split:2", seed=0)
    again = source_module.load_source_domain(wider_root, split="split:2", seed=0)
    assert len(part.test) == 2 and [r.key for r in part.test.images] == [r.key for r in again.test.images]
    assert part.selection == "split:2"


def test_compare_scores_every_variant_on_the_source_and_reports_both_domains(target_root, wider_root, tmp_path):
    from facecmp.data.wider_protocol import read_submission
    from facecmp.study.compare import run_comparison

    out = run_comparison(target_root, tmp_path / "out", variants=("pretrained",), source_test=wider_root,
                         cache_dir=tmp_path / "cache")
    results = json.loads((out / "results.json").read_text())
    scored = results["variants"][0]["source"]
    assert set(scored) == {"wider_easy", "wider_medium", "wider_hard"} and scored["wider_easy"] > 0.3
    assert "4 images" in results["source"]
    report = (out / "report.md").read_text()
    assert "## Target domain and source domain" in report and "WIDER easy" in report and "tradeoff.png" in report
    assert (out / "tradeoff.png").stat().st_size > 1000
    assert len(read_submission(out / "source" / "pretrained")) == 4  # the official submission format, beside the report


def test_a_source_in_another_format_is_scored_with_the_course_evaluator(target_root):
    from facecmp.bench.session import BenchOptions, BenchSession

    session = BenchSession(BenchOptions(data=target_root, source_data=target_root / "validare", variants=("pretrained",),
                                        cache_dir=target_root.parent / "cache"))
    result = session.source_result("pretrained")
    assert session.source.protocol == "course"
    assert set(result.metrics) == set(source_module.COURSE_METRICS) and result.metrics["source_ap_cava"] > 0.3
    assert session.source_run_settings()["n_test_images"] == 4
