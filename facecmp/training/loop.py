"""Training one cascade stage on mined samples, the other stages frozen: one loop, for one process
and for several (DistributedDataParallel; ``dist`` from ``training.distributed``).

Read top to bottom: settings -> freeze -> split -> data loaders -> optimizer and schedule ->
(resume) -> epoch 0: score the starting weights -> epochs of train / validate / early-stop /
checkpoint -> best weights (the starting ones when no epoch beats them). Where a distributed run
differs it says ``if dist.active``: each rank's share of every batch and of the validation split
(the same global batch and learning rate as one process), DDP around the net, the flips drawn
per rank, the losses reduced over the ranks, rank 0 alone writing.

Everything random is seeded: the train/validation split (numpy), the shuffling and the flip
augmentation (one process: one torch.Generator whose state is checkpointed; several: from
``(seed, epoch, rank)`` alone), so a run resumed from ``train_state_<stage>.pt``
(``training.run_state``) continues exactly as if it had never stopped. Every stage has its
own state file, so one folder holds the whole cascade's training.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np
import torch
from torch import nn
from torch.utils.data import DistributedSampler, RandomSampler
from tqdm.auto import tqdm

from facecmp.detection.models import ONet, PNet, RNet
from facecmp.errors import ModelError
from facecmp.training.distributed import SINGLE, Dist, DistributedError, data_parallel, flip_generator, per_rank_batch, reduced
from facecmp.training.losses import LossWeights, feature_distance, mtcnn_loss
from facecmp.training.run_state import (
    apply_run_state,
    read_run_state,
    restore_random_states,
    run_recipe,
    save_run_state,
    state_file,
)
from facecmp.training.samples.dataset import SampleDataset, batch_loader, hflip
from facecmp.training.samples.sample_set import SampleSet


@dataclass(frozen=True)
class TrainSettings:
    epochs: int = 15
    batch_size: int = 256
    lr: float = 1e-3
    # Learning rate multiplied by this after every epoch (independent of ``epochs``, so resuming
    # with a larger ``epochs`` continues the same schedule).
    lr_decay: float = 0.85
    # "exponential": ``lr`` decayed by ``lr_decay`` after every epoch. "one-cycle": the learning rate
    # rises to ``lr`` over the first quarter of all the run's steps and anneals (cosine) to ~0 by
    # its last (torch's OneCycleLR, stepped per batch; ``lr_decay`` unused; ``epochs`` is then part
    # of the schedule, so a run resumes only with the same epochs).
    schedule: str = "exponential"
    weight_decay: float = 1e-5
    # Stop after this many epochs without a better validation loss; keep the best epoch's weights.
    patience: int = 3
    val_fraction: float = 0.1
    flip: bool = True
    loss: LossWeights = field(default_factory=LossWeights)
    # CPU threads for torch; None: the process's own (what `facecmp --threads` set).
    threads: int | None = None
    # Layers of the stage's net (module names, e.g. "conv1") that keep their starting weights:
    # no weight gradients are computed for them, so each step costs less (docs/price.md).
    frozen: tuple[str, ...] = ()
    # Training batches in channels-last memory format: faster convolution steps on the CPU, float
    # rounding differences only. None: the stage's default, ONet's batches only (docs/price.md).
    channels_last: bool | None = None
    # At least this many optimizer steps: on a training set too small for ``epochs`` to reach them,
    # the run takes as many epochs as it needs (``planned_epochs``); 0: ``epochs`` as given.
    min_steps: int = 0

    def __post_init__(self):
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule {self.schedule!r}: expected one of {', '.join(SCHEDULES)}")


def planned_epochs(settings: TrainSettings, batches_per_epoch: int) -> int:
    """The epochs a run takes: ``settings.epochs``, or more where those are fewer than ``min_steps`` steps."""
    return max(settings.epochs, -(-settings.min_steps // max(1, batches_per_epoch)))


SCHEDULES = ("exponential", "one-cycle")
# The share of a one-cycle run's steps spent warming up to the peak learning rate.
ONE_CYCLE_WARMUP = 0.25


@dataclass
class TrainResult:
    state_dict: dict[str, torch.Tensor]
    # One entry per epoch: {"epoch", "lr", "train_loss", "train_cls", "train_box", "val_loss", "val_cls", "val_box", "val_accuracy"}
    history: list[dict]
    # 0 when no epoch beat the starting weights on the validation split (they are kept then).
    best_epoch: int
    stopped_early: bool
    # Validation loss of the starting weights (epoch 0) and of the weights kept.
    start_val_loss: float = math.nan
    best_val_loss: float = math.nan


def training_threads(threads: int | None) -> int:
    """The CPU threads a training run uses: ``threads`` when its settings name a number, else the
    process's own torch setting (``facecmp --threads``), which a recipe's default never overrides."""
    return torch.get_num_threads() if threads is None else threads


def freeze_all_but(nets: Mapping[str, nn.Module], stage: str, frozen: tuple[str, ...] = ()) -> nn.Module:
    """Only ``nets[stage]`` keeps gradients, less its layers named in ``frozen``; the other
    stages are frozen in eval mode."""
    layers = dict(nets[stage].named_children())
    unknown = [name for name in frozen if name not in layers]
    if unknown:
        raise ModelError(f"{stage} has no layer {', '.join(map(repr, unknown))} to freeze; its layers: {', '.join(layers)}")
    for name, net in nets.items():
        net.requires_grad_(name == stage)
        if name != stage:
            net.eval()
    for name in frozen:
        layers[name].requires_grad_(False)
    return nets[stage]


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng([seed, 1]).permutation(n)
    n_val = max(1, int(round(n * val_fraction))) if n > 1 else 0
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def net_outputs(net: nn.Module, x: torch.Tensor, channels_last: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logits (N, 2), offsets (N, 4))`` for any stage (PNet's 1x1 maps are flattened; ONet's landmarks ignored).

    ``channels_last`` None: ONet's batches go in channels-last, its training steps run ~1.4x faster
    so on CPU, with float rounding differences only (docs/price.md, which also has why RNet's 1.6x
    is not the default; PNet's 12 px crops are slower so)."""
    if channels_last is None:
        channels_last = isinstance(getattr(net, "module", net), ONet)  # (a DDP wrapper holds the net as .module)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    out = net(x, logits=True)
    return out[-1].flatten(1), out[0].flatten(1)


