"""The pytest plugin, run through pytester on a tiny generated dataset.

The variants here are fakes registered by the inner conftest (a detector that always answers the
same box is enough to check the wiring), plus ``random-pnet``: the real cascade with an
untrained PNet, the deliberately broken variant that must fail its accuracy gate.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torchvision  # noqa: F401

from facecmp.study import variants

# pytester's in-process runs restore sys.modules afterwards, so a module first imported inside
# one is imported again by the next, and torch's operator registrations (pulled in by
# torchvision through torch._dynamo) refuse to run twice. Importing torchvision here, before any
# inner run, keeps those modules loaded for the whole file.

pytest_plugins = ["pytester"]

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"

FAKES = """
import numpy as np
import torch

from facecmp.detection.detector import Detections, Detector, DetectorSettings
from facecmp.detection.models import build_network
from facecmp.study.variants import Prepared, Variant, register

PREPARED = []


class Fixed:
    def detect_batch(self, images):
        return [Detections(np.array([[10.0, 10.0, 60.0, 60.0]], np.float32), np.array([0.9], np.float32)) for _ in images]


def fixed(bench):
    PREPARED.append(bench)
    return Prepared(Fixed(), training_seconds=1.5)


def random_pnet(bench):
    torch.manual_seed(0)
    return Prepared(Detector({"pnet": build_network("pnet")}, DetectorSettings(device=bench.device)))


register(Variant("fixed-a", "always the same box", fixed))
register(Variant("fixed-b", "always the same box", fixed))
register(Variant("random-pnet", "the cascade with an untrained PNet", random_pnet))
"""


@pytest.fixture(autouse=True)
def restore_registry():
    """The inner runs register fake variants in-process; keep them out of everything else."""
    saved = dict(variants.REGISTRY)
    yield
    variants.REGISTRY.clear()
    variants.REGISTRY.update(saved)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    from facecmp.data.synthetic import generate_dataset

    return generate_dataset(tmp_path_factory.mktemp("data") / "tiny", n_train_per_character=2, n_test=3)


def run(pytester, tiny_data, *args):
    return pytester.runpytest(
        "-p", "no:cacheprovider", "-ra", "-W", "ignore::pytest.PytestAssertRewriteWarning", "--facecmp-data", str(tiny_data), "--facecmp-dev", "0",
        "--facecmp-cache", str(pytester.path / "cache"), *args,
    )


def test_broken_variant_fails_its_gate_and_the_report_is_written(pytester, tiny_data):
    pytester.makeconftest(FAKES)
    pytester.makefile(".toml", gates="""
        [tiny]
        test = "archive"
        [tiny.random-pnet]
        ap_cava = 0.5
        [[tiny.relations]]
        variant = "pretrained"
        beats = "random-pnet"
        by = 0.01
    """)
    (pytester.path / "test_accuracy.py").write_text((BENCHMARKS / "test_accuracy.py").read_text())
    result = run(pytester, tiny_data, "--facecmp-variants", "pretrained,random-pnet", "--facecmp-report", "out")
    result.assert_outcomes(passed=1, failed=1, skipped=1)
    result.stdout.fnmatch_lines(["*_ test_accuracy?random-pnet? _*",
                                 "gate tiny.random-pnet.ap_cava >= 0.50 failed: measured 0.000 (short by 0.500)"])
    result.stdout.fnmatch_lines(["*facecmp: tiny*", "| variant *", "*| pretrained *", "*| random-pnet *"])
    out = pytester.path / "out"
    assert {p.name for p in out.iterdir()} >= {"report.md", "results.json", "pr_curves.png", "speed.png", "samples.png"}
    report = json.loads((out / "results.json").read_text())
    assert [v["name"] for v in report["variants"]] == ["pretrained", "random-pnet"]
    broken = report["variants"][1]
    assert broken["ap_cava"] == 0.0 and broken["n_detections"] == 0
    assert report["variants"][0]["ap_cava"] > 0.01


SHARED = """
from conftest import PREPARED
SEEN = {}

