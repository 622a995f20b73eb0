"""Fine-tuning in several processes, all of it in one module: who this process is, the collectives,
the training's batch rule, the mining and calibration shared out, the checks, and ``--nproc``.

``torchrun --nproc_per_node N [--nnodes M ...] -m facecmp finetune ...`` (or ``facecmp finetune
--nproc N``, which starts exactly that on this machine) runs one process per CPU share or GPU.
Each reads its place from the variables torchrun sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``LOCAL_WORLD_SIZE``, ``MASTER_ADDR``/``MASTER_PORT``) and joins one ``torch.distributed``
process group: gloo on CPUs, NCCL on GPUs. A plain single process gets :data:`SINGLE`, whose
collectives do nothing, and runs the code it always ran.

**Mining and calibration** (the rule that keeps their results independent of N): work is split
into the same units a single process uses, each unit keeps the seed it has there, and the pieces
are gathered back in the single process's order before anything looks at them as a whole.

- PNet's samples: image ``i`` is mined with ``default_rng([seed, i])`` (as ``samples.mine_samples``);
  rank r mines images r, r+N, ...; the union, in image order, is balanced with the same generator.
- RNet's/ONet's samples: the detector runs over the same batches of ``batch_images`` images as
  in one process (batch b on rank b mod N), so every batch sees the same forward passes; each
  image keeps its seed ``[seed, index]``.
- Calibration: each rank runs the cascade on its batches of dev images (batch b on rank b mod N)
  and keeps every candidate's scores; candidates are gathered to all ranks, the grid points are
  scored rank r: r, r+N, ..., and the table is gathered in grid order.

So the samples and the calibration table are the single process's, up to the float rounding of
a different thread count. The sample caches are the single process's files too: one rank per
node writes them, atomically, after every rank has decided whether they exist.

**Training** (``loop.train_stage`` with ``dist``; the helpers are here): **the same global batch
and the same learning rate**. Each of the N ranks takes ``batch_size // N`` samples per step (a
``DistributedSampler``, seeded, reshuffled every epoch with ``set_epoch``), DDP averages the
gradients, so a step sees ``batch_size`` samples and moves the weights as one process's step
would (no learning-rate scaling needed). Two things differ from one process (docs/distributed.md):
the hardest 70 % of the classification examples (the loss's online hard-example mining) are
chosen within each rank's share of the batch, and the flips are drawn per rank, from
``(seed, epoch, rank)`` alone. So a run with N processes is reproducible for that N, and
``--resume`` needs only what rank 0 saves after every epoch; it refuses a state written with
another N (:func:`require_world_size` before any process starts). Losses and accuracy are
reduced over the ranks as sample-weighted sums, so the validation loss that early stopping and
the best epoch follow is the whole validation split's, the same on every rank: every rank takes
the same decisions and keeps the same weights.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
import torch.distributed as torch_dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from facecmp.data.images import read_image
from facecmp.data.records import Dataset
from facecmp.detection.detector import Detector
from facecmp.errors import FacecmpError, raise_returned
from facecmp.training.calibrate import (
    BATCH_IMAGES,
    Thresholds,
    _best_row,
    _require_calibration_input,
    _row,
    best_thresholds,
    candidates_by_pnet,
    grid_by_pnet,
)
from facecmp.training.hard_mining import (
    HardMiningSettings,
    batch_miner,
    hard_mining_fingerprint,
    mining_images,
)
from facecmp.training.run_state import read_run_state, run_id_file, state_file
from facecmp.training.samples.batches import FrameBatches, columns
from facecmp.training.samples.cache import load_samples, save_samples
from facecmp.training.samples.crops import MiningSettings
from facecmp.training.samples.mining import FRAMES_PER_BATCH, balanced_sample_set, frame_miner, mining_fingerprint
from facecmp.training.samples.sample_set import SampleSet

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



# --- training: the batch rule, the flips, the reductions (used by loop.train_stage) -----------


def per_rank_batch(batch_size: int, world_size: int) -> int:
    """Samples each rank takes per step: the global batch shared out (``batch_size`` when N divides it)."""
    return max(1, batch_size // world_size)


def flip_generator(seed: int, epoch: int, rank: int) -> torch.Generator:
    """The flips of one rank in one epoch, from ``(seed, epoch, rank)`` alone (nothing to checkpoint)."""
    state = np.random.SeedSequence([seed, epoch, rank]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def reduced(dist: Dist, local: dict) -> dict[str, float]:
    """``run_epoch``'s means over every rank's samples (each rank's means weighted by its counts);
    one process's as they are."""
    if not dist.active:
        return local
    n, classified = local["samples"], local["classified"]
    sums = dist.all_sum([local["loss"] * n, local["cls"] * n, local["box"] * n, n, local["accuracy"] * classified, classified])
    total, total_classified = max(sums[3], 1.0), max(sums[5], 1.0)
    return {"loss": sums[0] / total, "cls": sums[1] / total, "box": sums[2] / total, "accuracy": sums[4] / total_classified}


def data_parallel(net: nn.Module, stage: str, device: str) -> DistributedDataParallel:
    """``net`` under DistributedDataParallel: the ranks' gradients averaged at every step."""
    # ONet's landmark head gets no gradient from these losses: DDP must be told that some parameters
    # go unused (it costs a graph traversal per step, so only where it is needed).
    on_cuda = torch.device(device).type == "cuda"
    return DistributedDataParallel(net, device_ids=[torch.device(device).index] if on_cuda else None,
                                   find_unused_parameters=stage == "onet")


def distributed_record(dist: Dist, per_stage: dict[str, dict]) -> dict:
    """What a distributed run adds to ``facecmp.json``: how many processes and how the batch was shared."""
    return {
        "world_size": dist.world_size,
        "backend": dist.backend,
        "threads_per_process": torch.get_num_threads(),
        "rule": "same global batch and learning rate as one process; each rank takes batch_size // world_size",
        "per_rank_batch": {s: per_rank_batch(p["training"]["batch_size"], dist.world_size) for s, p in per_stage.items()},
    }


def require_world_size(out_dir: str | Path, world_size: int) -> None:
    """Before starting N processes with ``--resume``: every ``train_state_<stage>.pt`` in ``out_dir``
    was written by a run with N processes (one line naming the file otherwise, nothing started).
    Reads the ``run_id`` beside each state (``run_state.run_id_file``); a state without one (older facecmp)
    is read with ``weights_only=True``."""
    for path in sorted(Path(out_dir).glob(state_file("*"))):
        sidecar = run_id_file(path)
        try:
            run_id = json.loads(sidecar.read_text(encoding="utf-8"))["run_id"] if sidecar.is_file() else None
        except (OSError, ValueError, KeyError, TypeError):
            run_id = None
        if not isinstance(run_id, dict):
            run_id = read_run_state(path, DistributedError).get("run_id") or {}
        written = run_id.get("world_size", 1)
        if written != world_size:
            raise DistributedError(
                f"{path}: was written by a run with {written} process(es), this one would have {world_size}; resume with "
                f"the same number (--nproc {written}), or drop --resume to start over"
            )


# --- mining and calibration shared out --------------------------------------------------------


def batches_of(n: int, size: int, dist: Dist) -> list[range]:
    """This rank's batches of ``range(n)`` cut every ``size`` items: batch b goes to rank b mod N."""
    starts = range(0, n, size)
    return [range(start, min(start + size, n)) for b, start in enumerate(starts) if b % dist.world_size == dist.rank]


def gathered_in_order(dist: Dist, mine: list[tuple[int, tuple]]) -> list[tuple]:
    """Every rank's ``(index, item)`` pairs joined and put back in index order: the items."""
    joined = [pair for part in dist.all_gather(mine) for pair in part]
    return [item for _, item in sorted(joined, key=lambda pair: pair[0])]


def shared_cache(dist: Dist, path: Path, mine: Callable[[], SampleSet]) -> SampleSet:
    """``samples.cache.cached_samples`` for all ranks: read the cache when every rank sees it, else mine
    together and have one rank per node write it."""
    if dist.all_true(path.is_file()):
        return load_samples(path)
    samples = mine()
    if dist.local_rank == 0:
        save_samples(path, samples)
        samples.cache_path = path
    dist.barrier()  # nobody looks for the file again before it is complete
    return samples


# --- PNet -------------------------------------------------------------------------------------


def mine_samples_sharded(dataset: Dataset, settings: MiningSettings, seed: int, dist: Dist, progress: bool = True) -> SampleSet:
    """``samples.mine_samples``, each rank mining its batches of images."""
    batches = FrameBatches(dataset.images, None, seed, FRAMES_PER_BATCH, frame_miner(settings, seed))
    images, labels, offsets = _mined_by_ranks(batches, dist, f"mining {settings.crop_size}px samples", progress)
    return balanced_sample_set(images, labels, offsets, settings, np.random.default_rng([seed, len(dataset.images)]))


def _mined_by_ranks(batches: FrameBatches, dist: Dist, desc: str, progress: bool) -> tuple[list, list, list]:
    """Every frame's ``(crops, labels, offsets)`` in frame order, as three lists (as ``samples.batches.mine_frames``
    gives them), each rank mining batch b when b mod N is its rank."""
    share = batches_of(batches.n_frames, batches.batch, dist)
    blocks = [frames.start // batches.batch for frames in share]
    mine: list[tuple[int, list]] = []
    with tqdm(total=sum(map(len, share)), desc=desc, disable=not progress, unit="img") as bar:
        for b, mined in zip(blocks, raise_returned(batches[b] for b in blocks)):
            mine.append((b, mined))
            bar.update(len(mined))
    return columns([frame for batch in gathered_in_order(dist, mine) for frame in batch])


def mine_pnet_samples_sharded(dataset: Dataset, settings: MiningSettings, seed: int, dist: Dist,
                              cache_dir: str | Path | None = None, progress: bool = True) -> SampleSet:
    """``samples.mine_pnet_samples`` across ranks (the same cache file)."""
    mine = lambda: mine_samples_sharded(dataset, settings, seed, dist, progress)  # noqa: E731
    if cache_dir is None:
        return mine()
    path = Path(cache_dir) / f"samples{settings.crop_size}_{mining_fingerprint(dataset, settings, seed)[:20]}.npz"
    return shared_cache(dist, path, mine)


# --- RNet / ONet ------------------------------------------------------------------------------


def mine_hard_samples_sharded(dataset: Dataset, nets: Mapping[str, nn.Module], stage: str, settings: HardMiningSettings,
                              seed: int, dist: Dist, device: str = "cpu", progress: bool = True) -> SampleSet:
    """``hard_mining.mine_hard_samples``, each rank mining its batches of images (batch b on rank b mod N)."""
    records = mining_images(dataset, settings, seed)
    batches = FrameBatches(records, None, seed, settings.batch_images, batch_miner(nets, stage, settings, seed, device))
    images, labels, offsets = _mined_by_ranks(batches, dist, f"mining {stage} samples", progress)
    return balanced_sample_set(images, labels, offsets, settings.crops, np.random.default_rng([seed, len(records)]))


def mine_stage_samples_sharded(dataset: Dataset, nets: Mapping[str, nn.Module], stage: str, settings: HardMiningSettings,
                               seed: int, dist: Dist, cache_dir: str | Path | None = None, device: str = "cpu",
                               progress: bool = True) -> SampleSet:
    """``hard_mining.mine_stage_samples`` across ranks (the same cache file)."""
    def mine() -> SampleSet:
        samples = mine_hard_samples_sharded(dataset, nets, stage, settings, seed, dist, device, progress)
        if len(samples) == 0:
            raise FacecmpError(f"{dataset.name}: mining {stage} samples found nothing; are there faces in the training images?")
        return samples

    if cache_dir is None:
        return mine()
    key = hard_mining_fingerprint(dataset, nets, stage, settings, seed)[:20]
    return shared_cache(dist, Path(cache_dir) / f"samples{settings.crops.crop_size}_{stage}_{key}.npz", mine)


# --- calibration ------------------------------------------------------------------------------


def best_thresholds_sharded(
    detector_factory: Callable[[Thresholds], Detector],
    dataset: Dataset,
    grid: Sequence[Thresholds],
    dist: Dist,
    progress: bool = True,
) -> tuple[Thresholds, list[dict]]:
    """``calibrate.best_thresholds`` across ranks: the cascade runs split by batches of dev images,
    the grid points' scoring split by point; the same best point and table on every rank."""
    _require_calibration_input(grid, dataset)
    grid = [tuple(float(t) for t in point) for point in grid]
    if not isinstance(detector_factory(grid[0]), Detector):
        return best_thresholds(detector_factory, dataset, grid, progress)
    # One detector at the grid's lowest thresholds scores every PNet threshold (calibrate.candidates_by_pnet),
    # as calibrate.best_thresholds does in one process.
    by_pnet, lowest = grid_by_pnet(grid)
    detector = detector_factory(lowest)
    share = batches_of(len(dataset.images), BATCH_IMAGES, dist)
    mine: list[tuple[int, tuple]] = []
    for batch in tqdm(share, desc="calibrating: cascade on dev images", disable=not progress, unit="batch"):
        records = [dataset.images[i] for i in batch]
        pixels = [read_image(r.path) for r in records]
        per_group = candidates_by_pnet(detector, pixels, list(by_pnet))
        for j, (i, record) in enumerate(zip(batch, records)):
            mine.append((i, (record.key, {pnet: found[j] for pnet, found in per_group.items()})))
    candidates = gathered_in_order(dist, mine)
    ground_truth = dataset.ground_truth()
    nms_threshold = detector.settings.nms_thresholds[3]
    rows = []
    for i in tqdm(dist.shard(len(grid)), desc="calibrating: scoring thresholds", disable=not progress, unit="setting"):
        t = grid[i]
        per_image = {key: found[t[0]].detections(t[1], t[2], nms_threshold) for key, found in candidates}
        rows.append((i, _row(t, per_image, ground_truth)))
    table = gathered_in_order(dist, rows)
    return grid[_best_row(table)], table


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
