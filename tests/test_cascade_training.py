"""Fine-tuning RNet and ONet: samples mined from the earlier stages, the 3-stage fine-tune, resume,
frozen stages, and the one-run threshold calibration. Tiny generated data, so it runs in seconds."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from hypothesis import given, settings as hsettings, strategies as st

from facecmp.detection.checkpoint import load_checkpoint
from facecmp.data import load_archive
from facecmp.data.images import read_image
from facecmp.detection.detector import Detections, Detector, DetectorSettings
from facecmp.errors import FacecmpError
from facecmp.detection.models import pretrained_network
from facecmp.data.synthetic import generate_dataset
from facecmp.training import FinetuneSettings, TrainSettings, finetune, train_stage
from facecmp.training.calibrate import best_thresholds, score_thresholds
from facecmp.training.finetune import ordered_stages
from facecmp.detection import cascade as C
from facecmp.training.hard_mining import (
    HardMiningSettings,
    PnetProposals,
    crop_regions,
    cut_crops,
    default_hard_mining,
    mine_candidate_image,
    mine_hard_samples,
    mine_stage_samples,
    pick_candidates,
)
from facecmp.training.samples import NEGATIVE, PART, POSITIVE, SampleDataset

FAST = TrainSettings(epochs=2, batch_size=64, patience=10, threads=2)
GRID = ((0.6, 0.7, 0.7), (0.6, 0.2, 0.2), (0.4, 0.1, 0.5))


def recipe(stage: str) -> HardMiningSettings:
    return dataclasses.replace(default_hard_mining(stage), max_images=None)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = generate_dataset(tmp_path_factory.mktemp("synthetic"), n_train_per_character=3, n_test=3, seed=0)
    return load_archive(root)


def pretrained_nets():
    return {stage: pretrained_network(stage) for stage in ("pnet", "rnet", "onet")}


@pytest.fixture(scope="module")
def rnet_samples(tiny):
    return mine_hard_samples(tiny.train, pretrained_nets(), "rnet", recipe("rnet"), seed=0, progress=False)


@pytest.fixture(scope="module")
def onet_samples(tiny):
    return mine_hard_samples(tiny.train, pretrained_nets(), "onet", recipe("onet"), seed=0, progress=False)


def reference_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Continuous-box IoU written out by hand (independent of torchvision)."""
    iw = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    ih = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = iw * ih
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter)


# --- mining --------------------------------------------------------------------------------


@pytest.mark.parametrize("stage, upto", [("rnet", "pnet"), ("onet", "rnet")])
def test_mined_labels_and_offsets_agree_with_the_iou_with_the_faces(tiny, stage, upto):
    settings = recipe(stage)
    detector = Detector(settings=DetectorSettings(thresholds=settings.thresholds))
    seen = {POSITIVE: 0, PART: 0, NEGATIVE: 0}
    for i, record in enumerate(tiny.train.images[:6]):
        image = read_image(record.path)
        candidates = detector.detect_batch([image], upto=upto)[0]
        pixels, labels, offsets, boxes = mine_candidate_image(image, record.boxes, candidates, stage, settings, np.random.default_rng(i))
        assert pixels.shape == (len(labels), 3, settings.crops.crop_size, settings.crops.crop_size)
        faces = record.boxes.astype(np.float64) + [0, 0, 1, 1]  # inclusive pixels -> continuous
        regions = crop_regions(boxes)
        iou = reference_iou(regions, faces)
        best = iou.max(axis=1)
        assert np.all(best[labels == POSITIVE] >= 0.65)
        assert np.all((best[labels == PART] >= 0.4) & (best[labels == PART] < 0.65))
        assert np.all(best[labels == NEGATIVE] < 0.3)
        assert set(np.unique(labels)) <= {POSITIVE, PART, NEGATIVE}
        # Offsets, applied as cascade.regress applies them, move the crop onto its best face.
        side = (boxes[:, 2] - boxes[:, 0] + 1)[:, None]
        moved = regions + offsets * side
        faced = labels != NEGATIVE
        np.testing.assert_allclose(moved[faced], faces[iou.argmax(axis=1)][faced], atol=1e-3)
        assert np.all(offsets[labels == NEGATIVE] == 0)
        for label in seen:
            seen[label] += int((labels == label).sum())
    assert all(n > 0 for n in seen.values()), seen


