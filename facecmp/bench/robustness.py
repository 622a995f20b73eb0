"""The benchmark suite's robustness axis: corruption x severity cells and ``[[robustness]]`` gates.

Each condition (clean, or a corruption at a severity) is one parametrized test that runs every
selected variant on the test frames under it. Cells go to the on-disk cell cache of
``facecmp.study.robustness`` (keyed by variant identity, condition, seed and data), which is
what makes ``pytest -n 2`` (pytest-xdist) give the same report: whichever process computed a
cell, the gates and the report read the same cells.

Gates, in the gates file beside the benchmarks::

    [[robustness]]
    dataset = "dexter"            # the dataset key (archive folder name; "default" = generated)
    variant = "finetuned-cascade"
    metric = "mpc"                # clean_ap, mpc, rpc, or worst (the lowest AP of any benchmark cell)
    at_least = 0.70               # a floor ...
    # beats = "pretrained-calibrated"   # ... or a relation: metric(variant) >= metric(other) + by
    # by = 0.40
    measured = 0.746              # what was measured when the gate was set (for beats: the difference);
                                  # facecmp.bench.audit holds the gate to gates.toml's [margins]
    corruptions = "benchmark"     # optional: the axis it was measured on; other runs skip it
    severities = "3"
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Mapping, Sequence

import pytest

from facecmp.bench.gates import FloorOrRelation, GateFailed, GatesFileError, list_of_tables

GATE_METRICS = ("clean_ap", "mpc", "rpc", "worst")
DEFAULT_CORRUPTIONS = "contrast,gaussian_noise,defocus_blur,jpeg_compression"  # a quick axis on generated data
DEFAULT_SEVERITIES = "3"


@dataclass(frozen=True)
class RobustnessGate(FloorOrRelation):
    dataset: str
    variant: str
    metric: str
    at_least: float | None = None
    beats: str | None = None
    by: float = 0.0
    corruptions: str | None = None  # the axis the gate was measured on ("benchmark", names); None: any
    severities: str | None = None
    measured: float | None = None  # the value (for beats: the difference) measured when the gate was set

    def mismatch(self, settings) -> str | None:
        """Why this gate does not apply to a run over ``settings`` (another axis), else None."""
        from facecmp.study.robustness.conditions import parse_corruptions, parse_severities

        if self.corruptions is not None and parse_corruptions(self.corruptions) != settings.corruptions:
            return f"{self.name} was measured on corruptions {self.corruptions!r}; this run: {','.join(settings.corruptions)}"
        if self.severities is not None and parse_severities(self.severities) != settings.severities:
            return f"{self.name} was measured at severities {self.severities!r}; this run: {','.join(map(str, settings.severities))}"
        return None

    @property
    def variants(self) -> tuple[str, ...]:
        return (self.variant,) if self.beats is None else (self.variant, self.beats)

    @property
    def name(self) -> str:
        if self.beats is None:
            return f"robustness {self.dataset}.{self.variant}.{self.metric} >= {self.at_least:.2f}"
        return f"robustness {self.dataset}: {self.variant} {self.metric} >= {self.beats} {self.metric} + {self.by:.2f}"

    def failure(self, values: Mapping[str, Mapping[str, float | None]]) -> str | None:
        measured = values[self.variant].get(self.metric)
        if self.beats is None:
            bar = self.at_least
        else:
            other = values[self.beats].get(self.metric)
            bar = None if other is None else other + self.by
        if measured is None or bar is None:
            return f"gate {self.name} cannot be checked: {self.metric} was not measured (no benchmark corruption run?)"
        if measured + 1e-12 >= bar:
            return None
        return f"gate {self.name} failed: measured {measured:.3f}, needed {bar:.3f} (short by {bar - measured:.3f})"


def gate_values(summary: Mapping) -> dict[str, float | None]:
    """``clean_ap``, ``mpc``, ``rpc`` and ``worst`` of one variant's summary (course AP)."""
    from facecmp.study.robustness.conditions import BENCHMARK_CORRUPTIONS

    cells = [ap for name, aps in summary["per_corruption"].items() if name in BENCHMARK_CORRUPTIONS for ap in aps.values()]
    return {"clean_ap": summary["clean_ap"], "mpc": summary["mpc"], "rpc": summary["rpc"], "worst": min(cells) if cells else None}


