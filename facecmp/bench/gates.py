"""Benchmark gates: minimum accuracy per variant, and relations between variants, read from TOML.

A gates file has one table per dataset (``[default]`` for the built-in generated data,
``[dexter]`` for an archive folder named ``dexter``) and one ``[[speed]]`` list that holds for
every dataset::

    [dexter]
    test = "split:50"                # how the test images were chosen when the numbers were measured
    n_test_images = 200              # optional, like dev_per_folder / seed / test_fingerprint
    [dexter.finetuned-pnet]          # minimum per metric (ap_cava, ap_voc, recall, precision)
    ap_cava = 0.60
    [[dexter.relations]]             # a.metric >= b.metric + by
    variant = "finetuned-pnet"
    beats = "pretrained"
    by = 0.05
    [[dexter.relations]]             # |a.metric - b.metric| <= tolerance
    variant = "pretrained"
    within = "facenet-reference"
    tolerance = 0.01

    [[speed]]                        # ms/image of `than` / ms/image of `variant` >= at_least
    variant = "pretrained"
    faster_than = "facenet-reference"
    at_least = 1.0

    [[process_speed]]                # the same for whole `facecmp detect` processes (median s)
    variant = "pretrained"
    faster_than = "facenet-reference"
    at_least = 2.0
    dataset = "dexter"               # optional: only for this dataset's runs

    [[curve]]                        # the label budget (benchmarks/test_curve.py): a tiny `facecmp curve`
    dataset = "default"
    frames = "10,all"                # the curve it was measured on (CurveSettings); other runs skip it
    stages = "pnet"
    epochs = 2
    by = 0.10                        # AP (metric) at the largest point >= AP at the smallest + by
    measured = 0.14                  # the measured difference

Speed gates are ratios measured in the same run, never absolute seconds. A failed gate says
which gate failed and by how much.

Every gate also records what was measured when it was set, so that a gate cannot drift far
below what the code achieves (:func:`facecmp.bench.audit.audit` checks it; tests/test_gates.py runs it on the
real file)::

    [margins]                        # how far below its measurement a gate may sit
    accuracy = 0.05                  # a floor (AP, recall, mAP, mPC ...) or a `beats` margin: at most
    relative = 0.25                  #   min(accuracy, relative * measured) below it (small values: relative)
    within = 0.002                   # a `within` tolerance over the measured difference
    speed = 0.10                     # a speed gate: this share of its slowest run, or the runs' spread

    [dexter]
    measured_date = "2026-11-28"     # when and how the table's numbers were measured
    measured_command = "pytest benchmarks/test_accuracy.py --facecmp-data ..."
    [dexter.finetuned-pnet]
    ap_cava = { at_least = 0.70, measured = 0.745 }
    [[dexter.relations]]
    variant = "finetuned-pnet"
    beats = "pretrained"
    by = 0.50
    measured = 0.557                 # the measured difference (|difference| for `within`)

    [[speed]]
    variant = "pretrained"
    faster_than = "facenet-reference"
    at_least = 1.4
    measured = [1.66, 1.59, 1.55]    # >= 3 runs; at most their spread (or margins.speed of it) below the slowest
    date = "2026-11-28"
    command = "pytest benchmarks/test_speed.py -k speed_gate"

The ``[[robustness]]`` (facecmp/bench/robustness.py) and ``[[recognition]]`` (facecmp/bench/recognition.py)
lists record ``measured = <value>`` (the measured difference for ``beats``) beside each gate too,
and the audit holds them to the same margins.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from facecmp.errors import FacecmpError

TARGET_METRICS = ("ap_cava", "ap_voc", "recall", "precision")
# A source-domain dataset's table (benchmarks/test_source.py) gates facecmp.study.source's metrics:
# wider_easy / wider_medium / wider_hard (WIDER's protocol), source_ap_cava ... (the course evaluator).
SOURCE_METRICS = ("wider_easy", "wider_medium", "wider_hard", "source_ap_cava", "source_ap_voc", "source_recall", "source_precision")
METRICS = TARGET_METRICS + SOURCE_METRICS
# Keys of a dataset table that describe how its numbers were measured (not gates).
SETTING_KEYS = ("test", "n_test_images", "dev_per_folder", "seed", "test_fingerprint")
# Keys of a dataset table that record when and how its numbers were measured.
RECORD_KEYS = ("measured_date", "measured_command")
# Top-level tables that are not datasets.
NOT_DATASETS = ("speed", "process_speed", "margins", "curve")
# The two points a `[[curve]]` gate compares (its BeatsGate's variants), and the keys that say
# which curve it was measured on.
CURVE_POINTS = ("largest-point", "smallest-point")
CURVE_KEYS = ("frames", "stages", "epochs")
DEFAULT_MARGINS = {"accuracy": 0.05, "relative": 0.25, "within": 0.002, "speed": 0.10}
MIN_SPEED_RUNS = 3

Values = Mapping[str, Mapping[str, float]]  # variant -> metric -> measured value


class GatesFileError(FacecmpError):
    """The gates file cannot be read or says something we do not understand."""


class GateFailed(AssertionError):
    """A benchmark gate did not hold; the message says which and by how much."""


def as_written(v: float) -> str:
    """A threshold as written: at least two decimals, more only when it has them."""
    text = f"{v:.2f}"
    return text if math.isclose(float(text), v, abs_tol=1e-12) else f"{v:g}"


@dataclass(frozen=True)
class MinimumGate:
    scope: str
    variant: str
    metric: str
    minimum: float
    measured: float | None = None  # the value measured when the gate was set

    @property
    def variants(self) -> tuple[str, ...]:
        return (self.variant,)

    relation = False  # a floor on one variant (the audit's `bound` is the floor)

    @property
    def bound(self) -> float:
        """The number the audit holds against ``measured``."""
        return self.minimum

    @property
    def name(self) -> str:
        return f"{self.scope}.{self.variant}.{self.metric} >= {as_written(self.minimum)}"

    def failure(self, values: Values) -> str | None:
        measured = values[self.variant][self.metric]
        if measured >= self.minimum:
            return None
        return f"gate {self.name} failed: measured {measured:.3f} (short by {self.minimum - measured:.3f})"


@dataclass(frozen=True)
class BeatsGate:
    scope: str
    variant: str
    other: str
    metric: str
    by: float
    measured: float | None = None  # the measured difference

    @property
    def variants(self) -> tuple[str, ...]:
        return (self.variant, self.other)

    relation = True  # the audit's `bound` is the margin `by`

    @property
    def bound(self) -> float:
        return self.by

    @property
    def name(self) -> str:
        return f"{self.scope}.{self.variant}.{self.metric} >= {self.other}.{self.metric} + {as_written(self.by)}"

    def failure(self, values: Values) -> str | None:
        a, b = values[self.variant][self.metric], values[self.other][self.metric]
        if a - b >= self.by:
            return None
        return (
            f"gate {self.name} failed: measured {a:.3f} vs {b:.3f} ({a - b:+.3f}, short by {self.by - (a - b):.3f})"
        )


@dataclass(frozen=True)
class WithinGate:
    scope: str
    variant: str
    other: str
    metric: str
    tolerance: float
    measured: float | None = None  # the measured |difference|

    @property
    def variants(self) -> tuple[str, ...]:
        return (self.variant, self.other)

    @property
    def name(self) -> str:
        return f"{self.scope}.{self.variant}.{self.metric} within {as_written(self.tolerance)} of {self.other}.{self.metric}"

    def failure(self, values: Values) -> str | None:
        a, b = values[self.variant][self.metric], values[self.other][self.metric]
        if abs(a - b) <= self.tolerance:
            return None
        return (
            f"gate {self.name} failed: measured {a:.3f} vs {b:.3f} "
            f"(differs by {abs(a - b):.3f}, over by {abs(a - b) - self.tolerance:.3f})"
        )


def _amount(value: float, unit: str) -> str:
    return f"{value:.1f}" if unit.startswith("ms") else f"{value:.2f}"


@dataclass(frozen=True)
class SpeedGate:
    """``variant`` is at least ``at_least`` times as fast as ``other`` (ms/image ratio, same run)."""

    variant: str
    other: str
    at_least: float
    scope: str = "speed"
    metric: str = "ms_per_image"
    unit: str = "ms/image"
    measured: tuple[float, ...] = ()  # the ratio in each run when the gate was set
    date: str | None = None
    command: str | None = None

    @property
    def variants(self) -> tuple[str, ...]:
        return (self.variant, self.other)

    @property
    def name(self) -> str:
        return f"{self.scope}.{self.variant} >= {as_written(self.at_least)}x as fast as {self.other}"

    def ratio(self, values: Values) -> float:
        return values[self.other][self.metric] / values[self.variant][self.metric]

    def failure(self, values: Values) -> str | None:
        ratio = self.ratio(values)
        if ratio >= self.at_least:
            return None
        a, b = values[self.variant][self.metric], values[self.other][self.metric]
        return (
            f"gate {self.name} failed: measured {ratio:.2f}x ({_amount(a, self.unit)} vs {_amount(b, self.unit)} {self.unit}; "
            f"short by {self.at_least - ratio:.2f}x)"
        )


Gate = MinimumGate | BeatsGate | WithinGate | SpeedGate


class FloorOrRelation:
    """For the gate lists kept beside the dataset tables (``[[robustness]]``, ``[[recognition]]``): an
    entry is a floor ``at_least`` or a relation ``beats`` other + ``by``; ``audit`` holds ``bound``
    against the entry's ``measured``."""

    @property
    def relation(self) -> bool:
        return self.beats is not None

    @property
    def bound(self) -> float:
        return self.by if self.relation else self.at_least


