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


def test_a_checkpoint_is_the_variant_its_stages_name_and_nothing_else_trains(tmp_path):
    """`compare --checkpoint CKPT --cascade --peers --source-test ...` on a finished cascade
    checkpoint: it stands in for finetuned-cascade; finetuned-pnet and finetuned-pnet-rnet,
    which would train, are not run."""
    from facecmp.detection.checkpoint import save_checkpoint
    from facecmp.detection.models import pretrained_network
    from facecmp.errors import DataError
    from facecmp.study.compare import CASCADE_VARIANTS, COMPARE_VARIANTS, with_checkpoint

    cascade = save_checkpoint(tmp_path / "cascade", {s: pretrained_network(s).state_dict() for s in ("pnet", "rnet", "onet")}, {})
    asked = COMPARE_VARIANTS + CASCADE_VARIANTS + ("yunet",)
    assert with_checkpoint(asked, cascade) == (("pretrained", "pretrained-calibrated", "finetuned-cascade", "yunet"),
                                               {"finetuned-cascade": cascade})
    nets = {s: pretrained_network(s).state_dict() for s in ("pnet", "rnet", "onet")}
    retained = save_checkpoint(tmp_path / "retained", nets, {"settings": {"retain": {"method": "replay"}}})
    assert with_checkpoint(asked, retained)[1] == {"finetuned-cascade-retain": retained}
    augmented = save_checkpoint(tmp_path / "augmented", nets, {"settings": {"augment": {"p": 0.5}, "retain": None}})
    assert with_checkpoint(asked + ("finetuned-cascade-augmented",), augmented) == (
        ("pretrained", "pretrained-calibrated", "finetuned-cascade-augmented", "yunet"), {"finetuned-cascade-augmented": augmented})
    pnet = save_checkpoint(tmp_path / "pnet", {"pnet": pretrained_network("pnet").state_dict()}, {})
    assert with_checkpoint(COMPARE_VARIANTS, pnet) == (COMPARE_VARIANTS, {"finetuned-pnet": pnet})
    onet = save_checkpoint(tmp_path / "onet", {"onet": pretrained_network("onet").state_dict()}, {})
    with pytest.raises(DataError, match="stages onet are none of"):
        with_checkpoint(COMPARE_VARIANTS, onet)


def test_the_source_table_has_every_scored_variant_with_its_ms_per_image(tmp_path):
    from types import SimpleNamespace

    from facecmp.study.report import plot_tradeoff, source_table

    def result(name, ap, ms):
        return SimpleNamespace(name=name, ms_per_image=ms, evaluation=SimpleNamespace(summary=lambda: {"ap_cava": ap, "ap_voc": ap}))

    names = [f"detector-{i}" for i in range(12)]  # more than one colour cycle
    results = [result(n, i / 20, 10.0 + i) for i, n in enumerate(names)] + [result("not-on-source", 0.5, 1.0)]
    source = {n: SimpleNamespace(metrics={"wider_easy": 0.9 - i / 20, "wider_medium": 0.5, "wider_hard": 0.25}) for i, n in enumerate(names)}
    table = source_table(results, source).splitlines()
    assert [c.strip() for c in table[0].split("|")[1:-1]] == ["variant", "target AP (course)", "target AP (VOC)", "WIDER easy",
                                                              "WIDER medium", "WIDER hard", "ms/image (target)"]
    rows = {cells[0]: cells[1:] for cells in ([c.strip() for c in line.split("|")[1:-1]] for line in table[2:])}
    assert list(rows) == names
    assert rows["detector-3"] == ["0.150", "0.150", "0.750", "0.500", "0.250", "13.0"]
    assert plot_tradeoff(results, source, tmp_path / "tradeoff.png").stat().st_size > 1000


def test_the_benchmark_summary_puts_the_source_table_under_the_results(target_root, wider_root):
    from facecmp.bench.session import BenchOptions, BenchSession

    session = BenchSession(BenchOptions(data=target_root, source_data=wider_root, variants=("pretrained",), dev_per_folder=0,
                                        cache_dir=target_root.parent / "cache-summary"))
    session.result("pretrained")
    assert "WIDER easy" not in session.summary_table()  # no source result yet: the results table alone
    session.source_result("pretrained")
    table = session.summary_table()
    assert "source domain: 4 images" in table
    header = next(line for line in table.splitlines() if "WIDER easy" in line)
    assert "target AP (course)" in header and "ms/image (target)" in header
