"""Fine-tuning that keeps the source domain (``facecmp finetune --retain ROOT``, issue #21).

A cascade fine-tuned on cartoons forgets human faces (docs/wider.md measures how much). The
remedies here keep what the pretrained cascade does on the source-domain images of ROOT (any
format facecmp reads, with face labels), hooked into each stage's training without changing the
training loop:

- ``replay``: every stage's samples get source-domain samples mixed in: the same recipe's
  jittered positives / part faces and random / near negatives of the source images (PNet: 12 px
  crops as ``samples.py`` cuts them; RNet/ONet: 24/48 px crops cut the way the cascade cuts them,
  ``hard_mining.mine_candidate_image`` without candidates, so no cascade run on the large source
  frames), labelled by the source ground truth, ``replay_share`` of them per target sample
  (a seeded subset). The stage's validation split is drawn from the mix, so early stopping
  weighs both domains. With ``source_targets="teacher"`` the source samples' classifier learns
  the pretrained stage's face probability on each crop instead of the label's class
  (distillation, learning without forgetting; the soft targets of ``losses``).
- ``l2sp``: L2-SP (Li, Grandvalet, Davoine 2018): the gradient of ``l2sp / 2 * ||w - w_pretrained||^2``
  is added to every trained weight's gradient (a tensor hook), pulling the stage towards the
  weights it started from. It needs no source images, but ``--retain`` still names them.
- ``replay+l2sp``: both.
- ``wise``: WiSE-FT (Wortsman et al. 2022): the cascade fine-tunes as without ``--retain``, then
  every fine-tuned stage's weights become ``(1 - wise_alpha) * pretrained + wise_alpha * fine-tuned``
  before the thresholds are calibrated. No source images are trained on and nothing is added to
  the training time; ``--retain`` still names them (the held-out part is what the gates score).
- ``replay+wise``: replay while training, then the average with the pretrained weights.

Which images of ROOT are trained on: :func:`retain_split` sets ``holdout`` images per folder
(WIDER: per event) aside first, chosen with the run's seed, exactly the images
``compare --source-split split:N`` / ``--facecmp-source-split split:N`` score with that seed, so a
checkpoint is never tested on what it trained on. :func:`refuse_overlap` refuses a retain set
that shares images (by file bytes) with a test set.

What each remedy bought, with the commands, is in docs/wider.md ("What does fine-tuning forget?").
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Mapping

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from facecmp.data.fingerprint import code_fingerprint, data_fingerprint, library_versions
from facecmp.data.images import read_image
from facecmp.data.records import Dataset
from facecmp.detection.cascade import normalize
from facecmp.detection.models import STAGES, pretrained_network
from facecmp.errors import DataError, FacecmpError
from facecmp.training.hard_mining import (
    HardMiningSettings,
    PnetProposals,
    capped_images,
    mine_candidate_image,
    mine_stage_samples,
)
from facecmp.training.loop import net_outputs
from facecmp.training.samples import MiningSettings, SampleSet, balanced_sample_set, cached_samples, mine_pnet_samples

RETAIN_METHODS = ("replay", "l2sp", "replay+l2sp", "wise", "replay+wise")
# How RNet's / ONet's replay samples are found on the source frames (RetainSettings.source_mining).
SOURCE_MINING = ("cascade", "crops")
# What the replay samples' classifier learns (RetainSettings.source_targets).
SOURCE_TARGETS = ("labels", "teacher")
# How the replayed source samples enter a stage's samples: "add" (the target's all kept, the stage trains
# on 1 + share times as many) or "replace" (as many target samples, seeded, make room for them: the
# stage trains on as many samples, so as many steps, as the plain fine-tune).
REPLAY_MODES = ("add", "replace")
# The source images of ROOT set aside per folder by default: the test part CI and the gates score (split:1).
DEFAULT_HOLDOUT = 1
# Bump when this module changes what the replay samples are: old caches are then ignored.
REPLAY_VERSION = 1
# The stages feature distillation (RetainSettings.feature_weight) applies to: the two that forget
# most under replay (docs/wider.md, session 24); PNet's features are a 1x1 map of 32 channels.
FEATURE_STAGES = ("rnet", "onet")
# Their weight by default (RetainSettings.feature_weight): of the weights tried (10, 20, 30, 50), the one
# that kept the most source AP (docs/wider.md, sessions 25-26).
DEFAULT_FEATURE_WEIGHT = 30.0
# RNet / ONet mine this many times the source samples they mix in, on as many source images as
# that takes at the previous stage's yield per image (a seeded subset; all of them when short).
REPLAY_MARGIN = 2.0


@dataclass(frozen=True)
class RetainSettings:
    """The retain recipe (recorded in the checkpoint's ``facecmp.json`` under ``settings.retain``)."""

    method: str = "replay"
    # replay: source samples per target sample of each stage (fewer when fewer were mined).
    replay_share: float = 0.25
    # replay: "replace" (the default since 2026-12-07, docs/wider.md, session 23): the source samples take
    # the place of as many target ones (a share below 1); "add": they come on top of the target's.
    replay_mode: str = "replace"
    # replay: per-stage overrides of replay_share, ((stage, share), ...) (``--retain-share 0.25,onet=1``).
    stage_shares: tuple[tuple[str, float], ...] = ()
    # replay: how RNet's / ONet's source samples are found. "cascade": the candidates the earlier
    # stages, as fine-tuned so far, find on the source frames, labelled by the source ground truth
    # (the target's own hard mining, run on the source images). "crops": jittered crops and random
    # negatives around the source faces, no cascade run (cheaper; ONet then forgets more of what it
    # does on the candidates it really sees: docs/wider.md). PNet's are crops either way.
    source_mining: str = "cascade"
    # replay with cascade mining: the smallest face (px) the earlier stages look for on the source
    # frames (their image pyramid starts at 12 / this); None: the target mining's (facenet's 20).
    # 40 since 2026-12-07: fewer pyramid levels on large source frames (WIDER's are 1024 px wide);
    # what that saves and keeps: docs/wider.md, session 23.
    source_min_face: float | None = 40.0
    # replay: what the classifier learns on the source samples. "teacher" (the default since
    # 2026-12-02, docs/wider.md): the pretrained stage's face probability on each crop, part faces
    # included (learning without forgetting, Li & Hoiem 2016: the stage is kept doing what it did
    # there, scores and all). "labels": the class of their source label (positive / negative). The
    # box targets are the labelled ones either way.
    source_targets: str = "teacher"
    # replay with teacher targets: a taught sample's classification loss weighs this many labelled ones.
    teacher_weight: float = 1.0
    # replay with teacher targets: the weight of feature distillation for the stages in FEATURE_STAGES,
    # the mean squared distance between their last hidden features and the pretrained stage's on the
    # taught samples, added to the loss (0: none). None: DEFAULT_FEATURE_WEIGHT with teacher replay
    # (distillation since 2026-12-07, at 30 since 2026-12-08: docs/wider.md, sessions 25-26), 0 otherwise (``features``).
    feature_weight: float | None = None
    # l2sp: the penalty's strength alpha in alpha / 2 * ||w - w_pretrained||^2.
    l2sp: float = 0.01
    # wise: the fine-tuned weights' share of the average with the pretrained ones (1: the plain fine-tune).
    wise_alpha: float = 0.7

    def __post_init__(self) -> None:
        if self.method not in RETAIN_METHODS:
            raise FacecmpError(f"--retain-method {self.method!r}: expected one of {', '.join(RETAIN_METHODS)}")
        if self.source_mining not in SOURCE_MINING:
            raise FacecmpError(f"--retain-mining {self.source_mining!r}: expected one of {', '.join(SOURCE_MINING)}")
        if self.source_targets not in SOURCE_TARGETS:
            raise FacecmpError(f"--retain-targets {self.source_targets!r}: expected one of {', '.join(SOURCE_TARGETS)}")
        if self.replay_mode not in REPLAY_MODES:
            raise FacecmpError(f"--retain-replay {self.replay_mode!r}: expected one of {', '.join(REPLAY_MODES)}")
        if self.source_min_face is not None and not 12 <= self.source_min_face <= 1000:
            raise FacecmpError(f"--retain-min-face {self.source_min_face:g}: expected a face size in pixels in [12, 1000] (PNet's window is 12 px)")
        if not 0 < self.teacher_weight <= 100:
            raise FacecmpError(f"--retain-teacher-weight {self.teacher_weight}: expected a number in (0, 100]")
        if self.feature_weight is not None and not 0 <= self.feature_weight <= 1000:
            raise FacecmpError(f"--retain-features {self.feature_weight:g}: expected a number in [0, 1000]")
        if self.feature_weight and not self.teaches:
            raise FacecmpError(f"--retain-features {self.feature_weight:g}: distils on the replayed samples the pretrained stage teaches, "
                               "so it needs a replaying --retain-method with --retain-targets teacher")
        named = [stage for stage, _ in self.stage_shares]
        twice = sorted({stage for stage in named if named.count(stage) > 1})
        if twice:
            raise FacecmpError(f"--retain-share {twice[0]}=...: given twice; give each stage's share once")
        for stage, share in (("", self.replay_share), *self.stage_shares):
            if stage and stage not in STAGES:
                raise FacecmpError(f"--retain-share {stage}={share}: expected a stage of {', '.join(STAGES)}")
            if not 0 < share <= 4:
                raise FacecmpError(f"--retain-share {stage + '=' if stage else ''}{share}: expected a number in (0, 4] (source samples per target sample)")
            if share >= 1 and self.replays and self.replay_mode == "replace":
                raise FacecmpError(f"--retain-share {stage + '=' if stage else ''}{share}: --retain-replay replace replaces that share "
                                   "of the target's samples, so it must be below 1; use --retain-replay add for more")
        if self.l2sp < 0:
            raise FacecmpError(f"retain L2-SP strength {self.l2sp}: expected a number >= 0")
        if not 0 < self.wise_alpha <= 1:
            raise FacecmpError(f"retain WiSE-FT share {self.wise_alpha}: expected a number in (0, 1] (the fine-tuned weights' share)")

    def share(self, stage: str) -> float:
        """Source samples per target sample for ``stage``: its override, else ``replay_share``."""
        return dict(self.stage_shares).get(stage, self.replay_share)

    @property
    def replays(self) -> bool:
        return "replay" in self.method

    @property
    def teaches(self) -> bool:
        """Replay whose source samples the pretrained stage teaches (their soft targets)."""
        return self.replays and self.source_targets == "teacher"

    @property
    def features(self) -> float:
        """The feature distillation weight this recipe trains RNet and ONet with (0: none)."""
        if self.feature_weight is not None:
            return self.feature_weight
        return DEFAULT_FEATURE_WEIGHT if self.teaches else 0.0

    @property
    def penalises(self) -> bool:
        return "l2sp" in self.method and self.l2sp > 0

    @property
    def interpolates(self) -> bool:
        return "wise" in self.method

    def record(self) -> dict:
        """What the checkpoint records: only the knobs the method uses."""
        out = {"method": self.method}
        if self.replays:
            out["replay_share"] = self.replay_share
            if self.stage_shares:  # absent without overrides, so older records (and cache keys) stay as they were
                out["stage_shares"] = dict(self.stage_shares)
            out["source_mining"] = self.source_mining
            if self.replay_mode != "add":  # absent: added (records before 2026-12-07)
                out["replay_mode"] = self.replay_mode
            if self.source_mining == "cascade" and self.source_min_face is not None:  # absent: the target's (records before 2026-12-07)
                out["source_min_face"] = self.source_min_face
            if self.source_targets != "labels":  # absent for label replay, so its records (and cache keys) stay as they were
                out["source_targets"] = self.source_targets
                out["teacher_weight"] = self.teacher_weight
                if self.features:  # absent without it: the records of teacher replay before 2026-12-07
                    out["feature_weight"] = self.features
        if "l2sp" in self.method:
            out["l2sp"] = self.l2sp
        if self.interpolates:
            out["wise_alpha"] = self.wise_alpha
        return out


# --- the source images ------------------------------------------------------------------------


def retain_split(root: str | Path, *, holdout: int = DEFAULT_HOLDOUT, seed: int = 0, fmt: str | None = None) -> tuple[Dataset, Dataset | None]:
    """``(retain, held_out)``: the source images of ``root`` that a run may train on, and the
    ``holdout`` per folder set aside with ``seed`` (None when ``holdout`` is 0)."""
    from facecmp.data.archive import load_test_set
    from facecmp.data.split import split_dataset

    root = Path(root)
    if not root.exists():
        raise DataError(f"--retain {root}: no such folder; pass the source-domain images to keep (e.g. ../shared/datasets/wider-face)")
    if holdout < 0:
        raise DataError(f"--retain-holdout {holdout}: expected a number of images per folder >= 0")
    images = load_test_set(root, fmt=fmt)
    retain, held = split_dataset(images, per_folder=holdout, seed=seed) if holdout > 0 else (images, None)
    aside = f"split:{holdout} of seed {seed} set aside" if holdout > 0 else "all images"
    retain = dataclasses.replace(retain, name=f"{images.name}[retain: {aside}]")
    require_faces(retain, root)
    return retain, held


@dataclass(frozen=True)
class RetainRequest:
    """What ``finetune --retain ROOT [--retain-method M] [--retain-holdout N]`` asks for."""

    root: Path
    settings: RetainSettings = RetainSettings()
    holdout: int = DEFAULT_HOLDOUT
    fmt: str | None = None

    def images(self, seed: int) -> Dataset:
        """The retain images (ROOT minus the held-out split:N of ``seed``)."""
        return retain_split(self.root, holdout=self.holdout, seed=seed, fmt=self.fmt)[0]


def require_faces(retain: Dataset, root: str | Path | None = None) -> None:
    if len(retain) == 0 or retain.n_faces == 0:
        where = root if root is not None else retain.name
        raise DataError(f"--retain {where}: {len(retain)} image(s) and no annotated face left to retain on; "
                        "pass a labelled set of source-domain faces (any format facecmp reads)")


def _digests(ds: Dataset) -> dict[str, str]:
    out = {}
    for record in ds.images:
        with open(record.path, "rb") as f:
            out[hashlib.file_digest(f, "sha256").hexdigest()] = record.key
    return out


def refuse_overlap(retain: Dataset, test: Dataset | None, what: str) -> None:
    """One error line when ``retain`` shares an image (the same file bytes) with ``test``."""
    if test is None or len(test) == 0:
        return
    tested = _digests(test)
    shared = [(key, tested[d]) for d, key in _digests(retain).items() if d in tested]
    if shared:
        first = ", ".join(k for k, _ in shared[:3])
        raise DataError(f"--retain: {len(shared)} retain image(s) are also in {what} ({first}{', ...' if len(shared) > 3 else ''}); "
                        "a checkpoint must not be tested on what it trained on: keep them out of the retain set "
                        f"(--retain-holdout N sets the test images of split:N aside)")


def retain_record(retain: Dataset, settings: RetainSettings) -> dict:
    """``facecmp.json["settings"]["retain"]``: the recipe and the source images it saw."""
    return {**settings.record(), "data": retain.name, "n_images": len(retain), "n_faces": retain.n_faces,
            "data_fingerprint": data_fingerprint(retain)}


def check_resume(out_dir: Path, record: dict, resume: bool) -> None:
    """``out_dir/retain.json`` holds the retain recipe of the run there; a resume under another one is refused."""
    from facecmp import atomic

    path = Path(out_dir) / "retain.json"
    if resume and path.is_file():
        written = json.loads(path.read_text())
        if written != record:
            raise FacecmpError(f"{path}: this run was started with another retain recipe or other retain images; "
                               "resume with the same --retain options, or drop --resume to start over")
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    atomic.write_json(path, record)


# --- replay ---------------------------------------------------------------------------------


def mine_source_crops(retain: Dataset, stage: str, settings: HardMiningSettings, seed: int, progress: bool = True) -> SampleSet:
    """RNet's / ONet's replay samples: jittered crops and random negatives of every source image,
    cut as the cascade cuts them (no cascade run), balanced as the stage's own samples are."""
    no_candidates = SimpleNamespace(boxes=np.zeros((0, 4)), scores=np.zeros(0))
    images, labels, offsets = [], [], []
    for i, record in enumerate(tqdm(retain.images, desc=f"mining {stage} retain samples", disable=not progress, unit="img")):
        rng = np.random.default_rng([seed, 21, i])
        pixels, lab, off, _ = mine_candidate_image(read_image(record.path), record.boxes, no_candidates, stage, settings, rng)
        images.append(pixels)
        labels.append(lab)
        offsets.append(off)
    return balanced_sample_set(images, labels, offsets, settings.crops, np.random.default_rng([seed, 21, len(retain)]))


def source_samples(stage: str, retain: Dataset, *, mining: MiningSettings, hard_mining: HardMiningSettings | None, seed: int,
                   cache_dir: Path | None, source_mining: str, progress: bool = True,
                   nets: Mapping[str, nn.Module] | None = None, workers: int = 0,
                   proposals: PnetProposals | None = None) -> SampleSet:
    """All replay samples of ``stage`` on ``retain`` (cached in ``cache_dir`` by data, recipe, seed and
    code; with ``source_mining="cascade"`` also by the weights of ``nets``' earlier stages, which find
    RNet's / ONet's candidates on the source frames as they find the target's, PNet's candidates
    passed from RNet's mining to ONet's in ``proposals``)."""
    if stage == "pnet":
        return mine_pnet_samples(retain, mining, seed=seed, cache_dir=cache_dir, progress=progress)
    if source_mining == "cascade":
        return mine_stage_samples(retain, nets, stage, hard_mining, seed=seed, cache_dir=cache_dir, progress=progress,
                                  workers=workers, proposals=proposals)
    if cache_dir is None:
        return mine_source_crops(retain, stage, hard_mining, seed, progress)
    spec = {"version": REPLAY_VERSION, "stage": stage, "crops": asdict(hard_mining.crops), "seed": seed,
            "code": code_fingerprint(), "libraries": library_versions()}
    key = hashlib.sha256((data_fingerprint(retain) + json.dumps(spec, sort_keys=True)).encode()).hexdigest()[:20]
    return cached_samples(Path(cache_dir) / f"retain{hard_mining.crops.crop_size}_{stage}_{key}.npz",
                          lambda: mine_source_crops(retain, stage, hard_mining, seed, progress))


def replay_count(share: float, n_samples: int) -> int:
    """How many source samples ``share`` per target sample mixes into ``n_samples`` (before the
    cap of what was mined): what :func:`with_replay` adds and what :func:`replay_stage` mines for."""
    return int(round(share * n_samples))


def with_replay(stage: str, samples: SampleSet, source: SampleSet, share: float, seed: int,
                teacher: nn.Module | None = None, replace: bool = False) -> tuple[SampleSet, dict]:
    """``samples`` with ``share`` source samples per sample mixed in (a seeded subset of ``source``),
    and the counts of what was added. ``replace``: a seeded subset of as many target samples makes
    room for them (``share`` < 1; the mix is as large as ``samples``). With ``teacher``, the added
    samples carry its face probabilities as soft targets (:func:`teacher_probabilities`), the target's none (NaN)."""
    wanted = min(len(source), replay_count(share, len(samples)))
    rng = np.random.default_rng([seed, 22, STAGES.index(stage)])
    pick = np.sort(rng.choice(len(source), wanted, replace=False)) if wanted < len(source) else np.arange(len(source))
    added = source.take(pick)
    replaced = {}
    if replace:
        n = min(wanted, len(samples) - 1)
        keep = np.random.default_rng([seed, 23, STAGES.index(stage)]).choice(len(samples), len(samples) - n, replace=False)
        samples, replaced = samples.take(np.sort(keep)), {"target_replaced": n}
    counts = {"target": samples.counts(), "source": added.counts(), "source_mined": len(source), **replaced}
    soft = None
    if teacher is not None:
        taught = teacher_probabilities(teacher, added.images)
        soft = np.concatenate([np.full(len(samples), np.nan, np.float32), taught])
        counts["teacher_mean_probability"] = float(taught.mean()) if len(taught) else None
    mixed = SampleSet(
        np.concatenate([samples.images, added.images]),
        np.concatenate([samples.labels, added.labels]),
        np.concatenate([samples.offsets, added.offsets]),
        soft=soft,
    )
    return mixed, counts


def teacher_probabilities(teacher: nn.Module, images: np.ndarray, batch: int = 1024) -> np.ndarray:
    """The face probability ``teacher`` (a stage's network) gives each uint8 ``(N, 3, S, S)`` crop,
    normalised as training normalises them: float32 ``(N,)``."""
    teacher.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(images), batch):
            x = normalize(torch.from_numpy(images[start : start + batch]).float())
            out.append(torch.softmax(net_outputs(teacher, x)[0], dim=1)[:, 1])
    return torch.cat(out).numpy().astype(np.float32) if out else np.zeros(0, np.float32)


