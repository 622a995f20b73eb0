"""Training PNet: losses, frozen stages, resume, and the end-to-end fine-tune on tiny synthetic data."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from facecmp.detection.checkpoint import load_checkpoint
from facecmp.data import load_archive
from facecmp.errors import FacecmpError, ModelError
from facecmp.detection.models import build_network, pretrained_network
from facecmp.data.synthetic import generate_dataset
from facecmp.training import FinetuneSettings, TrainSettings, finetune, train_stage
from facecmp.training.losses import LossWeights, box_loss, classification_loss, mtcnn_loss
from facecmp.training.samples import MiningSettings, mine_samples

FAST = TrainSettings(epochs=3, batch_size=64, patience=10, threads=2)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = generate_dataset(tmp_path_factory.mktemp("synthetic"), n_train_per_character=4, n_test=3, seed=0)
    return load_archive(root)


@pytest.fixture(scope="module")
def tiny_samples(tiny):
    return mine_samples(tiny.train, MiningSettings(), seed=0, progress=False)


def fresh_nets(from_scratch: bool = False):
    nets = {stage: pretrained_network(stage) for stage in ("pnet", "rnet", "onet")}
    if from_scratch:
        torch.manual_seed(0)
        nets["pnet"] = build_network("pnet")
    return nets


# --- losses ---------------------------------------------------------------------------------


def test_classification_loss_keeps_only_the_hardest_examples_and_ignores_parts():
    logits = torch.tensor([[5.0, -5.0], [0.0, 0.0], [-5.0, 5.0], [3.0, -3.0], [9.0, 9.0]])
    labels = torch.tensor([0, 1, 0, 1, -1])  # two easy-ish, two hard, one part face
    per_example = torch.nn.functional.cross_entropy(logits[:4], labels[:4], reduction="none")
    hardest_three = per_example.sort(descending=True).values[:3].mean()
    assert torch.isclose(classification_loss(logits, labels, hard_ratio=0.7), hardest_three)
    assert torch.isclose(classification_loss(logits, labels, hard_ratio=1.0), per_example.mean())


def test_soft_targets_are_learned_as_the_kl_divergence_from_the_teacher():
    """Against a readable reference: a taught sample (any label, part faces too) costs
    KL(teacher || student), 0 when they agree; an untaught one (NaN) its label's cross-entropy."""
    logits = torch.tensor([[2.0, -1.0], [0.0, 0.0], [-3.0, 3.0], [1.0, -1.0], [0.5, 0.2]])
    labels = torch.tensor([0, 1, -1, 1, -1])
    soft = torch.tensor([float("nan"), 0.5, 0.9, float("nan"), float("nan")])  # the last part face is untaught: ignored
    expected = []
    for logit, label, p in zip(logits, labels, soft):
        q = torch.softmax(logit, 0)
        if not torch.isnan(p):
            expected.append(sum(t * (math.log(t) - math.log(qc)) for t, qc in zip((1 - p, p), q) if t > 0))
        elif label >= 0:
            expected.append(-math.log(q[label]))
    expected = torch.tensor(expected, dtype=torch.float32)
    assert torch.isclose(classification_loss(logits, labels, 1.0, soft), expected.mean())
    assert torch.isclose(classification_loss(logits, labels, 0.5, soft), expected.sort(descending=True).values[:2].mean())
    agreeing = torch.softmax(logits, 1)[:, 1]
    assert classification_loss(logits, labels, 1.0, agreeing).abs() < 1e-6  # a student that agrees everywhere costs nothing
    # Through mtcnn_loss: the 5th target column is the soft target, the box loss ignores it.
    offsets, targets = torch.zeros(5, 4), torch.ones(5, 4)
    total, cls, box = mtcnn_loss(logits, offsets, labels, torch.cat([targets, soft[:, None]], 1), LossWeights(hard_ratio=1.0))
    assert torch.isclose(cls, expected.mean()) and torch.isclose(box, torch.tensor(1.0))
    assert torch.isclose(mtcnn_loss(logits, offsets, labels, targets, LossWeights(hard_ratio=1.0))[1],
                         classification_loss(logits, labels, 1.0))