def test_hard_negatives_are_the_highest_scoring_false_alarms():
    labels = np.array([NEGATIVE, POSITIVE, NEGATIVE, NEGATIVE, PART, NEGATIVE], dtype=np.int8)
    scores = np.array([0.9, 0.99, 0.5, 0.95, 0.8, 0.7])
    settings = dataclasses.replace(recipe("rnet"), hard_negatives_per_image=2)
    kept = pick_candidates(labels, scores, settings, np.random.default_rng(0))
    assert sorted(kept[labels[kept] == NEGATIVE]) == [0, 3]
    assert {1, 4} <= set(kept.tolist())


def test_mined_sets_are_balanced_and_of_the_stage_input_size(rnet_samples, onet_samples):
    for samples, size in ((rnet_samples, 24), (onet_samples, 48)):
        counts = samples.counts()
        assert samples.images.shape[1:] == (3, size, size) and samples.images.dtype == np.uint8
        assert counts["positive"] > 0 and counts["part"] > 0
        assert counts["negative"] <= 3 * min(counts["positive"], counts["part"]) + 1


def test_pretrained_rnet_regression_agrees_in_sign_with_the_targets(rnet_samples):
    """Guards the offset convention: the pretrained RNet already points the way our targets do."""
    data = SampleDataset(rnet_samples)
    with torch.no_grad():
        predicted = pretrained_network("rnet")(data.images, logits=True)[0].numpy()
    faced = rnet_samples.labels != NEGATIVE
    for k in range(4):
        assert np.corrcoef(predicted[faced, k], rnet_samples.offsets[faced, k])[0, 1] > 0.2


def test_onet_mining_from_the_pnet_candidates_rnet_kept_equals_mining_from_scratch(tiny, monkeypatch):
    """RNet's mining keeps PNet's candidates; ONet's starts at RNet from them (``refine_batch``, not PNet
    again) and mines the same samples; another PNet's candidates are not used."""
    from facecmp.training.hard_mining import PnetProposals

    nets = pretrained_nets()
    proposals = PnetProposals()
    mine_hard_samples(tiny.train, nets, "rnet", recipe("rnet"), seed=0, progress=False, proposals=proposals)
    assert len(proposals.by_frame) == len(tiny.train.images)
    refined = []
    monkeypatch.setattr(Detector, "refine_batch", lambda self, *a, _r=Detector.refine_batch, **k: refined.append(1) or _r(self, *a, **k))
    reused = mine_hard_samples(tiny.train, nets, "onet", recipe("onet"), seed=0, progress=False, proposals=proposals)
    scratch = mine_hard_samples(tiny.train, nets, "onet", recipe("onet"), seed=0, progress=False)
    assert refined and all(np.array_equal(getattr(reused, k), getattr(scratch, k)) for k in ("images", "labels", "offsets"))
    refined.clear()
    other = pretrained_nets()
    other["pnet"].load_state_dict({k: v * 1.01 for k, v in other["pnet"].state_dict().items()})
    mine_hard_samples(tiny.train, other, "onet", recipe("onet"), seed=0, progress=False, proposals=proposals)
    assert not refined, "candidates of another PNet must not be used"


def test_refine_batch_equals_the_cascade_up_to_rnet(tiny):
    detector = Detector(settings=DetectorSettings(thresholds=(0.5, 0.2, 0.2)))
    images = [read_image(r.path) for r in tiny.train.images[:5]]
    proposals = detector.detect_batch(images, upto="pnet")
    for refined, direct in zip(detector.refine_batch(images, proposals), detector.detect_batch(images, upto="rnet")):
        assert np.array_equal(refined.boxes, direct.boxes) and np.array_equal(refined.scores, direct.scores)


