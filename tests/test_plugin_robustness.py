"""The plugin's robustness axis through pytester: conditions as tests, [[robustness]] gates, the report."""

from __future__ import annotations

import json

import pytest

from facecmp.study.robustness.compat import missing_dependency
from test_plugin import BENCHMARKS, FAKES, restore_registry, run, tiny_data  # noqa: F401 (fixtures)

pytest_plugins = ["pytester"]

if missing_dependency():
    pytest.skip(missing_dependency(), allow_module_level=True)

GATES = """
    [tiny]
    test = "archive"

    [[robustness]]
    dataset = "tiny"
    variant = "pretrained"
    metric = "clean_ap"
    at_least = 0.99

    [[robustness]]
    dataset = "tiny"
    variant = "pretrained"
    metric = "clean_ap"
    beats = "random-pnet"
    by = 0.01

    [[robustness]]
    dataset = "tiny"
    variant = "pretrained"
    metric = "mpc"
    at_least = 0.0
    corruptions = "benchmark"
"""


def test_conditions_gates_and_report(pytester, tiny_data):
    pytester.makeconftest(FAKES)
    pytester.makefile(".toml", gates=GATES)
    # Not test_robustness.py: tests/ has a module of that name, imported in the same process.
    (pytester.path / "test_bench_robustness.py").write_text((BENCHMARKS / "test_robustness.py").read_text())
    result = run(
        pytester, tiny_data, "--facecmp-variants", "pretrained,random-pnet", "--facecmp-report", "out",
        "--facecmp-corruptions", "contrast,mirror", "--facecmp-severities", "1", "-v",
    )
    # 3 conditions pass; the floor fails, the relation holds, the benchmark-axis gate skips
    result.assert_outcomes(passed=4, failed=1, skipped=1)
    result.stdout.fnmatch_lines(["*test_condition?clean? PASSED*", "*test_condition?contrast-1? PASSED*", "*test_condition?mirror-1? PASSED*"])
    result.stdout.fnmatch_lines(["gate robustness tiny.pretrained.clean_ap >= 0.99 failed: measured *, needed 0.990 (short by *)"])
    result.stdout.fnmatch_lines(["*measured on corruptions 'benchmark'; this run: contrast,mirror*"])
    result.stdout.fnmatch_lines(["*facecmp robustness: tiny*", "| variant *", "*| pretrained *", "*| random-pnet *"])
    out = pytester.path / "out"
    assert {p.name for p in out.iterdir()} >= {"robustness.md", "robustness.json", "heatmap.png", "severity_curves.png", "corruptions.png"}
    report = json.loads((out / "robustness.json").read_text())
    assert [v["name"] for v in report["variants"]] == ["pretrained", "random-pnet"]
    assert set(report["variants"][0]["per_corruption"]) == {"contrast", "mirror"}
    assert report["variants"][1]["clean_ap"] == 0.0


def test_a_bad_axis_is_a_usage_error(pytester, tiny_data):
    pytester.makeconftest(FAKES)
    result = run(pytester, tiny_data, "--facecmp-corruptions", "contrast,blurr")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--facecmp-corruptions/--facecmp-severities: unknown corruption 'blurr'; valid: gaussian_noise*"])


class _Session:
    """Just what BenchRobustness.grid_names reads: the selected variants, how each prepares, and
    which the run named (--facecmp-variants)."""

    def __init__(self, names, missing, requested=None):
        self.variant_names, self.missing, self.asked_for = names, missing, requested

    def prepared(self, name):
        from facecmp.errors import MissingPeerError

        if name in self.missing:
            raise MissingPeerError(f"{name} needs the optional package 'x': pip install 'facecmp[x]'")
        return object()

    def requested(self, name):
        return self.asked_for is not None and name in self.asked_for


def test_the_grid_leaves_out_an_uninstalled_peer_unless_it_was_asked_for_by_name():
    import pytest

    from facecmp.bench.robustness import BenchRobustness
    from facecmp.errors import MissingPeerError

    every = BenchRobustness(_Session(["pretrained", "dlib-cnn", "yunet"], missing={"dlib-cnn"}), settings=None)
    assert every.grid_names() == ["pretrained", "yunet"]
    assert every.grid_names(["pretrained"]) == ["pretrained"]
    named = BenchRobustness(_Session(["pretrained", "dlib-cnn"], missing={"dlib-cnn"}, requested=("pretrained", "dlib-cnn")), None)
    with pytest.raises(MissingPeerError, match="dlib-cnn needs"):
        named.grid_names()
