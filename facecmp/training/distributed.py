"""Running fine-tuning in several processes: who this process is, and the few collectives it needs.

``torchrun --nproc_per_node N [--nnodes M ...] -m facecmp finetune ...`` (or ``facecmp finetune
--nproc N``, which starts exactly that on this machine) runs one process per CPU share or GPU.
Each reads its place from the variables torchrun sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``LOCAL_WORLD_SIZE``, ``MASTER_ADDR``/``MASTER_PORT``) and joins one ``torch.distributed``
process group: gloo on CPUs, NCCL on GPUs. A plain single process gets :data:`SINGLE`, whose
collectives do nothing, and runs the code it always ran.

What is sharded and how the pieces fit together is in ``sharded.py`` (mining, calibration) and
``ddp.py`` (training); this module only knows processes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Sequence

import numpy as np
import torch
import torch.distributed as torch_dist

from facecmp.errors import FacecmpError

# Seconds a process waits for the others at the rendezvous and in any collective (a rank that
# mines a slow shard makes the others wait in the gather that follows).
DEFAULT_TIMEOUT_S = 1800
TIMEOUT_VARIABLE = "FACECMP_DIST_TIMEOUT"


class DistributedError(FacecmpError):
    """The processes of a distributed run cannot work together (world sizes, rendezvous, --nproc)."""


@dataclass(frozen=True)
class Dist:
    """This process's place among the run's processes. ``world_size`` 1: no process group, no-op collectives."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    backend: str | None = None

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes checkpoints and prints."""
        return self.rank == 0

    def barrier(self) -> None:
        if self.active:
            torch_dist.barrier()

    def all_gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj`` (picklable), in rank order, on every rank."""
        if not self.active:
            return [obj]
        out: list[Any] = [None] * self.world_size
        torch_dist.all_gather_object(out, obj)
        return out

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if not self.active:
            return obj
        box = [obj if self.is_main else None]
        torch_dist.broadcast_object_list(box, src=0)
        return box[0]

    def all_sum(self, values: Sequence[float]) -> np.ndarray:
        """Element-wise sum of every rank's ``values`` (float64), the same bits on every rank."""
        array = np.asarray(values, dtype=np.float64)
        if not self.active:
            return array
        tensor = torch.from_numpy(array.copy())
        if self.backend == "nccl":
            tensor = tensor.cuda()
        torch_dist.all_reduce(tensor)
        return tensor.cpu().numpy()

    def all_true(self, flag: bool) -> bool:
        return all(self.all_gather(bool(flag)))

    def shard(self, n: int) -> list[int]:
        """This rank's share of ``range(n)``: every ``world_size``-th item from ``rank``."""
        return list(range(self.rank, n, self.world_size))


SINGLE = Dist()


def launched_by_torchrun(environ=os.environ) -> bool:
    return "WORLD_SIZE" in environ and "RANK" in environ


def init_from_env(device: str = "cpu", environ=os.environ) -> Dist:
    """Join the process group torchrun described in ``environ``; :data:`SINGLE` outside torchrun
    (or under torchrun with one process)."""
    if not launched_by_torchrun(environ):
        return SINGLE
    world_size = int(environ["WORLD_SIZE"])
    rank = int(environ["RANK"])
    local_rank = int(environ.get("LOCAL_RANK", rank))
    local_world_size = int(environ.get("LOCAL_WORLD_SIZE", world_size))
    if world_size == 1:
        return SINGLE
    on_cuda = torch.device(device).type == "cuda"
    if on_cuda:
        if torch.cuda.device_count() < local_world_size:
            raise DistributedError(
                f"{local_world_size} processes on this node but only {torch.cuda.device_count()} CUDA device(s); "
                f"start at most {torch.cuda.device_count()} (torchrun --nproc_per_node / --nproc)"
            )
        torch.cuda.set_device(local_rank)  # one GPU per process: NCCL needs each rank on its own device
    backend = "nccl" if on_cuda else "gloo"
    if not torch_dist.is_initialized():
        timeout = int(environ.get(TIMEOUT_VARIABLE, DEFAULT_TIMEOUT_S))
        address = f"{environ.get('MASTER_ADDR', '?')}:{environ.get('MASTER_PORT', '?')}"
        if rank != 0 or environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True":
            _wait_for_store(environ.get("MASTER_ADDR", "127.0.0.1"), int(environ.get("MASTER_PORT", 29500)), timeout, rank, world_size)
        try:
            torch_dist.init_process_group(backend, rank=rank, world_size=world_size, timeout=timedelta(seconds=timeout))
        except (RuntimeError, ValueError, TimeoutError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise DistributedError(
                f"rank {rank} of {world_size} could not join the others at the rendezvous {address} within {timeout} s "
                f"({first[:200]}); start every node with the same torchrun command and --rdzv-endpoint/--master-addr, "
                f"and check that the port is reachable (wait longer with {TIMEOUT_VARIABLE}=SECONDS)"
            ) from None
    return Dist(rank=rank, world_size=world_size, local_rank=local_rank, local_world_size=local_world_size, backend=backend)


def _wait_for_store(host: str, port: int, timeout: float, rank: int, world_size: int) -> None:
    """Wait until the rendezvous store accepts connections; one error line if it never does.

    torch's own client retries too, but logs every failed try from C++ straight to stderr;
    checking first keeps an unreachable rendezvous to the one line below.
    """
    import socket
    import time

    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=min(5.0, max(timeout, 0.1))):
                return
        except OSError as exc:
            if time.monotonic() >= deadline:
                raise DistributedError(
                    f"rank {rank} of {world_size} could not join the others at the rendezvous {host}:{port} within "
                    f"{timeout:g} s ({exc.strerror or exc}); start every node with the same torchrun command and "
                    f"--rdzv-endpoint/--master-addr, and check that the port is reachable (wait longer with "
                    f"{TIMEOUT_VARIABLE}=SECONDS)"
                ) from None
            time.sleep(0.5)


