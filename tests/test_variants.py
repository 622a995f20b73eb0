"""The variant registry: cached fine-tuned checkpoints, and reuse of finished stages."""

from __future__ import annotations

import pytest
import torch

from facecmp.data import load_archive, split_dataset
from facecmp.errors import FacecmpError
from facecmp.data.synthetic import generate_dataset
from facecmp.study.caching import finetuned_checkpoint
from facecmp.study.variants import VariantContext, get_variants


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    root = generate_dataset(tmp_path_factory.mktemp("data"), n_train_per_character=3, n_test=2, seed=1)
    train, dev = split_dataset(load_archive(root).train, per_folder=1, seed=0)
    return VariantContext(train, dev, tmp_path_factory.mktemp("cache"), epochs=1, progress=False)


def test_a_cached_checkpoint_is_reused_not_retrained(ctx):
    first = finetuned_checkpoint(ctx, "finetuned-pnet", ("pnet",))
    stamp = (first / "pnet.pt").stat().st_mtime_ns
    assert finetuned_checkpoint(ctx, "finetuned-pnet", ("pnet",)) == first
    assert (first / "pnet.pt").stat().st_mtime_ns == stamp


def test_a_longer_cascade_starts_from_the_finished_shorter_one(ctx):
    pnet_only = finetuned_checkpoint(ctx, "finetuned-pnet", ("pnet",))
    both = finetuned_checkpoint(ctx, "finetuned-pnet-rnet", ("pnet", "rnet"))
    assert both != pnet_only
    same = torch.load(pnet_only / "pnet.pt", weights_only=True)
    reused = torch.load(both / "pnet.pt", weights_only=True)
    assert all(torch.equal(same[k], reused[k]) for k in same)
    assert (both / "rnet.pt").is_file()


def test_unknown_variant_names_are_listed():
    with pytest.raises(FacecmpError, match="available: .*finetuned-cascade"):
        get_variants(["pretrained", "nope"])


def test_the_code_hash_covers_every_source_file_of_training_detection_data_and_evaluation(tmp_path):
    import shutil

    from facecmp.data import fingerprint

    root = tmp_path / "facecmp"
    package_dir = __import__("pathlib").Path(fingerprint.__file__).resolve().parent.parent
    for package in fingerprint.CODE_PACKAGES:
        shutil.copytree(package_dir / package, root / package, ignore=shutil.ignore_patterns("__pycache__"))
    before = fingerprint.code_fingerprint(root=root)
    assert before == fingerprint.code_fingerprint()  # the same bytes, the same key
    for package in fingerprint.CODE_PACKAGES:
        source = next(p for p in sorted((root / package).glob("*.py")) if p.name != "__init__.py")
        original = source.read_bytes()
        source.write_bytes(original + b"\n# changed\n")
        fingerprint.code_fingerprint.cache_clear()
        assert fingerprint.code_fingerprint(root=root) != before, f"a change to {package}/{source.name} must change the key"
        source.write_bytes(original)
        fingerprint.code_fingerprint.cache_clear()
    assert fingerprint.code_fingerprint(root=root) == before


def test_a_change_to_the_training_code_retrains(ctx, monkeypatch):
    from facecmp.study import caching

    cached = finetuned_checkpoint(ctx, "finetuned-pnet", ("pnet",))
    monkeypatch.setattr(caching, "code_fingerprint", lambda: "other-code")
    retrained = finetuned_checkpoint(ctx, "finetuned-pnet", ("pnet",))
    assert retrained != cached and (retrained / "pnet.pt").is_file()
    assert (ctx.cache_dir / "samples-other-code").is_dir()  # mined samples are not shared across code either