def check(gate: Gate, values: Values) -> None:
    """Raise ``GateFailed`` with the gate's message when it does not hold."""
    message = gate.failure(values)
    if message is not None:
        raise GateFailed(message)


def check_all(gates, values: Values) -> None:
    """Check every gate; one ``GateFailed`` listing all failures (so one run shows them all)."""
    failures = [m for m in (g.failure(values) for g in gates) if m is not None]
    if failures:
        raise GateFailed("\n".join(failures))


@dataclass
class GateSet:
    """The gates of one dataset (plus the dataset-independent speed gates) from one file."""

    path: Path
    dataset: str
    found: bool  # whether the file has a table for this dataset
    settings: dict = field(default_factory=dict)
    record: dict = field(default_factory=dict)  # measured_date, measured_command
    minimums: list[MinimumGate] = field(default_factory=list)
    relations: list[BeatsGate | WithinGate] = field(default_factory=list)
    speed: list[SpeedGate] = field(default_factory=list)
    process_speed: list[SpeedGate] = field(default_factory=list)

    def minimums_for(self, variant: str, metrics=TARGET_METRICS) -> list[MinimumGate]:
        return [g for g in self.minimums if g.variant == variant and g.metric in metrics]

    def mismatch(self, run: Mapping[str, object]) -> str | None:
        """Why the accuracy gates do not apply to a run with these settings (None when they do)."""
        if not self.found:
            return (
                f"{self.path}: no gates for dataset {self.dataset!r}; add a [{self.dataset}] table "
                "(measure first, then set gates below the measured numbers)"
            )
        for key, expected in self.settings.items():
            if key in run and run[key] != expected:
                return (
                    f"{self.path}: the [{self.dataset}] gates were measured with {key} = {expected!r}, "
                    f"this run has {run[key]!r}; accuracy gates do not apply"
                )
        return None