def test_the_detectors_integral_images_are_each_images_and_cut_the_same_crops(tiny):
    """``tables=`` hands out each image's integral image (batches of two sizes), the detections are
    unchanged, and ``cut_crops`` with a table cuts the crops it cuts without."""
    detector = Detector(settings=DetectorSettings(thresholds=(0.5, 0.2, 0.2)))
    images = [read_image(r.path) for r in tiny.train.images[:4]]
    images[1] = np.ascontiguousarray(images[1][:-37, :-21])  # another size, between two of the first
    assert len({im.shape for im in images}) == 2
    own = [C.integral_image(torch.from_numpy(im).permute(2, 0, 1)[None]) for im in images]
    proposals = detector.detect_batch(images, upto="pnet")
    for upto in ("pnet", "rnet", "onet"):
        tables = [None] * len(images)
        found = detector.detect_batch(images, upto=upto, tables=tables)
        assert all(table.shape == sat.shape and torch.equal(table, sat) for table, sat in zip(tables, own))
        for a, b in zip(found, detector.detect_batch(images, upto=upto)):
            assert np.array_equal(a.boxes, b.boxes) and np.array_equal(a.scores, b.scores)
    tables = [None] * len(images)
    refined = detector.refine_batch(images, proposals, tables=tables)
    assert all(table.shape == sat.shape and torch.equal(table, sat) for table, sat in zip(tables, own))
    for a, b in zip(refined, detector.refine_batch(images, proposals)):
        assert np.array_equal(a.boxes, b.boxes) and np.array_equal(a.scores, b.scores)
    for image, table, candidates in zip(images, tables, proposals):
        h, w = image.shape[:2]
        boxes = np.concatenate([candidates.boxes.reshape(-1, 4), [[-30, -20, 10, 25], [w - 5, h - 9, w + 40, h + 30], [w + 5, 0, w + 30, 20]]])
        for stage in ("rnet", "onet"):
            with_table, kept = cut_crops(image, boxes, stage, sat=table)
            without, kept_without = cut_crops(image, boxes, stage)
            assert np.array_equal(with_table, without) and np.array_equal(kept, kept_without)
            assert len(kept) == len(boxes) - 1  # the box wholly outside is dropped either way


def test_mining_with_the_detectors_integral_images_equals_mining_with_its_own(tiny, monkeypatch):
    """``batch_miner`` cuts from the tables of the detector (``detect_batch`` for rnet, ``refine_batch``
    for onet from rnet's PNet candidates): the samples of recomputing each image's table."""
    nets = pretrained_nets()

    def mine():
        proposals = PnetProposals()
        rnet = mine_hard_samples(tiny.train, nets, "rnet", recipe("rnet"), seed=0, progress=False, proposals=proposals)
        return rnet, mine_hard_samples(tiny.train, nets, "onet", recipe("onet"), seed=0, progress=False, proposals=proposals)

    reused = mine()
    cut = []
    monkeypatch.setattr("facecmp.training.hard_mining.cut_crops", lambda *a, _c=cut_crops: cut.append(1) or _c(*a[:3]))
    recomputed = mine()
    assert cut
    for a, b in zip(reused, recomputed):
        assert all(np.array_equal(getattr(a, k), getattr(b, k)) for k in ("images", "labels", "offsets"))


def test_the_sample_cache_follows_the_earlier_stages_weights(tiny, tmp_path):
    nets = pretrained_nets()
    settings = recipe("rnet")
    first = mine_stage_samples(tiny.train, nets, "rnet", settings, cache_dir=tmp_path, progress=False)
    again = mine_stage_samples(tiny.train, nets, "rnet", settings, cache_dir=tmp_path, progress=False)
    assert not first.from_cache and again.from_cache and again.cache_path == first.cache_path
    np.testing.assert_array_equal(again.images, first.images)
    with torch.no_grad():
        nets["pnet"].conv1.weight.mul_(1.01)
    changed = mine_stage_samples(tiny.train, nets, "rnet", settings, cache_dir=tmp_path, progress=False)
    assert not changed.from_cache and changed.cache_path != first.cache_path


# --- training ------------------------------------------------------------------------------


