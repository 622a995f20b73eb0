"""Fine-tuned checkpoints: a folder of plain state dicts plus ``facecmp.json``.

Layout::

    <dir>/pnet.pt          one per fine-tuned stage; a plain state dict with facenet-pytorch's keys,
                           so facenet_pytorch.MTCNN().pnet.load_state_dict(torch.load("pnet.pt")) works
    <dir>/facecmp.json     {"format": 1, "stages": [...], "thresholds": [p, r, o] | null, ...}

Every file is written atomically and ``facecmp.json`` last: a folder without it is an
unfinished checkpoint, never a half-written one that looks complete.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch

from facecmp import atomic
from facecmp.data.fingerprint import files_digest
from facecmp.errors import ModelError
from facecmp.detection.models import NETWORKS, STAGES, load_state_dict

FORMAT = 1
META_FILE = "facecmp.json"
# What a checkpoint folder's results depend on: weights (MTCNN stages, recognizer: .pt; dlib's
# detectors: .svm) and facecmp.json; not the run states a resumable training leaves beside them.
WEIGHT_SUFFIXES = (".pt", ".svm")


def checkpoint_digest(folder: str | Path) -> str:
    """Hash of a checkpoint folder's weights and metadata: another training run, another digest."""
    return files_digest(
        p for p in sorted(Path(folder).glob("*"))
        if p.is_file() and (p.suffix in WEIGHT_SUFFIXES and not p.name.startswith("train_state") or p.name == META_FILE)
    )


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    state_dicts: dict[str, dict[str, torch.Tensor]]
    thresholds: tuple[float, float, float] | None
    meta: dict[str, Any]

    @property
    def stages(self) -> tuple[str, ...]:
        return tuple(self.state_dicts)


def _check_keys(stage: str, state_dict: Mapping[str, torch.Tensor], where: str) -> None:
    expected = NETWORKS[stage]().state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    wrong_shape = sorted(k for k in expected if k in state_dict and tuple(state_dict[k].shape) != tuple(expected[k].shape))
    if missing or unexpected or wrong_shape:
        parts = []
        if missing:
            parts.append(f"missing keys {missing}")
        if unexpected:
            parts.append(f"unexpected keys {unexpected}")
        if wrong_shape:
            parts.append(f"wrong shapes for {wrong_shape}")
        raise ModelError(
            f"{where}: not {stage} weights ({'; '.join(parts)}). Expected a state dict with facenet-pytorch's "
            f"{stage} keys; re-run `facecmp finetune` to rebuild the checkpoint."
        )


def save_checkpoint(directory: str | Path, state_dicts: Mapping[str, Mapping[str, torch.Tensor]], meta: Mapping[str, Any]) -> Path:
    """Write ``<stage>.pt`` for each stage, then ``facecmp.json`` (format, stages and ``meta``)."""
    directory = Path(directory)
    for stage, state_dict in state_dicts.items():
        if stage not in STAGES:
            raise ModelError(f"unknown stage {stage!r}; expected one of {', '.join(STAGES)}")
        _check_keys(stage, state_dict, f"weights for {stage}")
    directory.mkdir(parents=True, exist_ok=True)
    for stage, state_dict in state_dicts.items():
        plain = {k: v.detach().cpu().clone() for k, v in state_dict.items()}
        atomic.save_torch(directory / f"{stage}.pt", plain)
    thresholds = meta.get("thresholds")
    document = {**dict(meta), "format": FORMAT, "stages": list(state_dicts), "thresholds": list(thresholds) if thresholds else None}
    atomic.write_json(directory / META_FILE, document)
    return directory


def _read_meta(path: Path) -> dict[str, Any]:
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ModelError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg}); re-run `facecmp finetune` to rebuild it") from None
    if isinstance(meta, dict) and meta.get("kind") == "dlib-hog":
        raise ModelError(f"{path}: a dlib HOG detector (`facecmp finetune --stages dlib-hog`), not MTCNN stages; run it with `facecmp detect --model {path.parent}`")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ModelError(f"{path}: expected a facecmp checkpoint description with \"format\": {FORMAT}; got {str(meta)[:80]}")
    stages = meta.get("stages")
    if not isinstance(stages, list) or not stages or any(s not in STAGES for s in stages):
        raise ModelError(f"{path}: \"stages\" must list some of {', '.join(STAGES)}; got {stages!r}")
    thresholds = meta.get("thresholds")
    if thresholds is not None and (
        not isinstance(thresholds, list) or len(thresholds) != 3 or not all(isinstance(t, (int, float)) and 0 <= t <= 1 for t in thresholds)
    ):
        raise ModelError(f"{path}: \"thresholds\" must be null or three numbers in [0, 1]; got {thresholds!r}")
    return meta


def load_checkpoint(directory: str | Path) -> Checkpoint:
    """Read a checkpoint folder written by :func:`save_checkpoint`, checking every weights file."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ModelError(f"{directory}: checkpoint folder not found. Pass the folder `facecmp finetune` wrote (--out).")
    meta_path = directory / META_FILE
    if not meta_path.is_file():
        raise ModelError(
            f"{directory}: no {META_FILE}, so this is not a finished facecmp checkpoint "
            "(an interrupted run? re-run `facecmp finetune` with --resume to finish it)."
        )
    meta = _read_meta(meta_path)
    state_dicts = {}
    for stage in meta["stages"]:
        weights = directory / f"{stage}.pt"
        state_dict = load_state_dict(weights)
        if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
            raise ModelError(f"{weights}: expected a plain state dict (name -> tensor); got {type(state_dict).__name__}")
        _check_keys(stage, state_dict, str(weights))
        state_dicts[stage] = state_dict
    thresholds = tuple(float(t) for t in meta["thresholds"]) if meta.get("thresholds") else None
    return Checkpoint(path=directory, state_dicts=state_dicts, thresholds=thresholds, meta=meta)