def load_robustness_gates(path: str | Path, dataset: str | None) -> list[RobustnessGate]:
    """The ``[[robustness]]`` gates of ``dataset`` (None: of every dataset) in the TOML file ``path``
    (none when it does not exist)."""
    path = Path(path)
    if not path.is_file():
        return []
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise GatesFileError(f"{path}: not valid TOML ({exc}); fix the file or remove it") from None
    gates = []
    for i, entry in enumerate(list_of_tables(doc, "robustness", path)):
        where = f"{path}: robustness[{i}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("variant"), str):
            raise GatesFileError(f"{where}: expected a table with variant = \"...\"")
        extra = set(entry) - {"dataset", "variant", "metric", "at_least", "beats", "by", "corruptions", "severities", "measured"}
        if extra:
            raise GatesFileError(f"{where}: unknown key(s) {', '.join(sorted(extra))}")
        if entry.get("metric") not in GATE_METRICS:
            raise GatesFileError(f"{where}: metric must be one of {', '.join(GATE_METRICS)}, got {entry.get('metric')!r}")
        if ("at_least" in entry) == ("beats" in entry):
            raise GatesFileError(f"{where}: expected exactly one of at_least = <number> or beats = \"other variant\"")
        for key in ("at_least", "by", "measured"):
            if key in entry and not isinstance(entry[key], (int, float)):
                raise GatesFileError(f"{where}: {key} must be a number, got {entry[key]!r}")
        if dataset is not None and entry.get("dataset", dataset) != dataset:
            continue
        gates.append(RobustnessGate(
            entry.get("dataset", dataset) or "any", entry["variant"], entry["metric"], entry.get("at_least"), entry.get("beats"),
            float(entry.get("by", 0.0)), entry.get("corruptions"), entry.get("severities"),
            float(entry["measured"]) if "measured" in entry else None,
        ))
    return gates


def check_gate(gate: RobustnessGate, summaries: Mapping[str, Mapping]) -> None:
    message = gate.failure({name: gate_values(s) for name, s in summaries.items()})
    if message is not None:
        raise GateFailed(message)


def parse_axis(corruptions: str | None, severities: str | None):
    """The plugin options as a ``RobustnessSettings`` (``none`` or an empty value: no robustness axis)."""
    from facecmp.study.robustness.conditions import parse_corruptions, parse_severities
    from facecmp.study.robustness.grid import RobustnessSettings

    if corruptions is None or corruptions.strip() in ("", "none"):
        return None
    return RobustnessSettings(corruptions=parse_corruptions(corruptions), severities=parse_severities(severities or DEFAULT_SEVERITIES))


class BenchRobustness:
    """The robustness state of one benchmark session (a ``BenchSession`` gives data and variants)."""

    def __init__(self, session, settings, asked: bool = False):
        self.session = session
        self.settings = settings
        self.asked = asked  # the run named the axis (--facecmp-corruptions): it must run, not skip
        self.ran = False  # a robustness test ran in this run (set from the test reports, on the xdist controller too)

    @cached_property
    def conditions(self):
        return self.settings.conditions()

    @cached_property
    def cache(self):
        from facecmp.study.robustness.cells import CellCache
        from facecmp.data.fingerprint import data_fingerprint

        return CellCache(self.session.options.cache_dir / "robustness", data_fingerprint(self.session.test), self.settings.seed)

    def grid_names(self, names: Sequence[str] | None = None) -> list[str]:
        """``names``, or every selected variant that can run here: an optional peer that is not
        installed and was not asked for by name is left out of the grid, as its accuracy test is
        skipped (asked for by name, its MissingPeerError fails the run)."""
        if names:
            return list(names)
        from facecmp.errors import MissingPeerError

        out = []
        for name in self.session.variant_names:
            try:
                self.session.prepared(name)
            except MissingPeerError:
                if self.session.requested(name):
                    raise
                continue
            out.append(name)
        return out

    def grid_variants(self, names: Sequence[str] | None = None):
        from facecmp.study.robustness.cells import GridVariant, variant_identity

        out = []
        for name in self.grid_names(names):
            prepared = self.session.prepared(name)
            out.append(GridVariant(name, prepared.detector, variant_identity(name, prepared.detector, prepared.settings)))
        return out

    def cells(self, conditions, names: Sequence[str] | None = None):
        """``name -> condition -> Cell`` (cached cells reused, the rest computed and cached)."""
        from dataclasses import replace

        from facecmp.study.robustness.grid import run_grid

        settings = replace(self.settings, workers=self.session.options.workers)
        return run_grid(self.grid_variants(names), self.session.test, settings, self.cache, conditions=conditions, progress=False)

    def summaries(self, names: Sequence[str] | None = None, *, compute: bool = True) -> list[dict]:
        """Each variant's P_clean / mPC / rPC summary over the whole axis.

        Conditions run in reverse order, so that under pytest-xdist a gate test and the cell
        tests (in forward order) in another process rarely compute the same cell twice.
        """
        from facecmp.study.robustness.metrics import variant_summary

        names = self.grid_names(names)
        if compute:
            cells = {n: {} for n in names}
            for condition in reversed(self.conditions):
                for name, got in self.cells([condition], names).items():
                    cells[name].update(got)
        else:
            variants = self.grid_variants(names)
            cells = {v.name: {c: self.cache.get(v, c) for c in self.conditions} for v in variants}
            cells = {n: {c: cell for c, cell in got.items() if cell is not None} for n, got in cells.items()}
        ordered = {n: {c: cells[n][c] for c in self.conditions if c in cells[n]} for n in names}
        return [variant_summary(n, ordered[n]) for n in names if ordered[n]]

    def write_report(self, out: Path) -> Path | None:
        """robustness.md etc. beside the accuracy report, from the cached cells (no computing)."""
        from facecmp.study.robustness.report import write_robustness_report

        summaries = self.summaries(compute=False)
        if not summaries:
            return None
        return write_robustness_report(out, summaries, test=self.session.test, settings=self.settings,
                                       variants=self.grid_variants([s["name"] for s in summaries]))

    def table(self) -> str | None:
        from facecmp.study.robustness.report import summary_table

        summaries = self.summaries(compute=False)
        return summary_table(summaries) if summaries else None


