"""Task 2 (who is it): every recognizer kind on the fine-tuned cascade's test detections, gated by
``[[recognition]]`` in benchmarks/gates.toml (facecmp.bench.recognition)."""

from __future__ import annotations

import pytest

from facecmp.bench.recognition import load_recognition_gates
from facecmp.detection.recognizer import KINDS
from facecmp.study.recognition import study_task2, task2_table

DETECTOR = "finetuned-cascade"


def _cannot_run(session, reason: str) -> None:
    """Task 2 cannot run: a skip with the reason, or a failure when the run asked for it (--facecmp-recognizers)."""
    if session.options.recognizers is not None:
        pytest.fail(f"--facecmp-recognizers {','.join(session.options.recognizers)}: task 2 cannot run: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def task2_results(facecmp_session, tmp_path_factory):
    if DETECTOR not in facecmp_session.variant_names:
        _cannot_run(facecmp_session, f"its detector {DETECTOR} is not selected (--facecmp-variants)")
    splits = facecmp_session.splits
    if splits.train is None:
        _cannot_run(facecmp_session, "task 2 needs training images to train the recognizers")
    checkpoint = facecmp_session.prepared(DETECTOR).settings["checkpoint"]
    report = facecmp_session.options.report
    out = report / "task2" if report else tmp_path_factory.mktemp("task2")
    kinds = facecmp_session.options.recognizers or KINDS
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown:
        pytest.fail(f"--facecmp-recognizers: unknown kind(s) {', '.join(unknown)}; choose from {', '.join(KINDS)}", pytrace=False)
    results = study_task2(out, checkpoint, splits.train, splits.dev, splits.test, kinds=kinds,
                          cache_dir=facecmp_session.options.cache_dir, seed=facecmp_session.options.seed,
                          detector_name=DETECTOR, progress=False, device=facecmp_session.options.device)
    print("\n" + task2_table(results, DETECTOR))
    return {r.name: {"map_cava": r.evaluation.map_cava, "map_voc": r.evaluation.map_voc} for r in results}


def test_recognition_gates(task2_results, facecmp_gates, facecmp_session):
    reason = facecmp_gates.mismatch(facecmp_session.run_settings())
    if reason:
        pytest.skip(reason)
    # gates on recognizer kinds this run did not train (--facecmp-recognizers) are not checked
    gates = [g for g in load_recognition_gates(facecmp_gates.path, facecmp_gates.dataset) if g.kinds <= set(task2_results)]
    if not gates:
        pytest.skip(f"no [[recognition]] gates for {facecmp_gates.dataset} and the recognizers run in {facecmp_gates.path}")
    failures = [msg for gate in gates if (msg := gate.check(task2_results))]
    assert not failures, "\n".join(failures)
