"""`facecmp finetune --retain ROOT` (facecmp.training.retain): which source images are trained on, the
replay samples, the L2-SP gradient, the recipe in facecmp.json, resume, the variant's cache key, and
one error line for bad input. Small generated data (a WIDER-layout source of generated frames)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from facecmp.data.records import Dataset
from facecmp.detection.checkpoint import load_checkpoint
from facecmp.detection.models import pretrained_network
from facecmp.errors import DataError, FacecmpError
from facecmp.training import FinetuneSettings, TrainSettings, finetune
from facecmp.training import retain as R
from facecmp.training.samples import SampleSet
from test_cli import assert_user_error, run_cli
from test_wider_eval import make_wider_dataset

FAST = TrainSettings(epochs=2, batch_size=64, patience=10, threads=2)
ONE_EPOCH = dataclasses.replace(FAST, epochs=1)
ONE_POINT = ((0.6, 0.7, 0.7),)


@pytest.fixture(scope="module")
def source_root(tmp_path_factory):
    return make_wider_dataset(tmp_path_factory.mktemp("retain-source"), n_images=4)


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    from facecmp.data import load_archive
    from facecmp.data.synthetic import generate_dataset

    return load_archive(generate_dataset(tmp_path_factory.mktemp("retain-target"), n_train_per_character=3, n_test=3, seed=0))


@pytest.fixture(scope="module")
def retain_images(source_root):
    return R.retain_split(source_root, holdout=1, seed=0)[0]


def pnet_run(target, out, retain_data, settings: R.RetainSettings | None, **kw):
    recipe = FinetuneSettings(stages=("pnet",), training=kw.pop("training", FAST), grid=ONE_POINT, retain=settings)
    return finetune(target.train, out, recipe, dev=target.test, retain=retain_data, progress=False, **kw)


# --- which images -------------------------------------------------------------------------------


def test_the_held_out_images_are_the_source_split_the_gates_score(source_root):
    """--retain-holdout N sets aside exactly what `--source-split split:N` scores with the same seed."""
    from facecmp.study.source import load_source_domain

    for seed in (0, 3):
        retain, held = R.retain_split(source_root, holdout=1, seed=seed)
        source = load_source_domain(source_root, split="split:1", seed=seed)
        assert {r.key for r in held.images} == {r.key for r in source.test.images}
        assert {r.key for r in source.retain.images} == {r.key for r in retain.images}
        assert not {r.key for r in retain.images} & {r.key for r in held.images}
        assert len(retain) + len(held) == 4
    assert len(R.retain_split(source_root, holdout=0)[0]) == 4


def test_overlap_with_a_test_set_is_refused_by_file_content(source_root, retain_images, tmp_path):
    import shutil

    from facecmp.study.source import load_source_domain

    source = load_source_domain(source_root, split="split:1", seed=0)
    R.refuse_overlap(retain_images, source.test, "the source-domain test set")  # disjoint: fine
    # A copy of a retain image under another name, in another folder, is still the same image.
    record = retain_images.images[0]
    copy = tmp_path / "elsewhere.jpg"
    shutil.copy(record.path, copy)
    test = Dataset(name="copy", images=[dataclasses.replace(record, key="other/elsewhere.jpg", path=copy)])
    with pytest.raises(DataError, match=r"1 retain image\(s\) are also in the test set"):
        R.refuse_overlap(retain_images, test, "the test set")


def test_a_retain_set_without_faces_is_refused(retain_images):
    empty = dataclasses.replace(retain_images, images=[dataclasses.replace(r, boxes=np.zeros((0, 4), np.int64), labels=())
                                                       for r in retain_images.images])
    with pytest.raises(DataError, match="no annotated face left to retain on"):
        R.require_faces(empty)


@pytest.mark.parametrize("kwargs, needle", [
    ({"method": "forget"}, "expected one of replay, l2sp, replay\\+l2sp, wise, replay\\+wise"),
    ({"replay_share": 0}, "--retain-share 0: expected a number in \\(0, 4\\]"),
    ({"l2sp": -1}, "L2-SP strength"),
    ({"wise_alpha": 0}, "WiSE-FT share"),
    ({"wise_alpha": 1.5}, "WiSE-FT share"),
    ({"source_mining": "guess"}, "--retain-mining 'guess': expected one of cascade, crops"),
    ({"source_targets": "guess"}, "--retain-targets 'guess': expected one of labels, teacher"),
    ({"teacher_weight": 0}, "--retain-teacher-weight 0: expected a number in"),
    ({"source_min_face": 8}, "--retain-min-face 8: expected a face size in pixels in \\[12, 1000\\]"),
    ({"stage_shares": (("onet", 5.0),)}, "--retain-share onet=5.0: expected a number in \\(0, 4\\]"),
    ({"stage_shares": (("qnet", 1.0),)}, "--retain-share qnet=1.0: expected a stage of pnet, rnet, onet"),
    ({"stage_shares": (("onet", 1.0), ("onet", 0.5))}, "--retain-share onet=...: given twice"),
    ({"replay_mode": "swap"}, "--retain-replay 'swap': expected one of add, replace"),
    ({"feature_weight": -1}, "--retain-features -1: expected a number in \\[0, 1000\\]"),
    ({"feature_weight": 10, "source_targets": "labels"}, "--retain-features 10: distils on the replayed samples the pretrained stage teaches"),
    ({"feature_weight": 10, "method": "l2sp"}, "so it needs a replaying --retain-method with --retain-targets teacher"),
    ({"stage_shares": (("onet", 1.0),)}, "--retain-share onet=1.0: --retain-replay replace replaces that share of the target's samples, so it must be below 1"),
])
def test_bad_recipes_are_refused(kwargs, needle):
    with pytest.raises(FacecmpError, match=needle):
        R.RetainSettings(**kwargs)


# --- the remedies -------------------------------------------------------------------------------


def test_a_stage_share_overrides_the_share_of_that_stage_only():
    settings = R.RetainSettings(replay_share=0.25, stage_shares=(("onet", 1.0),), replay_mode="add")
    assert [settings.share(s) for s in R.STAGES] == [0.25, 0.25, 1.0]
    assert settings.record()["stage_shares"] == {"onet": 1.0}
    assert "stage_shares" not in R.RetainSettings().record()  # the records of runs without overrides are unchanged


@pytest.mark.parametrize("text, parsed", [
    ("0.5", (0.5, ())),
    ("onet=1", (None, (("onet", 1.0),))),
    ("0.25,onet=1,rnet=0.1", (0.25, (("onet", 1.0), ("rnet", 0.1)))),
])
def test_cli_retain_share_reads_a_share_and_stage_items(text, parsed):
    from facecmp.cli import _retain_shares

    assert _retain_shares(text) == parsed


@pytest.mark.parametrize("text", ["lots", "onet=", "0.2,0.3", "onet=1,onet=2", "onet=1, onet=2"])
def test_cli_retain_share_refuses_what_it_cannot_read(text):
    import argparse

    from facecmp.cli import _retain_shares

    with pytest.raises(argparse.ArgumentTypeError, match="expected a share S or stage=S items"):
        _retain_shares(text)


def test_replay_mixes_a_seeded_share_of_source_samples():
    rng = np.random.default_rng(0)

    def samples(n, label):
        return SampleSet(rng.integers(0, 255, (n, 3, 12, 12), dtype=np.uint8), np.full(n, label, np.int8), np.zeros((n, 4), np.float32))

    target, source = samples(40, 1), samples(30, 0)
    mixed, counts = R.with_replay("pnet", target, source, 0.25, seed=0)
    again, _ = R.with_replay("pnet", target, source, 0.25, seed=0)
    assert len(mixed) == 50 and counts["source"] == {"positive": 0, "part": 0, "negative": 10} and counts["source_mined"] == 30
    assert np.array_equal(mixed.images, again.images)
    assert np.array_equal(mixed.images[:40], target.images)  # the target samples are all kept
    everything, _ = R.with_replay("pnet", target, source, 4.0, seed=0)
    assert len(everything) == 70  # never more source samples than were mined


def test_replace_mode_keeps_the_stage_as_large_as_without_replay():
    """replay_mode "replace": the seeded source share takes the place of as many seeded target samples, so
    the stage trains as many steps as the plain fine-tune; "add" keeps every target sample."""
    rng = np.random.default_rng(0)
    target = SampleSet(rng.integers(0, 255, (40, 3, 12, 12), dtype=np.uint8), np.ones(40, np.int8), np.zeros((40, 4), np.float32))
    source = SampleSet(rng.integers(0, 255, (30, 3, 12, 12), dtype=np.uint8), np.zeros(30, np.int8), np.zeros((30, 4), np.float32))
    mixed, counts = R.with_replay("pnet", target, source, 0.25, seed=0, replace=True)
    added, _ = R.with_replay("pnet", target, source, 0.25, seed=0)
    assert len(mixed) == 40 and counts["target_replaced"] == 10 and counts["target"]["positive"] == 30
    assert np.array_equal(mixed.images[30:], added.images[40:])  # the same source samples as "add" picks
    kept = {t.tobytes() for t in mixed.images[:30]}
    assert len(kept) == 30 and kept <= {t.tobytes() for t in target.images}
    again, _ = R.with_replay("pnet", target, source, 0.25, seed=0, replace=True)
    assert np.array_equal(mixed.images, again.images)  # seeded
    other, _ = R.with_replay("pnet", target, source, 0.25, seed=1, replace=True)
    assert not np.array_equal(other.images[:30], mixed.images[:30])
    assert R.RetainSettings().record()["replay_mode"] == "replace"
    assert "replay_mode" not in R.RetainSettings(replay_mode="add").record()  # as recorded before the mode existed


def test_teacher_targets_are_the_pretrained_stages_probabilities_on_the_added_samples_only():
    from facecmp.training.samples import SampleDataset, hflip

    rng = np.random.default_rng(1)

    def samples(n, label):
        return SampleSet(rng.integers(0, 255, (n, 3, 24, 24), dtype=np.uint8), np.full(n, label, np.int8),
                         rng.normal(0, 0.1, (n, 4)).astype(np.float32))

    target, source = samples(40, 1), samples(30, -1)
    teacher = pretrained_network("rnet")
    labelled, _ = R.with_replay("rnet", target, source, 0.25, seed=0)
    taught, counts = R.with_replay("rnet", target, source, 0.25, seed=0, teacher=teacher)
    assert labelled.soft is None and np.array_equal(taught.images, labelled.images)
    assert np.isnan(taught.soft[:40]).all()  # the target's own samples keep their labels
    x = torch.from_numpy(taught.images[40:]).float().sub(127.5).mul(0.0078125)
    with torch.no_grad():
        expected = torch.softmax(teacher(x, logits=True)[-1], dim=1)[:, 1].numpy()
    np.testing.assert_allclose(taught.soft[40:], expected, atol=1e-5)
    assert counts["teacher_mean_probability"] == pytest.approx(float(expected.mean()), abs=1e-5)
    # What training reads: the soft target as a 5th target column, carried by take() and kept by the flip.
    _, _, row = SampleDataset(taught.take(np.array([0, 45])))[1]
    assert row.shape == (5,) and row[4] == pytest.approx(taught.soft[45])
    flipped = hflip(torch.zeros(1, 3, 24, 24), row[None])[1]
    assert flipped[0, 4] == row[4] and flipped[0, 0] == -row[2]


def test_rnet_and_onet_mine_as_many_source_images_as_their_share_needs(retain_images):
    assert R.source_images(retain_images, 100, None, seed=0) is retain_images  # no estimate: all of them
    assert R.source_images(retain_images, 100, 10.0, seed=0) is retain_images  # 20 images needed, 3 there
    few = R.source_images(retain_images, 5, 10.0, seed=0)  # 2 x 5 samples at 10 per image: 1 image
    assert len(few) == 1 and few.images[0].key in {r.key for r in retain_images.images}
    assert R.source_images(retain_images, 5, 10.0, seed=0).images == few.images  # seeded


def test_teacher_weight_scales_the_taught_samples_loss_in_the_recipe():
    logits, labels = torch.tensor([[1.0, 0.0], [0.0, 2.0]]), torch.tensor([0, 1])
    soft = torch.tensor([0.9, float("nan")])
    from facecmp.training.losses import classification_loss

    one, three = (classification_loss(logits, labels, 1.0, soft, w) for w in (1.0, 3.0))
    ce = torch.nn.functional.cross_entropy(logits[1:], labels[1:])
    assert torch.isclose(three - ce / 2, 3 * (one - ce / 2))
    taught = R.RetainSettings(source_targets="teacher", teacher_weight=3.0)
    assert R.training_recipe(FAST, taught).loss.soft == 3.0
    assert R.training_recipe(FAST, R.RetainSettings(source_targets="labels", teacher_weight=3.0)) == FAST  # label replay: no soft targets to weigh
    assert R.training_recipe(FAST, None) == FAST


def test_feature_distillation_is_set_for_rnet_and_onet_and_recorded_when_it_distils():
    distilled = R.RetainSettings(feature_weight=20.0)
    assert [R.training_recipe(FAST, distilled, s).loss.features for s in ("pnet", "rnet", "onet")] == [0.0, 20.0, 20.0]
    assert R.training_recipe(FAST, R.RetainSettings(), "onet").loss.features == R.DEFAULT_FEATURE_WEIGHT  # the default distils
    assert R.training_recipe(FAST, R.RetainSettings(feature_weight=0), "onet").loss.features == 0.0
    assert R.RetainSettings(source_targets="labels").features == 0.0  # label replay has no teacher: none by default
    assert R.feature_teacher("pnet", R.training_recipe(FAST, distilled, "pnet")) is None
    teacher = R.feature_teacher("onet", R.training_recipe(FAST, distilled, "onet"))
    assert R.feature_teacher("onet", R.training_recipe(FAST, R.RetainSettings(feature_weight=0), "onet")) is None
    assert all(torch.equal(v, pretrained_network("onet").state_dict()[k]) for k, v in teacher.state_dict().items())
    assert distilled.record()["feature_weight"] == 20.0 and R.RetainSettings().record()["feature_weight"] == R.DEFAULT_FEATURE_WEIGHT
    assert "feature_weight" not in R.RetainSettings(feature_weight=0).record()  # as teacher replay's records were before
    assert "feature_weight" not in R.RetainSettings(source_targets="labels").record()


def test_cli_help_names_the_default_feature_weight():
    from facecmp.cli import RETAIN_FEATURES_DEFAULT

    assert RETAIN_FEATURES_DEFAULT == R.DEFAULT_FEATURE_WEIGHT
    code, out, _ = run_cli(["finetune", "--help"])
    assert code == 0 and f"default {R.DEFAULT_FEATURE_WEIGHT:g};" in " ".join(out.split())


def _rnet_hidden(net, x):
    """RNet's last hidden features written out layer by layer (the reference for the hook)."""
    x = net.pool1(net.prelu1(net.conv1(x)))
    x = net.pool2(net.prelu2(net.conv2(x)))
    x = net.prelu3(net.conv3(x)).permute(0, 3, 2, 1).contiguous()
    return net.prelu4(net.dense4(x.view(len(x), -1)))


