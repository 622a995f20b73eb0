"""Fine-tuning end to end: for each stage in cascade order, mine samples (cached) -> train; then
calibrate thresholds on a dev split -> save a checkpoint.

Stage-wise as in MTCNN: PNet trains on jittered 12 px crops around the annotated faces
(``samples``); RNet on 24 px crops of what the (fine-tuned) PNet proposes, ONet on 48 px crops of
what PNet+RNet pass on (``hard_mining``). Each stage starts from its pretrained weights, trains
alone (the others frozen) and is then used, fine-tuned, to mine the next stage's samples.
Stages not fine-tuned stay pretrained. What each stage costs and buys on Dexter is in the
docs/results.md, with the command that measures it.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Mapping

import torch

from facecmp.detection.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from facecmp.data.records import Dataset
from facecmp.detection.base import DetectorSettings
from facecmp.detection.detector import Detector
from facecmp.detection.inference import default_workers
from facecmp.errors import FacecmpError
from facecmp.process import run_conditions
from facecmp.detection.models import STAGES, build_network, pretrained_network
from facecmp.training.augment import AugmentSettings
from facecmp.training.calibrate import DEFAULT_GRID, Thresholds, best_thresholds
from facecmp.training.hard_mining import (
    HardMiningSettings,
    PnetProposals,
    capped_images,
    default_hard_mining,
    mine_stage_samples,
)
from facecmp.training.loop import TrainSettings, train_stage
from facecmp.data.fingerprint import data_fingerprint
from facecmp.training.samples import MiningSettings, SampleSet, mine_pnet_samples
from facecmp.training import retain as retaining
from facecmp.training.distributed import (
    SINGLE,
    Dist,
    best_thresholds_sharded,
    distributed_record,
    mine_pnet_samples_sharded,
    mine_stage_samples_sharded,
)

# Per-stage training recipes (``epochs`` overrides them all when given), by name (``finetune --recipe``).
# ``classic``: every layer trained on an exponentially decaying rate, PNet 15, RNet 8, ONet 6 epochs
# (the library's default until session 19, 2026-12-07).
CLASSIC_TRAINING: dict[str, TrainSettings] = {
    "pnet": TrainSettings(epochs=15),
    "rnet": TrainSettings(epochs=8),
    "onet": TrainSettings(epochs=6, batch_size=128),
}
# ``fast`` (the default from session 19 to 21): PNet as in ``classic``; RNet and ONet keep their first convolution
# (and its PReLU) as pretrained and train 4 and 3 epochs on a one-cycle schedule (peak: the classic rate),
# RNet's batches channels-last. What each recipe costs and scores, with the commands that measured
# them, is in docs/price.md.
_FIRST_LAYER = ("conv1", "prelu1")
FAST_TRAINING: dict[str, TrainSettings] = {
    "pnet": CLASSIC_TRAINING["pnet"],
    "rnet": TrainSettings(epochs=4, schedule="one-cycle", frozen=_FIRST_LAYER, channels_last=True),
    "onet": TrainSettings(epochs=3, batch_size=128, schedule="one-cycle", frozen=_FIRST_LAYER),
}
# ``short``, the default (session 21): PNet 8 epochs on a one-cycle schedule peaking at 2e-3 (15 on the
# exponential decay in ``fast`` and ``classic``), RNet as in ``fast`` but 3 epochs peaking at 2e-3, ONet as
# in ``fast``; every stage takes at least SHORT_MIN_STEPS optimizer steps, so a small training set gets
# more epochs (none of the three binds on the Dexter training set; docs/price.md, sessions 20 and 21).
SHORT_MIN_STEPS = 300
SHORT_TRAINING: dict[str, TrainSettings] = {
    "pnet": TrainSettings(epochs=8, lr=2e-3, schedule="one-cycle", min_steps=SHORT_MIN_STEPS),
    "rnet": dataclasses.replace(FAST_TRAINING["rnet"], epochs=3, lr=2e-3, min_steps=SHORT_MIN_STEPS),
    "onet": dataclasses.replace(FAST_TRAINING["onet"], min_steps=SHORT_MIN_STEPS),
}
RECIPES: dict[str, dict[str, TrainSettings]] = {"fast": FAST_TRAINING, "short": SHORT_TRAINING, "classic": CLASSIC_TRAINING}
DEFAULT_RECIPE = "short"
# The recipe a run gets when it names none (``FinetuneSettings.training`` None).
DEFAULT_TRAINING: dict[str, TrainSettings] = RECIPES[DEFAULT_RECIPE]


def recipe_name(training) -> str:
    """The name in :data:`RECIPES` of a run's training settings (None: the default recipe), else "custom"."""
    if training is None:
        return DEFAULT_RECIPE
    return next((name for name, recipe in RECIPES.items() if recipe == training), "custom")