# --- L2-SP ----------------------------------------------------------------------------------


@contextlib.contextmanager
def anchored(net: nn.Module, anchor: nn.Module, strength: float):
    """While active, every parameter's gradient of ``net`` gets ``strength * (w - w_anchor)`` added:
    the gradient of the L2-SP penalty ``strength / 2 * ||w - w_anchor||^2``. No-op at strength 0."""
    handles = []
    if strength > 0:
        for (name, p), (anchor_name, a) in zip(net.named_parameters(), anchor.named_parameters()):
            if name != anchor_name or p.shape != a.shape:
                raise FacecmpError(f"L2-SP anchor does not fit the network ({name} vs {anchor_name})")
            target = a.detach().to(p.device).clone()
            p.requires_grad_(True)
            handles.append(p.register_hook(lambda g, p=p, target=target: g + strength * (p.detach() - target)))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def interpolated(pretrained: dict[str, torch.Tensor], tuned: dict[str, torch.Tensor], alpha: float) -> dict[str, torch.Tensor]:
    """WiSE-FT's weights: ``(1 - alpha) * pretrained + alpha * tuned``, tensor by tensor."""
    if pretrained.keys() != tuned.keys():
        raise FacecmpError(f"cannot average weights with different tensors: {sorted(pretrained.keys() ^ tuned.keys())[:3]}")
    return {k: torch.lerp(pretrained[k].to(v.dtype), v, alpha) for k, v in tuned.items()}