# Each stage's last hidden layer: the features that feature distillation (``LossWeights.features``) compares.
HIDDEN_LAYER = {PNet: "prelu3", RNet: "prelu4", ONet: "prelu5"}


@contextlib.contextmanager
def hidden_features(net: nn.Module):
    """While active, the dict it yields holds ``"x"``: the output of ``net``'s last hidden layer
    (:data:`HIDDEN_LAYER`) in its latest forward pass."""
    inner = getattr(net, "module", net)  # (a DDP wrapper holds the net as .module)
    grabbed: dict[str, torch.Tensor] = {}
    handle = getattr(inner, HIDDEN_LAYER[type(inner)]).register_forward_hook(lambda _m, _i, out: grabbed.__setitem__("x", out))
    try:
        yield grabbed
    finally:
        handle.remove()


def distilled_features(student_hidden: torch.Tensor, teacher: nn.Module, images: torch.Tensor, targets: torch.Tensor,
                       channels_last: bool | None = None) -> torch.Tensor:
    """The feature distillation term of a batch: :func:`feature_distance` between the student's
    last hidden features (``student_hidden``) and ``teacher``'s on the taught samples (a soft
    target in ``targets``' 5th column), 0 without any. The teacher's batch goes in the student's
    memory layout (``channels_last`` as :func:`net_outputs` takes it): the faster one on the CPU."""
    taught = ~torch.isnan(targets[:, 4]) if targets.shape[1] > 4 else None
    if taught is None or not taught.any():
        return student_hidden.sum() * 0.0
    with torch.no_grad(), hidden_features(teacher) as hidden:
        net_outputs(teacher, images[taught], channels_last)
    return feature_distance(student_hidden[taught].flatten(1), hidden["x"].flatten(1))


