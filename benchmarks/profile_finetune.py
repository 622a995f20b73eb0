"""Where the seconds of ``facecmp finetune`` go: per stage, and inside training and mining.

    python benchmarks/profile_finetune.py --data ../shared/datasets/dexter --frames 200 \
        [--stages pnet,rnet,onet] [--dev-per-folder 5] [--holdout-per-folder 0] [--epochs N] [--json out.json]

Fine-tunes on the first ``--frames`` training frames (``all``: every one) of the curve's nested order
(facecmp.study.curve, seed 0; the held-out and dev splits as ``facecmp finetune
--holdout-per-folder H --dev-per-folder D`` carves them), cold cache, with
timers around the functions that do the work. Each second is counted once, in the innermost
timed part (exclusive time), per stage:

- mining: ``detector`` (the earlier stages proposing candidates), ``crop cutting`` (pixels of
  the chosen crops), ``image decoding``, ``mining (other)`` (crop choice, labels, balancing);
- training: ``forward``, ``loss``, ``backward``, ``optimizer``, ``batch assembly``,
  ``validation`` (epoch 0 and every epoch, all of it), ``checkpointing`` (run state per epoch),
  ``best-weights copy``, ``training (other)`` (flips, bookkeeping);
- ``calibration``: the threshold grid on the dev split, all of it.

Shares are robust to a loaded machine (every part slows alike); absolute seconds are not.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import tempfile
import time
from collections import defaultdict
from pathlib import Path


class Profile:
    """Exclusive seconds per (stage, part); ``opaque`` parts take their callees' time too."""

    def __init__(self):
        self.seconds: dict[tuple[str, str], float] = defaultdict(float)
        self.stack: list[list] = []  # [part, child seconds, opaque]
        self.stage = "-"

    @contextlib.contextmanager
    def part(self, name: str, opaque: bool = False):
        if self.stack and self.stack[-1][2]:  # inside an opaque part: counted there
            yield
            return
        self.stack.append([name, 0.0, opaque])
        start = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - start
            _, child, _ = self.stack.pop()
            self.seconds[(self.stage, name)] += elapsed - child
            if self.stack:
                self.stack[-1][1] += elapsed

    def wrap(self, owner, attr: str, name: str, opaque: bool = False, when=None, stage_arg: int | None = None,
             stage: str | None = None):
        real = getattr(owner, attr)

        @functools.wraps(real)
        def timed(*args, **kwargs):
            if when is not None and not when(args, kwargs):
                return real(*args, **kwargs)
            if stage_arg is not None or stage is not None:
                self.stage = stage if stage is not None else args[stage_arg]
            with self.part(name, opaque):
                return real(*args, **kwargs)

        setattr(owner, attr, timed)


def instrument(profile: Profile) -> None:
    import torch

    import importlib

    from facecmp.detection.detector import Detector

    # the modules (the package exports functions of the same names)
    finetune, hard_mining, loop, samples = (importlib.import_module(f"facecmp.training.{m}")
                                            for m in ("finetune", "hard_mining", "loop", "samples"))

    p = profile
    p.wrap(finetune, "mine_for_stage", "mining (other)", stage_arg=0)
    p.wrap(finetune, "train_stage", "training (other)", stage_arg=1)
    p.wrap(finetune, "best_thresholds", "calibration", opaque=True, stage="-")
    p.wrap(Detector, "detect_batch", "detector")
    p.wrap(hard_mining, "cut_crops", "crop cutting")
    p.wrap(samples, "extract_crops", "crop cutting")
    import facecmp.training.augment as augment

    for module in (samples, hard_mining, augment):  # the modules that decode training frames
        if hasattr(module, "read_image"):
            p.wrap(module, "read_image", "image decoding")
    p.wrap(loop, "run_epoch", "validation", opaque=True, when=lambda a, k: len(a) < 5 and k.get("optimizer") is None)
    p.wrap(loop, "net_outputs", "forward")
    p.wrap(loop, "mtcnn_loss", "loss")
    p.wrap(loop, "save_run_state", "checkpointing")
    p.wrap(loop, "early_stopping", "best-weights copy")
    p.wrap(torch.Tensor, "backward", "backward")
    p.wrap(torch.optim.Adam, "step", "optimizer")
    p.wrap(torch.optim.Optimizer, "zero_grad", "optimizer")
    _time_batches(p, loop)


def _time_batches(p: Profile, loop) -> None:
    """Batch assembly: each ``next()`` on the training and validation DataLoaders (sampling, the
    per-item ``__getitem__`` and the collate)."""
    from torch.utils.data.dataloader import _BaseDataLoaderIter

    p.wrap(_BaseDataLoaderIter, "__next__", "batch assembly")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--frames", default="200", help="training frames to use, or 'all' (default 200)")
    parser.add_argument("--stages", default="pnet,rnet,onet")
    parser.add_argument("--dev-per-folder", type=int, default=5)
    parser.add_argument("--holdout-per-folder", type=int, default=0, help="images per folder never seen (a test split)")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=None, help="keep the checkpoint (and the sample cache) here; default: a temporary folder")
    args = parser.parse_args()

    from facecmp.process import import_torch_frozen

    torch = import_torch_frozen()
    torch.set_num_threads(args.threads)
    from facecmp.study.finetune import training_split
    from facecmp.study.curve import nested_order, nested_subset
    from facecmp.training.finetune import FinetuneSettings, finetune

    train, dev = training_split(args.data, dev_per_folder=args.dev_per_folder, holdout_per_folder=args.holdout_per_folder)
    frames = len(train) if args.frames == "all" else min(int(args.frames), len(train))
    subset = train if frames == len(train) else nested_subset(train, nested_order(train, 0), frames)
    profile = Profile()
    instrument(profile)
    stages = tuple(args.stages.split(","))
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out if args.out is not None else tmp
        meta = finetune(subset, out, FinetuneSettings(stages=stages, epochs=args.epochs), dev=dev, progress=False).meta
    total = time.perf_counter() - start
    rows = sorted(profile.seconds.items(), key=lambda kv: (kv[0][0] == "-", kv[0][0], -kv[1]))
    print(f"{len(subset)} training frames, {len(dev)} dev frames, stages {args.stages}, {torch.get_num_threads()} threads; "
          f"{total:.1f} s in all (load average {__import__('os').getloadavg()[0]:.1f})")
    print(f"| stage | part | seconds | share |\n|---|---|---:|---:|")
    for (stage, part), sec in rows:
        print(f"| {stage if stage != '-' else 'calibration'} | {part} | {sec:.1f} | {100 * sec / total:.1f} % |")
    print(f"| | unaccounted | {total - sum(profile.seconds.values()):.1f} | {100 * (total - sum(profile.seconds.values())) / total:.1f} % |")
    if args.json:
        args.json.write_text(json.dumps({"total_s": total, "parts": [[s, p, v] for (s, p), v in rows],
                                         "samples": {s: meta["stage_training"][s]["samples"] for s in meta["stage_training"]},
                                         "epochs": {s: meta["stage_training"][s]["epochs"] for s in meta["stage_training"]}}, indent=2))


if __name__ == "__main__":
    main()