def test_feature_distillation_compares_the_last_hidden_features_of_the_taught_samples_only():
    from facecmp.training.loop import distilled_features, hidden_features, net_outputs

    torch.manual_seed(0)
    teacher, student = pretrained_network("rnet"), _nudged(pretrained_network("rnet"))
    with torch.no_grad():
        student.dense4.weight.add_(0.05 * torch.randn_like(student.dense4.weight))
    images = torch.randn(6, 3, 24, 24)
    targets = torch.zeros(6, 5)
    targets[:, 4] = torch.tensor([0.9, float("nan"), 0.1, float("nan"), 0.5, float("nan")])
    taught = ~torch.isnan(targets[:, 4])
    with hidden_features(student) as hidden:
        net_outputs(student, images)
        got = distilled_features(hidden["x"], teacher, images, targets)
    with torch.no_grad():
        want = ((_rnet_hidden(student, images[taught]) - _rnet_hidden(teacher, images[taught])) ** 2).mean()
    assert got > 0 and torch.isclose(got, want, rtol=1e-5)
    with hidden_features(teacher) as hidden:  # the teacher against itself: nothing to distil (but rounding)
        net_outputs(teacher, images)
        assert distilled_features(hidden["x"], teacher, images, targets) < 1e-10
    with hidden_features(student) as hidden:  # no taught sample in the batch: nothing to distil
        net_outputs(student, images)
        assert distilled_features(hidden["x"], teacher, images, torch.zeros(6, 4)) == 0


