"""The audit of a gates file: every gate, of every family, held to the file's ``[margins]`` around
what was measured when it was set (the format: :mod:`facecmp.bench.gates`).

Apart from the gates module so that the gate families kept beside it (``[[robustness]]``,
``[[recognition]]``), which build on :mod:`facecmp.bench.gates`, are read here without a cycle.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

from facecmp.bench.gates import (
    CURVE_POINTS,
    DEFAULT_MARGINS,
    MIN_SPEED_RUNS,
    RECORD_KEYS,
    Gate,
    GatesFileError,
    SpeedGate,
    WithinGate,
    as_written,
    curve_gates,
    datasets_in,
    load_document,
    number_at,
    parse_gates,
    speed_list,
)
from facecmp.bench.recognition import load_recognition_gates
from facecmp.bench.robustness import load_robustness_gates


def _margins(doc: dict, path: Path) -> dict[str, float]:
    given = doc.get("margins", {})
    unknown = set(given) - set(DEFAULT_MARGINS)
    if unknown:
        raise GatesFileError(f"{path}: [margins]: unknown key(s) {', '.join(sorted(unknown))}; use {', '.join(DEFAULT_MARGINS)}")
    return {k: number_at(path, f"margins.{k}", given.get(k, v)) for k, v in DEFAULT_MARGINS.items()}


def _slack(gate: Gate, margins: Mapping[str, float]) -> str | None:
    """Why ``gate`` is not set close enough under its recorded measurement (None when it is)."""
    if isinstance(gate, SpeedGate):
        runs = gate.measured
        if len(runs) < MIN_SPEED_RUNS or not gate.date or not gate.command:
            return f"needs measured = [>= {MIN_SPEED_RUNS} ratios, one per run], date and command (has {len(runs)} runs)"
        slowest, spread = min(runs), max(runs) - min(runs)
        # Room below the slowest run: the runs' own spread, or a share of it (margins.speed) when
        # the runs happened to agree: another machine of the same kind still lands a few % lower.
        room = max(spread, margins["speed"] * slowest)
        if gate.at_least > slowest:
            return f"is above its slowest measured run ({slowest:.2f}x of {', '.join(f'{r:.2f}' for r in runs)}): today's runs would fail"
        if gate.at_least < slowest - room - 0.01:  # gates are written with two decimals
            return (f"sits {slowest - gate.at_least:.2f}x below its slowest measured run {slowest:.2f}x, more than the "
                    f"runs' spread or {as_written(margins['speed'])} of the ratio ({room:.2f}x): set at_least >= {slowest - room:.2f}")
        return None
    if gate.measured is None:
        return "has no measured value recorded (measure, then record it beside the gate)"
    if isinstance(gate, WithinGate):
        if gate.measured > gate.tolerance:
            return f"measured difference {gate.measured:.3f} is over the tolerance: today's run would fail"
        if gate.tolerance - gate.measured > margins["within"] + 1e-9:
            return (f"tolerance {as_written(gate.tolerance)} is {gate.tolerance - gate.measured:.3f} over the measured difference "
                    f"{gate.measured:.3f} (margin {as_written(margins['within'])})")
        return None
    bound = gate.bound  # a floor, or the margin of a `beats` relation
    if bound > gate.measured + 1e-9:
        return f"is above its measurement {gate.measured:.3f}: today's run would fail"
    allowed = accuracy_margin(gate.measured, margins)
    if gate.measured - bound > allowed + 1e-9:
        margin = (as_written(allowed) if allowed >= margins["accuracy"]
                  else f"{as_written(margins['relative'])} of the measurement, {allowed:.4f}")
        return (f"sits {gate.measured - bound:.3f} below its measurement {gate.measured:.3f} (margin {margin}): "
                f"set it to at least {gate.measured - allowed:.4f}")
    if not gate.relation and bound <= 0:
        return "is a floor at 0, which no measurement can fail"
    return None


def accuracy_margin(measured: float, margins: Mapping[str, float]) -> float:
    """How far below its measurement a floor or a `beats` margin may sit: ``margins.accuracy``, or
    ``margins.relative`` of the measurement when that is less (a gate at 0.01 under an AP of 0.020
    would let the detector lose half of what it finds)."""
    return min(margins["accuracy"], margins["relative"] * max(measured, 0.0))


def audit(path: str | Path, variants) -> list[str]:
    """Every problem with the gates file ``path``: a gate of any family (dataset tables, speed,
    process speed, robustness, recognition) further below its recorded measurement than the file's
    ``[margins]`` allow (or above it), a gate without a measurement, a floor at 0, a dataset table
    without measured_date / measured_command, or a variant not in ``variants``."""
    path = Path(path)
    doc = load_document(path)
    margins = _margins(doc, path)
    known = set(variants)
    problems = []
    gates: list[Gate] = []
    for dataset in datasets_in(doc):
        table = parse_gates(doc, dataset, path)
        missing = [k for k in RECORD_KEYS if not table.record.get(k)]
        if missing:
            problems.append(f"{path}: [{dataset}] needs {' and '.join(missing)} (when and how its numbers were measured)")
        gates += table.minimums + table.relations
    # the speed, robustness and recognition lists, whichever dataset each entry is for
    gates += speed_list(doc, "speed", None, path, every=True) + speed_list(doc, "process_speed", None, path, every=True)
    gates += load_robustness_gates(path, None) + load_recognition_gates(path, None)
    gates += [c.gate for c in curve_gates(doc, None, path)]
    for gate in gates:
        # recognition gates name recognizer kinds (checked on reading); curve gates name their two points
        unknown = [v for v in getattr(gate, "variants", ()) if v not in known and v not in CURVE_POINTS]
        if unknown:
            problems.append(f"{path}: gate {gate.name}: no variant {', '.join(unknown)} in the registry ({', '.join(sorted(known))})")
        reason = _slack(gate, margins)
        if reason:
            problems.append(f"{path}: gate {gate.name} {reason}")
    return problems
