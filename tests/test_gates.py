"""Gates: parsing gates.toml, checking absolute / relational / speed gates, and their messages."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from facecmp.bench.gates import (
    BeatsGate,
    GateFailed,
    GatesFileError,
    MinimumGate,
    SpeedGate,
    WithinGate,
    check,
    check_all,
    load_gates,
)

GATES = """
[[speed]]
variant = "pretrained"
faster_than = "facenet-reference"
at_least = 1.5

[dexter]
test = "split:50"
dev_per_folder = 5

[dexter.finetuned-pnet]
ap_cava = 0.60
recall = 0.7

[dexter.pretrained]
ap_cava = 0.3

[[dexter.relations]]
variant = "finetuned-pnet"
beats = "pretrained"
by = 0.05

[[dexter.relations]]
variant = "pretrained"
within = "facenet-reference"
tolerance = 0.01
metric = "ap_voc"
"""

unit = st.floats(0.0, 1.0, allow_nan=False)


def write(tmp_path, text: str):
    path = tmp_path / "gates.toml"
    path.write_text(text)
    return path


def test_minimum_gate_message_names_the_gate_and_the_shortfall():
    gate = MinimumGate("dexter", "finetuned-pnet", "ap_cava", 0.60)
    with pytest.raises(GateFailed) as info:
        check(gate, {"finetuned-pnet": {"ap_cava": 0.512}})
    assert str(info.value) == "gate dexter.finetuned-pnet.ap_cava >= 0.60 failed: measured 0.512 (short by 0.088)"


def test_relational_and_speed_messages():
    beats = BeatsGate("dexter", "finetuned-pnet", "pretrained", "ap_cava", 0.05)
    with pytest.raises(GateFailed, match=r"dexter.finetuned-pnet.ap_cava >= pretrained.ap_cava \+ 0.05 failed: "
                                         r"measured 0.612 vs 0.590 \(\+0.022, short by 0.028\)"):
        check(beats, {"finetuned-pnet": {"ap_cava": 0.612}, "pretrained": {"ap_cava": 0.59}})
    within = WithinGate("dexter", "pretrained", "facenet-reference", "ap_cava", 0.01)
    with pytest.raises(GateFailed, match=r"within 0.01 of facenet-reference.ap_cava failed: measured 0.512 vs 0.530 "
                                         r"\(differs by 0.018, over by 0.008\)"):
        check(within, {"pretrained": {"ap_cava": 0.512}, "facenet-reference": {"ap_cava": 0.53}})
    speed = SpeedGate("pretrained", "facenet-reference", 1.5)
    with pytest.raises(GateFailed, match=r"gate speed.pretrained >= 1.50x as fast as facenet-reference failed: "
                                         r"measured 1.25x \(400.0 vs 500.0 ms/image; short by 0.25x\)"):
        check(speed, {"pretrained": {"ms_per_image": 400.0}, "facenet-reference": {"ms_per_image": 500.0}})
    whole = SpeedGate("pretrained", "facenet-reference", 2.0, scope="process_speed", metric="seconds", unit="s per run")
    with pytest.raises(GateFailed, match=r"gate process_speed.pretrained >= 2.00x as fast as facenet-reference failed: "
                                         r"measured 1.90x \(4.00 vs 7.60 s per run; short by 0.10x\)"):
        check(whole, {"pretrained": {"seconds": 4.0}, "facenet-reference": {"seconds": 7.6}})


@given(measured=unit, minimum=unit)
def test_minimum_gate_holds_exactly_when_measured_reaches_it(measured, minimum):
    failure = MinimumGate("d", "v", "ap_cava", minimum).failure({"v": {"ap_cava": measured}})
    assert (failure is None) == (measured >= minimum)


@given(a=unit, b=unit, by=st.floats(-0.5, 0.5))
def test_beats_gate_holds_exactly_when_the_margin_is_reached(a, b, by):
    failure = BeatsGate("d", "a", "b", "ap_cava", by).failure({"a": {"ap_cava": a}, "b": {"ap_cava": b}})
    assert (failure is None) == (a - b >= by)


@given(a=unit, b=unit, tolerance=st.floats(0.0, 0.2))
def test_within_gate_is_symmetric(a, b, tolerance):
    values = {"a": {"ap_cava": a}, "b": {"ap_cava": b}}
    one = WithinGate("d", "a", "b", "ap_cava", tolerance).failure(values)
    other = WithinGate("d", "b", "a", "ap_cava", tolerance).failure(values)
    assert (one is None) == (other is None) == (abs(a - b) <= tolerance)


def test_check_all_reports_every_failure():
    gates = [MinimumGate("d", "v", "ap_cava", 0.5), MinimumGate("d", "v", "recall", 0.9), MinimumGate("d", "v", "ap_voc", 0.1)]
    with pytest.raises(GateFailed) as info:
        check_all(gates, {"v": {"ap_cava": 0.4, "recall": 0.8, "ap_voc": 0.2}})
    lines = str(info.value).splitlines()
    assert len(lines) == 2 and "d.v.ap_cava" in lines[0] and "d.v.recall" in lines[1]


def test_load_gates_reads_one_dataset_and_the_speed_gates(tmp_path):
    gates = load_gates(write(tmp_path, GATES), "dexter")
    assert gates.found and gates.settings == {"test": "split:50", "dev_per_folder": 5}
    assert [g.name for g in gates.minimums_for("finetuned-pnet")] == [
        "dexter.finetuned-pnet.ap_cava >= 0.60", "dexter.finetuned-pnet.recall >= 0.70"]
    assert gates.relations == [
        BeatsGate("dexter", "finetuned-pnet", "pretrained", "ap_cava", 0.05),
        WithinGate("dexter", "pretrained", "facenet-reference", "ap_voc", 0.01),
    ]
    assert gates.speed == [SpeedGate("pretrained", "facenet-reference", 1.5)]
    other = load_gates(write(tmp_path, GATES), "default")
    assert not other.found and other.minimums == [] and other.speed == gates.speed


def test_gates_apply_only_to_runs_measured_the_same_way(tmp_path):
    gates = load_gates(write(tmp_path, GATES), "dexter")
    assert gates.mismatch({"test": "split:50", "dev_per_folder": 5, "seed": 3}) is None
    reason = gates.mismatch({"test": "split:20", "dev_per_folder": 5})
    assert "test = 'split:50'" in reason and "'split:20'" in reason
    assert "no gates for dataset 'default'" in load_gates(write(tmp_path, GATES), "default").mismatch({})


def test_process_speed_gates_can_be_limited_to_one_dataset(tmp_path):
    text = GATES + """
