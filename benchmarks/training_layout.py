"""ms per sample of one training step (forward, loss, backward, Adam) in the default layout and in
channels-last, interleaved in one process (the fastest of ``--rounds``): what ``loop.net_outputs``'s
channels-last batches for RNet/ONet buy on this machine (docs/price.md).

    python benchmarks/training_layout.py --stage onet --batch 128 [--steps 5] [--rounds 4] [--threads 2] [--weights-too]

Random batches through the pretrained net; ``--weights-too`` also puts the weights in channels-last
(training converts only the batches). Ratios are meaningful on a loaded machine, absolute ms are not.
"""

from __future__ import annotations

import argparse
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stage", default="onet", choices=("pnet", "rnet", "onet"))
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--weights-too", action="store_true")
    args = parser.parse_args()

    from facecmp.process import import_torch_frozen

    torch = import_torch_frozen()
    torch.set_num_threads(args.threads)
    from facecmp.detection.models import INPUT_SIZE, pretrained_network
    from facecmp.training.losses import LossWeights, mtcnn_loss

    size = INPUT_SIZE[args.stage]
    torch.manual_seed(0)
    x = torch.randn(args.batch, 3, size, size)
    labels = torch.randint(-1, 2, (args.batch,))
    targets = torch.randn(args.batch, 4) * 0.1
    runs = {}
    for layout in ("default", "channels-last"):
        net = pretrained_network(args.stage).train()
        if layout == "channels-last" and args.weights_too:
            net = net.to(memory_format=torch.channels_last)
        batch = x.contiguous(memory_format=torch.channels_last) if layout == "channels-last" else x
        runs[layout] = (net, torch.optim.Adam(net.parameters(), 1e-3), batch)
    ms = {layout: [] for layout in runs}
    for _ in range(args.rounds):
        for layout, (net, optimizer, batch) in runs.items():
            start = time.perf_counter()
            for _ in range(args.steps):
                out = net(batch, logits=True)
                loss = mtcnn_loss(out[-1].flatten(1), out[0].flatten(1), labels, targets, LossWeights())[0]
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            ms[layout].append((time.perf_counter() - start) / (args.steps * args.batch) * 1000)
    best = {layout: min(v) for layout, v in ms.items()}
    print(f"{args.stage}, batch {args.batch}, {args.threads} threads, weights {'channels-last' if args.weights_too else 'default'}: "
          f"default {best['default']:.4f} ms/sample, channels-last {best['channels-last']:.4f} ms/sample, "
          f"ratio {best['default'] / best['channels-last']:.2f}x")


if __name__ == "__main__":
    main()