def close(dist: Dist) -> None:
    if dist.active and torch_dist.is_initialized():
        torch_dist.destroy_process_group()


def device_for(dist: Dist, device: str) -> str:
    """The device this rank uses: ``cuda`` becomes ``cuda:<local rank>``; anything else as given."""
    if dist.active and torch.device(device).type == "cuda":
        return f"cuda:{dist.local_rank}"
    return device


def threads_per_process(threads: int, dist: Dist) -> int:
    """The CPU threads each of this node's processes gets: ``threads`` shared out, at least 1.

    On small networks one-thread processes beat one many-thread process (README "Speed"), so the
    node's threads are divided, not multiplied.
    """
    return max(1, threads // dist.local_world_size)


# --- starting the processes here (`facecmp finetune --nproc N`) ---------------------------------


def available_slots(device: str) -> tuple[int, str]:
    """How many processes this machine can give one core or one GPU each, and what they are."""
    if torch.device(device).type == "cuda":
        return torch.cuda.device_count(), "CUDA devices"
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1), "CPU cores"


def require_slots(nproc: int, device: str) -> None:
    slots, what = available_slots(device)
    if nproc > slots:
        raise DistributedError(
            f"--nproc {nproc}: this machine has {slots} {what} available, and each process needs one of its own; "
            f"use --nproc {slots} or fewer (or torchrun --nnodes to add machines)"
        )


def torchrun_arguments(nproc: int, facecmp_args: Sequence[str]) -> list[str]:
    """torchrun's arguments for ``nproc`` processes on this machine running ``python -m facecmp <facecmp_args>``."""
    return ["--standalone", f"--nproc_per_node={nproc}", "-m", "facecmp", *facecmp_args]


def launch_local(nproc: int, facecmp_args: Sequence[str], threads: int, device: str) -> int:
    """Run ``facecmp <facecmp_args>`` as ``nproc`` processes here with torchrun (torch.distributed.run,
    in this process); the exit code: 0, or the failed rank's (each rank prints its own error line).

    ``threads`` (this machine's CPU threads for the run) are divided among the processes (OMP_NUM_THREADS).
    """
    import logging

    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    require_slots(nproc, device)
    os.environ["OMP_NUM_THREADS"] = str(max(1, threads // nproc))
    # The workers must import this same facecmp (a checkout, not only the installed one).
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in [_package_root(), os.environ.get("PYTHONPATH", "")] if p)
    # torchrun's agent logs its rendezvous and, on a failure, a multi-line report; each rank has
    # already printed its own one-line error, which is what the user needs.
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    try:
        run(parse_args(torchrun_arguments(nproc, facecmp_args)))
    except ChildFailedError as exc:
        rank, failure = exc.get_first_failure()
        if failure.exitcode == 2:  # a FacecmpError, already printed by that rank
            return 2
        raise DistributedError(
            f"rank {rank} of {nproc} stopped ({_how(failure.exitcode)}) and the others were stopped with it; "
            "run the same command with --resume to continue from the last finished epoch"
        ) from None
    return 0


def _how(exitcode: int) -> str:
    if exitcode < 0:
        import signal

        try:
            return f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exit code {exitcode}"


def _package_root() -> str:
    """The folder holding this ``facecmp`` package, so the processes import the same code."""
    import facecmp

    return os.path.dirname(os.path.dirname(os.path.abspath(facecmp.__file__)))
