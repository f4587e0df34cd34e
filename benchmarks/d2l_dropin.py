"""Seed 004's notebook code on `from lenet import d2l`: its own train_ch6 loop beside d2l.train_ch6, same run.

    python benchmarks/d2l_dropin.py --root DATA [--dataset mnist] [--rounds 5] [--epochs 1] [--json]

Both contestants are the seed's code as the notebook has it (its net, its evaluate_accuracy_gpu and train_ch6,
d2l's Accumulator, Timer, Animator and accuracy from lenet.d2l), on the same iterators from
d2l.load_data_fashion_mnist, in interleaved rounds:
  chapter  the notebook's own train_ch6: the plain PyTorch loop, one host sync per batch (d2l.accuracy)
  lenet    the same notebook calling d2l.train_ch6 instead: lenet's trainer (the compiled fast path here)
Each call prints d2l's `N examples/sec on cpu` (examples over the time spent in training steps, as d2l
counts it); the wall time of the whole call (evaluation and the Animator's drawing included) is measured too.
Medians over the rounds, and their ratio. Benchmarks are not tests: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import re
import statistics
import sys
import tempfile
import time

import torch

from lenet import d2l
from lenet.data import DataIter, Split

# The seed's cells (seed 004), less its data cell (the benchmark passes the iterators in) and its last line.
SEED_004 = """
import torch
from torch import nn
from lenet import d2l
from lenet.data import DataIter, Split

def make_net():
    return nn.Sequential(
        nn.Conv2d(1, 6, kernel_size=5, padding=2), nn.Sigmoid(),
        nn.AvgPool2d(kernel_size=2, stride=2),
        nn.Conv2d(6, 16, kernel_size=5), nn.Sigmoid(),
        nn.AvgPool2d(kernel_size=2, stride=2),
        nn.Flatten(),
        nn.Linear(16 * 5 * 5, 120), nn.Sigmoid(),
        nn.Linear(120, 84), nn.Sigmoid(),
        nn.Linear(84, 10))

def evaluate_accuracy_gpu(net, data_iter, device=None):
    if isinstance(net, nn.Module):
        net.eval()
        if not device:
            device = next(iter(net.parameters())).device
    metric = d2l.Accumulator(2)
    with torch.no_grad():
        for X, y in data_iter:
            if isinstance(X, list):
                X = [x.to(device) for x in X]
            else:
                X = X.to(device)
            y = y.to(device)
            metric.add(d2l.accuracy(net(X), y), y.numel())
    return metric[0] / metric[1]