def mining_workers(train: Dataset, device: str) -> int:
    """Mining processes by default: as ``facecmp detect`` chooses them (``default_workers``), one per
    torch thread (torch's threads are the cores the run may use)."""
    return default_workers(len(train.images), device, torch.get_num_threads())


def ordered_stages(stages) -> tuple[str, ...]:
    """``stages`` in cascade order, checked: at least one of pnet, rnet, onet, no repeats."""
    stages = tuple(stages)
    unknown = [s for s in stages if s not in STAGES]
    if unknown or not stages:
        raise FacecmpError(
            f"cannot fine-tune {', '.join(map(repr, unknown)) or 'no stage'}; --stages takes a comma-separated "
            f"list of {', '.join(STAGES)} (e.g. pnet,rnet,onet)"
        )
    return tuple(s for s in STAGES if s in stages)


def training_settings(stage: str, training, epochs: int | None) -> TrainSettings:
    """One TrainSettings for every stage, a per-stage mapping, or None (the defaults); ``epochs`` wins
    (exactly those epochs: the recipe's ``min_steps`` is dropped)."""
    if isinstance(training, TrainSettings):
        settings = training
    else:
        settings = dict(training or {}).get(stage, DEFAULT_TRAINING[stage])
    return dataclasses.replace(settings, epochs=epochs, min_steps=0) if epochs else settings


def hard_mining_settings(stage: str, hard_mining, min_face_size: float) -> HardMiningSettings:
    """RNet's/ONet's mining recipe (given or default), run at the detector's minimum face size."""
    chosen = dict(hard_mining or {}).get(stage) or default_hard_mining(stage)
    return dataclasses.replace(chosen, min_face_size=min_face_size)


def mine_for_stage(stage, train, nets, *, mining, hard_mining, seed, cache_dir, device, progress, min_face_size,
                   dist: Dist = SINGLE, augment=None, pnet_max_images: int | None = None, workers: int = 0,
                   proposals: PnetProposals | None = None) -> SampleSet:
    """``stage``'s training samples (cached). ``proposals``: RNet's mining keeps PNet's candidates in it and
    ONet's starts from them (``hard_mining.PnetProposals``)."""
    if dist.active and augment is not None:
        raise FacecmpError("--augment trains in one process for now: drop --nproc / torchrun, or drop --augment")
    if stage == "pnet":
        train = capped_images(train, pnet_max_images, seed)
        if dist.active:
            samples = mine_pnet_samples_sharded(train, mining, seed, dist, cache_dir=cache_dir, progress=progress)
        else:
            samples = mine_pnet_samples(train, mining, seed=seed, cache_dir=cache_dir, progress=progress, augment=augment,
                                        workers=workers)
        smallest = mining.min_face_size
    else:
        settings = hard_mining_settings(stage, hard_mining, min_face_size)
        if dist.active:
            samples = mine_stage_samples_sharded(train, nets, stage, settings, seed, dist, cache_dir, device, progress)
        else:
            samples = mine_stage_samples(
                train, nets, stage, settings, seed=seed, cache_dir=cache_dir, device=device, progress=progress, augment=augment,
                workers=workers, proposals=proposals,
            )
        smallest = settings.crops.min_face_size
    if len(samples) < 2 or samples.counts()["positive"] == 0:
        raise FacecmpError(
            f"{train.name}: mining {stage} samples found {samples.counts()}; need positives. Are the faces at least "
            f"{smallest} px and the boxes inside their images?"
        )
    return samples


@dataclass(frozen=True)
class FinetuneSettings:
    """What a fine-tuning run learns and how (the recipe recorded in the checkpoint); where it runs
    and whether it resumes are :func:`finetune`'s own arguments.

    ``mining`` is PNet's sample recipe, ``hard_mining`` RNet's/ONet's (default
    :func:`default_hard_mining`); ``training`` one TrainSettings for all stages or one per stage
    (default ``DEFAULT_TRAINING``, the ``fast`` recipe); ``epochs`` overrides every stage's; ``grid`` the thresholds
    tried on the dev split; ``augment`` mines augmented copies of every training frame too
    (:mod:`facecmp.training.augment`, ``facecmp finetune --augment``; None: the frames as they are).
    ``pnet_max_images``: PNet mines at most this many training images (a seeded random subset, as
    ``HardMiningSettings.max_images`` bounds RNet's and ONet's; None: all), which bounds the cost of
    large training sets (docs/price.md).
    """

    stages: tuple[str, ...] = ("pnet",)
    epochs: int | None = None
    seed: int = 0
    from_scratch: bool = False
    mining: MiningSettings = MiningSettings()
    hard_mining: Mapping[str, HardMiningSettings] | None = None
    training: TrainSettings | Mapping[str, TrainSettings] | None = None
    grid: tuple[Thresholds, ...] = DEFAULT_GRID
    min_face_size: float = DetectorSettings.min_face_size
    augment: AugmentSettings | None = None
    pnet_max_images: int | None = None
    # Keep the source domain (``--retain``): the recipe; the source images are finetune()'s ``retain``.
    retain: retaining.RetainSettings | None = None