[[process_speed]]
variant = "pretrained"
faster_than = "facenet-reference"
at_least = 2.0
dataset = "dexter"

[[process_speed]]
variant = "pretrained"
faster_than = "facenet-reference"
at_least = 1.5
"""
    dexter, default = load_gates(write(tmp_path, text), "dexter"), load_gates(write(tmp_path, text), "default")
    assert [g.at_least for g in dexter.process_speed] == [2.0, 1.5]
    assert [g.at_least for g in default.process_speed] == [1.5]
    assert dexter.process_speed[0].name == "process_speed.pretrained >= 2.00x as fast as facenet-reference"
    with pytest.raises(GatesFileError, match=r"\[\[speed\]\] #1: unknown key\(s\) dataset"):
        load_gates(write(tmp_path, GATES.replace("at_least = 1.5", "at_least = 1.5\ndataset = 'dexter'")), "dexter")


def test_missing_file_is_an_empty_gate_set(tmp_path):
    gates = load_gates(tmp_path / "absent.toml", "default")
    assert not gates.found and gates.speed == [] and gates.mismatch({}) is not None


@pytest.mark.parametrize(
    "text, expected",
    [
        ("[d\n", "not valid TOML"),
        ("[d.v]\nap_cava = 'high'\n", "[d.v]: expected a number"),
        ("[d.v]\nap = 0.5\n", "unknown metric 'ap'"),
        ("[d]\nbogus = 1\n", "unknown key 'bogus'"),
        ("[[d.relations]]\nvariant = 'a'\n", "exactly one of beats"),
        ("[[d.relations]]\nvariant = 'a'\nwithin = 'b'\n", "needs tolerance"),
        ("[[d.relations]]\nvariant = 'a'\nbeats = 'b'\nmargin = 0.1\n", "unknown key(s) margin"),
        ("[[speed]]\nvariant = 'a'\nfaster_than = 'b'\nat_least = 0\n", "positive speed ratio"),
        ("[[speed]]\nvariant = 'a'\n", "expected variant"),
    ],
)
def test_bad_gates_files_say_where_and_what(tmp_path, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(GatesFileError) as info:
        load_gates(path, "d")
    assert str(path) in str(info.value) and expected in str(info.value)


# ---------------------------------------------------------------- gates sit close to what was measured

REAL_GATES = Path(__file__).resolve().parent.parent / "benchmarks" / "gates.toml"

AUDITED = """
[margins]
accuracy = 0.05
within = 0.002

