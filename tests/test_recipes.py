"""``facecmp finetune --recipe``: the named training recipes reach every stage and the checkpoint
records which one ran; a recipe with dlib-hog or an unknown name is one error line. Tiny generated
data, 1 epoch, so it runs in seconds."""

from __future__ import annotations

import dataclasses
import json

import pytest

from facecmp.cli import RECIPE_NAMES, main
from facecmp.data.synthetic import generate_dataset
from facecmp.training.finetune import (
    CLASSIC_TRAINING,
    DEFAULT_RECIPE,
    DEFAULT_TRAINING,
    FAST_TRAINING,
    RECIPES,
    SHORT_TRAINING,
    recipe_name,
)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return generate_dataset(tmp_path_factory.mktemp("synthetic"), n_train_per_character=2, n_test=1, seed=0, size=(240, 180))


def test_each_recipe_is_named_and_the_quick_ones_freeze_the_first_layer_of_rnet_and_onet_on_one_cycle():
    assert recipe_name(None) == recipe_name(SHORT_TRAINING) == "short" == DEFAULT_RECIPE
    assert DEFAULT_TRAINING is SHORT_TRAINING
    assert recipe_name(FAST_TRAINING) == "fast" and recipe_name(CLASSIC_TRAINING) == "classic"
    assert set(RECIPES) == {"short", "fast", "classic"}
    assert RECIPE_NAMES == (DEFAULT_RECIPE, *(name for name in RECIPES if name != DEFAULT_RECIPE))  # the CLI's choices
    assert recipe_name({"pnet": FAST_TRAINING["rnet"]}) == "custom"
    assert FAST_TRAINING["pnet"] == CLASSIC_TRAINING["pnet"]
    for stage in ("rnet", "onet"):
        for quick in (SHORT_TRAINING, FAST_TRAINING):
            assert quick[stage].frozen == ("conv1", "prelu1") and CLASSIC_TRAINING[stage].frozen == ()
            assert quick[stage].epochs < CLASSIC_TRAINING[stage].epochs
            assert quick[stage].schedule == "one-cycle" and CLASSIC_TRAINING[stage].schedule == "exponential"
    assert FAST_TRAINING["rnet"].channels_last and SHORT_TRAINING["rnet"].channels_last and CLASSIC_TRAINING["rnet"].channels_last is None
    # short: fewer epochs than fast where it differs, on one-cycle schedules throughout
    assert all(SHORT_TRAINING[s].epochs <= FAST_TRAINING[s].epochs for s in ("pnet", "rnet", "onet"))
    assert SHORT_TRAINING["pnet"].schedule == "one-cycle"
    assert dataclasses.replace(SHORT_TRAINING["onet"], min_steps=0) == FAST_TRAINING["onet"]
    # short takes a minimum of steps on every stage (small data: more epochs); fast and classic count epochs only
    assert all(SHORT_TRAINING[s].min_steps > 0 for s in SHORT_TRAINING)
    assert all(r[s].min_steps == 0 for r in (FAST_TRAINING, CLASSIC_TRAINING) for s in r)


@pytest.mark.slow
def test_a_run_that_names_no_recipe_trains_the_short_one_and_the_others_are_one_option_away(root, tmp_path):
    for argv, expected in (([], "short"), (["--recipe", "fast"], "fast"), (["--recipe", "classic"], "classic")):
        out = tmp_path / expected
        assert main([str(a) for a in ["finetune", "--data", root, "--out", out, "--stages", "pnet,rnet", "--epochs", "1",
                                      "--dev-per-folder", "1", *argv]]) == 0
        meta = json.loads((out / "facecmp.json").read_text())
        assert meta["settings"]["recipe"] == expected
        assert meta["stage_training"]["rnet"]["training"]["schedule"] == RECIPES[expected]["rnet"].schedule
        assert meta["stage_training"]["pnet"]["training"]["lr"] == RECIPES[expected]["pnet"].lr


@pytest.mark.slow
def test_the_fast_recipe_reaches_every_stage_and_the_checkpoint(root, tmp_path):
    out = tmp_path / "fast"
    argv = ["finetune", "--data", root, "--out", out, "--stages", "pnet,rnet,onet", "--dev-per-folder", "1", "--recipe", "fast"]
    assert main([str(a) for a in argv]) == 0
    meta = json.loads((out / "facecmp.json").read_text())
    assert meta["settings"]["recipe"] == "fast"
    for stage, recipe in FAST_TRAINING.items():
        trained = meta["stage_training"][stage]
        assert trained["training"]["frozen"] == list(recipe.frozen)
        assert trained["training"]["schedule"] == recipe.schedule
        assert trained["training"]["channels_last"] == recipe.channels_last
        assert len(trained["history"]) <= recipe.epochs


@pytest.mark.parametrize("argv, needle", [
    (["--stages", "dlib-hog", "--recipe", "fast"], "--recipe fast"),
    (["--recipe", "quick"], "quick"),
    (["--recipe", "default"], "'default'"),  # the name before 2026-12-07: the choices are listed
])
def test_a_recipe_that_cannot_run_is_one_error_line(root, tmp_path, capsys, argv, needle):
    try:
        code = main(["finetune", "--data", str(root), "--out", str(tmp_path / "x"), *argv])
    except SystemExit as exc:  # argparse's own usage error (an unknown choice), as for --format
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2 and needle in err and "Traceback" not in err
    assert len([line for line in err.splitlines() if line.startswith(("facecmp: error: ", "facecmp finetune: error: "))]) == 1, err
