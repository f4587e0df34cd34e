"""A model of your own beside its nn.Sequential twin: the same layers should train at the same speed.

    python benchmarks/own_models.py --root DATA [--rounds 5] [--steps 60]

Three contestants train the same LeNet (ReLU, max pooling) with lenet.fit, interleaved round by round: an
nn.Sequential, a subclassed nn.Module whose forward calls the same layers (found by lenet.fast through
torch.fx), and that module with the fast path turned off (what the subclass cost before). Reported: each
one's median samples/s over its training steps (fit's clock) and over the whole fit call (its set-up too),
and the fast-path line the run would print. Not a test: nothing asserts a time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
from torch import nn

import lenet
from lenet.train.loop import fast_path_plan


def sequential() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10),
    )  # fmt: skip


class Subclassed(nn.Module):
    """The same layers as sequential(), written as a module of its own (the PyTorch tutorial's style)."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 6, 5, padding=2), nn.Conv2d(6, 16, 5)
        self.fc1, self.fc2, self.fc3 = nn.Linear(400, 120), nn.Linear(120, 84), nn.Linear(84, 10)

    def forward(self, x):
        x = nn.functional.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = nn.functional.max_pool2d(torch.relu(self.conv2(x)), 2)
        x = torch.flatten(x, 1)
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=os.environ.get("LENET_DATA"))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=60, help="batches of 256 per contestant per round")
    args = parser.parse_args()
    cfg = lenet.resolve("d2l", dataset="mnist", lr=0.1)
    data = lenet.load_dataset("mnist", args.root, scaling=cfg.scaling)
    contestants = {
        "nn.Sequential": (sequential(), True),
        "subclassed nn.Module": (Subclassed(), True),
        "subclassed, fast path off": (Subclassed(), False),
    }
    # Two clocks: the training steps (fit's own, as its printout counts them) and the whole fit call, which
    # also holds its set-up: matching the model (a torch.fx trace for the subclass), the kernels' plan.
    rates = {name: {"steps": [], "call": []} for name in contestants}
    for name, (model, fast) in contestants.items():
        print(f"{name:28} {fast_path_plan(model, cfg, enabled=fast)}")
        lenet.fit(model, data, cfg, max_steps=2, fast=fast, progress=False)  # warm-up: kernels, caches
    for round_ in range(args.rounds):
        for name, (model, fast) in contestants.items():
            started = time.perf_counter()
            history = lenet.fit(model, data.train, cfg, max_steps=args.steps, fast=fast, progress=False)
            rates[name]["call"].append(args.steps * cfg.batch_size / (time.perf_counter() - started))
            rates[name]["steps"].append(history.examples_per_sec)
        print(f"round {round_ + 1}: " + ", ".join(f"{n} {r['steps'][-1]:,.0f}" for n, r in rates.items()))
    base = {clock: statistics.median(rates["nn.Sequential"][clock]) for clock in ("steps", "call")}
    print(f"\nmachine: {torch.get_num_threads()} threads, torch {torch.__version__}; batch {cfg.batch_size}; "
          f"{args.steps} steps a call; medians of samples/s")  # fmt: skip
    print(f"  {'':28} {'training steps':>24}   {'whole fit call':>24}")
    for name, clocks in rates.items():
        cells = []
        for clock in ("steps", "call"):
            median = statistics.median(clocks[clock])
            cells.append(f"{median:>10,.0f} ({median / base[clock]:.2f}x)")
        print(f"  {name:28} {cells[0]:>24}   {cells[1]:>24}")


if __name__ == "__main__":
    main()
