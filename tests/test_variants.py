"""The variant registry: cached fine-tuned checkpoints, and reuse of finished stages."""

from __future__ import annotations

import pytest
import torch

from facecmp.data import load_archive, split_dataset
from facecmp.errors import FacecmpError
from facecmp.data.synthetic import generate_dataset
from facecmp.study.variants import Workbench, finetuned_checkpoint, get_variants


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    root = generate_dataset(tmp_path_factory.mktemp("data"), n_train_per_character=3, n_test=2, seed=1)
    train, dev = split_dataset(load_archive(root).train, per_folder=1, seed=0)
    return Workbench(train, dev, tmp_path_factory.mktemp("cache"), epochs=1, progress=False)


def test_a_cached_checkpoint_is_reused_not_retrained(bench):
    first = finetuned_checkpoint(bench, "finetuned-pnet", ("pnet",))
    stamp = (first / "pnet.pt").stat().st_mtime_ns
    assert finetuned_checkpoint(bench, "finetuned-pnet", ("pnet",)) == first
    assert (first / "pnet.pt").stat().st_mtime_ns == stamp


def test_a_longer_cascade_starts_from_the_finished_shorter_one(bench):
    pnet_only = finetuned_checkpoint(bench, "finetuned-pnet", ("pnet",))
    both = finetuned_checkpoint(bench, "finetuned-pnet-rnet", ("pnet", "rnet"))
    assert both != pnet_only
    same = torch.load(pnet_only / "pnet.pt", weights_only=True)
    reused = torch.load(both / "pnet.pt", weights_only=True)
    assert all(torch.equal(same[k], reused[k]) for k in same)
    assert (both / "rnet.pt").is_file()


def test_unknown_variant_names_are_listed():
    with pytest.raises(FacecmpError, match="available: .*finetuned-cascade"):
        get_variants(["pretrained", "nope"])