def test_feature_distillation_changes_training_only_where_there_are_taught_samples(tmp_path):
    from facecmp.training import train_stage

    rng = np.random.default_rng(3)
    n = 96
    samples = SampleSet(rng.integers(0, 255, (n, 3, 24, 24), dtype=np.uint8), rng.choice(np.array([0, 1, -1], np.int8), n),
                        rng.normal(0, 0.1, (n, 4)).astype(np.float32))
    recipe = dataclasses.replace(ONE_EPOCH, lr=1e-2, loss=dataclasses.replace(ONE_EPOCH.loss, features=100.0))

    def run(name, soft, teacher):
        samples.soft = soft
        nets = {s: pretrained_network(s) for s in ("pnet", "rnet", "onet")}
        return train_stage(nets, "rnet", samples, tmp_path / name, recipe, progress=False, teacher=teacher).state_dict

    taught = np.where(np.arange(n) % 2 == 0, 0.5, np.nan).astype(np.float32)
    plain, distilled = run("plain", taught, None), run("distilled", taught, pretrained_network("rnet"))
    assert any(not torch.equal(v, distilled[k]) for k, v in plain.items())
    untaught = np.full(n, np.nan, np.float32)  # no soft targets: the teacher has nothing to add
    assert all(torch.equal(v, run("untaught-teacher", untaught, pretrained_network("rnet"))[k])
               for k, v in run("untaught", untaught, None).items())