@pytest.mark.parametrize("stage", ["rnet", "onet"])
def test_only_the_trained_stage_changes(stage, rnet_samples, onet_samples, tmp_path):
    samples = {"rnet": rnet_samples, "onet": onet_samples}[stage]
    nets = pretrained_nets()
    before = {s: {k: v.clone() for k, v in nets[s].state_dict().items()} for s in nets}
    result = train_stage(nets, stage, samples, tmp_path, dataclasses.replace(FAST, epochs=1), seed=0, progress=False)
    for other in set(nets) - {stage}:
        assert all(not p.requires_grad for p in nets[other].parameters())
        assert all(torch.equal(before[other][k], v) for k, v in nets[other].state_dict().items())
    assert any(not torch.equal(before[stage][k], v) for k, v in result.state_dict.items())
    assert (tmp_path / f"train_state_{stage}.pt").is_file()


def test_onet_resume_continues_exactly(onet_samples, tmp_path):
    whole = train_stage(pretrained_nets(), "onet", onet_samples, tmp_path / "whole", FAST, seed=0, progress=False)
    train_stage(pretrained_nets(), "onet", onet_samples, tmp_path / "parts", dataclasses.replace(FAST, epochs=1), seed=0, progress=False)
    resumed = train_stage(pretrained_nets(), "onet", onet_samples, tmp_path / "parts", FAST, seed=0, resume=True, progress=False)
    assert resumed.history == whole.history
    assert all(torch.equal(resumed.state_dict[k], v) for k, v in whole.state_dict.items())


# --- end to end ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cascade_checkpoint(tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("cascade")
    settings = FinetuneSettings(stages=("pnet", "rnet", "onet"), training=FAST, grid=GRID,
                                hard_mining={"rnet": recipe("rnet"), "onet": recipe("onet")})
    finetune(tiny.train, out / "ft", settings, dev=tiny.test, cache_dir=out / "cache", progress=False)
    return out


def test_three_stage_finetune_writes_weights_facenet_pytorch_loads(cascade_checkpoint):
    from facenet_pytorch import MTCNN

    ckpt = load_checkpoint(cascade_checkpoint / "ft")
    assert ckpt.stages == ("pnet", "rnet", "onet")
    assert ckpt.thresholds in GRID
    mtcnn = MTCNN(device="cpu")
    for stage in ("pnet", "rnet", "onet"):
        sd = torch.load(cascade_checkpoint / "ft" / f"{stage}.pt", weights_only=True)
        getattr(mtcnn, stage).load_state_dict(sd)
        assert not all(torch.equal(v, pretrained_network(stage).state_dict()[k]) for k, v in sd.items()), f"{stage} unchanged"
    per_stage = ckpt.meta["stage_training"]
    assert set(per_stage) == {"pnet", "rnet", "onet"}
    assert all(p["epochs"] == 2 and p["samples"]["positive"] > 0 for p in per_stage.values())
    detector = Detector.from_checkpoint(cascade_checkpoint / "ft")
    assert detector.settings.thresholds == ckpt.thresholds
    for stage in ("rnet", "onet"):
        loaded = detector.nets[stage].state_dict()
        assert all(torch.equal(loaded[k], v) for k, v in ckpt.state_dicts[stage].items())


def test_resuming_a_later_stage_reuses_the_finished_earlier_ones(tiny, cascade_checkpoint, tmp_path):
    """A run that stopped after PNet, resumed with more stages, ends where the uninterrupted run did."""
    recipe_ = FinetuneSettings(stages=("pnet",), training=FAST, hard_mining={"rnet": recipe("rnet")}, grid=GRID[:1])
    run = dict(cache_dir=cascade_checkpoint / "cache", progress=False)
    finetune(tiny.train, tmp_path, recipe_, **run)
    (tmp_path / "facecmp.json").unlink()
    resumed = finetune(tiny.train, tmp_path, dataclasses.replace(recipe_, stages=("pnet", "rnet")), resume=True, **run)
    whole = load_checkpoint(cascade_checkpoint / "ft")
    for stage in ("pnet", "rnet"):
        assert all(torch.equal(resumed.state_dicts[stage][k], v) for k, v in whole.state_dicts[stage].items()), stage
    assert resumed.meta["stage_training"]["rnet"]["history"] == whole.meta["stage_training"]["rnet"]["history"]


