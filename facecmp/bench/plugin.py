"""facecmp's pytest plugin (registered through the ``pytest11`` entry point).

Wiring only: options -> ``BenchOptions``; one ``BenchSession`` per run (facecmp/bench/session.py
does the work); fixtures; ``facecmp_variant`` / gate parametrization; the table and report at the end.
Nothing is loaded until a test requests one of the fixtures below.

The plugin loads in every project of the environment it is installed in, so every fixture and
parametrized name it adds carries the ``facecmp_`` prefix (as pytest-benchmark's is ``benchmark``):
a project's own ``variant`` or ``result`` fixture is left alone.

Fixtures: ``facecmp_session``, ``facecmp_splits``, ``facecmp_variant`` (parametrized: every
selected variant), ``facecmp_prepared`` (its ready detector), ``facecmp_result`` (that variant's
detections + evaluation, computed once per session), ``facecmp_source_result`` (the same on
--facecmp-source-data), ``facecmp_gates`` (the gates of this dataset), ``facecmp_relation`` /
``facecmp_speed_gate`` / ``facecmp_process_gate`` (parametrized over the relational / speed gates
of the gates file); the robustness benchmark's in facecmp/bench/robustness.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from facecmp.bench.session import BENCH_DEV_PER_FOLDER, DEFAULT_SPLIT, BenchOptions, BenchSession, default_cache_dir
from facecmp.errors import FacecmpError, MissingPeerError
from facecmp.bench import robustness
from facecmp.bench.gates import GateFailed, GateSet, load_gates
from facecmp.process import exact_float32_on_cuda, retain_freed_memory

SESSION_KEY = pytest.StashKey[BenchSession]()
GATES_FILE = "gates.toml"
VARIANT = "facecmp_variant"  # the parametrized name: one test per selected variant


def pytest_addoption(parser):
    group = parser.getgroup("facecmp", "facecmp benchmark suite")
    group.addoption("--facecmp-data", default=None, help="course archive root (default: the built-in generated dataset)")
    group.addoption("--facecmp-split", default=DEFAULT_SPLIT, help="test images when the archive has no test part: split:N (N per training folder)")
    group.addoption("--facecmp-variants", default=None, help="comma-separated subset of variants to run")
    group.addoption("--facecmp-report", default=None, help="folder for report.md, results.json and plots")
    group.addoption("--facecmp-device", default="cpu", help="torch device (default cpu)")
    group.addoption("--facecmp-cache", default=None, help="cache for generated data and trained checkpoints (default: $FACECMP_CACHE or <rootdir>/.facecmp_cache)")
    group.addoption("--facecmp-max-test-images", type=int, default=None, metavar="N", help="evaluate on the first N test images only (time budget)")
    group.addoption("--facecmp-workers", type=int, default=0, metavar="N", help="worker processes for the evaluation pass over the test images (default 0: in process)")
    group.addoption("--facecmp-dev", type=int, default=BENCH_DEV_PER_FOLDER, metavar="N", help=f"dev images per training folder for threshold calibration (default {BENCH_DEV_PER_FOLDER})")
    group.addoption("--facecmp-recognizers", default=None, metavar="KINDS",
                    help="task 2: comma-separated recognizer kinds to train and gate (default: all; see facecmp.detection.recognizer.KINDS)")
    group.addoption("--facecmp-gates", default=None, help=f"gates file (default: {GATES_FILE} beside the test module)")
    group.addoption("--facecmp-source-data", default=None, metavar="ROOT",
                    help="also score the variants on this source-domain test set (any format; WIDER FACE with its .mat "
                    "files: the official protocol); gated by the [<folder name>] table of the gates file")
    group.addoption("--facecmp-source-split", default=None, metavar="split:N",
                    help="score N source images per folder (WIDER: per event), chosen with the seed (default: all)")
    robustness.add_options(group)


def _options(config: pytest.Config) -> BenchOptions:
    opt = config.getoption
    variants = opt("--facecmp-variants")
    recognizers = opt("--facecmp-recognizers")
    cache = opt("--facecmp-cache")
    return BenchOptions(
        data=Path(opt("--facecmp-data")) if opt("--facecmp-data") else None,
        split=opt("--facecmp-split"),
        variants=tuple(v.strip() for v in variants.split(",") if v.strip()) if variants else None,
        report=Path(opt("--facecmp-report")) if opt("--facecmp-report") else None,
        device=opt("--facecmp-device"),
        cache_dir=Path(cache) if cache else default_cache_dir(config.rootpath),
        max_test_images=opt("--facecmp-max-test-images"),
        workers=opt("--facecmp-workers"),
        dev_per_folder=opt("--facecmp-dev"),
        recognizers=tuple(k.strip() for k in recognizers.split(",") if k.strip()) if recognizers else None,
        source_data=Path(opt("--facecmp-source-data")) if opt("--facecmp-source-data") else None,
        source_split=opt("--facecmp-source-split"),
    )


def pytest_configure(config: pytest.Config) -> None:
    config.stash[SESSION_KEY] = BenchSession(_options(config))
    robustness.register(config, config.stash[SESSION_KEY], _gates_path)


def _session(config: pytest.Config) -> BenchSession:
    return config.stash[SESSION_KEY]


def _gates_path(config: pytest.Config, test_path: Path) -> Path:
    given = config.getoption("--facecmp-gates")
    return Path(given) if given else Path(test_path).parent / GATES_FILE


def _facecmp_errors_as_failures(fn, *args, requested: bool = False):
    """Run a session step; a FacecmpError becomes a plain failure with its message (no traceback).
    An optional peer that is not installed is skipped with the line that says what to install,
    unless the run asked for it by name (``requested``): then it fails with that line. A peer
    that is installed but broken, or answers nothing, always fails."""
    try:
        return fn(*args)
    except MissingPeerError as exc:
        if requested:
            pytest.fail(f"{exc} (asked for by name with --facecmp-variants)", pytrace=False)
        pytest.skip(str(exc))
    except FacecmpError as exc:
        pytest.fail(str(exc), pytrace=False)


def skip_unless_selected(session: BenchSession, names) -> None:
    """Skip the calling test when a variant it needs was left out with ``--facecmp-variants``
    (the runner's explicit choice; every other reason a gate cannot be evaluated fails)."""
    unselected = [v for v in names if v not in session.variant_names]
    if unselected:
        pytest.skip(f"{', '.join(unselected)} not selected (--facecmp-variants)")


# -- parametrization ---------------------------------------------------------------------------
def _explicitly_parametrized(metafunc, name: str) -> bool:
    for marker in metafunc.definition.iter_markers("parametrize"):
        names = marker.args[0]
        names = [n.strip() for n in names.split(",")] if isinstance(names, str) else list(names)
        if name in names:
            return True
    return False


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    session = _session(metafunc.config)
    if VARIANT in metafunc.fixturenames and not _explicitly_parametrized(metafunc, VARIANT):
        try:
            names, problem = session.variant_names, None
        except FacecmpError as exc:
            names, problem = [], str(exc)
        if problem:
            pytest.fail(f"--facecmp-variants: {problem}", pytrace=False)
        metafunc.parametrize(VARIANT, names, ids=names)
    for fixture, attr in (
        ("facecmp_relation", "relations"), ("facecmp_speed_gate", "speed"), ("facecmp_process_gate", "process_speed"),
    ):
        if fixture in metafunc.fixturenames:
            gates = load_gates(_gates_path(metafunc.config, metafunc.definition.path), session.dataset_key)
            chosen = getattr(gates, attr)
            metafunc.parametrize(fixture, chosen, ids=[g.name.replace(" ", "_") for g in chosen])


# -- fixtures ------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def facecmp_session(pytestconfig: pytest.Config) -> BenchSession:
    # The process settings `facecmp` itself runs with, so that benchmarks measure what users
    # get; set here, where a benchmark first asks for the session, not for every pytest run.
    retain_freed_memory()
    exact_float32_on_cuda()
    return _session(pytestconfig)


@pytest.fixture(scope="session")
def facecmp_splits(facecmp_session: BenchSession):
    return _facecmp_errors_as_failures(lambda: facecmp_session.splits)


@pytest.fixture
def facecmp_prepared(facecmp_session: BenchSession, facecmp_variant: str):
    """The variant ready to detect (``Prepared``: its detector, training seconds, settings)."""
    return _facecmp_errors_as_failures(facecmp_session.prepared, facecmp_variant, requested=facecmp_session.requested(facecmp_variant))


@pytest.fixture
def facecmp_result(facecmp_session: BenchSession, facecmp_variant: str):
    """The variant's detections and evaluation on the test images (``VariantResult``, once per session)."""
    return _facecmp_errors_as_failures(facecmp_session.result, facecmp_variant, requested=facecmp_session.requested(facecmp_variant))


@pytest.fixture
def facecmp_source_result(facecmp_session: BenchSession, facecmp_variant: str):
    """The variant scored on --facecmp-source-data (skipped when the run gave none)."""
    if facecmp_session.options.source_data is None:
        pytest.skip("no --facecmp-source-data given: the source-domain benchmarks need a second test set")
    return _facecmp_errors_as_failures(facecmp_session.source_result, facecmp_variant)


@pytest.fixture
def facecmp_gates(request: pytest.FixtureRequest, facecmp_session: BenchSession) -> GateSet:
    return _facecmp_errors_as_failures(
        load_gates, _gates_path(request.config, request.path), facecmp_session.dataset_key
    )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item):
    """A failed gate is reported as its message alone: which gate, measured what, short by how much."""
    try:
        return (yield)
    except GateFailed as exc:
        pytest.fail(str(exc), pytrace=False)


# -- the end of the session --------------------------------------------------------------------
@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    bench = _session(session.config)
    out = bench.options.report
    if out is not None and bench.evaluated():
        bench.report_path = bench.write_report(out)


def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:
    bench = _session(config)
    table = bench.summary_table()
    if table is None and not bench.timings.processes():
        return
    terminalreporter.section(f"facecmp: {bench.dataset_key}")
    if table is not None:
        terminalreporter.write_line(table)
    for note in bench.notes():
        terminalreporter.write_line(f"- {note}")
    if bench.report_path is not None:
        terminalreporter.write_line(f"report: {bench.report_path / 'report.md'} (results.json, pr_curves.png, speed.png, samples.png)")