def test_a_stage_taught_by_itself_starts_at_zero_classification_loss(tmp_path):
    """Soft targets reach the training loop: with the starting net as the teacher of every sample
    the validation classification loss before training is 0 (a teacher of 0.5 everywhere is not)."""
    from facecmp.training import train_stage

    rng = np.random.default_rng(2)
    n = 64
    # Negatives only: no box loss, so the validation loss is the classification's alone.
    samples = SampleSet(rng.integers(0, 255, (n, 3, 12, 12), dtype=np.uint8), np.zeros(n, np.int8), np.zeros((n, 4), np.float32))
    nets = {s: pretrained_network(s) for s in ("pnet", "rnet", "onet")}
    samples.soft = R.teacher_probabilities(pretrained_network("pnet"), samples.images)
    agreed = train_stage(nets, "pnet", samples, tmp_path / "a", ONE_EPOCH, progress=False)
    samples.soft = np.full(n, 0.5, np.float32)
    undecided = train_stage({s: pretrained_network(s) for s in nets}, "pnet", samples, tmp_path / "b", ONE_EPOCH, progress=False)
    assert abs(agreed.start_val_loss) < 1e-5
    assert undecided.start_val_loss > 0.01


def test_l2sp_adds_the_penalty_gradient_and_only_while_active():
    torch.manual_seed(0)
    net, anchor = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    x = torch.randn(5, 3)

    def grads():
        net.zero_grad()
        net(x).sum().backward()
        return [p.grad.clone() for p in net.parameters()]

    plain = grads()
    with R.anchored(net, anchor, 0.5):
        penalised = grads()
    after = grads()
    for g0, g1, g2, p, a in zip(plain, penalised, after, net.parameters(), anchor.parameters()):
        assert torch.allclose(g1, g0 + 0.5 * (p.detach() - a.detach()))
        assert torch.equal(g2, g0)
    assert R.distance_from(net, net) == 0.0


