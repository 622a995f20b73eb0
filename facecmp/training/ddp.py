"""Training one cascade stage with DistributedDataParallel: ``loop.train_stage`` for N processes.

The rule that keeps the recipe the same for every N: **the same global batch and the same
learning rate**. Each of the N ranks takes ``batch_size // N`` samples per step (a
``DistributedSampler``, seeded, reshuffled every epoch with ``set_epoch``), DDP averages the
gradients, so a step sees ``batch_size`` samples and moves the weights as one process's step
would (no learning-rate scaling needed). Two things differ from one process, both documented in
the README: the hardest 70 % of the classification examples (the loss's online hard-example
mining) are chosen within each rank's share of the batch, and the flips are drawn per rank.

Everything random depends only on ``(seed, epoch, rank)``: the split (as in one process), the
sampler's order, each rank's flips. So a run with N processes is reproducible for that N, and
``--resume`` needs only the weights, optimizer, schedule and record that rank 0 saves after
every epoch; it refuses a state written with another N.

Losses and accuracy are reduced over the ranks as sample-weighted sums, so the validation loss
that early stopping and the best epoch follow is the whole validation split's, the same on
every rank: every rank takes the same decisions and keeps the same weights.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Mapping

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from tqdm.auto import tqdm

from facecmp.errors import ModelError
from facecmp.training.distributed import Dist, DistributedError
from facecmp.training.loop import (
    TrainResult,
    TrainSettings,
    apply_run_state,
    best_result,
    early_stopping,
    epoch_record,
    freeze_all_but,
    read_run_state,
    run_epoch,
    run_id_file,
    run_recipe,
    save_run_state,
    split_indices,
    state_file,
)
from facecmp.training.losses import LossWeights
from facecmp.training.samples import SampleDataset, SampleSet


def per_rank_batch(batch_size: int, world_size: int) -> int:
    """Samples each rank takes per step: the global batch shared out (``batch_size`` when N divides it)."""
    return max(1, batch_size // world_size)


def flip_generator(seed: int, epoch: int, rank: int) -> torch.Generator:
    """The flips of one rank in one epoch, from ``(seed, epoch, rank)`` alone (nothing to checkpoint)."""
    state = np.random.SeedSequence([seed, epoch, rank]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def reduced(dist: Dist, local: dict) -> dict[str, float]:
    """``run_epoch``'s means over every rank's samples (each rank's means weighted by its counts)."""
    n, classified = local["samples"], local["classified"]
    sums = dist.all_sum([local["loss"] * n, local["cls"] * n, local["box"] * n, n, local["accuracy"] * classified, classified])
    total, total_classified = max(sums[3], 1.0), max(sums[5], 1.0)
    return {"loss": sums[0] / total, "cls": sums[1] / total, "box": sums[2] / total, "accuracy": sums[4] / total_classified}


def run_id_for(stage: str, seed: int, samples: SampleSet, settings: TrainSettings, dist: Dist) -> dict:
    return {"stage": stage, "seed": seed, "n_samples": len(samples), "world_size": dist.world_size,
            "settings": run_recipe(settings)}


def train_stage_ddp(
    nets: Mapping[str, nn.Module],
    stage: str,
    samples: SampleSet,
    out_dir: str | Path,
    settings: TrainSettings,
    dist: Dist,
    seed: int = 0,
    device: str = "cpu",
    resume: bool = False,
    progress: bool = True,
) -> TrainResult:
    """Fine-tune ``nets[stage]`` in place on ``samples`` with every rank; the best epoch's weights,
    the same on every rank. Rank 0 writes ``train_state_<stage>.pt`` after every epoch."""
    torch.manual_seed(seed)
    out_dir = Path(out_dir)
    state_path = out_dir / state_file(stage)
    progress = progress and dist.is_main

    net = freeze_all_but(nets, stage).to(device)
    train_idx, val_idx = split_indices(len(samples), settings.val_fraction, seed)
    if len(train_idx) == 0 or len(val_idx) == 0:
        raise ModelError(f"only {len(samples)} training samples were mined; need at least 2 (more images or faces?)")
    train_set = SampleDataset(samples.take(train_idx))
    sampler = DistributedSampler(train_set, num_replicas=dist.world_size, rank=dist.rank, shuffle=True, seed=seed)
    train_loader = DataLoader(train_set, batch_size=per_rank_batch(settings.batch_size, dist.world_size), sampler=sampler)
    # Validation: each rank scores its share (no padding), the sums are reduced: the whole split's loss.
    val_loader = DataLoader(SampleDataset(samples.take(val_idx[dist.rank :: dist.world_size])), batch_size=1024)
    val_weights = LossWeights(settings.loss.classification, settings.loss.box, hard_ratio=1.0)

    # ONet's landmark head gets no gradient from these losses: DDP must be told that some parameters
    # go unused (it costs a graph traversal per step, so only where it is needed).
    model = DistributedDataParallel(net, device_ids=[torch.device(device).index] if torch.device(device).type == "cuda" else None,
                                    find_unused_parameters=stage == "onet")
    optimizer = torch.optim.Adam(net.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=settings.lr_decay)

    run_id = run_id_for(stage, seed, samples, settings, dist)
    history: list[dict] = []
    bad_epochs, stopped = 0, False
    saved = dist.broadcast(read_run_state(state_path, DistributedError)
                           if dist.is_main and resume and state_path.is_file() else None)
    if saved is not None:
        history, best, bad_epochs, stopped, extra = apply_run_state(saved, state_path, run_id, net, optimizer, scheduler, DistributedError)
        start_val_loss = extra.get("start_val_loss", math.nan)
    else:
        # Epoch 0: the starting weights are a candidate too (as in loop.train_stage).
        start_val_loss = reduced(dist, run_epoch(net, val_loader, val_weights, device))["loss"]
        best = {"val_loss": start_val_loss, "epoch": 0, "state_dict": copy.deepcopy(net.state_dict())}

    epochs = tqdm(range(len(history), settings.epochs), desc=f"training {stage} ({dist.world_size} processes)",
                  disable=not progress, unit="epoch", initial=len(history), total=settings.epochs)
    for epoch in epochs:
        if stopped:
            break
        lr = optimizer.param_groups[0]["lr"]
        sampler.set_epoch(epoch)
        flips = flip_generator(seed, epoch, dist.rank) if settings.flip else None
        train = reduced(dist, run_epoch(model, train_loader, settings.loss, device, optimizer, flips))
        val = reduced(dist, run_epoch(net, val_loader, val_weights, device))
        scheduler.step()
        history.append(epoch_record(epoch + 1, lr, train, val))
        epochs.set_postfix(train=f"{train['loss']:.4f}", val=f"{val['loss']:.4f}", acc=f"{val['accuracy']:.3f}")
        best, bad_epochs, stopped = early_stopping(best, bad_epochs, val["loss"], epoch + 1, net, settings.patience)

        if dist.is_main:
            save_run_state(state_path, run_id, net, optimizer, scheduler, torch.Generator(), history, best, bad_epochs, stopped,
                           extra={"start_val_loss": start_val_loss})
    epochs.close()

    return best_result(net, best, history, stopped, start_val_loss)


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
    Reads the ``run_id`` beside each state (:func:`run_id_file`); a state without one (older facecmp)
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