def _where(path: Path, key: str) -> str:
    return f"{path}: [{key}]"


def number_at(path: Path, key: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise GatesFileError(f"{_where(path, key)}: expected a number, got {value!r}")
    return float(value)


def _metric(path: Path, key: str, metric) -> str:
    if metric not in METRICS:
        raise GatesFileError(f"{_where(path, key)}: unknown metric {metric!r}; use one of {', '.join(METRICS)}")
    return metric


def _relation(path: Path, scope: str, i: int, entry) -> BeatsGate | WithinGate:
    key = f"[{scope}.relations] #{i + 1}"
    if not isinstance(entry, dict) or "variant" not in entry:
        raise GatesFileError(f"{path}: {key}: expected a table with variant = \"...\"")
    metric = _metric(path, key, entry.get("metric", "ap_cava"))
    extra = set(entry) - {"variant", "metric", "beats", "by", "within", "tolerance", "measured"}
    if extra:
        raise GatesFileError(f"{path}: {key}: unknown key(s) {', '.join(sorted(extra))}")
    measured = number_at(path, key, entry["measured"]) if "measured" in entry else None
    if "beats" in entry and "within" not in entry:
        return BeatsGate(scope, entry["variant"], entry["beats"], metric, number_at(path, key, entry.get("by", 0.0)), measured)
    if "within" in entry and "beats" not in entry:
        if "tolerance" not in entry:
            raise GatesFileError(f"{path}: {key}: 'within' needs tolerance = <max AP difference>")
        return WithinGate(scope, entry["variant"], entry["within"], metric, number_at(path, key, entry["tolerance"]), measured)
    raise GatesFileError(f"{path}: {key}: expected exactly one of beats = \"other\" or within = \"other\"")


# The two lists of speed gates: what each measures, and the keys its entries may have.
_SPEED_LISTS = {
    "speed": (dict(scope="speed", metric="ms_per_image", unit="ms/image"), set()),
    "process_speed": (dict(scope="process_speed", metric="seconds", unit="s per run"), {"dataset"}),
}


def _speed(path: Path, i: int, entry, list_name: str) -> SpeedGate:
    key = f"[[{list_name}]] #{i + 1}"
    if not isinstance(entry, dict) or not {"variant", "faster_than", "at_least"} <= set(entry):
        raise GatesFileError(f"{path}: {key}: expected variant = \"a\", faster_than = \"b\", at_least = <ratio>")
    measures, optional = _SPEED_LISTS[list_name]
    extra = set(entry) - {"variant", "faster_than", "at_least", "measured", "date", "command"} - optional
    if extra:
        raise GatesFileError(f"{path}: {key}: unknown key(s) {', '.join(sorted(extra))}")
    ratio = number_at(path, key, entry["at_least"])
    if ratio <= 0:
        raise GatesFileError(f"{path}: {key}: at_least must be a positive speed ratio, got {ratio}")
    runs = entry.get("measured", [])
    if not isinstance(runs, list):
        raise GatesFileError(f"{path}: {key}: measured must be a list of the ratios measured, one per run")
    return SpeedGate(
        entry["variant"], entry["faster_than"], ratio, **measures, measured=tuple(number_at(path, key, r) for r in runs),
        date=entry.get("date"), command=entry.get("command"),
    )


def list_of_tables(doc: dict, list_name: str, path: Path) -> list:
    """The entries of ``[[list_name]]`` (none when absent); GatesFileError when it is not a list."""
    entries = doc.get(list_name, [])
    if not isinstance(entries, list):
        raise GatesFileError(f"{path}: '{list_name}' must be a list of tables ([[{list_name}]])")
    return entries


def speed_list(doc: dict, list_name: str, dataset: str | None, path: Path, every: bool = False) -> list[SpeedGate]:
    """Every entry of ``[[list_name]]`` checked; those limited to another dataset left out (unless ``every``)."""
    entries = list_of_tables(doc, list_name, path)
    gates = [_speed(path, i, e, list_name) for i, e in enumerate(entries)]
    return [g for g, e in zip(gates, entries) if every or e.get("dataset", dataset) == dataset]


@dataclass(frozen=True)
class CurveGate:
    """A `[[curve]]` entry: the curve to measure (``frames``, ``stages``, ``epochs``) and the gate on it."""

    dataset: str
    frames: str
    stages: str
    epochs: int | None
    gate: BeatsGate


def curve_gates(doc: dict, dataset: str | None, path: Path = Path("gates.toml")) -> list[CurveGate]:
    """The ``[[curve]]`` entries for ``dataset`` (every one when None), checked."""
    gates = []
    for i, entry in enumerate(list_of_tables(doc, "curve", path)):
        key = f"[[curve]] #{i + 1}"
        if not isinstance(entry, dict) or not {"dataset", "frames", "stages"} <= set(entry):
            raise GatesFileError(f"{path}: {key}: expected dataset, frames, stages (and by, measured)")
        extra = set(entry) - {"dataset", "metric", "by", "measured", *CURVE_KEYS}
        if extra:
            raise GatesFileError(f"{path}: {key}: unknown key(s) {', '.join(sorted(extra))}")
        measured = number_at(path, key, entry["measured"]) if "measured" in entry else None
        beats = BeatsGate(f"curve.{entry['dataset']}", *CURVE_POINTS, _metric(path, key, entry.get("metric", "ap_cava")),
                          number_at(path, key, entry.get("by", 0.0)), measured)
        epochs = entry.get("epochs")
        gates.append(CurveGate(entry["dataset"], str(entry["frames"]), str(entry["stages"]), int(epochs) if epochs else None, beats))
    return [g for g in gates if dataset is None or g.dataset == dataset]


def _minimum(path: Path, key: str, value) -> tuple[float, float | None]:
    """A variant's minimum: a number, or ``{ at_least = <gate>, measured = <value> }``."""
    if isinstance(value, dict):
        extra = set(value) - {"at_least", "measured"}
        if extra or "at_least" not in value:
            raise GatesFileError(f"{_where(path, key)}: expected a number or {{ at_least = <gate>, measured = <value> }}")
        measured = number_at(path, key, value["measured"]) if "measured" in value else None
        return number_at(path, key, value["at_least"]), measured
    return number_at(path, key, value), None


def parse_gates(doc: dict, dataset: str, path: Path = Path("gates.toml")) -> GateSet:
    gates = GateSet(
        path, dataset, found=dataset in doc,
        speed=speed_list(doc, "speed", dataset, path),
        process_speed=speed_list(doc, "process_speed", dataset, path),
    )
    table = doc.get(dataset, {})
    if not isinstance(table, dict):
        raise GatesFileError(f"{path}: {dataset!r} must be a table")
    for key, value in table.items():
        if key in SETTING_KEYS:
            gates.settings[key] = value
        elif key in RECORD_KEYS:
            gates.record[key] = value
        elif key == "relations":
            if not isinstance(value, list):
                raise GatesFileError(f"{path}: {dataset}.relations must be a list of tables ([[{dataset}.relations]])")
            gates.relations.extend(_relation(path, dataset, i, e) for i, e in enumerate(value))
        elif isinstance(value, dict):  # a variant's minimums
            for metric, minimum in value.items():
                where = f"{dataset}.{key}"
                gates.minimums.append(MinimumGate(dataset, key, _metric(path, where, metric), *_minimum(path, where, minimum)))
        else:
            raise GatesFileError(
                f"{_where(path, dataset)}: unknown key {key!r}; expected a variant table, relations, "
                f"or one of {', '.join(SETTING_KEYS + RECORD_KEYS)}"
            )
    return gates


def load_gates(path: str | Path, dataset: str) -> GateSet:
    """The gates of ``dataset`` in the TOML file ``path`` (an empty set when the file does not exist)."""
    path = Path(path)
    if not path.is_file():
        return GateSet(path, dataset, found=False)
    return parse_gates(load_document(path), dataset, path)


def load_document(path: str | Path) -> dict:
    path = Path(path)
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise GatesFileError(f"{path}: not valid TOML ({exc}); fix the file or remove it") from None


def datasets_in(doc: dict) -> list[str]:
    """The dataset tables of a gates file."""
    return [k for k, v in doc.items() if isinstance(v, dict) and k not in NOT_DATASETS]
