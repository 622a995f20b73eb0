"""benchmarks/break_model.py (the plugin that breaks the cascade on purpose so the gates can be seen to
catch it) wraps ``Detector._detect_same_size``: its wrapper must take whatever ``detect_batch`` passes."""

import types

import numpy as np
import pytest

from facecmp.detection.detector import Detector


@pytest.fixture
def swapped_thresholds(monkeypatch):
    from benchmarks import break_model

    # Nothing is left patched: the real method is put back when the test ends.
    monkeypatch.setattr(Detector, "_detect_same_size", Detector._detect_same_size)
    config = types.SimpleNamespace(getoption=lambda name: "swap-thresholds", add_cleanup=lambda undo: None,
                                   issue_config_time_warning=lambda *a, **k: None)
    break_model.pytest_configure(config)
    yield


def test_the_swapped_thresholds_break_runs_detection_and_mining_calls(swapped_thresholds):
    image = np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8)
    detector = Detector()
    assert Detector._detect_same_size.__name__ == "reversed_thresholds"
    detector.detect(image)
    tables = [None]
    detector.detect_batch([image], upto="rnet", tables=tables)
    assert tables[0] is not None and tuple(tables[0].shape) == (1, 3, 61, 81)
