"""``facecmp export --onnx``: the exported networks, run in onnxruntime on the inputs our cascade
builds, give every output of the torch networks within 1e-4; the settings file; bad input."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from facecmp.data.images import read_image
from facecmp.data.synthetic import render_image
from facecmp.detection.checkpoint import save_checkpoint
from facecmp.detection.detector import Detector, DetectorSettings
from facecmp.detection.export import OUTPUT_NAMES, SETTINGS_FILE
from facecmp.detection.onnx_cascade import INSTALL_HINT
from tests.test_cli import assert_user_error, run_cli
from facecmp.detection.models import STAGES, build_network, pretrained_network

ort = pytest.importorskip("onnxruntime", reason=f"ONNX tests need onnxruntime: {INSTALL_HINT}")
pytest.importorskip("onnx", reason=f"ONNX tests need onnx: {INSTALL_HINT}")

ATOL = 1e-4
# RNet/ONet thresholds low enough that the later stages see crops on every frame.
RECORDING = DetectorSettings(thresholds=(0.6, 0.05, 0.05))


class Recorder:
    """Stands in for one of the detector's forward passes and keeps a copy of every input."""

    def __init__(self, forward):
        self.forward, self.inputs = forward, []

    def __call__(self, x: torch.Tensor):
        self.inputs.append(x.detach().clone(memory_format=torch.contiguous_format))
        return self.forward(x)

    def __getattr__(self, name):  # PNet's .offsets
        return getattr(self.forward, name)


def stage_inputs(images: list[np.ndarray], nets: dict | None = None) -> dict[str, list[torch.Tensor]]:
    """The normalised NCHW batches the cascade hands each network while detecting ``images``:
    every pyramid level for PNet, the 24 and 48 px crops for RNet and ONet."""
    detector = Detector(nets, RECORDING)
    recorders = {stage: Recorder(detector.forward[stage]) for stage in STAGES}
    detector.forward.update(recorders)
    for image in images:
        detector.detect(image)
    return {stage: r.inputs for stage, r in recorders.items()}


def assert_onnx_equals_torch(folder: Path, inputs: dict[str, list[torch.Tensor]], nets: dict[str, torch.nn.Module]) -> None:
    for stage in STAGES:
        session = ort.InferenceSession(str(folder / f"{stage}.onnx"), providers=["CPUExecutionProvider"])
        assert [o.name for o in session.get_outputs()] == list(OUTPUT_NAMES[stage])
        batches = inputs[stage]
        assert batches and sum(len(b) for b in batches) > 0, f"the cascade gave {stage} nothing to check"
        for x in batches:
            with torch.inference_mode():
                want = [t.numpy() for t in nets[stage](x)]
            got = session.run(None, {"image": x.numpy()})
            assert len(got) == len(want)
            for name, g, w in zip(OUTPUT_NAMES[stage], got, want):
                assert g.shape == w.shape, (stage, name)
                np.testing.assert_allclose(g, w, atol=ATOL, rtol=0, err_msg=f"{stage} {name}, input {tuple(x.shape)}")


