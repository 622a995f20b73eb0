"""Accuracy gates: each variant's AP against benchmarks/gates.toml, and relations between variants.

Gates are kept per dataset (``[default]`` = the built-in generated data, ``[dexter]`` = an
archive folder named ``dexter``); they only apply when this run chose its test images the way
the gates were measured (see the settings at the top of each table).
"""

from __future__ import annotations

import pytest

from facecmp.bench.gates import check, check_all


def _require_applicable(gates, session) -> None:
    reason = gates.mismatch(session.run_settings())
    if reason:
        pytest.skip(reason)


def test_accuracy(variant, variant_result, facecmp_gates, facecmp_session):
    _require_applicable(facecmp_gates, facecmp_session)
    gates = facecmp_gates.minimums_for(variant)
    if not gates:
        pytest.skip(f"no accuracy gates for {variant} in [{facecmp_gates.dataset}] of {facecmp_gates.path}")
    check_all(gates, {variant: variant_result.evaluation.summary()})


def test_relation(facecmp_relation, facecmp_gates, facecmp_session):
    _require_applicable(facecmp_gates, facecmp_session)
    unselected = [v for v in facecmp_relation.variants if v not in facecmp_session.variant_names]
    if unselected:
        pytest.skip(f"{', '.join(unselected)} not selected (--facecmp-variants)")
    try:
        values = facecmp_session.metrics(facecmp_relation.variants)
    except Exception as exc:  # a variant that cannot run fails its own test; here we just cannot compare
        pytest.skip(f"cannot compare: {exc}")
    check(facecmp_relation, values)
