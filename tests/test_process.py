"""Process-wide speed settings: they apply and change nothing else."""

from __future__ import annotations

import gc
import os
import platform
import subprocess
import sys
import time

import pytest

from facecmp.process import import_torch_frozen, openmp_wait_policy, other_runnable_tasks, retain_freed_memory


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


@pytest.mark.parametrize("others, cores, threads, expected", [
    (0, 2, 2, None), (None, 2, 2, None), (1, 2, 2, "PASSIVE"), (1, 2, 1, None), (1, 16, 2, None), (15, 16, 2, "PASSIVE"),
])
def test_idle_openmp_threads_sleep_only_when_other_tasks_hold_the_cores_they_need(others, cores, threads, expected):
    assert openmp_wait_policy(others, cores, threads) == expected


def _policy_in_a_fresh_process(env) -> list[str]:
    code = ("import os; from facecmp.process import import_torch_frozen; import_torch_frozen(); "
            "print(os.environ.get('OMP_WAIT_POLICY', 'default'))")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout.split()


def test_the_environment_s_wait_policy_wins():
    assert _policy_in_a_fresh_process(dict(os.environ) | {"OMP_WAIT_POLICY": "ACTIVE"}) == ["ACTIVE"]


@pytest.mark.skipif(not os.path.exists("/proc/loadavg"), reason="reads /proc/loadavg (Linux)")
def test_busy_neighbours_are_counted_and_make_idle_threads_sleep():
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    neighbours = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(min(os.cpu_count() or 1, 16))]
    try:
        time.sleep(0.5)
        assert other_runnable_tasks() >= 1
        assert _policy_in_a_fresh_process(env) == ["PASSIVE"]
    finally:
        for p in neighbours:
            p.kill()
            p.wait()
