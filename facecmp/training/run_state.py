"""A training run's state on disk: what ``--resume`` continues from, and what it refuses.

After every epoch a run writes ``train_state_<stage>.pt`` (weights, optimizer, schedule, random
states, record; tensors and plain values only, so it loads with ``weights_only=True``) and, first,
the ``run_id`` beside it as JSON (:func:`run_id_file`), which ``--resume`` checks before loading
anything. A state written under another ``run_id`` (other data, settings or number of processes)
is refused with one line. Serves the stage loop (``loop.train_stage``, one process or several)
and the recognizer's.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from facecmp import atomic
from facecmp.detection.models import load_plain
from facecmp.errors import ModelError


def state_file(stage: str) -> str:
    """The file in ``out_dir`` that checkpoints ``stage``'s training after every epoch."""
    return f"train_state_{stage}.pt"


def run_recipe(settings) -> dict:
    """The settings that decide what a resumable run learns (a run state written under other ones
    is refused): all but ``threads`` (where it runs) and ``epochs`` (a resumed run may go on longer),
    unless the schedule spans the run's epochs (one-cycle)."""
    spans = getattr(settings, "schedule", "exponential") == "one-cycle"
    return {k: v for k, v in asdict(settings).items() if k != "threads" and (k != "epochs" or spans)}


def _without_epochs(run_id: dict) -> dict:
    return {**run_id, "settings": {k: v for k, v in (run_id.get("settings") or {}).items() if k != "epochs"}}


def _extendable_recipes(stage) -> str:
    """The named recipes that train ``stage`` on a per-epoch decay (fast: PNet only; classic: every stage)."""
    if stage == "pnet":
        return "--recipe fast and --recipe classic train PNet"
    return f"--recipe classic trains {dict(rnet='RNet', onet='ONet').get(stage, 'every stage')}"


def run_id_file(path: Path) -> Path:
    """The JSON beside a run state holding its ``run_id``: what a resume checks without loading the state."""
    return Path(path).with_suffix(".json")


def save_run_state(
    path: Path, run_id: dict, net, optimizer, scheduler, generator, history, best, bad_epochs, stopped, extra: dict | None = None
) -> None:
    """Everything a run needs to continue exactly (weights, optimizer, schedule, random states, record,
    and the loop's own ``extra`` values), atomically, as tensors and plain values only (so it loads with
    ``weights_only=True``); the ``run_id`` also goes to :func:`run_id_file`, first (it is the same for every
    epoch of a run, and the state itself is checked again on resume)."""
    atomic.write_json(run_id_file(path), {"run_id": plain_values(run_id)})
    atomic.save_torch(path, plain_values({
        "run_id": run_id, "model": net.state_dict(), "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(), "generator": generator.get_state(), "torch_rng": torch.get_rng_state(),
        "history": history, "best": best, "bad_epochs": bad_epochs, "stopped": stopped, "extra": extra or {},
    }))


def plain_values(obj):
    """``obj`` with numpy scalars and arrays made Python numbers and tensors (the loss sums reduced across ranks
    are numpy floats), so that ``torch.load(weights_only=True)`` reads it back."""
    if isinstance(obj, dict):
        return type(obj)((k, plain_values(v)) for k, v in obj.items())  # dict or OrderedDict (a state dict)
    if isinstance(obj, (list, tuple)):
        return type(obj)(plain_values(v) for v in obj)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(obj))
    return obj


def read_run_state(path: Path, error: type[Exception] = ModelError) -> dict:
    """A saved run state, loaded with ``weights_only=True``: a state that would run code is refused (one line)."""
    state = load_plain(path, "run state", "delete it, or drop --resume, to start over", error)
    if not isinstance(state, dict):
        raise error(f"{path}: not a facecmp run state; delete it, or drop --resume, to start over")
    return state


def apply_run_state(state: dict, path: Path, run_id: dict, net, optimizer, scheduler,
                    world_size_error: type[Exception] = ModelError) -> tuple[list, dict, int, bool, dict]:
    """Load a saved run state into the net, optimizer and scheduler; ``(history, best, bad_epochs, stopped, extra)``.

    A state written with another number of processes (raised as ``world_size_error``) or another
    ``run_id`` (other data or settings) is refused.
    """
    written = state.get("run_id") or {}
    expected = run_id.get("world_size", 1)
    if written.get("world_size", 1) != expected:  # say so rather than "different settings"
        raise world_size_error(
            f"{path}: was written by a run with {written.get('world_size', 1)} process(es), this one has {expected}; "
            "resume with the same number (--nproc / torchrun --nproc_per_node x --nnodes), or drop --resume to start over"
        )
    epochs = (written.get("settings") or {}).get("epochs"), run_id["settings"].get("epochs")
    if written != run_id and _without_epochs(written) == _without_epochs(run_id):
        raise ModelError(  # say so rather than "different settings": only the epochs of a one-cycle run differ
            f"{path}: was trained on a one-cycle schedule over {epochs[0]} epoch(s), which spans the run's epochs, so it "
            f"resumes only with the same number (this run asks for {epochs[1]}). Resume with those epochs, or drop --resume "
            f"to start over; {_extendable_recipes(run_id.get('stage'))} on a decaying rate that a resume can extend."
        )
    if written != run_id:
        raise ModelError(
            f"{path}: was written by a run with different data or settings, so it cannot be resumed. "
            "Drop --resume to start over, or use another output folder."
        )
    net.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    return state["history"], state["best"], state["bad_epochs"], state["stopped"], state.get("extra", {})


def restore_random_states(state: dict, generator: torch.Generator) -> None:
    """Put the saved random states back: ``generator``'s and torch's own."""
    generator.set_state(state["generator"])
    torch.set_rng_state(state["torch_rng"])


def load_run_state(path: Path, run_id: dict, net, optimizer, scheduler, generator) -> tuple[list, dict, int, bool, dict]:
    """Restore what :func:`save_run_state` wrote into the given objects, random states included."""
    state = read_run_state(path)
    restored = apply_run_state(state, path, run_id, net, optimizer, scheduler)
    restore_random_states(state, generator)
    return restored
