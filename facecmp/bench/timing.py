"""The speed measurements of one benchmark run: timings recorded by pytest-benchmark, paired
per-image timings between variants, and whole-process timings of ``facecmp detect``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Sequence

if TYPE_CHECKING:
    import numpy as np

    from facecmp.bench.wholeprocess import ProcessTimes
    from facecmp.data.records import Dataset
    from facecmp.study.variants import Prepared


@dataclass
class Timing:
    ms_per_image: float
    source: str


class Timings:
    """Speed of the variants on the test images, each measurement made at most once."""

    def __init__(self, test: Callable[[], Dataset], prepared: Callable[[str], Prepared]):
        self._test = test  # the session's test images (loaded when first timed)
        self._prepared = prepared  # variant name -> its ready detector
        self._recorded: dict[str, Timing] = {}
        self._speed_images: list[tuple[str, np.ndarray]] | None = None
        self._process_times: dict[tuple[str, ...], ProcessTimes] = {}

    def record(self, name: str, ms_per_image: float, source: str) -> None:
        self._recorded[name] = Timing(ms_per_image, source)

    def recorded(self, name: str) -> Timing | None:
        return self._recorded.get(name)

    def speed_images(self, n: int) -> list[tuple[str, np.ndarray]]:
        """The first ``n`` test images, decoded once, so every variant is timed on the same pixels."""
        from facecmp.data.images import read_image

        test = self._test()
        if self._speed_images is None or len(self._speed_images) < min(n, len(test)):
            self._speed_images = [(r.key, read_image(r.path)) for r in test.images[:n]]
        return self._speed_images[:n]

    def paired_ms_per_image(self, names: Sequence[str], n_images: int, rounds: int = 3) -> dict[str, float]:
        """Median over images of each variant's fastest of ``rounds`` timings, timed image by
        image in turn (a, b, a, b, ...): :func:`facecmp.detection.inference.interleaved_ms_per_image`."""
        from facecmp.detection.inference import interleaved_ms_per_image

        detectors = {n: self._prepared(n).detector for n in names}
        return interleaved_ms_per_image(detectors, [img for _, img in self.speed_images(n_images)], rounds)

    def process_times(self, models: Sequence[str], rounds: int = 3) -> ProcessTimes:
        """Whole ``facecmp detect`` processes over every test image, alternating between
        ``models`` (named models only, see detection.base.NAMED_MODELS); measured once per set."""
        from facecmp.bench.wholeprocess import time_processes

        key = tuple(models)
        if key not in self._process_times:
            self._process_times[key] = time_processes([r.path for r in self._test().images], key, rounds)
        return self._process_times[key]

    def processes(self) -> list[ProcessTimes]:
        """The whole-process measurements made so far."""
        return list(self._process_times.values())