def test_stages_are_put_in_cascade_order_and_unknown_ones_refused():
    assert ordered_stages(["onet", "pnet"]) == ("pnet", "onet")
    with pytest.raises(FacecmpError, match="pnet, rnet, onet"):
        ordered_stages(["lnet"])
    with pytest.raises(FacecmpError):
        ordered_stages([])


# --- calibration ---------------------------------------------------------------------------


def test_one_run_calibration_equals_running_the_detector_at_each_grid_point(tiny):
    grid = [(p, r, o) for p in (0.5, 0.7) for r in (0.05, 0.3, 0.7) for o in (0.1, 0.6)]
    factory = lambda t: Detector(settings=DetectorSettings(thresholds=t))  # noqa: E731
    best, table = best_thresholds(factory, tiny.test, grid, progress=False)
    images = [(r.key, read_image(r.path)) for r in tiny.test.images]
    truth = tiny.test.ground_truth()
    for point, row in zip(grid, table):
        direct = score_thresholds(factory(point), images, truth)
        assert row["n_detections"] == direct["n_detections"], point
        assert row["ap_cava"] == pytest.approx(direct["ap_cava"], abs=1e-9), point
    assert len({row["n_detections"] for row in table}) > 1, "the grid should change what is detected"
    assert best in grid and table[grid.index(best)]["ap_cava"] == max(r["ap_cava"] for r in table)


@given(seed=st.integers(0, 10_000), tied=st.lists(st.booleans(), min_size=1, max_size=3))
@hsettings(max_examples=60, deadline=None)
def test_one_final_nms_per_rnet_threshold_equals_one_per_grid_point(seed, tied):
    """One final NMS per RNet threshold, cut at each ONet threshold (``final_nms_by_onet``, and the flat
    arrays calibration scores), equals ``detections`` run per grid point, box for box and in the same
    order, also when scores tie (the shortcut is then not taken)."""
    from facecmp.detection.inference import detections_to_predictions
    from facecmp.training.calibrate import CascadeCandidates, _OnetCuts

    rng = np.random.default_rng(seed)
    images = []
    for k, ties in enumerate(tied):
        n = int(rng.integers(0, 25))
        corners = rng.uniform(0, 60, (n, 2))
        boxes = np.concatenate([corners, corners + rng.uniform(5, 30, (n, 2))], axis=1)  # crowded: many overlap
        onet = rng.choice([0.05, 0.5, 0.95, 1.0], n) if ties else rng.uniform(0, 1, n)
        images.append((f"img{k}.jpg", CascadeCandidates(boxes, rng.uniform(0, 1, n), onet.astype(np.float32))))
    onets = [0.02, 0.1, 0.5, 0.9]
    for rnet in (0.02, 0.4):
        cuts = _OnetCuts.build(images, rnet, onets, 0.7)
        for o in onets:
            per_point = {key: c.detections(rnet, o, 0.7) for key, c in images}
            for key, c in images:
                found = c.final_nms_by_onet(rnet, onets, 0.7)  # one NMS, or per threshold where scores tie
                cut = found[o] if isinstance(found, dict) else Detections(found.boxes[found.scores > o], found.scores[found.scores > o])
                assert np.array_equal(cut.boxes, per_point[key].boxes) and np.array_equal(cut.scores, per_point[key].scores)
            flat, expected = cuts.predictions(o), detections_to_predictions(per_point)
            assert np.array_equal(flat.boxes, expected.boxes) and np.array_equal(flat.scores, expected.scores)
            assert flat.file_names.tolist() == expected.file_names.tolist()


def test_calibration_falls_back_to_running_other_detectors_per_point(tiny):
    class Wrapped:
        def __init__(self, thresholds):
            self.inner = Detector(settings=DetectorSettings(thresholds=thresholds))
            self.settings = self.inner.settings

        def detect(self, image) -> Detections:
            return self.inner.detect(image)

    grid = [(0.6, 0.7, 0.7), (0.6, 0.1, 0.1)]
    _, wrapped = best_thresholds(Wrapped, tiny.test, grid, progress=False)
    _, direct = best_thresholds(lambda t: Detector(settings=DetectorSettings(thresholds=t)), tiny.test, grid, progress=False)
    assert [r["ap_cava"] for r in wrapped] == pytest.approx([r["ap_cava"] for r in direct])