def test_box_loss_uses_positives_and_parts_only():
    predicted = torch.zeros(3, 4)
    targets = torch.tensor([[1.0, 1, 1, 1], [100.0, 100, 100, 100], [0.5, 0.5, 0.5, 0.5]])
    labels = torch.tensor([1, 0, -1])
    assert torch.isclose(box_loss(predicted, targets, labels), torch.tensor((1.0 + 0.25) / 2))
    assert box_loss(predicted, targets, torch.tensor([0, 0, 0])) == 0


# --- the loop ------------------------------------------------------------------------------


def test_loss_decreases_over_a_few_epochs(tiny_samples, tmp_path):
    result = train_stage(fresh_nets(from_scratch=True), "pnet", tiny_samples, tmp_path, FAST, seed=0, progress=False)
    losses = [h["train_loss"] for h in result.history]
    assert len(losses) == 3
    assert losses[-1] < losses[0]
    assert result.history[-1]["val_loss"] < result.history[0]["val_loss"]


def test_only_pnet_changes_rnet_and_onet_stay_bit_identical(tiny_samples, tmp_path):
    nets = fresh_nets()
    before = {s: {k: v.clone() for k, v in nets[s].state_dict().items()} for s in nets}
    result = train_stage(nets, "pnet", tiny_samples, tmp_path, dataclasses.replace(FAST, epochs=1), seed=0, progress=False)
    for stage in ("rnet", "onet"):
        assert all(not p.requires_grad for p in nets[stage].parameters())
        after = nets[stage].state_dict()
        assert all(torch.equal(before[stage][k], after[k]) for k in after)
    assert any(not torch.equal(before["pnet"][k], v) for k, v in result.state_dict.items())


def test_frozen_layers_keep_their_starting_weights_and_the_rest_trains(tiny_samples, tmp_path):
    nets = fresh_nets()
    start = {k: v.clone() for k, v in nets["pnet"].state_dict().items()}
    frozen = dataclasses.replace(FAST, epochs=1, frozen=("conv1", "prelu1"))
    result = train_stage(nets, "pnet", tiny_samples, tmp_path, frozen, seed=0, progress=False)
    for k, v in result.state_dict.items():
        moved = not torch.equal(start[k], v)
        assert moved != k.startswith(("conv1.", "prelu1.")), f"{k}: {'trained' if moved else 'kept'}"


def test_freezing_a_layer_the_net_lacks_names_the_net_s_layers(tiny_samples, tmp_path):
    with pytest.raises(ModelError, match=r"pnet has no layer 'conv9' to freeze; its layers: conv1, prelu1"):
        train_stage(fresh_nets(), "pnet", tiny_samples, tmp_path, dataclasses.replace(FAST, frozen=("conv9",)), seed=0,
                    progress=False)


def test_resume_refuses_a_state_trained_with_other_frozen_layers(tiny_samples, tmp_path):
    train_stage(fresh_nets(), "pnet", tiny_samples, tmp_path, dataclasses.replace(FAST, epochs=1), seed=0, progress=False)
    with pytest.raises(ModelError, match="different data or settings"):
        train_stage(fresh_nets(), "pnet", tiny_samples, tmp_path, dataclasses.replace(FAST, frozen=("conv1",)), seed=0,
                    resume=True, progress=False)