def finetune(
    train: Dataset,
    out_dir: str | Path,
    settings: FinetuneSettings = FinetuneSettings(),
    *,
    dev: Dataset | None = None,
    device: str = "cpu",
    resume: bool = False,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    dist: Dist = SINGLE,
    retain: Dataset | None = None,
    workers: int | None = None,
) -> Checkpoint:
    """Fine-tune ``settings.stages`` on ``train``; calibrate thresholds on ``dev`` when given; save
    into ``out_dir``.

    ``cache_dir`` (default ``out_dir/cache``) keeps mined samples between runs; ``resume``
    continues an interrupted training from ``out_dir/train_state_<stage>.pt`` (finished stages are
    not re-trained).

    ``dist``: this process's place in a distributed run (``distributed.init_from_env`` under
    torchrun): mining, training and calibration are then shared by the ranks, rank 0 writes.

    ``retain``: source-domain images whose detections the run keeps (:mod:`facecmp.training.retain`,
    ``settings.retain`` the recipe, its default when None).

    ``workers``: processes that mine the samples, one thread each (the same samples as mining here;
    :mod:`facecmp.training.samples.batches`); None: :func:`mining_workers`.
    """
    stages = ordered_stages(settings.stages)
    if train.n_faces == 0:
        raise FacecmpError(f"{train.name}: the training set has no annotated faces, so there is nothing to learn from")
    out_dir = Path(out_dir)
    cache_dir = Path(cache_dir) if cache_dir is not None else out_dir / "cache"
    retain_record = None
    if retain is not None or settings.retain is not None:  # --retain: keep the source domain
        if retain is None:
            raise FacecmpError("a retain recipe needs source-domain images: pass --retain ROOT")
        if dist.active:
            raise FacecmpError("--retain trains in one process for now: drop --nproc / torchrun, or drop --retain")
        settings = dataclasses.replace(settings, retain=settings.retain or retaining.RetainSettings())
        retaining.require_faces(retain)
        retain_record = retaining.retain_record(retain, settings.retain)
        retaining.check_resume(out_dir, retain_record, resume)

    def workers_for(images: Dataset) -> int:
        return mining_workers(images, device) if workers is None else workers

    nets = {stage: pretrained_network(stage) for stage in STAGES}
    # PNet's candidates on the training (and source) frames, from RNet's mining to ONet's.
    proposals, source_proposals = PnetProposals(), PnetProposals()
    per_stage: dict[str, dict] = {}
    source_per_image = None  # --retain: the last stage's replay samples per source image (bounds the next one's mining)
    for stage in stages:
        if settings.from_scratch:
            nets[stage] = build_network(stage)
        recipe = training_settings(stage, settings.training, settings.epochs)
        start = time.perf_counter()
        samples = mine_for_stage(
            stage, train, nets, mining=settings.mining, hard_mining=settings.hard_mining, seed=settings.seed,
            cache_dir=cache_dir, device=device, progress=progress, min_face_size=settings.min_face_size, dist=dist,
            augment=settings.augment, pnet_max_images=settings.pnet_max_images,
            workers=workers_for(train), proposals=proposals,
        )
        mining_s = time.perf_counter() - start
        kept = {}
        if retain_record is not None:
            samples, kept = retaining.replay_stage(
                stage, samples, retain, settings.retain, mining=settings.mining, seed=settings.seed, cache_dir=cache_dir,
                hard_mining=hard_mining_settings(stage, settings.hard_mining, settings.min_face_size) if stage != "pnet" else None,
                progress=progress, nets=nets, workers=workers_for(retain),
                per_image=source_per_image, proposals=source_proposals,
            )
            source_per_image = kept.get("replay", {}).get("source_per_image")
            recipe = retaining.training_recipe(recipe, settings.retain, stage)
        start = time.perf_counter()
        strength = settings.retain.l2sp if retain_record is not None and settings.retain.penalises else 0.0
        anchor = pretrained_network(stage) if strength else None
        with retaining.anchored(nets[stage], anchor, strength):
            result = train_stage(nets, stage, samples, out_dir, recipe, seed=settings.seed, device=device, resume=resume, progress=progress,
                                 dist=dist, teacher=retaining.feature_teacher(stage, recipe))
        if anchor is not None:
            kept["distance_from_pretrained"] = retaining.distance_from(nets[stage], anchor)
        nets[stage].load_state_dict(result.state_dict)
        per_stage[stage] = stage_record(recipe, samples, result, mining_s=mining_s, training_s=time.perf_counter() - start)
        if retain_record is not None:
            per_stage[stage]["retain"] = kept
            per_stage[stage]["timings"]["retain_mining_s"] = kept.get("replay_mining_s", 0.0)

    if retain_record is not None and settings.retain.interpolates:  # WiSE-FT: average with the pretrained weights
        for stage in stages:
            averaged = retaining.interpolated(pretrained_network(stage).state_dict(), nets[stage].state_dict(), settings.retain.wise_alpha)
            nets[stage].load_state_dict(averaged)

    thresholds, table = None, None
    start = time.perf_counter()
    if dev is not None:
        def detector(t):
            return Detector(nets, DetectorSettings(min_face_size=settings.min_face_size, thresholds=t, device=device))

        if dist.active:
            thresholds, table = best_thresholds_sharded(detector, dev, settings.grid, dist, progress=progress)
        else:
            thresholds, table = best_thresholds(detector, dev, settings.grid, progress=progress)
    calibration = {"dataset": dev.name, "n_images": len(dev), "table": table, "seconds": time.perf_counter() - start} if dev is not None else None
    meta = checkpoint_meta(settings, stages, train, per_stage, thresholds, calibration)
    if retain_record is not None:
        meta["settings"]["retain"] = retain_record
        meta["timings"]["retain_mining_s"] = sum(p["timings"]["retain_mining_s"] for p in per_stage.values())
    if dist.active:
        meta["distributed"] = distributed_record(dist, per_stage)
    if dist.is_main:
        save_checkpoint(out_dir, {stage: nets[stage].state_dict() for stage in stages}, meta)
    dist.barrier()  # the other ranks read the checkpoint only once rank 0 has written it
    return load_checkpoint(out_dir)


