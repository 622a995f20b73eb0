"""What facecmp's own work costs when other processes share the CPU cores (issue #25, item 3).

    python benchmarks/shared_cores.py [--rounds 5] [--images 8] [--neighbours 1] [--configs 2,1,2p,1p]

Each configuration runs as its own process (the OpenMP settings only take effect before torch is
loaded), the configurations in turn, ``--rounds`` times, while ``--neighbours`` busy-looping
processes (the "one other CPU job"; 0: whatever else the machine runs) hold cores. A round
times two workloads: the pretrained cascade detecting ``--images`` generated frames, one at a
time, and one epoch of PNet training on random 12 px samples (the fine-tuning loop's own
``run_epoch``). Configurations: ``N`` = N intra-op threads; a ``p`` suffix adds
``OMP_WAIT_POLICY=PASSIVE`` (idle OpenMP threads sleep instead of spinning); an ``sK`` suffix
sets ``GOMP_SPINCOUNT=K`` instead (libgomp, torch's OpenMP here: spin K rounds, then sleep);
without either the variables are unset (the OpenMP runtime's default: spin a while, then sleep).

Prints the median seconds of each configuration and its ratio to the first; interleaving
keeps the ratios honest on a machine whose load varies, the absolute seconds are not.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time


def _parsed(config: str) -> tuple[int, dict[str, str]]:
    """``2``, ``2p``, ``2s10000`` -> the thread count and the OpenMP variables the configuration sets."""
    if config.endswith("p"):
        return int(config[:-1]), {"OMP_WAIT_POLICY": "PASSIVE"}
    threads, _, spins = config.partition("s")
    return int(threads), ({"GOMP_SPINCOUNT": spins} if spins else {})


def _worker(config: str, images: int) -> dict:
    """Runs inside the child process: the two workloads, timed."""
    import torch  # not facecmp.process.import_torch_frozen: it would set OMP_WAIT_POLICY itself

    threads, _ = _parsed(config)
    torch.set_num_threads(threads)

    from facecmp.data.images import read_image
    from facecmp.data.synthetic import ensure_default_dataset
    from facecmp.data import load_archive
    from facecmp.detection.detector import Detector
    from facecmp.detection.models import build_network
    from facecmp.training.loop import run_epoch
    from facecmp.training.losses import LossWeights

    test = load_archive(ensure_default_dataset()).test
    frames = [read_image(r.path) for r in test.images[:images]]
    detector = Detector()
    detector.detect_batch([frames[0]])  # warm-up
    start = time.perf_counter()
    for frame in frames:
        detector.detect_batch([frame])
    detect_s = time.perf_counter() - start

    g = torch.Generator().manual_seed(0)
    batches = [(torch.rand(256, 3, 12, 12, generator=g) * 2 - 1, torch.randint(-1, 2, (256,), generator=g),
                torch.randn(256, 4, generator=g)) for _ in range(40)]
    net = build_network("pnet")
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    run_epoch(net, batches[:2], LossWeights(), "cpu", optimizer)  # warm-up
    start = time.perf_counter()
    run_epoch(net, batches, LossWeights(), "cpu", optimizer)
    return {"threads": threads, "detect_s": detect_s, "train_s": time.perf_counter() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--neighbours", type=int, default=1, help="busy-looping processes started beside the runs")
    parser.add_argument("--configs", default="2,1,2p,1p")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        print(json.dumps(_worker(args.worker, args.images)))
        return

    configs = args.configs.split(",")
    neighbours = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.neighbours)]
    runs: dict[str, list[dict]] = {c: [] for c in configs}
    try:
        for _ in range(args.rounds):
            for config in configs:
                env = dict(os.environ)
                env.pop("OMP_WAIT_POLICY", None)
                env.pop("GOMP_SPINCOUNT", None)
                env.update(_parsed(config)[1])
                done = subprocess.run([sys.executable, __file__, "--worker", config, "--images", str(args.images)],
                                      env=env, capture_output=True, text=True, check=True)
                runs[config].append(json.loads(done.stdout.strip().splitlines()[-1]))
    finally:
        for p in neighbours:
            p.kill()
            p.wait()
    load = os.getloadavg()[0]
    print(f"{args.rounds} rounds, {args.neighbours} busy neighbour(s), load average at the end {load:.1f} on {os.cpu_count()} cores")
    print(f"{'config':<8} {'threads':>7} {'detect s':>9} {'ratio':>6} {'train s':>8} {'ratio':>6}")
    first = configs[0]
    base = {k: statistics.median(r[k] for r in runs[first]) for k in ("detect_s", "train_s")}
    for config in configs:
        med = {k: statistics.median(r[k] for r in runs[config]) for k in ("detect_s", "train_s")}
        threads = "/".join(sorted({str(r["threads"]) for r in runs[config]}))
        print(f"{config:<8} {threads:>7} {med['detect_s']:9.2f} {med['detect_s'] / base['detect_s']:6.2f} "
              f"{med['train_s']:8.2f} {med['train_s'] / base['train_s']:6.2f}")


if __name__ == "__main__":
    main()
