"""Mining and threshold calibration split across the processes of a distributed run.

The rule that keeps results independent of the number of processes N: work is split into the
same units a single process uses, each unit keeps the seed it has there, and the pieces are
gathered back in the single process's order before anything looks at them as a whole.

- PNet's samples: image ``i`` is mined with ``default_rng([seed, i])`` (as ``samples.mine_samples``);
  rank r mines images r, r+N, ...; the union, in image order, is balanced with the same generator.
- RNet's/ONet's samples: the detector runs over the same batches of ``batch_images`` images as
  in one process (batch b on rank b mod N), so every batch sees the same forward passes; each
  image keeps its seed ``[seed, index]``.
- Calibration: each rank runs the cascade on its batches of dev images (batch b on rank b mod N)
  and keeps every candidate's scores; candidates are gathered to all ranks, the grid points are
  scored rank r: r, r+N, ..., and the table is gathered in grid order.

So the samples and the calibration table are the single process's, up to the float rounding of
a different thread count; what changes with N is only the training's batch split (``ddp.py``).
The sample caches are the single process's files too: one rank per node writes them, atomically,
after every rank has decided whether they exist.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
from torch import nn
from tqdm.auto import tqdm

from facecmp.data.images import read_image
from facecmp.data.records import Dataset
from facecmp.detection.detector import Detector
from facecmp.errors import FacecmpError
from facecmp.training.calibrate import (
    BATCH_IMAGES,
    Thresholds,
    _best_row,
    _require_calibration_input,
    _row,
    best_thresholds,
    cascade_candidates,
)
from facecmp.training.distributed import Dist
from facecmp.training.hard_mining import (
    PREVIOUS_STAGE,
    HardMiningSettings,
    hard_mining_fingerprint,
    mine_candidate_image,
    mining_detector,
    mining_images,
)
from facecmp.training.samples import (
    MiningSettings,
    SampleSet,
    balanced_sample_set,
    load_samples,
    mine_image_samples,
    mining_fingerprint,
    save_samples,
)


def batches_of(n: int, size: int, dist: Dist) -> list[range]:
    """This rank's batches of ``range(n)`` cut every ``size`` items: batch b goes to rank b mod N."""
    starts = range(0, n, size)
    return [range(start, min(start + size, n)) for b, start in enumerate(starts) if b % dist.world_size == dist.rank]


def gathered_in_order(dist: Dist, mine: list[tuple[int, tuple]]) -> list[tuple]:
    """Every rank's ``(index, item)`` pairs joined and put back in index order: the items."""
    joined = [pair for part in dist.all_gather(mine) for pair in part]
    return [item for _, item in sorted(joined, key=lambda pair: pair[0])]


def shared_cache(dist: Dist, path: Path, mine: Callable[[], SampleSet]) -> SampleSet:
    """``samples.cached_samples`` for all ranks: read the cache when every rank sees it, else mine
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
    """``samples.mine_samples``, each rank mining its share of the images."""
    mine: list[tuple[int, tuple]] = []
    share = dist.shard(len(dataset.images))
    for i in tqdm(share, desc=f"mining {settings.crop_size}px samples", disable=not progress, unit="img"):
        rng = np.random.default_rng([seed, i])
        record = dataset.images[i]
        mine.append((i, mine_image_samples(read_image(record.path), record.boxes, settings, rng)))
    per_image = gathered_in_order(dist, mine)
    images, labels, offsets = (list(part) for part in zip(*per_image)) if per_image else ([], [], [])
    return balanced_sample_set(images, labels, offsets, settings, np.random.default_rng([seed, len(dataset.images)]))


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
    """``hard_mining.mine_hard_samples``, each rank running the detector on its batches of images."""
    detector = mining_detector(nets, stage, settings, device)
    records = mining_images(dataset, settings, seed)
    mine: list[tuple[int, tuple]] = []
    share = batches_of(len(records), settings.batch_images, dist)
    bar = tqdm(total=sum(map(len, share)), desc=f"mining {stage} samples", disable=not progress, unit="img")
    for batch in share:
        pixels = [read_image(records[i].path) for i in batch]
        found = detector.detect_batch(pixels, upto=PREVIOUS_STAGE[stage])
        for i, image, candidates in zip(batch, pixels, found):
            rng = np.random.default_rng([seed, i])
            im, lab, off, _boxes = mine_candidate_image(image, records[i].boxes, candidates, stage, settings, rng)
            mine.append((i, (im, lab, off)))
        bar.update(len(batch))
    bar.close()
    per_image = gathered_in_order(dist, mine)
    images, labels, offsets = (list(part) for part in zip(*per_image)) if per_image else ([], [], [])
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
    by_pnet: dict[float, list[int]] = {}
    for i, point in enumerate(grid):
        by_pnet.setdefault(point[0], []).append(i)
    # One detector per PNet threshold, at the lowest RNet/ONet thresholds of its grid points.
    detectors = {
        pnet: detector_factory((pnet, min(grid[i][1] for i in members), min(grid[i][2] for i in members)))
        for pnet, members in by_pnet.items()
    }
    share = batches_of(len(dataset.images), BATCH_IMAGES, dist)
    mine: list[tuple[int, tuple]] = []
    for batch in tqdm(share, desc="calibrating: cascade on dev images", disable=not progress, unit="batch"):
        records = [dataset.images[i] for i in batch]
        pixels = [read_image(r.path) for r in records]
        per_group = {pnet: cascade_candidates(detector, pixels) for pnet, detector in detectors.items()}
        for j, (i, record) in enumerate(zip(batch, records)):
            mine.append((i, (record.key, {pnet: found[j] for pnet, found in per_group.items()})))
    candidates = gathered_in_order(dist, mine)
    ground_truth = dataset.ground_truth()
    nms_threshold = next(iter(detectors.values())).settings.nms_thresholds[3]
    rows = []
    for i in tqdm(dist.shard(len(grid)), desc="calibrating: scoring thresholds", disable=not progress, unit="setting"):
        t = grid[i]
        per_image = {key: found[t[0]].detections(t[1], t[2], nms_threshold) for key, found in candidates}
        rows.append((i, _row(t, per_image, ground_truth)))
    table = gathered_in_order(dist, rows)
    return grid[_best_row(table)], table
