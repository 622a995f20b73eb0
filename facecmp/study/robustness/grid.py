"""The robustness grid runner: every variant on clean and corrupted test frames.

The grid is (condition = clean or corruption x severity) x test image. Corrupted frames are
made on the fly in worker processes (the full grid as PNGs would be gigabytes): a worker reads
an image, applies the condition once and runs every variant still missing that cell on it.
Finished cells go to the cell cache (:mod:`facecmp.study.robustness.cells`) at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from facecmp.data.images import read_image
from facecmp.data.records import Dataset
from facecmp.errors import FacecmpError, raise_returned, returns_errors
from facecmp.study.robustness.apply import apply_condition
from facecmp.study.robustness.cells import Cell, CellCache, GridVariant
from facecmp.study.robustness.conditions import (
    BENCHMARK_CORRUPTIONS,
    CLEAN,
    SEVERITIES,
    Condition,
    CorruptionError,
    valid_severities,
)


@dataclass(frozen=True)
class RobustnessSettings:
    corruptions: tuple[str, ...] = BENCHMARK_CORRUPTIONS
    severities: tuple[int, ...] = SEVERITIES
    seed: int = 0  # the corruptions' random draws (with the image and the condition)
    workers: int = 0  # processes that corrupt and detect; 0 = this process

    def conditions(self) -> list[Condition]:
        """Clean first, then every corruption at every severity it has among ``severities``."""
        cells = [CLEAN]
        for name in self.corruptions:
            cells += [Condition(name, s) for s in self.severities if s in valid_severities(name)]
        return cells


class _GridItems:
    """Items ``(condition, image)``: the corrupted frame, its ground truth and each pending variant's detections.

    A torch Dataset in spirit (``__len__``/``__getitem__``), so a DataLoader can spread it over
    worker processes. Errors travel back as values, so the main process raises one clean line.
    """

    def __init__(self, dataset: Dataset, work: list[tuple[Condition, list[GridVariant]]], seed: int):
        self.records = dataset.images
        self.work = work
        self.seed = seed

    def __len__(self) -> int:
        return len(self.work) * len(self.records)

    @returns_errors
    def __getitem__(self, index: int):
        condition, variants = self.work[index // len(self.records)]
        record = self.records[index % len(self.records)]
        image = read_image(record.path)
        try:
            image, truth = apply_condition(image, record.boxes, condition, self.seed)
        except Exception as exc:  # noqa: BLE001 - any failure stops the run, named
            raise CorruptionError(
                f"corruption {condition.name} at severity {condition.severity} failed on {record.path}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        return index, record.key, truth, {v.name: v.detector.detect_batch([image])[0] for v in variants}


def _worker_init(worker_id: int) -> None:
    from facecmp.detection.inference import single_threaded

    single_threaded(worker_id)
    try:
        import cv2

        cv2.setNumThreads(1)
    except ImportError:
        pass


def _grid_items(items: _GridItems, workers: int):
    if workers <= 0 or len(items) == 0:  # nothing to spread: no worker processes to start
        yield from (items[i] for i in range(len(items)))
        return
    from torch.utils.data import DataLoader

    loader = DataLoader(items, batch_size=None, num_workers=workers, worker_init_fn=_worker_init)
    yield from loader


def _cell(predictions, truth: dict[str, np.ndarray]) -> Cell:
    from facecmp.evaluation.evaluator import evaluate

    ev = evaluate(predictions, truth)
    return Cell(float(ev.ap_cava), float(ev.ap_voc), int(ev.n_detections), int(ev.n_true_positives), int(ev.n_ground_truth))


def run_grid(
    variants: Sequence[GridVariant],
    test: Dataset,
    settings: RobustnessSettings,
    cache: CellCache,
    *,
    conditions: Sequence[Condition] | None = None,
    progress: bool = True,
) -> dict[str, dict[Condition, Cell]]:
    """Every variant on ``conditions`` (default: all of ``settings``), cached cells reused: name -> condition -> Cell."""
    from tqdm import tqdm

    from facecmp.detection.inference import detections_to_predictions

    if len(test) == 0:
        raise FacecmpError("the test set has no images; nothing to measure robustness on")
    results: dict[str, dict[Condition, Cell]] = {v.name: {} for v in variants}
    work = []
    for condition in settings.conditions() if conditions is None else conditions:
        pending = []
        for variant in variants:
            cell = cache.get(variant, condition)
            if cell is None:
                pending.append(variant)
            else:
                results[variant.name][condition] = cell
        if pending:
            work.append((condition, pending))
    items = _GridItems(test, work, settings.seed)
    n = len(test)
    done_cells = sum(len(r) for r in results.values())
    with tqdm(total=len(items), desc="robustness", unit="frame", disable=not progress or not items) as bar:
        if done_cells:
            bar.write(f"robustness: {done_cells} cached cells reused")
        frames: dict[str, dict] = {}
        truth: dict[str, np.ndarray] = {}
        for item in raise_returned(_grid_items(items, settings.workers)):
            index, key, boxes, detections = item
            condition, pending = work[index // n]
            truth[key] = boxes
            for name, d in detections.items():
                frames.setdefault(name, {})[key] = d
            bar.update(1)
            bar.set_postfix_str(condition.label, refresh=False)
            if index % n == n - 1:  # the condition's last image: its cells are complete
                ordered = {r.key: truth[r.key] for r in test.images}
                for variant in pending:
                    per_image = {r.key: frames[variant.name][r.key] for r in test.images}
                    cell = _cell(detections_to_predictions(per_image), ordered)
                    cache.put(variant, condition, cell)
                    results[variant.name][condition] = cell
                frames, truth = {}, {}
    return results