def run_epoch(net, loader, weights: LossWeights, device, optimizer=None, flip_generator=None, progress=None,
              channels_last: bool | None = None, step_scheduler=None, teacher: nn.Module | None = None) -> dict[str, float]:
    """One pass over ``loader``; trains when ``optimizer`` is given (``step_scheduler`` stepped after
    each of its steps). With ``teacher`` and ``weights.features``, the loss adds feature distillation
    on the taught samples (:func:`distilled_features`). Returns sample-weighted mean losses."""
    totals = {"loss": 0.0, "cls": 0.0, "box": 0.0, "correct": 0, "classified": 0}
    seen = 0
    net.train(optimizer is not None)
    distil = teacher is not None and weights.features > 0
    with torch.set_grad_enabled(optimizer is not None), (hidden_features(net) if distil else contextlib.nullcontext()) as student:
        for images, labels, targets in loader:
            if flip_generator is not None:
                flip = torch.rand(len(images), generator=flip_generator) < 0.5
                images[flip], targets[flip] = hflip(images[flip], targets[flip])
            images, labels, targets = images.to(device), labels.to(device), targets.to(device)
            logits, offsets = net_outputs(net, images, channels_last)
            loss, cls, box = mtcnn_loss(logits, offsets, labels, targets, weights)
            if distil:
                loss = loss + weights.features * distilled_features(student["x"], teacher, images, targets, channels_last)
            if optimizer is not None:
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                if step_scheduler is not None:
                    step_scheduler.step()
            n = len(labels)
            seen += n
            totals["loss"] += loss.item() * n
            totals["cls"] += cls.item() * n
            totals["box"] += box.item() * n
            classified = labels >= 0
            totals["correct"] += int((logits.argmax(1)[classified] == labels[classified]).sum())
            totals["classified"] += int(classified.sum())
            if progress is not None:
                progress.set_postfix(loss=f"{totals['loss'] / seen:.4f}", refresh=False)
    out = {k: totals[k] / max(seen, 1) for k in ("loss", "cls", "box")}
    out["accuracy"] = totals["correct"] / max(totals["classified"], 1)
    out["samples"], out["classified"] = seen, totals["classified"]  # the weights of the means, for reducing over processes
    return out


def epoch_record(epoch: int, lr: float, train: dict, val: dict) -> dict:
    """One epoch's line in the run's history."""
    return {
        "epoch": epoch, "lr": lr,
        "train_loss": train["loss"], "train_cls": train["cls"], "train_box": train["box"],
        "val_loss": val["loss"], "val_cls": val["cls"], "val_box": val["box"], "val_accuracy": val["accuracy"],
    }


def early_stopping(best: dict, bad_epochs: int, val_loss: float, epoch: int, net, patience: int) -> tuple[dict, int, bool]:
    """Early stopping on the validation loss: ``(best, bad_epochs, stop)`` after this epoch.
    ``best`` keeps the best epoch's weights, which are what the stage returns."""
    if val_loss < best["val_loss"]:
        return {"val_loss": val_loss, "epoch": epoch, "state_dict": copy.deepcopy(net.state_dict())}, 0, False
    return best, bad_epochs + 1, bad_epochs + 1 >= patience


def best_result(net, best: dict, history: list, stopped: bool, start_val_loss: float) -> TrainResult:
    """Put the best epoch's weights back into ``net`` (eval mode) and report the run."""
    net.load_state_dict(best["state_dict"])
    net.eval()
    return TrainResult(
        state_dict=copy.deepcopy(net.state_dict()), history=history, best_epoch=best["epoch"], stopped_early=stopped,
        start_val_loss=start_val_loss, best_val_loss=best["val_loss"],
    )


