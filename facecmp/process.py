"""Process-wide settings for detection processes; called once by entry points.

The first two make a process faster and change no result; the third makes CUDA results match
the CPU's. Library code never calls them on its own (no hidden global state): the CLI, the
benchmark plugin and the speed scripts do, and a user's own script may.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os
import sys
import time

# glibc's mallopt() parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def other_runnable_tasks(samples: int = 5, interval_s: float = 0.005) -> int | None:
    """How many tasks besides this one are running or waiting for a core right now (Linux: the
    median of a few readings of ``/proc/loadavg``'s runnable count); None where that is unknown."""
    counts = []
    for i in range(samples):
        try:
            with open("/proc/loadavg") as f:
                counts.append(int(f.read().split()[3].split("/")[0]))
        except (OSError, ValueError, IndexError):
            return None
        if i + 1 < samples:
            time.sleep(interval_s)
    return max(0, sorted(counts)[len(counts) // 2] - 1)


def openmp_wait_policy(others: int | None, cores: int, threads: int = 2) -> str | None:
    """``PASSIVE`` (idle OpenMP threads sleep) when other tasks hold the cores our ``threads``
    need, else None (the runtime's default: spin a while, then sleep; the fastest on free cores)."""
    return "PASSIVE" if others and others + threads > cores else None


def run_conditions() -> dict:
    """What a run's seconds depend on besides the code and the data, for its record: torch's
    thread count and the OpenMP wait policy the process started with (``PASSIVE`` when
    :func:`import_torch_frozen` found the cores busy: training then takes up to ~2x as long on
    free cores, docs/price.md)."""
    import torch

    return {"torch_threads": torch.get_num_threads(), "openmp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "runtime default")}


def import_torch_frozen(threads: int = 2):
    """Import torch with the cycle collector paused, then freeze the objects the import made;
    idle OpenMP threads sleep (``OMP_WAIT_POLICY=PASSIVE``) when other tasks are running on the
    cores ``threads`` need, unless the environment sets the policy itself.

    Spinning OpenMP threads are what make facecmp crawl when other processes share the cores:
    a thread that spins at a barrier while its partner waits for a core steals that core from
    the partner and the neighbours (docs/price.md, benchmarks/shared_cores.py). On free cores
    spinning is the faster policy (sleeping threads wake up late for each of MTCNN's many small
    operations), so the policy follows the machine at start-up. It is read when torch loads its
    OpenMP runtime, so it applies only when this is the first import of torch. Neither policy
    changes a result: the thread count is the same.

    Importing torch creates ~180k objects that live until the process ends; collecting while
    they are created, re-scanning them in every later full collection and once more at exit
    is pure start-up cost (docs/speed.md has the measurement). Frozen objects are still freed by reference counting; only the
    cycle collector skips them, and worker processes forked later inherit them frozen too.
    """
    if "OMP_WAIT_POLICY" not in os.environ and "torch" not in sys.modules:
        policy = openmp_wait_policy(other_runnable_tasks(), os.cpu_count() or 1, threads)
        if policy is not None:
            os.environ["OMP_WAIT_POLICY"] = policy
    gc.disable()
    try:
        import torch
    finally:
        gc.enable()
    gc.freeze()
    return torch


# Largest value glibc accepts for M_MMAP_THRESHOLD on 64-bit systems.
_MMAP_THRESHOLD_MAX = 32 << 20


def retain_freed_memory(limit_bytes: int = 256 << 20) -> bool:
    """Ask glibc's allocator to keep freed memory for reuse instead of returning it to the OS.

    The cascade allocates and frees maps of a few MB per network call. By default glibc serves
    those with fresh ``mmap``s or trims them off the heap when freed, so every call touches new
    pages again (page faults per image drop by an order of magnitude with this setting; docs/speed.md
    has the measurement). The cost is that a process's memory does not shrink
    after its peak (``limit_bytes`` bounds the free memory kept at the heap's top). Returns
    False where the C library is not glibc or refuses the settings (nothing else changes).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    served_from_heap = mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX)
    kept_on_heap = mallopt(_M_TRIM_THRESHOLD, limit_bytes)
    return bool(served_from_heap and kept_on_heap)


def exact_float32_on_cuda() -> None:
    """Have cuDNN compute float32 convolutions in float32, as the CPU does.

    PyTorch lets cuDNN use TF32 (a 10-bit mantissa) for float32 convolutions on Ampere and
    newer GPUs by default: MTCNN's scores then differ from the CPU's, enough to move a box
    across a threshold (tests/test_cuda.py). MTCNN's networks are small, so the exact
    mode costs little. No effect without CUDA.
    """
    import torch

    torch.backends.cudnn.allow_tf32 = False

