"""Robustness gates: every selected variant on clean and corrupted test frames.

The axis is ``--facecmp-corruptions`` x ``--facecmp-severities`` (default: four corruptions at
severity 3 on the generated data); each condition is one test, so ``pytest -n 2`` (pytest-xdist)
spreads the grid over processes. ``[[robustness]]`` gates in gates.toml put floors on a variant's
P_clean / mPC / rPC / worst cell, or relations between variants, for the axis they were measured on.
"""

from __future__ import annotations

import pytest

from facecmp.bench.plugin import skip_unless_selected
from facecmp.bench.robustness import check_gate


def test_condition(facecmp_condition, facecmp_robustness, facecmp_session):
    """One condition for every selected variant: the cells are computed (or read from the cache) and sane."""
    cells = facecmp_robustness.cells([facecmp_condition])
    n_faces = facecmp_session.test.n_faces
    for name, got in cells.items():
        cell = got[facecmp_condition]
        # the condition transforms the ground truth, never drops it; VOC's envelope never lowers AP
        assert cell.n_ground_truth == n_faces, name
        assert 0.0 <= cell.ap_cava <= cell.ap_voc + 1e-12 <= 1.0 + 1e-12, name
        assert cell.n_true_positives <= min(cell.n_detections, n_faces), name


def test_robustness_gate(facecmp_robustness_gate, facecmp_robustness, facecmp_gates, facecmp_session):
    gate = facecmp_robustness_gate
    reason = facecmp_gates.mismatch(facecmp_session.run_settings()) or gate.mismatch(facecmp_robustness.settings)
    if reason:
        pytest.skip(reason)
    skip_unless_selected(facecmp_session, gate.variants)
    summaries = {s["name"]: s for s in facecmp_robustness.summaries(gate.variants)}
    check_gate(gate, summaries)
