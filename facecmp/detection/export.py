"""ONNX export of the cascade's three networks, for deployment without torch.

``export_onnx(model, out_dir)`` writes ``pnet.onnx``, ``rnet.onnx``, ``onet.onnx`` and
``cascade.json`` (the thresholds and settings the cascade runs them with). Each network takes
the same input as the torch module in ``models.py`` -- ``image``: float32 NCHW RGB, normalised
as ``(pixel - 127.5) * 0.0078125`` -- and returns the same outputs in the same order:

* ``pnet.onnx``: ``image`` ``(N, 3, H, W)``, any H, W >= 12 -> ``box_offsets`` ``(N, 4, h, w)``,
  ``probabilities`` ``(N, 2, h, w)`` (channel 1: face), one cell per 12 px window at stride 2;
* ``rnet.onnx``: ``image`` ``(N, 3, 24, 24)`` -> ``box_offsets`` ``(N, 4)``, ``probabilities`` ``(N, 2)``;
* ``onet.onnx``: ``image`` ``(N, 3, 48, 48)`` -> ``box_offsets`` ``(N, 4)``, ``landmarks`` ``(N, 10)``
  (x0..x4, y0..y4 as fractions of the crop), ``probabilities`` ``(N, 2)``.

The batch axis is dynamic everywhere. The legacy (TorchScript) exporter is used
(``dynamo=False``): it needs only the ``onnx`` package, where the dynamo exporter also needs
``onnxscript``; on torch 2.14 it reproduces the modules to ~1e-6 (tests/test_export.py).
Every file is written atomically and ``cascade.json`` last, so a folder with it is complete.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from facecmp import atomic
from facecmp.detection.base import DetectorSettings, require_model
from facecmp.detection.cascade import PIXEL_MEAN, PIXEL_SCALE
from facecmp.detection.detector import Detector, load_detector
from facecmp.detection.models import INPUT_SIZE, STAGES, build_network
from facecmp.detection.onnx_cascade import SETTINGS_FILE, require_onnx
from facecmp.errors import DataError, ModelError

FORMAT = 1
INPUT_NAME = "image"
OUTPUT_NAMES = {
    "pnet": ("box_offsets", "probabilities"),
    "rnet": ("box_offsets", "probabilities"),
    "onet": ("box_offsets", "landmarks", "probabilities"),
}
OPSET = 17
# torch >= 2.5 chooses its exporter with `dynamo` (the default is the dynamo one from 2.9); older
# versions have only the legacy one and no such argument.
_LEGACY = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}


def export_onnx(
    model: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    min_face_size: float | None = None,
    thresholds: tuple[float, float, float] | None = None,
) -> Path:
    """Export ``model`` (``"pretrained"`` or a checkpoint folder) into ``out_dir``; return ``out_dir``.

    ``min_face_size`` and ``thresholds`` override the defaults / the checkpoint's stored values
    in ``cascade.json``, as they do for ``facecmp detect``.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise DataError(f"{out_dir}: the ONNX output must be a folder, but a file of that name exists; choose another path")
    require_onnx("onnx")
    require_model(model)
    import onnx

    detector = load_detector(model, min_face_size=min_face_size, thresholds=thresholds)
    if not isinstance(detector, Detector):
        raise ModelError(f"{model}: only facecmp's cascade exports to ONNX; export 'pretrained' (the same weights) or a checkpoint folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    # Re-exporting into a folder: until the new networks are all written it is not complete.
    (out_dir / SETTINGS_FILE).unlink(missing_ok=True)
    networks: dict[str, Any] = {}
    for stage in STAGES:
        net = build_network(stage, {k: v.cpu() for k, v in detector.nets[stage].state_dict().items()})
        side = INPUT_SIZE[stage]
        # PNet is traced on a non-square image larger than its window; H and W stay dynamic.
        example = torch.zeros((2, 3, 3 * side, 4 * side) if stage == "pnet" else (2, 3, side, side))
        axes = {0: "batch", 2: "height", 3: "width"} if stage == "pnet" else {0: "batch"}
        names = OUTPUT_NAMES[stage]
        out_axes = {name: ({0: "batch", 2: "rows", 3: "columns"} if stage == "pnet" else {0: "batch"}) for name in names}
        target = out_dir / f"{stage}.onnx"
        with atomic.atomic_path(target) as tmp, warnings.catch_warnings():
            # The legacy exporter announces its own deprecation; the choice is explained above.
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", FutureWarning)
            torch.onnx.export(
                _Inference(net).eval(), (example,), str(tmp), **_LEGACY, opset_version=OPSET,
                input_names=[INPUT_NAME], output_names=list(names),
                dynamic_axes={INPUT_NAME: axes, **out_axes},
            )
            onnx.checker.check_model(str(tmp))
        shape = [axes.get(i, size) for i, size in enumerate(example.shape)]
        networks[stage] = {"file": target.name, "input": {INPUT_NAME: shape}, "outputs": list(names)}
    atomic.write_json(out_dir / SETTINGS_FILE, _description(model, detector.settings, networks))
    return out_dir


class _Inference(nn.Module):
    """``net(image)`` with its default ``logits=False`` fixed: the legacy exporter would otherwise
    turn that default argument into a graph input."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, image: torch.Tensor):
        return self.net(image)


def _description(model: str | os.PathLike, settings: DetectorSettings, networks: dict[str, Any]) -> dict[str, Any]:
    cascade = {k: v for k, v in dataclasses.asdict(settings).items() if k != "device"}
    return {
        "format": FORMAT,
        "model": str(model),
        "input": {"layout": "NCHW float32, RGB", "normalise": f"(pixel - {PIXEL_MEAN}) * {PIXEL_SCALE}", "mean": PIXEL_MEAN, "scale": PIXEL_SCALE},
        "cascade": cascade,
        "networks": networks,
        "opset": OPSET,
    }
