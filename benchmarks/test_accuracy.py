"""Accuracy gates: each variant's AP against benchmarks/gates.toml, and relations between variants.

Gates are kept per dataset (``[default]`` = the built-in generated data, ``[dexter]`` = an
archive folder named ``dexter``). On the default data every gate applies and one that cannot
be evaluated FAILS with the reason (a skipped gate would let a regression through). On another
dataset the gates apply when this run chose its test images the way they were measured (the
settings at the top of its table); a run with other settings, or on a dataset without a table,
skips them and says why. Only a relation naming a variant left out with ``--facecmp-variants``
is skipped in any run: that is the runner's explicit choice.
"""

from __future__ import annotations

import pytest

from facecmp.bench.plugin import skip_unless_selected
from facecmp.bench.gates import check, check_all
from facecmp.errors import FacecmpError

DEFAULT_DATASET = "default"


def _require_applicable(gates, session) -> None:
    """Skip only where the gates were never meant to apply; on the default data, fail instead."""
    reason = gates.mismatch(session.run_settings())
    if reason is None:
        return
    if gates.dataset == DEFAULT_DATASET:
        pytest.fail(f"{reason}. The built-in data's gates must apply to the default run: re-measure "
                    "(python benchmarks/measure_gates.py) and update the table", pytrace=False)
    pytest.skip(reason)


def test_accuracy(facecmp_variant, facecmp_result, facecmp_gates, facecmp_session):
    _require_applicable(facecmp_gates, facecmp_session)
    gates = facecmp_gates.minimums_for(facecmp_variant)
    if not gates:
        message = f"no accuracy gates for {facecmp_variant} in [{facecmp_gates.dataset}] of {facecmp_gates.path}"
        if facecmp_gates.dataset == DEFAULT_DATASET:
            pytest.fail(f"{message}: every variant needs one on the built-in data (measure it, then add it)", pytrace=False)
        pytest.skip(message)
    check_all(gates, {facecmp_variant: facecmp_result.evaluation.summary()})


def test_relation(facecmp_relation, facecmp_gates, facecmp_session):
    _require_applicable(facecmp_gates, facecmp_session)
    skip_unless_selected(facecmp_session, facecmp_relation.variants)
    try:
        values = facecmp_session.metrics(facecmp_relation.variants)
    except FacecmpError as exc:  # a variant that cannot run: the gate cannot be evaluated, so it fails
        pytest.fail(f"gate {facecmp_relation.name} cannot be evaluated: {exc}", pytrace=False)
    check(facecmp_relation, values)
