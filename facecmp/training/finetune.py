"""Fine-tuning end to end: mine samples (cached) -> train -> calibrate thresholds -> save a checkpoint."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import asdict
from pathlib import Path

from ..checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from ..data.records import Dataset
from ..detector import Detector, DetectorSettings
from ..errors import FacecmpError
from ..models import build_network, pretrained_network
from .calibrate import DEFAULT_GRID, best_thresholds
from .loop import TrainSettings, train_stage
from .samples import MiningSettings, data_fingerprint, mine_pnet_samples

IMPLEMENTED_STAGES = ("pnet",)


def finetune(
    train: Dataset,
    out_dir: str | Path,
    *,
    dev: Dataset | None = None,
    stages: tuple[str, ...] = ("pnet",),
    epochs: int = TrainSettings.epochs,
    seed: int = 0,
    device: str = "cpu",
    resume: bool = False,
    from_scratch: bool = False,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    mining: MiningSettings = MiningSettings(),
    training: TrainSettings = TrainSettings(),
    grid=DEFAULT_GRID,
    min_face_size: float = DetectorSettings.min_face_size,
) -> Checkpoint:
    """Fine-tune ``stages`` on ``train``; calibrate thresholds on ``dev`` when given; save into ``out_dir``.

    ``cache_dir`` (default ``out_dir/cache``) keeps mined samples between runs; ``resume``
    continues an interrupted training from ``out_dir/train_state.pt``.
    """
    stages = tuple(stages)
    unsupported = [s for s in stages if s not in IMPLEMENTED_STAGES]
    if unsupported or not stages:
        raise FacecmpError(
            f"fine-tuning {', '.join(unsupported) or 'no stage'} is not yet implemented; only --stages pnet is supported"
        )
    if train.n_faces == 0:
        raise FacecmpError(f"{train.name}: the training set has no annotated faces, so there is nothing to learn from")
    out_dir = Path(out_dir)
    cache_dir = Path(cache_dir) if cache_dir is not None else out_dir / "cache"
    training = dataclasses.replace(training, epochs=epochs)
    timings = {}

    start = time.perf_counter()
    samples = mine_pnet_samples(train, mining, seed=seed, cache_dir=cache_dir, progress=progress)
    timings["mining_s"] = time.perf_counter() - start
    if len(samples) < 2 or samples.counts()["positive"] == 0:
        raise FacecmpError(
            f"{train.name}: mining found {samples.counts()} samples; need positives. Are the faces at least "
            f"{mining.min_face_size} px and the boxes inside their images?"
        )

    nets = {stage: pretrained_network(stage) for stage in ("pnet", "rnet", "onet")}
    if from_scratch:
        nets["pnet"] = build_network("pnet")
    start = time.perf_counter()
    result = train_stage(nets, "pnet", samples, out_dir, training, seed=seed, device=device, resume=resume, progress=progress)
    timings["training_s"] = time.perf_counter() - start
    nets["pnet"].load_state_dict(result.state_dict)

    thresholds, table = None, None
    start = time.perf_counter()
    if dev is not None:
        def detector(t):
            return Detector(nets, DetectorSettings(min_face_size=min_face_size, thresholds=t, device=device))

        thresholds, table = best_thresholds(detector, dev, grid, progress=progress)
    timings["calibration_s"] = time.perf_counter() - start

    meta = {
        "settings": {"mining": asdict(mining), "training": asdict(training), "seed": seed, "from_scratch": from_scratch},
        "data_fingerprint": data_fingerprint(train),
        "n_train_images": len(train),
        "samples": samples.counts(),
        "epochs": len(result.history),
        "best_epoch": result.best_epoch,
        "stopped_early": result.stopped_early,
        "history": result.history,
        "thresholds": list(thresholds) if thresholds else None,
        "calibration": {"dataset": dev.name, "n_images": len(dev), "table": table} if dev is not None else None,
        "min_face_size": min_face_size,
        "timings": timings,
    }
    save_checkpoint(out_dir, {"pnet": result.state_dict}, meta)
    return load_checkpoint(out_dir)