@pytest.fixture(scope="module")
def pretrained_onnx(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("onnx") / "pretrained"
    code, stdout, err = run_cli(["export", "--model", "pretrained", "--onnx", out])
    assert code == 0, err
    assert "pnet.onnx, rnet.onnx, onet.onnx" in stdout
    return out


@pytest.fixture(scope="module")
def pretrained_nets() -> dict[str, torch.nn.Module]:
    return {stage: pretrained_network(stage) for stage in STAGES}


def generated_frames(n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(13)
    return [np.asarray(render_image(["ada", "bo", "unknown"], (480, 360), rng)[0]) for _ in range(n)]


def test_every_stage_equals_torch_on_generated_frames(pretrained_onnx, pretrained_nets):
    inputs = stage_inputs(generated_frames(2))
    # PNet ran on pyramid levels of many sizes (its height and width are dynamic), the others on batches.
    assert len({tuple(x.shape[2:]) for x in inputs["pnet"]}) >= 5
    assert_onnx_equals_torch(pretrained_onnx, inputs, pretrained_nets)


@pytest.mark.real_data
def test_every_stage_equals_torch_on_dexter_frames(pretrained_onnx, pretrained_nets, dexter_root):
    frames = sorted((dexter_root / "antrenare" / "dexter").glob("*.jpg"))[::300]
    inputs = stage_inputs([read_image(p) for p in frames])
    assert_onnx_equals_torch(pretrained_onnx, inputs, pretrained_nets)


def test_settings_file(pretrained_onnx):
    cfg = json.loads((pretrained_onnx / SETTINGS_FILE).read_text())
    assert cfg["cascade"]["thresholds"] == [0.6, 0.7, 0.7] and cfg["cascade"]["min_face_size"] == 20
    assert cfg["input"]["mean"] == 127.5 and cfg["input"]["scale"] == 0.0078125
    assert cfg["networks"]["pnet"]["input"]["image"] == ["batch", 3, "height", "width"]
    assert cfg["networks"]["onet"]["outputs"] == ["box_offsets", "landmarks", "probabilities"]
    assert sorted(p.name for p in pretrained_onnx.iterdir()) == ["cascade.json", "onet.onnx", "pnet.onnx", "rnet.onnx"]


def test_a_checkpoint_exports_its_weights_and_thresholds(tmp_path, pretrained_nets):
    onet = pretrained_network("onet").state_dict()
    gen = torch.Generator().manual_seed(0)
    onet = {k: v + 0.05 * torch.randn(v.shape, generator=gen) if k.startswith("dense6") else v for k, v in onet.items()}
    ckpt = save_checkpoint(tmp_path / "ft", {"onet": onet}, {"thresholds": (0.5, 0.6, 0.65), "min_face_size": 30})
    out = tmp_path / "onnx"
    code, _, err = run_cli(["export", "--model", ckpt, "--onnx", out, "--thresholds", "0.55,0.6,0.65"])
    assert code == 0, err
    cfg = json.loads((out / SETTINGS_FILE).read_text())
    assert cfg["cascade"]["thresholds"] == [0.55, 0.6, 0.65]  # the option overrides the stored ones
    assert cfg["cascade"]["min_face_size"] == 30  # the checkpoint's
    nets = {**pretrained_nets, "onet": build_network("onet", onet)}
    inputs = stage_inputs(generated_frames(1), {"onet": nets["onet"]})
    assert_onnx_equals_torch(out, inputs, nets)
    # ...and these are the fine-tuned weights, not the pretrained ones.
    session = ort.InferenceSession(str(out / "onet.onnx"), providers=["CPUExecutionProvider"])
    x = inputs["onet"][0]
    with torch.inference_mode():
        pretrained_probs = pretrained_nets["onet"](x)[2].numpy()
    assert np.abs(session.run(None, {"image": x.numpy()})[2] - pretrained_probs).max() > 1e-2


def test_output_path_that_is_a_file(tmp_path):
    target = tmp_path / "taken"
    target.write_text("x")
    code, _, err = run_cli(["export", "--onnx", target])
    assert_user_error(code, err, f"{target}: the ONNX output must be a folder")


def test_missing_or_unfinished_checkpoint(tmp_path):
    code, _, err = run_cli(["export", "--model", tmp_path / "nope", "--onnx", tmp_path / "out"])
    assert_user_error(code, err, "nope: no such checkpoint folder")
    (tmp_path / "unfinished").mkdir()
    code, _, err = run_cli(["export", "--model", tmp_path / "unfinished", "--onnx", tmp_path / "out"])
    assert_user_error(code, err, "unfinished: no facecmp.json")
    assert not (tmp_path / "out").exists()


def test_missing_onnx_package_is_one_line_naming_the_install(tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnx" else real(name, *a))
    code, _, err = run_cli(["export", "--onnx", tmp_path / "out"])
    assert_user_error(code, err, "ONNX needs onnx, not installed here: pip install")


# ----------------------------------------------------------------------------- the numpy + onnxruntime cascade


def assert_same_faces(ours, theirs) -> None:
    """Same faces in the same order: boxes and landmarks within 1 px, scores within 1e-4."""
    assert len(ours) == len(theirs)
    np.testing.assert_allclose(ours.boxes, theirs.boxes, atol=1.0, rtol=0)
    np.testing.assert_allclose(ours.scores, theirs.scores, atol=1e-4, rtol=0)
    np.testing.assert_allclose(ours.landmarks, theirs.landmarks, atol=1.0, rtol=0)


@pytest.mark.parametrize("thresholds", [(0.6, 0.7, 0.7), (0.6, 0.05, 0.05)])
def test_onnx_cascade_finds_the_torch_cascades_faces(pretrained_onnx, tmp_path, thresholds):
    from facecmp.detection.onnx_cascade import OnnxCascade

    if thresholds != (0.6, 0.7, 0.7):  # the settings file is what the ONNX cascade runs with
        code, _, err = run_cli(["export", "--onnx", tmp_path, "--thresholds", ",".join(map(str, thresholds))])
        assert code == 0, err
    cascade = OnnxCascade(pretrained_onnx if thresholds == (0.6, 0.7, 0.7) else tmp_path)
    detector = Detector(settings=DetectorSettings(thresholds=thresholds))
    frames = generated_frames(4)
    found = 0
    for frame in frames:
        expected = detector.detect(frame)
        found += len(expected)
        assert_same_faces(cascade.detect(frame), expected)
    assert found >= len(frames), "too few faces for the comparison to mean something"


def test_onnx_cascade_runs_without_torch(pretrained_onnx, tmp_path):
    frame = generated_frames(1)[0]
    np.save(tmp_path / "frame.npy", frame)
    code = (
        "import sys, json, numpy as np; sys.modules['torch'] = None  # any torch import now fails\n"
        "from facecmp.detection.onnx_cascade import OnnxCascade\n"
        f"faces = OnnxCascade({str(pretrained_onnx)!r}).detect(np.load({str(tmp_path / 'frame.npy')!r}))\n"
        "print(json.dumps([faces.boxes.tolist(), faces.scores.tolist(), faces.landmarks.tolist()]))\n"
    )
    repo = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(repo)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    boxes, scores, landmarks = (np.array(v, np.float32) for v in json.loads(done.stdout))
    expected = Detector().detect(frame)
    assert len(expected) >= 1
    np.testing.assert_allclose(boxes.reshape(-1, 4), expected.boxes, atol=1.0, rtol=0)
    np.testing.assert_allclose(scores, expected.scores, atol=1e-4, rtol=0)


def test_onnx_cascade_without_an_export_folder_is_one_clear_error(tmp_path):
    from facecmp.detection.onnx_cascade import OnnxCascade
    from facecmp.errors import ModelError

    with pytest.raises(ModelError, match=r"no cascade\.json; pass the folder `facecmp export --onnx` wrote"):
        OnnxCascade(tmp_path)
