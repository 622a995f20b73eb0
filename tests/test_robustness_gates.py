"""``[[robustness]]`` gates: parsing, which runs they apply to, and failure messages."""

from __future__ import annotations

import pytest

from facecmp.bench.gates import GateFailed, GatesFileError
from facecmp.bench.robustness import check_gate, gate_values, load_robustness_gates, parse_axis
from facecmp.study.robustness.cells import Cell
from facecmp.study.robustness.conditions import CLEAN, Condition
from facecmp.study.robustness.metrics import variant_summary


def summary(name, clean, aps):
    cells = {CLEAN: Cell(clean, clean, 1, 1, 1)}
    cells.update({Condition(c, 3): Cell(ap, ap, 1, 1, 1) for c, ap in aps.items()})
    return variant_summary(name, cells)


SUMMARIES = {
    "a": summary("a", 0.9, {"contrast": 0.3, "fog": 0.7, "saturate": 0.0}),  # saturate: not a benchmark corruption
    "b": summary("b", 0.5, {"contrast": 0.4, "fog": 0.4}),
}


def write(tmp_path, text):
    path = tmp_path / "gates.toml"
    path.write_text(text)
    return path


def test_values_and_floors(tmp_path):
    assert gate_values(SUMMARIES["a"]) == {"clean_ap": 0.9, "mpc": pytest.approx(0.5), "rpc": pytest.approx(0.5 / 0.9), "worst": 0.3}
    path = write(tmp_path, """
[[robustness]]
dataset = "default"
variant = "a"
metric = "mpc"
at_least = 0.45

[[robustness]]
dataset = "default"
variant = "a"
metric = "worst"
at_least = 0.35

[[robustness]]
dataset = "dexter"
variant = "a"
metric = "rpc"
at_least = 0.99
""")
    gates = load_robustness_gates(path, "default")
    assert [g.metric for g in gates] == ["mpc", "worst"]
    check_gate(gates[0], SUMMARIES)
    with pytest.raises(GateFailed, match=r"gate robustness default.a.worst >= 0.35 failed: measured 0.300, needed 0.350 \(short by 0.050\)"):
        check_gate(gates[1], SUMMARIES)


def test_relations(tmp_path):
    path = write(tmp_path, """
[[robustness]]
variant = "a"
metric = "mpc"
beats = "b"
by = 0.05

[[robustness]]
variant = "a"
metric = "rpc"
beats = "b"
""")
    by_mpc, by_rpc = load_robustness_gates(path, "default")
    check_gate(by_mpc, SUMMARIES)  # 0.5 >= 0.4 + 0.05
    with pytest.raises(GateFailed, match=r"a rpc >= b rpc \+ 0.00 failed: measured 0.556, needed 0.800 \(short by 0.244\)"):
        check_gate(by_rpc, SUMMARIES)


def test_a_gate_applies_only_to_the_axis_it_was_measured_on(tmp_path):
    path = write(tmp_path, """
[[robustness]]
variant = "a"
metric = "mpc"
at_least = 0.1
corruptions = "benchmark"
severities = "3"
""")
    (gate,) = load_robustness_gates(path, "default")
    assert gate.mismatch(parse_axis("benchmark", "3")) is None
    assert "measured on corruptions 'benchmark'" in gate.mismatch(parse_axis("contrast,fog", "3"))
    assert "measured at severities '3'" in gate.mismatch(parse_axis("benchmark", "1,3"))
    assert parse_axis("none", "3") is None


@pytest.mark.parametrize(
    "text, needle",
    [
        ('[[robustness]]\nvariant = "a"\nmetric = "map"\nat_least = 0.1\n', "metric must be one of clean_ap, mpc, rpc, worst"),
        ('[[robustness]]\nvariant = "a"\nmetric = "mpc"\n', "exactly one of at_least"),
        ('[[robustness]]\nvariant = "a"\nmetric = "mpc"\nat_least = "high"\n', "at_least must be a number"),
        ('[[robustness]]\nvariant = "a"\nmetric = "mpc"\nat_least = 0.1\nfloor = 1\n', "unknown key(s) floor"),
        ('robustness = 3\n', "must be a list of tables"),
    ],
)
def test_bad_gate_files_name_the_entry(tmp_path, text, needle):
    with pytest.raises(GatesFileError, match="robustness") as info:
        load_robustness_gates(write(tmp_path, text), "default")
    assert needle in str(info.value)
