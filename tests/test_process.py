"""Process-wide speed settings: they apply and change nothing else."""

from __future__ import annotations

import gc
import platform
import subprocess
import sys

import pytest

from facecmp.process import import_torch_frozen, retain_freed_memory


def test_import_torch_frozen_leaves_the_collector_on_and_freezes_the_import():
    code = (
        "import gc; from facecmp.process import import_torch_frozen; torch = import_torch_frozen(); "
        "print(torch.__name__, gc.isenabled(), gc.get_freeze_count() > 100000)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["torch", "True", "True"]


def test_import_torch_frozen_keeps_the_collector_on_when_torch_is_loaded():
    try:
        assert import_torch_frozen().__name__ == "torch"
        assert gc.isenabled()
    finally:
        gc.unfreeze()  # hand this test process's objects back to the collector


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_retain_freed_memory_is_accepted_by_glibc():
    assert retain_freed_memory() is True


@pytest.mark.parametrize("given, expected", [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_import_torch_frozen_lets_idle_openmp_threads_sleep_unless_told_otherwise(given, expected):
    import os

    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"} | ({"OMP_WAIT_POLICY": given} if given else {})
    code = "import os; from facecmp.process import import_torch_frozen; import_torch_frozen(); print(os.environ['OMP_WAIT_POLICY'])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout.split()
    assert out == [expected]
