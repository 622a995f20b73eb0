"""The plugin stays in its lane (issue #24): it loads in every pytest run of an environment with
facecmp installed, so every fixture and parametrized name it adds carries the ``facecmp_`` prefix,
and a project with fixtures or parametrizations of its own called ``variant``, ``variant_result``
... is left alone. Run through pytester on the tiny generated data of test_plugin.py."""

from __future__ import annotations

import json
import re

from test_plugin import FAKES, restore_registry, run, tiny_data  # noqa: F401 (fixtures)

pytest_plugins = ["pytester"]

OWN_FIXTURES = FAKES + '''
import pytest


@pytest.fixture
def variant():
    return "mine"


@pytest.fixture
def variant_result():
    return "my result"


@pytest.fixture
def variant_prepared():
    return "my prepared"


@pytest.fixture
def source_result():
    return "my source"
'''

OWN_TESTS = '''
import pytest


def test_own_fixtures(variant, variant_result, variant_prepared, source_result):
    assert (variant, variant_result, variant_prepared, source_result) == ("mine", "my result", "my prepared", "my source")


@pytest.mark.parametrize("variant", ["x", "y"])
def test_own_parametrization(variant):
    assert variant in ("x", "y")


def test_beside_the_plugins(facecmp_variant, facecmp_result, variant):
    assert variant == "mine" and facecmp_result.name == facecmp_variant
'''


def test_a_project_with_its_own_variant_fixture_is_left_alone(pytester, tiny_data):  # noqa: F811
    pytester.makeconftest(OWN_FIXTURES)
    pytester.makepyfile(test_own=OWN_TESTS)
    result = run(pytester, tiny_data, "--facecmp-variants", "fixed-a,fixed-b", "-v")
    # once for the own fixtures (not once per facecmp variant), twice for the own parametrization,
    # twice (fixed-a, fixed-b) for the test that asks for the plugin's names too
    result.assert_outcomes(passed=5)
    result.stdout.fnmatch_lines_random([
        "*test_own.py::test_own_fixtures PASSED*", "*test_own_parametrization?x? PASSED*", "*test_own_parametrization?y? PASSED*",
        "*test_beside_the_plugins?fixed-a? PASSED*", "*test_beside_the_plugins?fixed-b? PASSED*",
    ])


def test_the_old_unprefixed_names_are_not_provided(pytester, tiny_data):  # noqa: F811
    pytester.makeconftest(FAKES)
    pytester.makepyfile(test_old="def test_old(variant_result):\n    pass\n")
    result = run(pytester, tiny_data, "--facecmp-variants", "fixed-a")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*fixture 'variant_result' not found*"])


GATES = """
[tiny]
test = "archive"
[[tiny.relations]]
variant = "fixed-a"
within = "fixed-b"
tolerance = 1.0
[[speed]]
variant = "fixed-a"
faster_than = "fixed-b"
at_least = 0.001
"""

RECORD_PARAMETRIZED = '''
def pytest_collection_modifyitems(items):
    import json
    from pathlib import Path

    names = sorted({name for item in items for name in getattr(getattr(item, "callspec", None), "params", {})})
    Path("parametrized.json").write_text(json.dumps(names))
'''

EVERY_PARAMETRIZED_NAME = '''
def test_variants(facecmp_variant):
    pass

def test_relations(facecmp_relation):
    pass

def test_speed_gates(facecmp_speed_gate):
    pass
'''


def test_every_fixture_and_parametrized_name_of_the_plugin_is_prefixed(pytester, tiny_data):  # noqa: F811
    pytester.makeconftest(FAKES + RECORD_PARAMETRIZED)
    pytester.makefile(".toml", gates=GATES)
    pytester.makepyfile(test_names=EVERY_PARAMETRIZED_NAME)
    listed = run(pytester, tiny_data, "--fixtures", "-v")
    # `pytest --fixtures -v`: "name [scope] -- path:line" for every fixture, with where it is defined
    ours = [m.group(1) for m in re.finditer(r"^(\w+)(?: \[\w+ scope\])? -- \S*facecmp/bench/\S+\.py:\d+", listed.stdout.str(), re.M)]
    assert {"facecmp_session", "facecmp_prepared", "facecmp_result", "facecmp_source_result", "facecmp_gates"} <= set(ours), ours
    assert [n for n in ours if not n.startswith("facecmp_")] == []

    collected = run(pytester, tiny_data, "--facecmp-variants", "fixed-a,fixed-b", "--collect-only", "-q")
    assert collected.ret == 0, collected.stdout.str()
    parametrized = json.loads((pytester.path / "parametrized.json").read_text())
    assert parametrized == ["facecmp_relation", "facecmp_speed_gate", "facecmp_variant"]
