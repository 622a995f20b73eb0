"""Checkpoint folders: plain facenet-pytorch state dicts + facecmp.json, and clear errors when broken."""

from __future__ import annotations

import json

import pytest
import torch

from facecmp.detection.checkpoint import META_FILE, load_checkpoint, save_checkpoint
from facecmp.errors import ModelError
from facecmp.detection.models import PNet, pretrained_network


def perturbed_pnet_weights(seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return {k: v + 0.01 * torch.randn_like(v) for k, v in pretrained_network("pnet").state_dict().items()}


META = {"epochs": 3, "history": [{"epoch": 1, "train_loss": 0.5, "val_loss": 0.6}], "thresholds": [0.5, 0.7, 0.7],
        "min_face_size": 20.0, "timings": {"mining_s": 1.0, "training_s": 2.0, "calibration_s": 0.0}}


def test_round_trip_keeps_weights_thresholds_and_meta(tmp_path):
    weights = perturbed_pnet_weights()
    save_checkpoint(tmp_path / "ckpt", {"pnet": weights}, META)
    ckpt = load_checkpoint(tmp_path / "ckpt")
    assert ckpt.stages == ("pnet",)
    assert ckpt.thresholds == (0.5, 0.7, 0.7)
    assert ckpt.meta["format"] == 1 and ckpt.meta["history"] == META["history"]
    assert ckpt.meta["timings"] == META["timings"]
    for key, value in weights.items():
        assert torch.equal(ckpt.state_dicts["pnet"][key], value)


def test_saved_pnet_loads_into_facenet_pytorch(tmp_path):
    from facenet_pytorch import MTCNN

    weights = perturbed_pnet_weights()
    save_checkpoint(tmp_path, {"pnet": weights}, {"thresholds": None})
    mtcnn = MTCNN()
    mtcnn.pnet.load_state_dict(torch.load(tmp_path / "pnet.pt"))
    ours = PNet()
    ours.load_state_dict(weights)
    x = torch.randn(2, 3, 30, 40)
    with torch.no_grad():
        theirs_reg, theirs_prob = mtcnn.pnet(x)
        ours_reg, ours_prob = ours(x)
    assert torch.equal(theirs_reg, ours_reg) and torch.equal(theirs_prob, ours_prob)
    assert load_checkpoint(tmp_path).thresholds is None


def test_json_is_written_after_the_weights(tmp_path):
    bad = {"conv1.weight": torch.zeros(1)}
    with pytest.raises(ModelError, match="not pnet weights"):
        save_checkpoint(tmp_path, {"pnet": bad}, {})
    assert not (tmp_path / META_FILE).exists()


def test_missing_folder(tmp_path):
    with pytest.raises(ModelError, match="checkpoint folder not found"):
        load_checkpoint(tmp_path / "nope")


def test_missing_json_says_the_run_is_unfinished(tmp_path):
    torch.save(perturbed_pnet_weights(), tmp_path / "pnet.pt")
    with pytest.raises(ModelError, match=f"no {META_FILE}.*--resume"):
        load_checkpoint(tmp_path)


def test_invalid_json_names_file_and_line(tmp_path):
    save_checkpoint(tmp_path, {"pnet": perturbed_pnet_weights()}, {})
    (tmp_path / META_FILE).write_text('{\n "format": 1,\n oops\n}\n')
    with pytest.raises(ModelError, match=rf"{META_FILE}:3: not valid JSON"):
        load_checkpoint(tmp_path)


def test_unreadable_weights(tmp_path):
    save_checkpoint(tmp_path, {"pnet": perturbed_pnet_weights()}, {})
    (tmp_path / "pnet.pt").write_bytes(b"garbage")
    with pytest.raises(ModelError, match="pnet.pt: not a readable PyTorch state dict"):
        load_checkpoint(tmp_path)


def test_weights_with_wrong_keys(tmp_path):
    save_checkpoint(tmp_path, {"pnet": perturbed_pnet_weights()}, {})
    torch.save(pretrained_network("rnet").state_dict(), tmp_path / "pnet.pt")
    with pytest.raises(ModelError, match="pnet.pt: not pnet weights.*missing keys"):
        load_checkpoint(tmp_path)


@pytest.mark.parametrize("field, value, message", [
    ("thresholds", [0.5, 2.0, 0.7], "thresholds"),
    ("stages", ["qnet"], "stages"),
    ("format", 7, "format"),
])
def test_bad_meta_fields(tmp_path, field, value, message):
    save_checkpoint(tmp_path, {"pnet": perturbed_pnet_weights()}, {})
    meta = json.loads((tmp_path / META_FILE).read_text())
    meta[field] = value
    (tmp_path / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(ModelError, match=message):
        load_checkpoint(tmp_path)
