"""What a benchmark run asks for by name runs or fails with its reason; only what it did not ask
for is skipped with one line (the peers' rule, for the robustness axis and task 2)."""

from __future__ import annotations

import pytest
from test_plugin import BENCHMARKS, FAKES, restore_registry, run  # noqa: F401 (fixtures)

pytest_plugins = ["pytester"]


@pytest.fixture
def tiny_data(tmp_path):
    """Never read: both checks stop before any data is loaded."""
    return tmp_path / "no-data"

# The robustness extra made absent for the inner run only (a session fixture: before the axis's).
NO_EXTRA = FAKES + '''
import pytest


@pytest.fixture(scope="session", autouse=True)
def _robustness_extra_missing():
    import facecmp.study.robustness.compat as compat

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(compat, "missing_dependency", lambda: "corruptions need the robustness extra (imagecorruptions missing)")
        yield
'''

AXIS_TEST = "def test_axis(facecmp_robustness):\n    pass\n"


def test_a_robustness_axis_asked_for_fails_without_its_extra_and_is_skipped_otherwise(pytester, tiny_data):
    pytester.makeconftest(NO_EXTRA)
    pytester.makepyfile(test_axis=AXIS_TEST)
    skipped = run(pytester, tiny_data, "--facecmp-variants", "fixed-a")
    skipped.assert_outcomes(skipped=1)
    skipped.stdout.fnmatch_lines(["*corruptions need the robustness extra (imagecorruptions missing)*"])
    failed = run(pytester, tiny_data, "--facecmp-variants", "fixed-a", "--facecmp-corruptions", "contrast")
    failed.assert_outcomes(errors=1)
    failed.stdout.fnmatch_lines(["*--facecmp-corruptions asked for the robustness axis, which cannot run: "
                                 "corruptions need the robustness extra (imagecorruptions missing)*"])
    assert "Traceback" not in failed.stdout.str()


def test_task2_asked_for_fails_when_its_detector_is_not_selected(pytester, tiny_data):
    pytester.makeconftest(FAKES)
    (pytester.path / "test_bench_recognition.py").write_text((BENCHMARKS / "test_recognition.py").read_text())
    skipped = run(pytester, tiny_data, "--facecmp-variants", "fixed-a")
    skipped.assert_outcomes(skipped=1)
    skipped.stdout.fnmatch_lines(["*its detector finetuned-cascade is not selected*"])
    failed = run(pytester, tiny_data, "--facecmp-variants", "fixed-a", "--facecmp-recognizers", "finetune")
    failed.assert_outcomes(errors=1)
    failed.stdout.fnmatch_lines(["*--facecmp-recognizers finetune: task 2 cannot run: its detector finetuned-cascade is not selected*"])