# -- the pytest wiring (registered by facecmp.bench.plugin) ------------------------------------------
def add_options(group) -> None:
    group.addoption(
        "--facecmp-corruptions", default=None,
        help=f"robustness axis: all, benchmark, extra, geometric, names, or none (default {DEFAULT_CORRUPTIONS}; "
        "skipped with one line when the robustness extra is missing, unless this option asks for the axis: then it fails)",
    )
    group.addoption("--facecmp-severities", default=DEFAULT_SEVERITIES, help=f"severities 1-5 of the robustness axis (default {DEFAULT_SEVERITIES})")


class RobustnessPlugin:
    """Fixtures ``facecmp_condition`` (parametrized), ``facecmp_robustness``, ``facecmp_robustness_gate``; the report."""

    MARK = "facecmp_robustness"

    def __init__(self, config, session, gates_path):
        from facecmp.errors import FacecmpError

        self.session = session
        self.gates_path = gates_path  # (config, test path) -> gates file
        given = config.getoption("--facecmp-corruptions")
        try:
            settings = parse_axis(DEFAULT_CORRUPTIONS if given is None else given, config.getoption("--facecmp-severities"))
        except FacecmpError as exc:
            raise pytest.UsageError(f"--facecmp-corruptions/--facecmp-severities: {exc}") from None
        self.state = None if settings is None else BenchRobustness(session, settings, asked=given is not None)
        config.stash[STATE_KEY] = self.state
        config.addinivalue_line("markers", f"{self.MARK}: uses the robustness axis (set by facecmp's plugin)")

    def pytest_generate_tests(self, metafunc) -> None:
        if "facecmp_condition" in metafunc.fixturenames:
            conditions = self.state.conditions if self.state else []
            metafunc.parametrize("facecmp_condition", conditions, ids=[c.label for c in conditions])
        if "facecmp_robustness_gate" in metafunc.fixturenames:
            gates = load_robustness_gates(self.gates_path(metafunc.config, metafunc.definition.path), self.session.dataset_key)
            metafunc.parametrize("facecmp_robustness_gate", gates, ids=[g.name.replace(" ", "_") for g in gates])

    def pytest_collection_modifyitems(self, items) -> None:
        for item in items:
            if "facecmp_robustness" in getattr(item, "fixturenames", ()):
                item.add_marker(self.MARK)

    def pytest_runtest_logreport(self, report) -> None:
        # Reports reach the xdist controller too, which runs no test but writes the report.
        if self.state is not None and report.when == "call" and report.passed and self.MARK in report.keywords:
            self.state.ran = True

    def pytest_sessionfinish(self, session) -> None:
        out = self.session.options.report
        if out is not None and self.state is not None and self.state.ran:
            self.state.write_report(out)

    def pytest_terminal_summary(self, terminalreporter) -> None:
        if self.state is None or not self.state.ran:
            return
        table = self.state.table()
        if table:
            s = self.state.settings
            terminalreporter.section(f"facecmp robustness: {self.session.dataset_key}")
            terminalreporter.write_line(f"corruptions {', '.join(s.corruptions)}; severities {', '.join(map(str, s.severities))}")
            terminalreporter.write_line(table)


STATE_KEY = pytest.StashKey["BenchRobustness | None"]()


@pytest.fixture(scope="session")
def facecmp_robustness(pytestconfig) -> BenchRobustness:
    """The session's robustness axis: skips when it is off, or when the robustness extra is missing
    and the run did not ask for the axis; fails with the same line when it did (--facecmp-corruptions)."""
    from facecmp.study.robustness.compat import missing_dependency

    state = pytestconfig.stash.get(STATE_KEY, None)
    if state is None:
        pytest.skip("robustness axis off (--facecmp-corruptions none)")
    problem = missing_dependency()
    if problem and state.asked:
        pytest.fail(f"--facecmp-corruptions asked for the robustness axis, which cannot run: {problem}", pytrace=False)
    if problem:
        pytest.skip(problem)
    return state


def register(config, session, gates_path) -> None:
    """Called from the plugin's ``pytest_configure``: the robustness hooks and fixtures."""
    import sys

    config.pluginmanager.register(RobustnessPlugin(config, session, gates_path), "facecmp-robustness")
    config.pluginmanager.register(sys.modules[__name__], "facecmp-robustness-fixtures")