[[speed]]
variant = "a"
faster_than = "b"
at_least = 1.4
measured = [1.50, 1.45, 1.52]
date = "2026-11-30"
command = "pytest benchmarks"

[d]
measured_date = "2026-11-30"
measured_command = "pytest benchmarks"
[d.a]
ap_cava = { at_least = 0.81, measured = 0.85 }
[[d.relations]]
variant = "a"
beats = "b"
by = 0.30
measured = 0.34
[[d.relations]]
variant = "a"
within = "b"
tolerance = 0.002
measured = 0.0

[e]
measured_date = "2026-12-01"
measured_command = "pytest benchmarks --facecmp-data e"
[e.b]
ap_cava = { at_least = 0.016, measured = 0.020 }

[[robustness]]
dataset = "d"
variant = "a"
metric = "rpc"
at_least = 0.82
measured = 0.867

[[robustness]]
dataset = "e"
variant = "a"
metric = "mpc"
beats = "b"
by = 0.11
measured = 0.146

[[recognition]]
dataset = "d"
recognizer = "probe-pretrained"
map_cava = 0.93
measured = 0.973

[[recognition]]
dataset = "d"
recognizer = "finetune"
beats = "probe-pretrained"
by = 0.02
measured = 0.026
"""


def test_the_real_gates_file_sits_within_its_margins_and_names_real_variants():
    from facecmp.bench.audit import audit
    from facecmp.study.variants import REGISTRY

    assert audit(REAL_GATES, REGISTRY) == []


def test_the_real_gates_file_gates_every_variant_on_the_generated_data():
    from facecmp.study.variants import REGISTRY

    gates = load_gates(REAL_GATES, "default")
    # A variant that trains on source-domain images is not run on the built-in data (no source domain there).
    assert {g.variant for g in gates.minimums} == {n for n, v in REGISTRY.items() if not v.needs_source_data}


def test_audit_passes_gates_set_within_the_margins(tmp_path):
    from facecmp.bench.audit import audit

    assert audit(write(tmp_path, AUDITED), ["a", "b"]) == []
    gates = load_gates(write(tmp_path, AUDITED), "d")
    assert gates.minimums == [MinimumGate("d", "a", "ap_cava", 0.81, measured=0.85)]
    assert gates.speed[0].measured == (1.5, 1.45, 1.52) and gates.record["measured_date"] == "2026-11-30"


@pytest.mark.parametrize(
    "change, expected",
    [
        (("at_least = 0.81", "at_least = 0.70"), "d.a.ap_cava >= 0.70 sits 0.150 below its measurement 0.850 (margin 0.05)"),
        (("at_least = 0.81", "at_least = 0.90"), "d.a.ap_cava >= 0.90 is above its measurement 0.850"),
        (("by = 0.30", "by = 0.10"), "sits 0.240 below its measurement 0.340"),
        (("tolerance = 0.002", "tolerance = 0.01"), "tolerance 0.01 is 0.010 over the measured difference 0.000"),
        (("{ at_least = 0.81, measured = 0.85 }", "0.81"), "d.a.ap_cava >= 0.81 has no measured value recorded"),
        (("at_least = 1.4\n", "at_least = 1.0\n"), "sits 0.45x below its slowest measured run 1.45x, more than the runs' spread or 0.10 of the ratio (0.14x)"),
        (("at_least = 1.4\n", "at_least = 1.47\n"), "is above its slowest measured run"),
        (("measured = [1.50, 1.45, 1.52]", "measured = [1.50, 1.45]"), "needs measured = [>= 3 ratios"),
        (('measured_date = "2026-11-30"\n', ""), "[d] needs measured_date"),
        (('variant = "a"\nbeats', 'variant = "gone"\nbeats'), "no variant gone in the registry"),
        # the margin is relative for small values: 0.01 under an AP of 0.020 is half of it
        (("at_least = 0.016, measured = 0.020", "at_least = 0.01, measured = 0.020"),
         "e.b.ap_cava >= 0.01 sits 0.010 below its measurement 0.020 (margin 0.25 of the measurement, 0.0050): set it to at least 0.0150"),
        (("at_least = 0.016, measured = 0.020", "at_least = 0.0, measured = 0.0"), "e.b.ap_cava >= 0.00 is a floor at 0"),
        # [[robustness]] and [[recognition]] gates are audited like the others
        (("at_least = 0.82\nmeasured = 0.867", "at_least = 0.80\nmeasured = 0.867"),
         "robustness d.a.rpc >= 0.80 sits 0.067 below its measurement 0.867"),
        (("at_least = 0.82\nmeasured = 0.867\n", "at_least = 0.82\n"), "robustness d.a.rpc >= 0.82 has no measured value recorded"),
        (("by = 0.11\nmeasured = 0.146", "by = 0.10\nmeasured = 0.146"), "robustness e: a mpc >= b mpc + 0.10 sits 0.046 below"),
        (("by = 0.11\nmeasured = 0.146", "by = 0.11\nmeasured = 0.10"), "is above its measurement 0.100"),
        (('variant = "a"\nmetric = "rpc"', 'variant = "gone"\nmetric = "rpc"'), "robustness d.gone.rpc >= 0.82: no variant gone in the registry"),
        (("map_cava = 0.93\nmeasured = 0.973", "map_cava = 0.90\nmeasured = 0.973"),
         "recognition d.probe-pretrained.map_cava >= 0.90 sits 0.073 below"),
        (("by = 0.02\nmeasured = 0.026", "by = 0.0\nmeasured = 0.026"), "recognition d: finetune.map_cava >= probe-pretrained + 0.00 sits 0.026 below"),
        (("by = 0.02\nmeasured = 0.026\n", "by = 0.02\n"), "recognition d: finetune.map_cava >= probe-pretrained + 0.02 has no measured value"),
    ],
)
def test_audit_names_each_gate_too_far_from_its_measurement(tmp_path, change, expected):
    from facecmp.bench.audit import audit

    text = AUDITED.replace(*change)
    assert text != AUDITED
    problems = audit(write(tmp_path, text), ["a", "b"])
    assert len(problems) == 1 and expected in problems[0], problems


def test_the_audit_reaches_every_gate_family_of_the_real_file(tmp_path):
    """Dropping the first recorded measurement of each family (dataset floors and relations of every
    dataset table, speed, process speed, robustness, recognition) makes the real file fail the audit."""
    from facecmp.bench.audit import audit
    from facecmp.bench.gates import datasets_in, load_document
    from facecmp.study.variants import REGISTRY

    text = REAL_GATES.read_text()
    headers = ["[[speed]]", "[[process_speed]]", "[[robustness]]", "[[recognition]]"]
    for dataset in datasets_in(load_document(REAL_GATES)):
        if f"\n[[{dataset}.relations]]" in text:  # a table may hold floors only (wider-face)
            headers += [f"[[{dataset}.relations]]"]
    assert len(headers) >= 6
    for header in headers:
        start = text.index("\n" + header)
        line_start = text.index("\nmeasured = ", start)
        line_end = text.index("\n", line_start + 1)
        broken = text[:line_start] + text[line_end:]
        problems = audit(write(tmp_path, broken), REGISTRY)
        assert problems and all("measured" in p or "runs" in p for p in problems), (header, problems)
    for dataset in datasets_in(load_document(REAL_GATES)):  # and each table's floors
        start = text.index(f"\n[{dataset}.")
        line_start = text.index(", measured = ", start)
        line_end = text.index("}", line_start)
        broken = text[:line_start] + " " + text[line_end:]
        assert audit(write(tmp_path, broken), REGISTRY), dataset


CURVE = """
[[curve]]
dataset = "d"
frames = "10,40"
stages = "pnet"
epochs = 3
by = 0.10
measured = 0.12
"""


def test_curve_gates_compare_the_largest_point_with_the_smallest_and_are_audited(tmp_path):
    from facecmp.bench.audit import audit
    from facecmp.bench.gates import CURVE_POINTS, curve_gates, load_document

    path = write(tmp_path, AUDITED + CURVE)
    (entry,) = curve_gates(load_document(path), "d", path)
    assert (entry.frames, entry.stages, entry.epochs) == ("10,40", "pnet", 3)
    assert curve_gates(load_document(path), "other", path) == []
    largest, smallest = CURVE_POINTS
    check(entry.gate, {largest: {"ap_cava": 0.8}, smallest: {"ap_cava": 0.7}})
    with pytest.raises(GateFailed, match="short by 0.050"):
        check(entry.gate, {largest: {"ap_cava": 0.75}, smallest: {"ap_cava": 0.7}})
    assert audit(path, ["a", "b"]) == []
    problems = audit(write(tmp_path, AUDITED + CURVE.replace("by = 0.10", "by = 0.0")), ["a", "b"])
    assert len(problems) == 1 and "sits 0.120 below its measurement 0.120" in problems[0], problems
    with pytest.raises(GatesFileError, match="unknown key"):
        curve_gates(load_document(write(tmp_path, CURVE + "colour = 1\n")), "d", tmp_path / "gates.toml")