@pytest.mark.parametrize("stage", ["rnet", "onet"])
def test_cascade_replay_is_the_targets_hard_mining_run_on_the_source_frames(stage, retain_images, tmp_path):
    """source_mining="cascade": RNet's / ONet's source samples are what the earlier stages find on
    the source frames, labelled by their ground truth (the same samples as mining a target set), and
    their cache is keyed by those stages' weights; "crops" cuts other samples without a cascade run."""
    from facecmp.training.hard_mining import default_hard_mining, mine_hard_samples
    from facecmp.training.samples import MiningSettings

    nets = {s: pretrained_network(s) for s in ("pnet", "rnet", "onet")}
    hard = default_hard_mining(stage)

    def replay(how, nets, cache):
        return R.source_samples(stage, retain_images, mining=MiningSettings(), hard_mining=hard, seed=0, cache_dir=cache,
                                progress=False, source_mining=how, nets=nets)

    cascade = replay("cascade", nets, tmp_path)
    mined = mine_hard_samples(retain_images, nets, stage, hard, seed=0, progress=False)
    assert len(cascade) > 0 and np.array_equal(cascade.images, mined.images) and np.array_equal(cascade.labels, mined.labels)
    crops = replay("crops", nets, tmp_path)
    assert len(crops) != len(cascade) or not np.array_equal(crops.images, cascade.images)
    assert replay("cascade", nets, tmp_path).from_cache
    earlier = "rnet" if stage == "onet" else "pnet"
    other = {**nets, earlier: _nudged(nets[earlier])}
    assert not replay("cascade", other, tmp_path).from_cache  # other earlier weights: mined again