def test_resume_continues_exactly_where_it_stopped(tiny_samples, tmp_path):
    whole = train_stage(fresh_nets(), "pnet", tiny_samples, tmp_path / "whole", FAST, seed=0, progress=False)

    train_stage(fresh_nets(), "pnet", tiny_samples, tmp_path / "parts", dataclasses.replace(FAST, epochs=2), seed=0, progress=False)
    resumed = train_stage(fresh_nets(), "pnet", tiny_samples, tmp_path / "parts", FAST, seed=0, resume=True, progress=False)

    assert len(resumed.history) == 3
    assert resumed.history == whole.history
    assert all(torch.equal(resumed.state_dict[k], v) for k, v in whole.state_dict.items())


def test_resume_refuses_a_state_from_other_settings(tiny_samples, tmp_path):
    train_stage(fresh_nets(), "pnet", tiny_samples, tmp_path, dataclasses.replace(FAST, epochs=1), seed=0, progress=False)
    with pytest.raises(ModelError, match="different data or settings"):
        train_stage(fresh_nets(), "pnet", tiny_samples, tmp_path, dataclasses.replace(FAST, lr=0.1), seed=0, resume=True, progress=False)


def test_one_cycle_warms_up_to_the_peak_then_anneals_and_resumes_only_with_the_same_epochs(tiny_samples, tmp_path, monkeypatch):
    cycle = dataclasses.replace(FAST, epochs=4, lr=2e-3, schedule="one-cycle")
    whole = train_stage(fresh_nets(), "pnet", tiny_samples, tmp_path / "whole", cycle, seed=0, progress=False)
    lrs = [h["lr"] for h in whole.history]  # the rate each epoch starts at
    assert lrs[0] < lrs[1] and lrs[1] >= lrs[2] > lrs[3], lrs  # up over the first quarter, then down
    assert max(lrs) <= cycle.lr and lrs[0] < cycle.lr / 10
    # Interrupted after 2 of its 4 epochs, it continues on the same cycle to the same weights...
    train_stage(fresh_nets(), "pnet", tiny_samples, tmp_path / "parts", dataclasses.replace(cycle, epochs=2), seed=0,
                progress=False)
    with pytest.raises(ModelError, match="one-cycle schedule over 2 epoch"):  # (a 2-epoch cycle is another schedule)
        train_stage(fresh_nets(), "pnet", tiny_samples, tmp_path / "parts", cycle, seed=0, resume=True, progress=False)
    # ...as a run of the same 4 epochs cut off after its second does.
    import facecmp.training.loop as loop

    saved, save = [], loop.save_run_state

    def save_then_stop(*args, **kwargs):
        save(*args, **kwargs)
        saved.append(1)
        if len(saved) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(loop, "save_run_state", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        train_stage(fresh_nets(), "pnet", tiny_samples, tmp_path / "cut", cycle, seed=0, progress=False)
    monkeypatch.setattr(loop, "save_run_state", save)
    resumed = train_stage(fresh_nets(), "pnet", tiny_samples, tmp_path / "cut", cycle, seed=0, resume=True, progress=False)
    assert resumed.history == whole.history
    assert all(torch.equal(resumed.state_dict[k], v) for k, v in whole.state_dict.items())


@pytest.mark.parametrize("epochs, min_steps, batches, expected", [
    (8, 0, 3, 8), (8, 24, 3, 8), (8, 25, 3, 9), (8, 300, 18, 17), (3, 300, 302, 3), (2, 5, 0, 5),
])
def test_min_steps_raises_the_epochs_only_where_they_are_fewer_steps(epochs, min_steps, batches, expected):
    from facecmp.training.loop import planned_epochs

    assert planned_epochs(TrainSettings(epochs=epochs, min_steps=min_steps), batches) == expected


def test_a_run_too_small_for_its_min_steps_trains_more_epochs_on_one_cycle_over_all_of_them(tiny_samples, tmp_path):
    from facecmp.training.loop import split_indices

    train_idx, _ = split_indices(len(tiny_samples), FAST.val_fraction, 0)
    batches = math.ceil(len(train_idx) / FAST.batch_size)  # the training split's batches per epoch
    cycle = dataclasses.replace(FAST, epochs=2, lr=2e-3, schedule="one-cycle", min_steps=4 * batches)
    result = train_stage(fresh_nets(), "pnet", tiny_samples, tmp_path, cycle, seed=0, progress=False)
    assert len(result.history) == 4  # min_steps: 4 epochs' steps, not the 2 epochs asked
    lrs = [h["lr"] for h in result.history]
    assert lrs[0] < lrs[1] and lrs[1] >= lrs[2] > lrs[3], lrs  # one cycle over the 4 epochs


def test_finetune_epochs_mean_exactly_those_epochs_whatever_the_recipes_min_steps():
    from facecmp.training.finetune import SHORT_TRAINING, training_settings

    assert training_settings("pnet", SHORT_TRAINING, None) == SHORT_TRAINING["pnet"]
    given = training_settings("pnet", SHORT_TRAINING, 1)
    assert (given.epochs, given.min_steps) == (1, 0)


def test_an_unknown_schedule_names_the_ones_there_are():
    with pytest.raises(ValueError, match="expected one of exponential, one-cycle"):
        TrainSettings(schedule="cosine")


def test_early_stopping_keeps_the_starting_weights_when_no_epoch_beats_them(tiny_samples, tmp_path):
    # A huge learning rate makes every epoch worse than the pretrained weights on validation.
    wild = dataclasses.replace(FAST, epochs=6, lr=0.5, lr_decay=1.0, patience=2)
    nets = fresh_nets()
    start = {k: v.clone() for k, v in nets["pnet"].state_dict().items()}
    result = train_stage(nets, "pnet", tiny_samples, tmp_path, wild, seed=0, progress=False)
    val = [h["val_loss"] for h in result.history]
    assert result.stopped_early and len(val) == wild.patience < wild.epochs
    assert min(val) > result.start_val_loss, "the check needs epochs that are worse than the start"
    # Kept: the starting weights themselves (epoch 0), in the result and in the net.
    assert result.best_epoch == 0 and result.best_val_loss == result.start_val_loss
    assert all(torch.equal(result.state_dict[k], v) for k, v in start.items())
    assert all(torch.equal(nets["pnet"].state_dict()[k], v) for k, v in start.items())
    # ...whose validation loss, recomputed here, is the starting weights' (no worse).
    assert _val_loss(nets["pnet"], tiny_samples, wild) <= result.start_val_loss + 1e-6


def test_early_stopping_keeps_the_best_epoch_when_it_beats_the_start(tiny_samples, tmp_path):
    settings = dataclasses.replace(FAST, epochs=4, patience=1)
    nets = fresh_nets(from_scratch=True)
    result = train_stage(nets, "pnet", tiny_samples, tmp_path, settings, seed=0, progress=False)
    val = [h["val_loss"] for h in result.history]
    assert result.best_epoch >= 1 and result.best_val_loss == min(val) < result.start_val_loss
    assert result.best_epoch == 1 + val.index(min(val))
    assert _val_loss(nets["pnet"], tiny_samples, settings) == pytest.approx(result.best_val_loss, rel=1e-5)


def _val_loss(net, samples, settings: TrainSettings) -> float:
    """The validation loss ``train_stage`` computes, recomputed from its split."""
    from facecmp.training.loop import run_epoch, split_indices
    from facecmp.training.losses import LossWeights
    from facecmp.training.samples import SampleDataset

    _, val_idx = split_indices(len(samples), settings.val_fraction, seed=0)
    loader = torch.utils.data.DataLoader(SampleDataset(samples.take(val_idx)), batch_size=1024)
    weights = LossWeights(settings.loss.classification, settings.loss.box, hard_ratio=1.0)
    return run_epoch(net, loader, weights, "cpu")["loss"]


# --- end to end ------------------------------------------------------------------------------


def test_finetune_writes_a_calibrated_checkpoint(tiny, tmp_path):
    grid = ((0.6, 0.7, 0.7), (0.4, 0.7, 0.7))
    settings = FinetuneSettings(epochs=2, training=FAST, grid=grid)
    ckpt = finetune(tiny.train, tmp_path / "ft", settings, dev=tiny.test, cache_dir=tmp_path / "cache", progress=False)
    again = load_checkpoint(tmp_path / "ft")
    assert again.stages == ("pnet",) and ckpt.thresholds == again.thresholds
    assert ckpt.thresholds in grid
    table = ckpt.meta["calibration"]["table"]
    assert [tuple(row["thresholds"]) for row in table] == list(grid)
    best_ap = max(row["ap_cava"] for row in table)
    assert table[list(grid).index(ckpt.thresholds)]["ap_cava"] == best_ap
    assert set(ckpt.meta["timings"]) == {"mining_s", "training_s", "calibration_s"}
    # What the seconds depend on: the threads and the OpenMP wait policy the process started with.
    assert ckpt.meta["run_conditions"]["torch_threads"] == torch.get_num_threads()
    assert ckpt.meta["run_conditions"]["openmp_wait_policy"] in ("PASSIVE", "ACTIVE", "runtime default")
    assert len(ckpt.meta["history"]) == ckpt.meta["epochs"] == 2
    assert list((tmp_path / "cache").glob("*.npz"))


def test_unknown_stages_are_refused(tiny, tmp_path):
    with pytest.raises(FacecmpError, match="cannot fine-tune 'lnet'"):
        finetune(tiny.train, tmp_path, FinetuneSettings(stages=("pnet", "lnet")), progress=False)
    assert not (tmp_path / "facecmp.json").exists()


def test_stage_recall_after_onet_matches_what_detect_finds(tiny):
    """Guards the stage-by-stage replay against drifting from ``Detector.detect``."""
    from facecmp.data.images import read_image
    from facecmp.detection.detector import Detector, DetectorSettings
    from facecmp.evaluation.evaluator import pairwise_iou
    from facecmp.training.calibrate import stage_recall

    detector = Detector(settings=DetectorSettings(thresholds=(0.6, 0.1, 0.1)))
    recall = stage_recall(detector, tiny.test, progress=False)
    covered = total = 0
    for record in tiny.test.images:
        found = detector.detect(read_image(record.path)).boxes
        total += len(record.boxes)
        if len(found) and len(record.boxes):
            covered += int((pairwise_iou(record.boxes, found).max(axis=1) >= 0.3).sum())
    assert covered > 0, "the check needs some found faces to mean anything"
    assert set(recall) == {"pnet", "rnet", "onet"}
    assert recall["onet"] == pytest.approx(covered / total)
    assert all(0.0 <= v <= 1.0 for v in recall.values())


@pytest.mark.parametrize("stage, named, not_named", [
    ("pnet", "--recipe fast and --recipe classic train PNet", None),
    ("rnet", "--recipe classic trains RNet", "--recipe fast"),
    ("onet", "--recipe classic trains ONet", "--recipe fast"),
])
def test_a_one_cycle_resume_with_other_epochs_names_the_recipes_that_extend_that_stage(stage, named, not_named, tmp_path):
    """fast trains only PNet on a decaying rate; its RNet and ONet run one cycle too, so the hint differs."""
    from facecmp.training.run_state import apply_run_state, run_recipe

    cycle = TrainSettings(epochs=3, schedule="one-cycle")
    written = {"stage": stage, "seed": 0, "n_samples": 10, "settings": run_recipe(cycle)}
    asked = {**written, "settings": run_recipe(dataclasses.replace(cycle, epochs=4))}
    with pytest.raises(ModelError) as caught:
        apply_run_state({"run_id": written}, tmp_path / "state.pt", asked, None, None, None)
    message = str(caught.value)
    assert "over 3 epoch(s)" in message and "asks for 4" in message and named in message
    assert not_named is None or not_named not in message
