"""One benchmark session: the data, its splits, each variant prepared and run once, the results.

The pytest plugin (``facecmp.bench.plugin``) is only wiring; everything it shares between tests
lives here, in plain objects that can be used (and tested) without pytest. Everything is lazy:
nothing is generated, loaded or trained until a test asks for it, so the plugin costs nothing in
test runs that do not use it.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from facecmp.bench.timing import Timing, Timings

if TYPE_CHECKING:  # the study (torch, matplotlib) is imported when a test first needs it
    from facecmp.data.records import Dataset
    from facecmp.study.splits import Splits
    from facecmp.study.report import VariantResult
    from facecmp.study.source import SourceDomain, SourceResult
    from facecmp.study.variants import Prepared, VariantContext

DEFAULT_SPLIT = "split:50"
# Fewer dev images than `facecmp compare` (study.splits.default_dev_per_folder: 15 per folder on the
# generated data): calibration runs the cascade over every dev image once per PNet threshold, and the
# generated-data gates were measured with 5. The Dexter gates run with --facecmp-dev 100 (the default there).
BENCH_DEV_PER_FOLDER = 5


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
    dev_per_folder: int = BENCH_DEV_PER_FOLDER
    seed: int = 0
    epochs: int | None = None
    recognizers: tuple[str, ...] | None = None  # task 2's recognizer kinds; None: every kind
    source_data: Path | None = None  # a source-domain test set (facecmp.study.source); None: none
    source_split: str | None = None  # split:N of it per folder (WIDER: per event); None: all of it
    # Parameters of the generated dataset (tests use a tiny one).
    synthetic: dict = dataclasses.field(default_factory=dict)


class BenchSession:
    """The shared state of a benchmark run; every expensive step happens at most once."""

    def __init__(self, options: BenchOptions):
        self.options = options
        self._prepared: dict[str, Prepared | Exception] = {}
        self._results: dict[str, VariantResult | Exception] = {}
        self._source_results: dict[str, SourceResult | Exception] = {}
        # Speed measurements of this run (pytest-benchmark's, paired, whole-process).
        self.timings = Timings(lambda: self.test, self.prepared)
        self.report_path: Path | None = None  # where write_report put the report, once it has

    # -- what is being compared -----------------------------------------------------------
    @property
    def dataset_key(self) -> str:
        """The name gates are kept under: ``default`` for the generated data, else the archive folder's name."""
        return "default" if self.options.data is None else Path(self.options.data).resolve().name

    @cached_property
    def variant_names(self) -> list[str]:
        """The selected variants in registry order (raises FacecmpError naming unknown ones). Without
        --facecmp-variants, a variant that trains on source-domain images is left out of a run
        without --facecmp-source-data (asked for by name there, it fails saying what it needs)."""
        from facecmp.study.variants import REGISTRY, get_variants

        wanted = self.options.variants
        if wanted is None:
            return [n for n, v in REGISTRY.items() if not (v.needs_source_data and self.options.source_data is None)]
        chosen = {v.name for v in get_variants(list(wanted))}
        return [name for name in REGISTRY if name in chosen]

    def requested(self, name: str) -> bool:
        """Whether the run asked for ``name`` by name (``--facecmp-variants``)."""
        return self.options.variants is not None and name in self.options.variants

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
        from facecmp.data.archive import has_test_part  # any labelling format, not only the course layout

        return "archive" if has_test_part(self.root) else self.options.split

    @cached_property
    def splits(self) -> Splits:
        from facecmp.study.splits import choose_splits

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
        from facecmp.data.fingerprint import data_fingerprint

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
    def variant_context(self) -> VariantContext:
        from facecmp.study.variants import VariantContext

        from facecmp.study.source import retain_context

        splits = self.splits
        return VariantContext(
            train=splits.train, dev=splits.dev, cache_dir=self.options.cache_dir, device=self.options.device,
            seed=self.options.seed, epochs=self.options.epochs, progress=False,
            **(retain_context(self.source, self.test) if self.options.source_data is not None else {}),
        )

    # -- variants ----------------------------------------------------------------------------
    def prepared(self, name: str) -> Prepared:
        """The variant's ready detector, trained (or loaded from the cache) the first time only."""
        from facecmp.study.variants import REGISTRY

        return self._once(self._prepared, name, lambda: REGISTRY[name].prepare(self.variant_context))

    def result(self, name: str) -> VariantResult:
        """The variant's detections on the test images and their evaluation (computed once)."""

        from facecmp.study.compare import evaluate_prepared

        def compute() -> VariantResult:
            return evaluate_prepared(name, self.prepared(name), self.test, workers=self.options.workers, progress=False)

        return self._once(self._results, name, compute)

    # -- the source domain ---------------------------------------------------------------------
    @cached_property
    def source(self) -> SourceDomain:
        """The source-domain test set (raises FacecmpError when --facecmp-source-data was not given or is unusable)."""
        from facecmp.errors import FacecmpError
        from facecmp.study.source import load_source_domain

        if self.options.source_data is None:
            raise FacecmpError("no source-domain data: pass --facecmp-source-data ROOT (e.g. ../shared/datasets/wider-face)")
        return load_source_domain(self.options.source_data, split=self.options.source_split, seed=self.options.seed)

    def source_result(self, name: str) -> SourceResult:
        """The variant scored on the source-domain test set (computed once)."""
        from facecmp.study.source import score_source

        def compute() -> SourceResult:
            return score_source(name, self.prepared(name), self.source, workers=self.options.workers, progress=False)

        return self._once(self._source_results, name, compute)

    def source_run_settings(self) -> dict:
        """How this run chose its source images; compared with the settings of the source dataset's gates."""
        from facecmp.data.fingerprint import data_fingerprint

        return {"test": self.source.selection, "n_test_images": len(self.source.test), "seed": self.options.seed,
                "test_fingerprint": data_fingerprint(self.source.test)[:16]}

    def source_evaluated(self) -> dict[str, SourceResult]:
        return {n: r for n, r in self._source_results.items() if not isinstance(r, Exception)}

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
        """Variants evaluated without error, in registry order."""
        if not self._results:  # nothing ran: the study's modules (torch) need not be imported
            return []
        from facecmp.study.variants import REGISTRY

        return [n for n in REGISTRY if n in self._results and not isinstance(self._results[n], Exception)]

    def metrics(self, names: Sequence[str]) -> dict[str, dict[str, float]]:
        """``variant -> {ap_cava, ap_voc, recall, precision}`` for gates (evaluating as needed)."""
        return {n: self.result(n).evaluation.summary() for n in names}

    # -- the end of the session ----------------------------------------------------------------
    def final_results(self) -> list[VariantResult]:
        """Evaluated variants, with ms/image from pytest-benchmark where it timed them, else from
        their evaluation pass."""
        out = []
        for name in self.evaluated():
            result = self._results[name]
            workers = f", {self.options.workers} workers" if self.options.workers else ""
            fallback = Timing(result.ms_per_image, f"one pass over {len(self.test)} test images{workers}")
            timing = self.timings.recorded(name) or fallback
            out.append(dataclasses.replace(
                result, ms_per_image=timing.ms_per_image, settings={**result.settings, "ms_per_image_source": timing.source}
            ))
        return out

    def notes(self) -> list[str]:
        from facecmp.study.report import data_note, variant_notes

        return [
            data_note(self.splits, seed=self.options.seed, source=f"dataset {self.dataset_key} ({self.root}); test images: "
                      f"{self.test_selection}" + (f", first {self.options.max_test_images}" if self.options.max_test_images else "")
                      + f" (fingerprint {self.test_fingerprint})"),
            *variant_notes(self.final_results()),
            *(t.note() for t in self.timings.processes()),
        ]

    def summary_table(self) -> str | None:
        results = self.final_results()
        if not results:
            return None
        from facecmp.study.report import results_table, source_table

        source = self.source_evaluated()
        if not source:
            return results_table(results)
        return f"{results_table(results)}\n\n{self.source.describe()}\n{source_table(results, source)}"

    def write_report(self, out: Path) -> Path | None:
        from facecmp.study.report import write_report

        results = self.final_results()
        if not results:
            return None
        source = self.source_evaluated()
        return write_report(out, results, dataset=self.test, title=f"facecmp benchmarks on {self.dataset_key}",
                            notes=self.notes(), source=source, source_note=self.source.describe() if source else None)