def train_ch6(net, train_iter, test_iter, num_epochs, lr, device):
    def init_weights(m):
        if type(m) == nn.Linear or type(m) == nn.Conv2d:
            nn.init.xavier_uniform_(m.weight)

    net.apply(init_weights)
    print('training on', device)
    net.to(device)
    optimizer = torch.optim.SGD(net.parameters(), lr=lr)
    loss = nn.CrossEntropyLoss()
    animator = d2l.Animator(xlabel='epoch', xlim=[1, num_epochs],
                            legend=['train loss', 'train acc', 'test acc'])
    timer, num_batches = d2l.Timer(), len(train_iter)
    for epoch in range(num_epochs):
        metric = d2l.Accumulator(3)
        net.train()
        for i, (X, y) in enumerate(train_iter):
            timer.start()
            optimizer.zero_grad()
            X, y = X.to(device), y.to(device)
            y_hat = net(X)
            l = loss(y_hat, y)
            l.backward()
            optimizer.step()
            with torch.no_grad():
                metric.add(l * X.shape[0], d2l.accuracy(y_hat, y), X.shape[0])
            timer.stop()
            train_l = metric[0] / metric[2]
            train_acc = metric[1] / metric[2]
            if (i + 1) % (num_batches // 5) == 0 or i == num_batches - 1:
                animator.add(epoch + (i + 1) / num_batches,
                             (train_l, train_acc, None))
        test_acc = evaluate_accuracy_gpu(net, test_iter)
        animator.add(epoch + 1, (None, None, test_acc))
    print(f'训练损失 {train_l:.3f}, 训练精度 {train_acc:.3f}, 'f'测试精度 {test_acc:.3f}')
    print(f'{metric[2] * num_epochs / timer.sum():.1f} examples/sec 'f'on {str(device)}')
    d2l.plt.show()
"""

RATE = re.compile(r"([\d.]+) examples/sec on")


def run_once(train, make_net, data, epochs: int, lr: float) -> dict:
    """One call of a train_ch6, its printout captured: printed examples/sec, wall seconds, last lines."""
    out = io.StringIO()
    torch.manual_seed(0)
    net = make_net()
    started = time.perf_counter()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        train(net, *data, epochs, lr, d2l.try_gpu())
    wall = time.perf_counter() - started
    printed = out.getvalue()
    examples = len(data[0].split) * epochs
    return {"printed_rate": float(RATE.search(printed).group(1)), "wall": wall, "wall_rate": examples / wall,
            "printout": [line for line in printed.splitlines() if not line.startswith("hint:")][-2:]}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", help="data root (default: $LENET_DATA, else ~/.cache/lenet)")
    parser.add_argument("--dataset", default="mnist", help="fashion-mnist where it is on disk (the seed's)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds; medians are reported")
    parser.add_argument("--epochs", type=int, default=1, help="epochs per call (the seed trains 10)")
    parser.add_argument("--train-size", type=int, help="train on the first N images (default: all); shorter "
                        "rounds interleave more finely on a busy machine")  # fmt: skip
    parser.add_argument("--lr", type=float, default=0.9)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--json", action="store_true", help="print the results as one JSON object, last line")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    train_iter, test_iter = d2l.load_data_fashion_mnist(256, root=args.root, dataset=args.dataset)
    if args.train_size:
        part = Split(train_iter.split.images[: args.train_size], train_iter.split.labels[: args.train_size])
        train_iter = DataIter(part, 256, shuffle=True)
    seed = {}
    exec(compile(SEED_004, "seed_004", "exec"), seed)
    contestants = {"chapter": seed["train_ch6"], "lenet": d2l.train_ch6}
    results: dict[str, list[dict]] = {name: [] for name in contestants}
    load = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory() as work:
        os.chdir(work)  # the Animators' PNG files
        run_once(d2l.train_ch6, seed["make_net"], (train_iter, test_iter), 1, args.lr)  # compile, warm caches
        for r in range(args.rounds):
            for name, train in contestants.items():
                result = run_once(train, seed["make_net"], (train_iter, test_iter), args.epochs, args.lr)
                results[name].append(result)
                load_now = os.getloadavg()[0]
                print(f"round {r + 1} {name:8s} {result['printed_rate']:>10,.0f} examples/sec printed, "
                      f"{result['wall']:6.2f} s wall, load {load_now:.1f}", file=sys.stderr, flush=True)  # fmt: skip
    load.append(os.getloadavg()[0])

    def median(name, key):
        return statistics.median(r[key] for r in results[name])

    summary = {
        "dataset": args.dataset, "train_size": len(train_iter.split), "epochs": args.epochs, "rounds": args.rounds,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__, "python": platform.python_version(), "cpu": platform.processor() or "",
        "load_average": load, "results": results,
        **{f"{name}_{key}": median(name, key) for name in contestants for key in ("printed_rate", "wall_rate")},
    }  # fmt: skip
    summary["ratio_printed"] = summary["lenet_printed_rate"] / summary["chapter_printed_rate"]
    summary["ratio_wall"] = summary["lenet_wall_rate"] / summary["chapter_wall_rate"]
    print(f"seed 004's code on {args.dataset} ({len(train_iter.split):,} training images), {args.epochs} epoch(s) "
          f"a call, median of {args.rounds} interleaved rounds, {torch.get_num_threads()} threads, load average "
          f"{load[0]:.1f} -> {load[1]:.1f}")  # fmt: skip
    print("| measure | chapter's train_ch6 | d2l.train_ch6 (lenet) | ratio |")
    print("|---|---:|---:|---:|")
    for key, label in (("printed_rate", "examples/sec as printed (training steps only)"),
                       ("wall_rate", "examples/sec over the whole call (evaluation, plotting)")):  # fmt: skip
        ratio = summary[f"lenet_{key}"] / summary[f"chapter_{key}"]
        print(f"| {label} | {summary[f'chapter_{key}']:,.0f} | {summary[f'lenet_{key}']:,.0f} | {ratio:.2f}x |")
    print("last printout: chapter " + " / ".join(results["chapter"][-1]["printout"]))
    print("last printout: lenet   " + " / ".join(results["lenet"][-1]["printout"]))
    if args.json:
        print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
