"""Break our cascade on purpose, to see the benchmark gates catch it. Demo only: a pytest plugin
that nothing loads unless asked, never part of facecmp itself.

    python -m pytest benchmarks -p benchmarks.break_model --facecmp-break random-pnet
    python -m pytest benchmarks -p benchmarks.break_model --facecmp-break swap-thresholds
    python -m pytest benchmarks -p benchmarks.break_model --facecmp-break swap-rnet-heads

Every ``Detector`` (pretrained, calibrated and fine-tuned variants alike; facenet-pytorch's own
MTCNN, the reference, is untouched) is broken at detection time, after its weights are loaded,
so the cached fine-tuned checkpoints are still used as they are:

- ``random-pnet``: PNet's weights replaced by a freshly initialised network (seed 0);
- ``swap-thresholds``: the three stage thresholds applied in reverse order (PNet gets ONet's);
- ``swap-rnet-heads``: RNet's two class outputs exchanged, so it scores "not a face" as "face".
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

BREAKAGES = ("random-pnet", "swap-thresholds", "swap-rnet-heads")


def pytest_addoption(parser):
    parser.getgroup("facecmp").addoption(
        "--facecmp-break", choices=BREAKAGES, default=None, help="demo: break our cascade this way (benchmarks/break_model.py)"
    )


def _break_weights(detector, how: str) -> None:
    from facecmp.detection.fastforward import FAST_FORWARD
    from facecmp.detection.models import build_network

    stage = {"random-pnet": "pnet", "swap-rnet-heads": "rnet"}[how]
    net = detector.nets[stage]
    if getattr(net, "_facecmp_broken", False):  # with_settings() passes on nets already broken
        return
    with torch.no_grad():
        if how == "random-pnet":
            torch.manual_seed(0)
            fresh = build_network("pnet").to(detector.device, memory_format=torch.channels_last)
            net.load_state_dict(fresh.state_dict())
        else:
            net.dense5_1.weight.copy_(net.dense5_1.weight.flip(0))
            net.dense5_1.bias.copy_(net.dense5_1.bias.flip(0))
    net._facecmp_broken = True
    detector.forward[stage] = FAST_FORWARD[stage](net)


def pytest_configure(config):
    how = config.getoption("--facecmp-break")
    if how is None:
        return
    from facecmp.detection.detector import Detector

    if how == "swap-thresholds":
        detect = Detector._detect_same_size

        def reversed_thresholds(self, batch, *args, **kwargs):  # whatever detect_batch passes (upto, tables)
            real = self.settings
            self.settings = dataclasses.replace(real, thresholds=real.thresholds[::-1])
            try:
                return detect(self, batch, *args, **kwargs)
            finally:
                self.settings = real

        patch = ("_detect_same_size", reversed_thresholds)
    else:
        init = Detector.__init__

        def broken_init(self, *args, **kwargs):
            init(self, *args, **kwargs)
            _break_weights(self, how)

        patch = ("__init__", broken_init)
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setattr(Detector, *patch)
    config.add_cleanup(monkeypatch.undo)
    config.issue_config_time_warning(pytest.PytestWarning(f"facecmp: our cascade is broken on purpose ({how})"), stacklevel=2)
