"""Where DDP's training time goes on this machine: one training step of each stage, timed as one
process with all the threads (N = 1) and as N one-thread processes sharing the global batch, with
and without DistributedDataParallel (docs/distributed.md).

    python benchmarks/step_scaling.py [--batch 256] [--threads 2] [--steps pnet=300,rnet=80,onet=20]

Three ways to take one step of ``--batch`` samples (Adam, the fine-tuning loss, random inputs of
the stage's crop size: the cost does not depend on the pixels):

- ``one process``: ``--threads`` intra-op threads on the whole batch (what N = 1 does);
- ``N processes, DDP``: N = ``--threads`` one-thread processes on ``batch / N`` each, gradients
  all-reduced by DDP over gloo (what ``finetune --nproc N`` does);
- ``N processes, no DDP``: the same processes, each stepping on its own (the compute alone: the
  best any N-process training step could do here).

Prints ms per global step and the ratios to one process; the training part of the wall-time ratio
cannot go below the ``no DDP`` ratio.
"""

from __future__ import annotations

import argparse
import os
import time

STEPS = {"pnet": 300, "rnet": 80, "onet": 20}
CROP = {"pnet": 12, "rnet": 24, "onet": 48}
WARMUP = 3


def _batches(stage: str, batch: int, n: int, seed: int):
    import torch

    g = torch.Generator().manual_seed(seed)
    size = CROP[stage]
    return [
        (torch.rand(batch, 3, size, size, generator=g) * 2 - 1,
         torch.randint(-1, 2, (batch,), generator=g),
         torch.randn(batch, 4, generator=g))
        for _ in range(n)
    ]


def time_steps(stage: str, batch: int, steps: int, threads: int, ddp=None, seed: int = 0, ready=None) -> float:
    """Seconds for ``steps`` training steps of ``batch`` samples after a warm-up (DDP-wrapped with
    ``ddp``); ``ready()`` is called after the warm-up, just before the timed steps."""
    import torch

    from facecmp.detection.models import build_network
    from facecmp.training.loop import run_epoch
    from facecmp.training.losses import LossWeights

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    net = build_network(stage)
    model = ddp(net) if ddp is not None else net
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    data = _batches(stage, batch, WARMUP + steps, seed)
    # The fine-tuning loop's own epoch function takes the steps, so what is timed is what trains.
    run_epoch(model, data[:WARMUP], LossWeights(), "cpu", optimizer)
    if ready is not None:
        ready()
    start = time.perf_counter()
    run_epoch(model, data[WARMUP:], LossWeights(), "cpu", optimizer)
    return time.perf_counter() - start


def _rank(rank: int, world: int, port: int, stage: str, batch: int, steps: int, use_ddp: bool, results) -> None:
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        wrap = (lambda net: DistributedDataParallel(net, find_unused_parameters=stage == "onet")) if use_ddp else None
        # Start together (the processes share the cores, as in a real run), inputs already made.
        seconds = time_steps(stage, batch // world, steps, 1, wrap, seed=rank, ready=dist.barrier)
        dist.barrier()
        results[rank] = seconds
    finally:
        dist.destroy_process_group()


def time_processes(stage: str, batch: int, steps: int, world: int, use_ddp: bool, port: int) -> float:
    """Seconds for ``steps`` global steps with ``world`` one-thread processes (the slowest rank's)."""
    import torch.multiprocessing as mp

    results = mp.Manager().dict()
    mp.spawn(_rank, args=(world, port, stage, batch, steps, use_ddp, results), nprocs=world, join=True)
    return max(results.values())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=256, help="the global batch (the fine-tuning default)")
    p.add_argument("--threads", type=int, default=2, help="N = 1's threads, and N for the process runs")
    p.add_argument("--steps", default=",".join(f"{k}={v}" for k, v in STEPS.items()), help="timed steps per stage")
    args = p.parse_args(argv)
    steps = {k: int(v) for k, v in (item.split("=") for item in args.steps.split(","))}

    from tabulate import tabulate

    rows, port = [], 29611
    for stage, n in steps.items():
        one = time_steps(stage, args.batch, n, args.threads)
        with_ddp = time_processes(stage, args.batch, n, args.threads, True, port)
        no_ddp = time_processes(stage, args.batch, n, args.threads, False, port + 1)
        port += 2
        ms = [1e3 * s / n for s in (one, with_ddp, no_ddp)]
        rows.append([stage, *(f"{m:.1f}" for m in ms), f"{ms[1] / ms[0]:.2f}", f"{ms[2] / ms[0]:.2f}"])
        print(f"{stage}: done", flush=True)
    print(tabulate(rows, headers=["stage", "one process ms/step", f"{args.threads} processes, DDP", f"{args.threads} processes, no DDP",
                                  "DDP / one", "no DDP / one"], tablefmt="github"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