def train_stage(
    nets: Mapping[str, nn.Module],
    stage: str,
    samples: SampleSet,
    out_dir: str | Path,
    settings: TrainSettings = TrainSettings(),
    seed: int = 0,
    device: str = "cpu",
    resume: bool = False,
    progress: bool = True,
    dist: Dist = SINGLE,
    teacher: nn.Module | None = None,
) -> TrainResult:
    """Fine-tune ``nets[stage]`` in place on ``samples``; return the best epoch's weights.

    ``teacher``: the network whose hidden features the taught samples' are pulled towards when
    ``settings.loss.features`` is set (feature distillation; the validation loss leaves it out).

    ``dist``: this process's place in a distributed run (every rank calls this with the same
    samples; the weights returned are the same on every rank, and rank 0 writes the run state);
    one process by default.
    """
    torch.set_num_threads(training_threads(settings.threads))
    torch.manual_seed(seed)
    out_dir = Path(out_dir)
    state_path = out_dir / state_file(stage)
    progress = progress and dist.is_main

    # Freeze every other stage and the layers the recipe keeps; only the rest reach the optimizer.
    net = freeze_all_but(nets, stage, tuple(settings.frozen)).to(device)
    teacher = teacher.to(device).eval().requires_grad_(False) if teacher is not None and settings.loss.features > 0 else None

    # Data: a seeded held-out split for validation; in one process one generator drives shuffling and flips.
    train_idx, val_idx = split_indices(len(samples), settings.val_fraction, seed)
    if len(train_idx) == 0 or len(val_idx) == 0:
        raise ModelError(f"only {len(samples)} training samples were mined; need at least 2 (more images or faces?)")
    generator = torch.Generator().manual_seed(seed)
    train_set = SampleDataset(samples.take(train_idx))
    if dist.active:  # each rank takes its share of every global batch, in an order from (seed, epoch)
        sampler = DistributedSampler(train_set, num_replicas=dist.world_size, rank=dist.rank, shuffle=True, seed=seed)
        train_loader = batch_loader(train_set, per_rank_batch(settings.batch_size, dist.world_size), sampler)
    else:
        train_loader = batch_loader(train_set, settings.batch_size, RandomSampler(train_set, generator=generator), generator)
    # Validation: each rank scores its share (one process: all of it); reduced, the whole split's loss.
    val_loader = batch_loader(SampleDataset(samples.take(val_idx[dist.rank :: dist.world_size])), 1024)
    val_weights = dataclasses.replace(settings.loss, hard_ratio=1.0)
    layout = settings.channels_last
    n_epochs = planned_epochs(settings, len(train_loader))

    # The net trained (under DDP the ranks' gradients are averaged); the optimizer over this stage
    # only, with a per-epoch exponential decay or a per-step one-cycle schedule.
    model = data_parallel(net, stage, device) if dist.active else net
    trained = [p for p in net.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trained, lr=settings.lr, weight_decay=settings.weight_decay)
    if settings.schedule == "one-cycle":
        # One step more than the run takes, and a warm-up of at least 2 steps: torch's OneCycleLR
        # divides by zero on the last step of a run of <= 4 steps otherwise (tiny data).
        total = n_epochs * len(train_loader) + 1
        scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=settings.lr, total_steps=total,
                                                        pct_start=max(ONE_CYCLE_WARMUP, min(1.0, 2 / total)))
        per_step = scheduler
    else:
        scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=settings.lr_decay)
        per_step = None

    # Where we are: fresh, or restored from the last finished epoch (read by rank 0, sent to every rank).
    # A state is resumed only with the data, settings and number of processes that wrote it.
    run_id = {"stage": stage, "seed": seed, "n_samples": len(samples),
              **({"world_size": dist.world_size} if dist.active else {}), "settings": run_recipe(settings)}
    error = DistributedError if dist.active else ModelError
    history: list[dict] = []
    best: dict = {}
    bad_epochs, stopped = 0, False
    saved = dist.broadcast(read_run_state(state_path, error) if dist.is_main and resume and state_path.is_file() else None)
    if saved is not None:
        history, best, bad_epochs, stopped, extra = apply_run_state(saved, state_path, run_id, net, optimizer, scheduler, error)
        restore_random_states(saved, generator)
        start_val_loss = extra.get("start_val_loss", math.nan)
    else:
        # Epoch 0: the starting weights are a candidate too. Scored on the validation split
        # before any training, they are kept when no epoch beats them (fine-tuning that does
        # not help must not make the model worse than it started).
        start_val_loss = reduced(dist, run_epoch(net, val_loader, val_weights, device, channels_last=layout))["loss"]
        best = {"val_loss": start_val_loss, "epoch": 0, "state_dict": copy.deepcopy(net.state_dict())}

    desc = f"training {stage}" + (f" ({dist.world_size} processes)" if dist.active else "")
    epochs = tqdm(range(len(history), n_epochs), desc=desc, disable=not progress, unit="epoch",
                  initial=len(history), total=n_epochs)
    for epoch in epochs:
        if stopped:
            break
        lr = optimizer.param_groups[0]["lr"]
        if dist.active:  # a new order for the epoch; each rank's flips from (seed, epoch, rank)
            sampler.set_epoch(epoch)
            flips = flip_generator(seed, epoch, dist.rank) if settings.flip else None
        else:
            flips = generator if settings.flip else None
        train = reduced(dist, run_epoch(model, train_loader, settings.loss, device, optimizer, flips, epochs if progress else None,
                                        layout, per_step, teacher))
        val = reduced(dist, run_epoch(net, val_loader, val_weights, device, channels_last=layout))
        if per_step is None:
            scheduler.step()
        history.append(epoch_record(epoch + 1, lr, train, val))
        epochs.set_postfix(train=f"{train['loss']:.4f}", val=f"{val['loss']:.4f}", acc=f"{val['accuracy']:.3f}")
        best, bad_epochs, stopped = early_stopping(best, bad_epochs, val["loss"], epoch + 1, net, settings.patience)

        # Checkpoint the whole run state after every epoch.
        if dist.is_main:
            save_run_state(state_path, run_id, net, optimizer, scheduler, generator, history, best, bad_epochs, stopped,
                           extra={"start_val_loss": start_val_loss})
    epochs.close()

    return best_result(net, best, history, stopped, start_val_loss)
