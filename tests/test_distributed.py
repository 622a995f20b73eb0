"""Fine-tuning in several processes (torchrun, DistributedDataParallel, gloo on the CPU), on tiny
generated data: two processes agree on the weights, shard mining and calibration without changing
what they produce, and write a checkpoint that loads and detects like a one-process one; bad
input (world sizes on --resume, --nproc, an unreachable rendezvous) is one line.

Two processes need two cores: skipped where fewer are available.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as torch_dist
import torch.multiprocessing as mp

from facecmp.data import load_archive
from facecmp.data.synthetic import generate_dataset
from facecmp.detection.checkpoint import load_checkpoint
from facecmp.detection.detector import Detector, DetectorSettings
from facecmp.detection.inference import detections_to_predictions
from facecmp.detection.models import pretrained_network
from facecmp.evaluation.evaluator import evaluate
from facecmp.data.images import read_image
from facecmp.training.calibrate import best_thresholds
from facecmp.training.distributed import (
    Dist,
    DistributedError,
    best_thresholds_sharded,
    init_from_env,
    mine_hard_samples_sharded,
    mine_samples_sharded,
    per_rank_batch,
    require_slots,
)
from facecmp.training.hard_mining import default_hard_mining, mine_hard_samples
from facecmp.training.loop import TrainSettings, train_stage
from facecmp.training.samples import MiningSettings, mine_samples

CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
pytestmark = pytest.mark.skipif(CORES < 2, reason="two processes need two cores")

GRID = ((0.6, 0.7, 0.7), (0.6, 0.2, 0.2), (0.4, 0.1, 0.5), (0.5, 0.3, 0.1))
FAST = TrainSettings(epochs=1, batch_size=64, patience=10)


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory) -> Path:
    return generate_dataset(tmp_path_factory.mktemp("synthetic"), n_train_per_character=3, n_test=6, seed=0)


@pytest.fixture(scope="module")
def tiny(tiny_root):
    return load_archive(tiny_root)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pretrained():
    return {stage: pretrained_network(stage) for stage in ("pnet", "rnet", "onet")}


def _rank_work(rank: int, world_size: int, port: int, root: str, out: str) -> None:
    """One rank: shard PNet and RNet mining and calibration, train PNet one epoch with DDP; write what it got."""
    torch.set_num_threads(1)
    torch_dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    dist = Dist(rank=rank, world_size=world_size, local_rank=rank, local_world_size=world_size, backend="gloo")
    try:
        data = load_archive(root)
        pnet_samples = mine_samples_sharded(data.train, MiningSettings(), 0, dist, progress=False)
        rnet_recipe = dataclasses.replace(default_hard_mining("rnet"), batch_images=2)
        rnet_samples = mine_hard_samples_sharded(data.train, _pretrained(), "rnet", rnet_recipe, 0, dist, progress=False)
        factory = lambda t: Detector(settings=DetectorSettings(thresholds=t))  # noqa: E731
        best, table = best_thresholds_sharded(factory, data.test, GRID, dist, progress=False)
        nets = _pretrained()
        result = train_stage(nets, "pnet", pnet_samples, Path(out) / "train", FAST, seed=0, progress=False, dist=dist)
        # Interrupted after epoch 1 (as when a rank dies), resumed to 2 epochs: as if never stopped.
        two = dataclasses.replace(FAST, epochs=2)
        whole = train_stage(_pretrained(), "pnet", pnet_samples, Path(out) / "whole", two, seed=0, progress=False, dist=dist)
        resumed = train_stage(_pretrained(), "pnet", pnet_samples, Path(out) / "train", two, seed=0, resume=True,
                              progress=False, dist=dist)
        torch.save({
            "pnet_samples": pnet_samples, "rnet_samples": rnet_samples, "best": best, "table": table,
            "trained": result.state_dict, "history": result.history,
            "whole": whole.state_dict, "whole_history": whole.history, "resumed": resumed.state_dict,
            "resumed_history": resumed.history,
        }, Path(out) / f"rank{rank}.pt")
    finally:
        torch_dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_ranks(tiny_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("ranks")
    mp.spawn(_rank_work, args=(2, _free_port(), str(tiny_root), str(out)), nprocs=2, join=True)
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(2)], out


def test_ranks_agree_on_the_weights_after_training(two_ranks):
    (first, second), _ = two_ranks
    pretrained = pretrained_network("pnet").state_dict()
    assert first["trained"].keys() == pretrained.keys()
    assert all(torch.equal(first["trained"][k], second["trained"][k]) for k in pretrained)
    assert not all(torch.equal(first["trained"][k], v) for k, v in pretrained.items()), "one epoch changed nothing"
    assert first["history"] == second["history"] and len(first["history"]) == 1


def test_a_resumed_run_ends_where_the_uninterrupted_one_does(two_ranks):
    (first, second), _ = two_ranks
    for rank in (first, second):
        assert rank["resumed_history"] == rank["whole_history"] and len(rank["whole_history"]) == 2
        assert all(torch.equal(rank["resumed"][k], v) for k, v in rank["whole"].items())
    assert rank["whole_history"][0] == first["history"][0]


def test_only_rank_zero_writes_the_run_state(two_ranks):
    _, out = two_ranks
    state = torch.load(out / "train" / "train_state_pnet.pt", weights_only=True)  # tensors and plain values only
    assert state["run_id"]["world_size"] == 2
    assert sorted(p.name for p in (out / "train").iterdir()) == ["train_state_pnet.json", "train_state_pnet.pt"]
    assert json.loads((out / "train" / "train_state_pnet.json").read_text())["run_id"]["world_size"] == 2
    assert len(state["history"]) == 2  # the resumed run's


def test_sharded_mining_gives_the_single_process_samples(two_ranks, tiny):
    """Sharding keeps each image's seed and the single process's order: the same samples for any N."""
    (first, second), _ = two_ranks
    single = mine_samples(tiny.train, MiningSettings(), seed=0, progress=False)
    rnet_recipe = dataclasses.replace(default_hard_mining("rnet"), batch_images=2)
    single_rnet = mine_hard_samples(tiny.train, _pretrained(), "rnet", rnet_recipe, seed=0, progress=False)
    for rank in (first, second):
        for got, want in ((rank["pnet_samples"], single), (rank["rnet_samples"], single_rnet)):
            assert len(want) > 0
            np.testing.assert_array_equal(got.images, want.images)
            np.testing.assert_array_equal(got.labels, want.labels)
            np.testing.assert_array_equal(got.offsets, want.offsets)


def test_sharded_calibration_gives_the_single_process_table(two_ranks, tiny):
    (first, second), _ = two_ranks
    factory = lambda t: Detector(settings=DetectorSettings(thresholds=t))  # noqa: E731
    best, table = best_thresholds(factory, tiny.test, GRID, progress=False)
    assert first["best"] == second["best"] == best
    for rank in (first, second):
        assert [row["thresholds"] for row in rank["table"]] == [row["thresholds"] for row in table]
        np.testing.assert_allclose([row["ap_cava"] for row in rank["table"]], [row["ap_cava"] for row in table], atol=1e-9)


def test_the_global_batch_is_shared_out():
    assert per_rank_batch(256, 1) == 256
    assert per_rank_batch(256, 2) == 128
    assert per_rank_batch(128, 8) == 16
    assert per_rank_batch(4, 8) == 1


# --- the command ----------------------------------------------------------------------------


def _facecmp(*args, env=None, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "facecmp", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def _ap(checkpoint: Path, data) -> float:
    detector = Detector.from_checkpoint(checkpoint)
    found = {r.key: detector.detect(read_image(r.path)) for r in data.test.images}
    return evaluate(detections_to_predictions(found), data.test.ground_truth()).ap_cava


FINETUNE = ("finetune", "--stages", "pnet", "--epochs", "1", "--dev-per-folder", "1")


@pytest.fixture(scope="module")
def cli_runs(tiny_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli")
    one = _facecmp(*FINETUNE, "--data", tiny_root, "--out", out / "one")
    two = _facecmp(*FINETUNE, "--data", tiny_root, "--out", out / "two", "--nproc", "2")
    assert one.returncode == 0, one.stderr[-2000:]
    assert two.returncode == 0, two.stderr[-2000:]
    return out, two


def test_nproc_2_writes_a_checkpoint_that_loads_and_detects_like_one_process(cli_runs, tiny):
    out, two = cli_runs
    assert two.stdout.count("checkpoint:") == 1, "only rank 0 prints"
    one, ddp = load_checkpoint(out / "one"), load_checkpoint(out / "two")
    assert ddp.stages == one.stages == ("pnet",)
    assert ddp.meta["distributed"]["world_size"] == 2 and "distributed" not in one.meta
    assert ddp.meta["stage_training"]["pnet"]["samples"] == one.meta["stage_training"]["pnet"]["samples"]
    for stage in ddp.stages:
        assert ddp.state_dicts[stage].keys() == one.state_dicts[stage].keys()
    ap_one, ap_two = _ap(out / "one", tiny), _ap(out / "two", tiny)
    assert ap_two > 0.3 and abs(ap_two - ap_one) < 0.15, (ap_one, ap_two)


def test_resume_continues_with_the_same_world_size_and_refuses_another(cli_runs, tiny_root):
    out, _ = cli_runs
    before = load_checkpoint(out / "two")
    again = _facecmp(*FINETUNE, "--data", tiny_root, "--out", out / "two", "--nproc", "2", "--resume")
    assert again.returncode == 0, again.stderr[-2000:]
    after = load_checkpoint(out / "two")
    assert all(torch.equal(after.state_dicts["pnet"][k], v) for k, v in before.state_dicts["pnet"].items())
    single = _facecmp(*FINETUNE, "--data", tiny_root, "--out", out / "two", "--resume")
    assert single.returncode == 2
    lines = single.stderr.strip().splitlines()
    assert lines[-1].startswith("facecmp: error:") and "2 process(es)" in lines[-1] and "Traceback" not in single.stderr
    assert json.loads((out / "two" / "facecmp.json").read_text())["distributed"]["world_size"] == 2, "nothing rewritten"
    more = _facecmp(*FINETUNE, "--data", tiny_root, "--out", out / "one", "--nproc", "2", "--resume")
    assert more.returncode == 2 and more.stderr.strip().splitlines() == [more.stderr.strip()]
    assert "1 process(es)" in more.stderr and "--nproc 1" in more.stderr


def test_nproc_beyond_the_cores_is_one_line(tiny_root, tmp_path):
    proc = _facecmp(*FINETUNE, "--data", tiny_root, "--out", tmp_path / "ft", "--nproc", str(CORES + 1))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and f"--nproc {CORES + 1}" in proc.stderr
    assert not (tmp_path / "ft").exists()
    with pytest.raises(DistributedError, match="CPU cores"):
        require_slots(CORES + 1, "cpu")


def test_a_rank_that_cannot_reach_the_rendezvous_is_one_line(tiny_root, tmp_path):
    env = {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(_free_port()), "FACECMP_DIST_TIMEOUT": "3"}
    proc = _facecmp(*FINETUNE, "--data", tiny_root, "--out", tmp_path / "ft", env=env, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert "rank 1 of 2 could not join" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "ft").exists()


def test_outside_torchrun_a_process_is_alone():
    assert init_from_env(environ={}) == Dist()
    assert init_from_env(environ={"WORLD_SIZE": "1", "RANK": "0"}) == Dist()


# --- NCCL on GPUs (skipped without CUDA) -----------------------------------------------------


def _nccl_rank(rank: int, world_size: int, port: int, root: str, out: str) -> None:
    torch.cuda.set_device(rank)
    torch_dist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    dist = Dist(rank=rank, world_size=world_size, local_rank=rank, local_world_size=world_size, backend="nccl")
    try:
        data = load_archive(root)
        samples = mine_samples_sharded(data.train, MiningSettings(), 0, dist, progress=False)
        result = train_stage(_pretrained(), "pnet", samples, Path(out) / "train", FAST, seed=0,
                             device=f"cuda:{rank}", progress=False, dist=dist)
        torch.save({k: v.cpu() for k, v in result.state_dict.items()}, Path(out) / f"nccl{rank}.pt")
    finally:
        torch_dist.destroy_process_group()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_nccl_ranks_train_on_their_gpus_and_agree(tiny_root, tmp_path):
    """One process per GPU (two where there are two; one GPU still runs DDP over NCCL)."""
    world_size = min(2, torch.cuda.device_count())
    mp.spawn(_nccl_rank, args=(world_size, _free_port(), str(tiny_root), str(tmp_path)), nprocs=world_size, join=True)
    trained = [torch.load(tmp_path / f"nccl{r}.pt") for r in range(world_size)]
    pretrained = pretrained_network("pnet").state_dict()
    assert all(torch.equal(trained[0][k], t[k]) for t in trained for k in pretrained)
    assert not all(torch.equal(trained[0][k], v) for k, v in pretrained.items())