def test_first(facecmp_variant, facecmp_result):
    SEEN.setdefault(facecmp_variant, []).append(facecmp_result)

def test_second(facecmp_variant, facecmp_result, facecmp_session):
    SEEN[facecmp_variant].append(facecmp_result)
    assert SEEN[facecmp_variant][0] is SEEN[facecmp_variant][1]
    assert facecmp_result.evaluation.n_detections == len(facecmp_session.test)

def test_prepared_once_per_variant():
    assert len(PREPARED) == 2
"""


def test_variants_are_parametrized_and_results_computed_once(pytester, tiny_data):
    pytester.makeconftest(FAKES)
    pytester.makepyfile(test_shared=SHARED)
    result = run(pytester, tiny_data, "--facecmp-variants", "fixed-b,fixed-a", "-v")
    result.assert_outcomes(passed=5)
    # registry order, whatever the order given on the command line
    result.stdout.fnmatch_lines(["*test_first?fixed-a?*", "*test_first?fixed-b?*"])


def test_unknown_variant_is_a_usage_error(pytester, tiny_data):
    pytester.makeconftest(FAKES)
    pytester.makepyfile(test_shared=SHARED)
    result = run(pytester, tiny_data, "--facecmp-variants", "fixed-a,nope")
    assert result.ret != 0
    result.stdout.fnmatch_lines(["*ERROR collecting*test_shared.py*", "--facecmp-variants: unknown variant(s) nope; available: *fixed-a*"])


def test_benchmark_timings_reach_the_results_and_speed_gates(pytester, tiny_data):
    pytester.makeconftest(FAKES)
    pytester.makefile(".toml", gates="""
        [[speed]]
        variant = "fixed-a"
        faster_than = "fixed-b"
        at_least = 1000.0
    """)
    speed = (BENCHMARKS / "test_speed.py").read_text()
    (pytester.path / "test_speed.py").write_text(speed)
    args = ("test_speed.py::test_detect_speed", "test_speed.py::test_speed_gate", "test_shared.py",
            "--facecmp-variants", "fixed-a,fixed-b", "--benchmark-storage", str(pytester.path / "bench"))
    pytester.makepyfile(test_shared="def test_evaluated(facecmp_variant, facecmp_result):\n    pass\n")
    first = run(pytester, tiny_data, *args, "--benchmark-autosave", "--benchmark-json", "bench.json", "--facecmp-report", "out")
    first.assert_outcomes(passed=4, failed=1)
    first.stdout.fnmatch_lines(["*gate speed.fixed-a >= 1000.00x as fast as fixed-b failed: measured *x (*ms/image; short by *"])
    timed = {b["extra_info"]["variant"]: b["stats"]["median"] * 1000 for b in json.loads((pytester.path / "bench.json").read_text())["benchmarks"]}
    report = {v["name"]: v for v in json.loads((pytester.path / "out" / "results.json").read_text())["variants"]}
    assert report.keys() == timed.keys() == {"fixed-a", "fixed-b"}
    for name, ms in timed.items():
        assert report[name]["ms_per_image"] == pytest.approx(ms)
        assert report[name]["settings"]["ms_per_image_source"].startswith("pytest-benchmark")
        assert report[name]["training_seconds"] == 1.5
    # a saved baseline can be compared against, the usual pytest-benchmark way
    second = run(pytester, tiny_data, *args, "--benchmark-compare", "--benchmark-compare-fail", "mean:10000%")
    second.stderr.fnmatch_lines(["*Comparing against benchmarks from*"])
    second.assert_outcomes(passed=4, failed=1)


def test_loading_the_plugin_imports_neither_torch_nor_matplotlib(tmp_path):
    """The pytest11 entry point is loaded by every pytest run in an environment with facecmp."""
    import subprocess
    import sys

    # A run that collects nothing in an empty folder: the plugin loads, registers its options and
    # hooks, and writes its (empty) summary; then we look at what was imported.
    script = (
        "import sys, pytest\n"
        "code = pytest.main(['--co', '-q', '-p', 'no:cacheprovider'])\n"
        "print('EXIT', int(code))\n"
        "print('LOADED', sorted(m for m in sys.modules if m.startswith('facecmp.bench')))\n"
        "print('HEAVY', sorted(m for m in sys.modules if m.split('.')[0] in {'torch', 'torchvision', 'matplotlib'}))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    lines = {line.split(" ", 1)[0]: line.split(" ", 1)[1] for line in done.stdout.splitlines() if line[:4] in ("EXIT", "LOAD", "HEAV")}
    assert lines.get("EXIT") == "5", done.stdout[-2000:] + done.stderr[-2000:]  # 5: no tests collected
    assert "facecmp.bench.plugin" in lines["LOADED"], "the plugin was not loaded: the check would pass on nothing"
    assert lines["HEAVY"] == "[]"


BROKEN = FAKES + """
from facecmp.errors import FacecmpError