def test_the_source_min_face_sets_the_pyramid_the_earlier_stages_run_on_the_source_frames(retain_images, tmp_path):
    """--retain-min-face: RNet's replay candidates are the target's hard mining on the source frames at that
    minimum face (fewer pyramid levels); None mines at the target's, and the cache tells them apart."""
    from facecmp.training.hard_mining import default_hard_mining, mine_hard_samples
    from facecmp.training.samples import MiningSettings

    nets = {s: pretrained_network(s) for s in ("pnet", "rnet")}
    hard = default_hard_mining("rnet")
    target = SampleSet(np.zeros((400, 3, 24, 24), np.uint8), np.zeros(400, np.int8), np.zeros((400, 4), np.float32))

    def mined(settings):
        _, record = R.replay_stage("rnet", target, retain_images, settings, mining=MiningSettings(), hard_mining=hard, seed=0,
                                   cache_dir=tmp_path, progress=False, nets=nets)
        return record["replay"]["source_mined"]

    default = R.RetainSettings().source_min_face
    at = {px: len(mine_hard_samples(retain_images, nets, "rnet", dataclasses.replace(hard, min_face_size=px), seed=0, progress=False))
          for px in (hard.min_face_size, default, 60.0)}
    assert at[60.0] != at[hard.min_face_size]
    assert mined(R.RetainSettings(source_min_face=None)) == at[hard.min_face_size]
    assert mined(R.RetainSettings(source_min_face=60)) == at[60.0]  # not the samples cached at the target's
    assert mined(R.RetainSettings()) == at[default]
    assert R.RetainSettings().record()["source_min_face"] == default  # in facecmp.json and the variant's cache key
    assert "source_min_face" not in R.RetainSettings(source_min_face=None).record()  # as recorded before it existed
    assert "source_min_face" not in R.RetainSettings(source_mining="crops").record()  # no cascade run on the source frames


def _nudged(net):
    import copy

    out = copy.deepcopy(net)
    with torch.no_grad():
        next(out.parameters()).add_(1e-3)
    return out


# --- end to end (pnet only: seconds) -----------------------------------------------------------


@pytest.fixture(scope="module")
def plain_pnet(target, tmp_path_factory):
    return pnet_run(target, tmp_path_factory.mktemp("plain") / "ft", None, None, training=ONE_EPOCH)


@pytest.mark.parametrize("method", ["replay", "replay-teacher", "l2sp"])
def test_each_retain_recipe_changes_the_weights_and_is_recorded(method, target, retain_images, plain_pnet, tmp_path):
    taught = method == "replay-teacher"
    method = method.removesuffix("-teacher")
    # One epoch of teacher replay at the default rate and weight keeps the pretrained weights here
    # (they match the teacher on the source half, so the start's validation loss is the best): the
    # teacher case trains at a higher rate with a light teacher, so that the epoch moves them, and is
    # compared with label replay trained alike (what the teacher changes), not with the plain run.
    training = dataclasses.replace(ONE_EPOCH, lr=1e-2) if taught else ONE_EPOCH
    # (on these few samples, replacing target samples keeps the teacher's start the best epoch: it adds them)
    targets = {"source_targets": "teacher", "teacher_weight": 0.01, "replay_mode": "add"} if taught else {"source_targets": "labels"}
    settings = R.RetainSettings(method=method, l2sp=1.0, **targets)
    ckpt = pnet_run(target, tmp_path / "ft", retain_images, settings, training=training)
    if taught:
        other = pnet_run(target, tmp_path / "labels", retain_images, R.RetainSettings(source_targets="labels", replay_mode="add"),
                         training=training)
    else:
        other = plain_pnet
    tuned, start = ckpt.state_dicts["pnet"], pretrained_network("pnet").state_dict()
    assert any(not torch.equal(v, start[k]) for k, v in tuned.items()), f"{method} kept the pretrained weights"
    changed = [k for k, v in tuned.items() if not torch.equal(v, other.state_dicts["pnet"][k])]
    assert changed, f"{method} trained the same weights as {'label replay' if taught else 'the plain fine-tune'}"
    recorded = json.loads((tmp_path / "ft" / "facecmp.json").read_text())["settings"]["retain"]
    assert recorded["method"] == method and recorded["n_images"] == len(retain_images) == 3
    assert recorded["data_fingerprint"] and "split:1 of seed 0 set aside" in recorded["data"]
    stage = ckpt.meta["stage_training"]["pnet"]
    if method == "replay":
        assert recorded["source_mining"] == "cascade" and recorded["replay_share"] == 0.25
        assert recorded.get("source_targets") == ("teacher" if taught else None)  # label replay's record is as before
        assert ("teacher_mean_probability" in stage["retain"]["replay"]) == taught
        assert stage["retain"]["replay"]["source"]["positive"] > 0
        replay, plain_samples = stage["retain"]["replay"], plain_pnet.meta["stage_training"]["pnet"]["samples"]
        assert stage["samples"]["positive"] == replay["target"]["positive"] + replay["source"]["positive"]
        if settings.replay_mode == "replace":  # the default: as many samples as the plain run, the source share in place of target ones
            assert sum(stage["samples"].values()) == sum(plain_samples.values())
            assert replay["target_replaced"] == sum(replay["source"].values()) > 0
        else:
            assert replay["target"] == plain_samples and "target_replaced" not in replay
    else:
        plain = plain_pnet.state_dicts["pnet"]
        plain_distance = float(torch.sqrt(sum(((plain[k] - v) ** 2).sum() for k, v in start.items())))
        assert stage["retain"]["distance_from_pretrained"] < plain_distance  # the penalty pulls towards the start


