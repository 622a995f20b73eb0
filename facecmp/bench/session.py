"""One benchmark session: the data, its splits, each variant prepared and run once, the results.

The pytest plugin (``facecmp.bench.plugin``) is only wiring; everything it shares between tests
lives here, in plain objects that can be used (and tested) without pytest. Everything is lazy:
nothing is generated, loaded or trained until a test asks for it, so the plugin costs nothing in
test runs that do not use it.
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Sequence

import numpy as np

from facecmp.data.records import Dataset
from facecmp.study.report import VariantResult, results_table, write_report
from facecmp.study.compare import Splits, choose_splits, evaluate_prepared
from facecmp.study.variants import REGISTRY, Prepared, Workbench, get_variants
from facecmp.bench.wholeprocess import ProcessTimes, time_processes

DEFAULT_SPLIT = "split:50"
DEFAULT_DEV_PER_FOLDER = 5  # threshold calibration runs the cascade 8x over the dev images


def default_cache_dir(rootdir: Path) -> Path:
    """``$FACECMP_CACHE`` if set, else ``<rootdir>/.facecmp_cache`` (where the generated data lives too)."""
    return Path(os.environ.get("FACECMP_CACHE") or Path(rootdir) / ".facecmp_cache")


@dataclass(frozen=True)
class BenchOptions:
    data: Path | None = None  # a course archive; None: the built-in generated dataset
    split: str = DEFAULT_SPLIT  # test images when the archive has no test part
    variants: tuple[str, ...] | None = None  # None: every registered variant
    report: Path | None = None
    device: str = "cpu"
    cache_dir: Path = Path(".facecmp_cache")
    max_test_images: int | None = None
    workers: int = 0  # detection worker processes for the evaluation pass (timings come from pytest-benchmark)
    dev_per_folder: int = DEFAULT_DEV_PER_FOLDER
    seed: int = 0
    epochs: int | None = None
    # Parameters of the generated dataset (tests use a tiny one).
    synthetic: dict = dataclasses.field(default_factory=dict)


@dataclass
class Timing:
    ms_per_image: float
    source: str


class BenchSession:
    """The shared state of a benchmark run; every expensive step happens at most once."""

    def __init__(self, options: BenchOptions):
        self.options = options
        self._prepared: dict[str, Prepared | Exception] = {}
        self._results: dict[str, VariantResult | Exception] = {}
        self._timings: dict[str, Timing] = {}
        self._speed_images: list[tuple[str, np.ndarray]] | None = None
        self._process_times: dict[tuple[str, ...], ProcessTimes] = {}
        self.report_path: Path | None = None  # where write_report put the report, once it has

    # -- what is being compared -----------------------------------------------------------
    @property
    def dataset_key(self) -> str:
        """The name gates are kept under: ``default`` for the generated data, else the archive folder's name."""
        return "default" if self.options.data is None else Path(self.options.data).resolve().name

    @cached_property
    def variant_names(self) -> list[str]:
        """The selected variants in registry order (raises FacecmpError naming unknown ones)."""
        wanted = self.options.variants
        if wanted is None:
            return list(REGISTRY)
        chosen = {v.name for v in get_variants(list(wanted))}
        return [name for name in REGISTRY if name in chosen]

    # -- data ------------------------------------------------------------------------------
    @cached_property
    def root(self) -> Path:
        if self.options.data is not None:
            return Path(self.options.data)
        from facecmp.data.synthetic import default_dataset_dir, generate_dataset

        folder = self.options.cache_dir / default_dataset_dir(**self.options.synthetic).name
        return generate_dataset(folder, **self.options.synthetic)

    @cached_property
    def test_selection(self) -> str:
        """``archive`` when the archive has its own test part, else the split spec used."""
        from facecmp.data.formats import has_test_part  # any labelling format, not only the course layout

        return "archive" if has_test_part(self.root) else self.options.split

    @cached_property
    def splits(self) -> Splits:
        test = None if self.test_selection == "archive" else self.test_selection
        splits = choose_splits(self.root, test, seed=self.options.seed, dev_per_folder=self.options.dev_per_folder)
        limit = self.options.max_test_images
        if limit is not None and limit < len(splits.test):
            keys = [r.key for r in splits.test.images[:limit]]
            splits = dataclasses.replace(splits, test=splits.test.subset(keys))
        return splits

    @property
    def test(self) -> Dataset:
        return self.splits.test

    @cached_property
    def test_fingerprint(self) -> str:
        from facecmp.training.samples import data_fingerprint

        return data_fingerprint(self.test)[:16]

    def run_settings(self) -> dict:
        """How this run chose its images; compared with the settings recorded next to the gates."""
        return {
            "test": self.test_selection,
            "n_test_images": len(self.test),
            "dev_per_folder": self.options.dev_per_folder,
            "seed": self.options.seed,
            "test_fingerprint": self.test_fingerprint,
        }

    @cached_property
    def workbench(self) -> Workbench:
        splits = self.splits
        return Workbench(
            train=splits.train, dev=splits.dev, cache_dir=self.options.cache_dir, device=self.options.device,
            seed=self.options.seed, epochs=self.options.epochs, progress=False,
        )

    # -- variants ----------------------------------------------------------------------------
    def prepared(self, name: str) -> Prepared:
        """The variant's ready detector, trained (or loaded from the cache) the first time only."""
        return self._once(self._prepared, name, lambda: REGISTRY[name].prepare(self.workbench))

    def result(self, name: str) -> VariantResult:
        """The variant's detections on the test images and their evaluation (computed once)."""

        def compute() -> VariantResult:
            return evaluate_prepared(name, self.prepared(name), self.test, workers=self.options.workers, progress=False)

        return self._once(self._results, name, compute)

    @staticmethod
    def _once(memo: dict, name: str, compute):
        # A failure is remembered too, so each test of a broken variant fails fast with the same
        # error instead of retraining or re-running it.
        if name not in memo:
            try:
                memo[name] = compute()
            except Exception as exc:
                memo[name] = exc
        value = memo[name]
        if isinstance(value, Exception):
            raise value
        return value

    def evaluated(self) -> list[str]:
        return [n for n in REGISTRY if isinstance(self._results.get(n), VariantResult)]

    def metrics(self, names: Sequence[str]) -> dict[str, dict[str, float]]:
        """``variant -> {ap_cava, ap_voc, recall, precision}`` for gates (evaluating as needed)."""
        return {n: self.result(n).evaluation.summary() for n in names}

    # -- speed -----------------------------------------------------------------------------
    def speed_images(self, n: int) -> list[tuple[str, np.ndarray]]:
        """The first ``n`` test images, decoded once, so every variant is timed on the same pixels."""
        from facecmp.data.images import read_image

        if self._speed_images is None or len(self._speed_images) < min(n, len(self.test)):
            self._speed_images = [(r.key, read_image(r.path)) for r in self.test.images[:n]]
        return self._speed_images[:n]

    def paired_ms_per_image(self, names: Sequence[str], n_images: int) -> dict[str, float]:
        """Median ms/image of each variant, timed image by image in turn (a, b, a, b, ...).

        Interleaving makes a ratio between variants robust to other processes taking the CPU
        for a while, which would skew one variant's separate benchmark but not the other's.
        """
        detectors = {n: self.prepared(n).detector for n in names}
        images = [img for _, img in self.speed_images(n_images)]
        for detector in detectors.values():
            # Warm-up over every image: the first call at each new tensor shape (pyramid levels,
            # crop batches) pays one-off kernel set-up that is not per-image cost.
            for image in images:
                detector.detect_batch([image])
        times: dict[str, list[float]] = {n: [] for n in names}
        for image in images:
            for name, detector in detectors.items():
                start = time.perf_counter()
                detector.detect_batch([image])
                times[name].append(time.perf_counter() - start)
        return {n: 1000.0 * statistics.median(t) for n, t in times.items()}

    def process_times(self, models: Sequence[str], rounds: int = 3) -> ProcessTimes:
        """Whole ``facecmp detect`` processes over every test image, alternating between
        ``models`` (named models only: pretrained, facenet-reference); measured once per set."""
        key = tuple(models)
        if key not in self._process_times:
            self._process_times[key] = time_processes([r.path for r in self.test.images], key, rounds)
        return self._process_times[key]

    def timed_processes(self) -> bool:
        return bool(self._process_times)

    def record_timing(self, name: str, ms_per_image: float, source: str) -> None:
        self._timings[name] = Timing(ms_per_image, source)

    def timing(self, name: str) -> Timing | None:
        """The benchmark timing if one was recorded, else the timing of the evaluation run, else None."""
        if name in self._timings:
            return self._timings[name]
        result = self._results.get(name)
        if isinstance(result, VariantResult):
            workers = f", {self.options.workers} workers" if self.options.workers else ""
            return Timing(result.ms_per_image, f"one pass over {len(self.test)} test images{workers}")
        return None

    # -- the end of the session ----------------------------------------------------------------
    def final_results(self) -> list[VariantResult]:
        """Evaluated variants, with ms/image from pytest-benchmark where it timed them."""
        out = []
        for name in self.evaluated():
            result = self._results[name]
            timing = self.timing(name)
            out.append(dataclasses.replace(
                result, ms_per_image=timing.ms_per_image, settings={**result.settings, "ms_per_image_source": timing.source}
            ))
        return out

    def notes(self) -> list[str]:
        s = self.splits
        return [
            f"dataset {self.dataset_key} ({self.root}); test images: {self.test_selection}"
            + (f", first {self.options.max_test_images}" if self.options.max_test_images else "")
            + f" ({len(s.test)} images, fingerprint {self.test_fingerprint}); training images: "
            f"{len(s.train) if s.train else 0}; dev (threshold calibration): {len(s.dev) if s.dev else 0}; "
            f"seed {self.options.seed}.",
            *(f"{r.name}: thresholds {r.settings.get('thresholds')}; ms/image from {r.settings['ms_per_image_source']}"
              for r in self.final_results()),
            *(self._process_note(models, t) for models, t in self._process_times.items()),
        ]

    @staticmethod
    def _process_note(models: tuple[str, ...], t: ProcessTimes) -> str:
        runs = "; ".join(f"{m} {t.median(m):.2f} s (runs {', '.join(f'{x:.2f}' for x in t.times[m])})" for m in models)
        ratio = f" = {t.ratio(models[1], models[0]):.2f}x" if len(models) == 2 else ""
        return (f"whole `facecmp detect` processes over {t.n_images} images, median of alternating runs: {runs}{ratio}; "
                f"images with differing detections: {len(t.differing)}")

    def summary_table(self) -> str | None:
        results = self.final_results()
        return results_table(results) if results else None

    def write_report(self, out: Path) -> Path | None:
        results = self.final_results()
        if not results:
            return None
        return write_report(out, results, dataset=self.test, title=f"facecmp benchmarks on {self.dataset_key}",
                            notes=self.notes())