def stage_record(recipe: TrainSettings, samples: SampleSet, result, *, mining_s: float, training_s: float) -> dict:
    """What one stage's training leaves in ``facecmp.json["stage_training"][stage]``."""
    return {
        "training": asdict(recipe),
        "samples": samples.counts(),
        "epochs": len(result.history),
        "best_epoch": result.best_epoch,  # 0: no epoch beat the starting weights, which were kept
        "start_val_loss": result.start_val_loss,
        "best_val_loss": result.best_val_loss,
        "stopped_early": result.stopped_early,
        "history": result.history,
        "timings": {"mining_s": mining_s, "training_s": training_s},
    }


def checkpoint_meta(settings: FinetuneSettings, stages: tuple[str, ...], train: Dataset, per_stage: dict[str, dict],
                    thresholds, calibration: dict | None) -> dict:
    """The checkpoint's ``facecmp.json``: the recipe, the data it saw, each stage's record, the
    calibrated thresholds and the time each part took."""
    meta = {
        "settings": {
            "mining": asdict(settings.mining),
            "hard_mining": {
                s: asdict(hard_mining_settings(s, settings.hard_mining, settings.min_face_size)) for s in stages if s != "pnet"
            },
            "seed": settings.seed,
            "from_scratch": settings.from_scratch,
            "augment": asdict(settings.augment) if settings.augment is not None else None,
            "pnet_max_images": settings.pnet_max_images,
            "recipe": recipe_name(settings.training),
        },
        "data_fingerprint": data_fingerprint(train),
        "n_train_images": len(train),
        "stage_training": per_stage,
        "thresholds": list(thresholds) if thresholds else None,
        "calibration": {k: v for k, v in calibration.items() if k != "seconds"} if calibration else None,
        "min_face_size": settings.min_face_size,
        # Totals over the stages (per stage: stage_training[stage]["timings"]).
        "timings": {
            "mining_s": sum(p["timings"]["mining_s"] for p in per_stage.values()),
            "training_s": sum(p["timings"]["training_s"] for p in per_stage.values()),
            "calibration_s": calibration["seconds"] if calibration else 0.0,
        },
        "run_conditions": run_conditions(),
    }
    if len(stages) == 1:
        # A one-stage checkpoint keeps its training record at the top level too, as it always has.
        only = per_stage[stages[0]]
        meta.update({k: only[k] for k in ("samples", "epochs", "best_epoch", "stopped_early", "history")})
        meta["settings"]["training"] = only["training"]
    else:
        meta["epochs"] = {s: p["epochs"] for s, p in per_stage.items()}
    return meta