@pytest.mark.parametrize("method", ["wise", "replay+wise"])
def test_wise_averages_the_fine_tune_with_the_pretrained_weights(method, target, retain_images, plain_pnet, tmp_path):
    """wise averages the plain fine-tune, replay+wise the replayed one, with the pretrained weights.
    Label replay: one epoch of teacher replay here ends where it started (the start's validation
    loss is the best), and an average of the pretrained weights with themselves would prove nothing."""
    replays = method == "replay+wise"
    labels = {"source_targets": "labels"}
    tuned = pnet_run(target, tmp_path / "replay", retain_images, R.RetainSettings(method="replay", **labels), training=ONE_EPOCH) if replays else plain_pnet
    ckpt = pnet_run(target, tmp_path / "ft", retain_images, R.RetainSettings(method=method, wise_alpha=0.25, **labels), training=ONE_EPOCH)
    pretrained = pretrained_network("pnet").state_dict()
    for k, v in ckpt.state_dicts["pnet"].items():
        torch.testing.assert_close(v, 0.75 * pretrained[k] + 0.25 * tuned.state_dicts["pnet"][k])
    assert not torch.equal(ckpt.state_dicts["pnet"]["conv1.weight"], tuned.state_dicts["pnet"]["conv1.weight"])
    recorded = json.loads((tmp_path / "ft" / "facecmp.json").read_text())["settings"]["retain"]
    assert recorded["method"] == method and recorded["wise_alpha"] == 0.25
    assert recorded.get("replay_share") == (0.25 if replays else None)
    if replays:
        assert ckpt.meta["stage_training"]["pnet"]["retain"]["replay"]["source"]["positive"] > 0


@pytest.mark.slow
def test_a_resumed_retain_run_ends_where_the_uninterrupted_one_does(target, retain_images, tmp_path):
    settings = R.RetainSettings(method="replay+l2sp", l2sp=1.0)
    whole = pnet_run(target, tmp_path / "whole", retain_images, settings, cache_dir=tmp_path / "cache")
    pnet_run(target, tmp_path / "parts", retain_images, settings, cache_dir=tmp_path / "cache",
             training=ONE_EPOCH)
    (tmp_path / "parts" / "facecmp.json").unlink()  # interrupted after epoch 1
    resumed = pnet_run(target, tmp_path / "parts", retain_images, settings, cache_dir=tmp_path / "cache", resume=True)
    assert resumed.meta["history"] == whole.meta["history"]
    assert all(torch.equal(resumed.state_dicts["pnet"][k], v) for k, v in whole.state_dicts["pnet"].items())
    with pytest.raises(FacecmpError, match="another retain recipe"):
        pnet_run(target, tmp_path / "parts", retain_images, R.RetainSettings(method="l2sp"), resume=True)


# --- the variant and the CLI -------------------------------------------------------------------