def distance_from(net: nn.Module, anchor: nn.Module) -> float:
    """``||w - w_anchor||`` over all parameters (what L2-SP keeps small; recorded per stage)."""
    with torch.no_grad():
        return float(torch.sqrt(sum(((p - a.to(p.device)) ** 2).sum() for p, a in zip(net.parameters(), anchor.parameters()))))


# --- one stage of finetune() ------------------------------------------------------------------


def source_images(retain: Dataset, wanted: int, per_image: float | None, seed: int) -> Dataset:
    """The source images a stage mines for ``wanted`` replay samples: :data:`REPLAY_MARGIN` times
    as many at ``per_image`` samples each (the previous stage's yield), a seeded subset; all of
    ``retain`` without an estimate or when that is more."""
    if not per_image:
        return retain
    return capped_images(retain, math.ceil(REPLAY_MARGIN * wanted / per_image), seed)


def replay_stage(stage: str, samples: SampleSet, retain: Dataset, settings: RetainSettings, *, mining: MiningSettings,
                 hard_mining: HardMiningSettings | None, seed: int, cache_dir: Path | None, progress: bool = True,
                 nets: Mapping[str, nn.Module] | None = None, workers: int = 0,
                 per_image: float | None = None, proposals: PnetProposals | None = None) -> tuple[SampleSet, dict]:
    """``stage``'s training samples with the source replay mixed in (unchanged without replay), and
    what to record for it in ``facecmp.json["stage_training"][stage]["retain"]``. ``nets``: the
    cascade as trained so far (its earlier stages mine the source frames with ``source_mining="cascade"``).
    ``per_image``: the previous stage's source samples per source image (its record's
    ``source_per_image``), which bounds the source images RNet and ONet mine (:func:`source_images`).
    ``proposals``: PNet's candidates on the source frames, kept by RNet's mining for ONet's (:func:`source_samples`)."""
    if not settings.replays:
        return samples, {}
    import time

    start = time.perf_counter()
    share = settings.share(stage)
    wanted = replay_count(share, len(samples))
    mined = retain if stage == "pnet" else source_images(retain, wanted, per_image, seed)
    if hard_mining is not None and settings.source_mining == "cascade" and settings.source_min_face is not None:
        hard_mining = dataclasses.replace(hard_mining, min_face_size=settings.source_min_face)

    def mine(images):
        return source_samples(stage, images, mining=mining, hard_mining=hard_mining, seed=seed, cache_dir=cache_dir,
                              progress=progress, source_mining=settings.source_mining, nets=nets, workers=workers,
                              proposals=proposals)

    source = mine(mined)
    if len(source) < wanted and len(mined) < len(retain):  # the estimate fell short: mine them all
        mined = retain
        source = mine(mined)
    teacher = pretrained_network(stage) if settings.source_targets == "teacher" else None
    mixed, counts = with_replay(stage, samples, source, share, seed, teacher, replace=settings.replay_mode == "replace")
    counts.update(source_images=len(mined), source_per_image=len(source) / max(len(mined), 1))
    return mixed, {"replay": counts, "replay_mining_s": time.perf_counter() - start}


def training_recipe(recipe, settings: RetainSettings | None, stage: str | None = None):
    """``stage``'s TrainSettings under the retain recipe: with teacher targets, the taught samples'
    classification weight (``LossWeights.soft``) is ``teacher_weight``, and for the stages in
    :data:`FEATURE_STAGES` the feature distillation weight (``LossWeights.features``) ``features``."""
    if settings is None or not settings.teaches:
        return recipe
    features = settings.features if stage in FEATURE_STAGES else 0.0
    return dataclasses.replace(recipe, loss=dataclasses.replace(recipe.loss, soft=settings.teacher_weight, features=features))


def feature_teacher(stage: str, recipe) -> nn.Module | None:
    """The network the stage's taught samples are distilled from (the pretrained stage, as for the
    soft targets) when its recipe distils features, else None."""
    return pretrained_network(stage) if recipe.loss.features > 0 else None