def cannot_run(bench):
    raise FacecmpError("broken-facecmp needs something this run lacks")


def buggy(bench):
    return {}["a bug"]


register(Variant("broken-facecmp", "cannot run here", cannot_run))
register(Variant("broken-keyerror", "a bug", buggy))
"""


@pytest.fixture(scope="session")
def default_named_data(tmp_path_factory) -> Path:
    """Tiny generated data in a folder named ``default``: its gates are the built-in data's kind."""
    from facecmp.data.synthetic import generate_dataset

    return generate_dataset(tmp_path_factory.mktemp("d") / "default", n_train_per_character=2, n_test=3)


def test_on_the_default_data_a_gate_that_cannot_be_evaluated_fails_not_skips(pytester, default_named_data):
    pytester.makeconftest(BROKEN)
    pytester.makefile(".toml", gates="""
        [default]
        test = "archive"
        [default.fixed-a]
        ap_cava = 0.0
        [[default.relations]]
        variant = "fixed-a"
        beats = "broken-facecmp"
        [[default.relations]]
        variant = "fixed-a"
        beats = "broken-keyerror"
    """)
    (pytester.path / "test_accuracy.py").write_text((BENCHMARKS / "test_accuracy.py").read_text())
    result = run(pytester, default_named_data, "--facecmp-variants", "fixed-a,broken-facecmp,broken-keyerror")
    outcomes = result.parseoutcomes()
    assert "skipped" not in outcomes, result.stdout.str()
    assert outcomes.get("passed") == 1  # fixed-a's own gate
    # test_accuracy of the two broken variants: their gate-less state and their error both fail
    result.stdout.fnmatch_lines(["*gate default.fixed-a.ap_cava >= broken-facecmp.ap_cava + 0.00 cannot be evaluated: "
                                 "broken-facecmp needs something this run lacks*"])
    result.stdout.fnmatch_lines(["*KeyError*a bug*"])
    assert outcomes.get("failed", 0) + outcomes.get("errors", 0) == 4


def test_on_the_default_data_gates_measured_another_way_fail(pytester, default_named_data):
    pytester.makeconftest(FAKES)
    pytester.makefile(".toml", gates="""
        [default]
        test = "archive"
        n_test_images = 60
        [default.fixed-a]
        ap_cava = 0.0
        [[default.relations]]
        variant = "fixed-a"
        within = "fixed-b"
        tolerance = 0.0
    """)
    (pytester.path / "test_accuracy.py").write_text((BENCHMARKS / "test_accuracy.py").read_text())
    result = run(pytester, default_named_data, "--facecmp-variants", "fixed-a,fixed-b")
    result.assert_outcomes(failed=3)
    result.stdout.fnmatch_lines(["*the [[]default] gates were measured with n_test_images = 60, this run has 3*re-measure*"])