def test_the_variant_needs_source_images_and_keys_its_cache_by_them(target, retain_images, source_root, tmp_path):
    from facecmp.study import variants as V
    from facecmp.study.caching import checkpoint_folder
    from facecmp.study.source import load_source_domain, retain_context

    ctx = V.VariantContext(train=target.train, dev=target.test, cache_dir=tmp_path)
    with pytest.raises(FacecmpError, match="finetuned-cascade-retain keeps the source domain"):
        V.REGISTRY["finetuned-cascade-retain"].prepare(ctx)
    stages = ("pnet", "rnet", "onet")
    source = load_source_domain(source_root, split="split:1", seed=0)
    with_source = dataclasses.replace(ctx, **retain_context(source, target.test))
    plain = checkpoint_folder(with_source, stages)
    kept = checkpoint_folder(with_source, stages, retain=R.RetainSettings())
    other_recipe = checkpoint_folder(with_source, stages, retain=R.RetainSettings(replay_share=0.5))
    other_images = checkpoint_folder(dataclasses.replace(with_source, retain=retain_images.subset(
        [r.key for r in retain_images.images[:2]])), stages, retain=R.RetainSettings())
    assert len({plain, kept, other_recipe, other_images}) == 4 and "retain" in kept.name
    # A source test set that shares an image with the retain images is refused before training.
    clash = dataclasses.replace(with_source, retain_excluded=(("the source-domain test set", retain_images),))
    with pytest.raises(DataError, match="are also in the source-domain test set"):
        V.REGISTRY["finetuned-cascade-retain"].prepare(clash)


@pytest.mark.parametrize("case", ["missing", "no-faces", "bad-method", "bad-mining", "bad-targets", "bad-share", "bad-min-face", "bad-replay",
                                  "bad-features"])
def test_cli_bad_retain_input_is_one_line(case, target, source_root, tmp_path):
    root = target.train.images[0].path.parents[2]
    retain = {"missing": tmp_path / "nowhere", "no-faces": None, "bad-method": source_root, "bad-mining": source_root,
              "bad-targets": source_root, "bad-share": source_root, "bad-min-face": source_root, "bad-replay": source_root,
              "bad-features": source_root}[case]
    if case == "no-faces":
        import shutil

        retain = tmp_path / "faceless"
        shutil.copytree(source_root, retain)
        gt = retain / "wider_face_split" / "wider_face_val_bbx_gt.txt"
        lines, out = gt.read_text().splitlines(), []
        i = 0
        while i < len(lines):  # every image with a count of 0 and its line of zeros
            n = int(lines[i + 1])
            out += [lines[i], "0", "0 0 0 0 0 0 0 0 0 0"]
            i += 2 + max(n, 1)
        gt.write_text("\n".join(out) + "\n")
    argv = ["finetune", "--data", root, "--out", tmp_path / "ft", "--epochs", 1, "--dev-per-folder", 1, "--retain", retain]
    if case == "bad-method":
        argv += ["--retain-method", "forget"]
    if case == "bad-mining":
        argv += ["--retain-mining", "guess"]
    if case == "bad-targets":
        argv += ["--retain-targets", "gossip"]
    if case == "bad-share":
        argv += ["--retain-share", "0.25,qnet=1"]
    if case == "bad-min-face":
        argv += ["--retain-min-face", "5"]
    if case == "bad-replay":
        argv += ["--retain-share", "1"]  # replace (the default) replaces a share below 1
    if case == "bad-features":
        argv += ["--retain-targets", "labels", "--retain-features", "10"]
    code, _, err = run_cli(argv)
    needle = {"missing": "nowhere", "no-faces": "no annotated face left", "bad-method": "forget",
              "bad-mining": "--retain-mining 'guess': expected one of cascade, crops",
              "bad-targets": "--retain-targets 'gossip': expected one of labels, teacher",
              "bad-share": "--retain-share qnet=1.0: expected a stage of pnet, rnet, onet",
              "bad-min-face": "--retain-min-face 5: expected a face size in pixels",
              "bad-replay": "--retain-share 1.0: --retain-replay replace replaces that share",
              "bad-features": "--retain-features 10: distils on the replayed samples"}[case]
    assert_user_error(code, err, needle)


def test_a_benchmark_run_without_source_data_leaves_the_retain_variant_out(source_root, tmp_path):
    from facecmp.bench.session import BenchOptions, BenchSession

    assert "finetuned-cascade-retain" not in BenchSession(BenchOptions(cache_dir=tmp_path)).variant_names
    assert "finetuned-cascade-retain" in BenchSession(BenchOptions(cache_dir=tmp_path, source_data=source_root)).variant_names
    asked = BenchSession(BenchOptions(cache_dir=tmp_path, variants=("finetuned-cascade-retain",)))
    assert asked.variant_names == ["finetuned-cascade-retain"]  # asked for by name: it runs (and fails saying what it needs)
