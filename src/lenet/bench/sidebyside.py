"""`lenet bench`: lenet's trainer side by side with the usual PyTorch loop (and Keras, when installed).

Every contestant trains the same net with the same batch, optimiser and loss, so their ratio is a speed ratio:
  lenet       `fit` on the d2l recipe (lenet5-d2l, batch 256, SGD lr 0.9), as `lenet train` runs it
  d2l loop    seed 004's loop: a DataLoader over a TensorDataset, float() metrics after every batch
  keras       Keras `fit` on seed 002's net (sigmoid LeNet, max pooling), batch 256, SGD lr 0.9
  lenet/keras `fit` on the same net (lenet5-keras), batch 256, SGD lr 0.9
Contestants run in interleaved rounds, so a machine that slows down slows them all; the report gives each
one's median samples/s and the median of the per-round ratios. The roof is the machine's SGEMM rate (a 2048^2
matmul, measured in every round) divided by the d2l net's FLOPs per sample (forward + backward, counted by
torch.utils.flop_counter).
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import fast
from ..config import resolve
from ..data import Dataset, Split, get_dataset_info, load_raw, to_input
from ..errors import LenetError
from ..models import create_model, init_weights
from ..train.loop import fit
from ..train.run import cpu_name

KERAS_WORKER = Path(__file__).with_name("keras_worker.py")


# ----------------------------------------------------------------------------------------------------------
# The machine


def sgemm_gflops(n: int = 2048, reps: int = 4) -> float:
    """GFLOP/s of an n x n float32 matmul with PyTorch's current thread count (the best of `reps`)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    c = torch.empty(n, n)
    torch.mm(a, b, out=c)
    best = math.inf
    for _ in range(reps):
        started = time.perf_counter()
        torch.mm(a, b, out=c)
        best = min(best, time.perf_counter() - started)
    return 2 * n**3 / best / 1e9


def flops_per_sample(model: nn.Module, batch: int = 16) -> float:
    """Forward + backward FLOPs per sample of a training step on `model` (the input needs no gradient)."""
    from torch.utils.flop_counter import FlopCounterMode

    size = getattr(model, "input_size", 28)
    x, y = torch.rand(batch, 1, size, size), torch.randint(0, 10, (batch,))
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(x), y).backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / batch


def machine() -> dict:
    """What the numbers were measured on."""
    cpu = cpu_name()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


# ----------------------------------------------------------------------------------------------------------
# Data


def load_images(dataset: str, root=None, n_train: int = 60000, n_test: int = 2000) -> tuple[np.ndarray, ...]:
    """(train images, train labels, test images, test labels) as uint8/int64 arrays; random ones if absent.

    Speed does not depend on what the pixels show, so a machine without the dataset can still be measured.
    """
    try:
        train_x, train_y = load_raw(dataset, "train", root)
        test_x, test_y = load_raw(dataset, "test", root)
        source = dataset
    except LenetError:
        rng = np.random.default_rng(0)
        train_x = rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8)
        test_x = rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8)
        train_y, test_y = rng.integers(0, 10, n_train), rng.integers(0, 10, n_test)
        source = "random"
    return train_x[:n_train], train_y[:n_train], test_x[:n_test], test_y[:n_test], source


def to_dataset(name: str, arrays, scaling: str) -> Dataset:
    """The arrays as lenet's on-device Dataset, scaled as the recipe says."""
    train_x, train_y, test_x, test_y = arrays[:4]
    info = get_dataset_info(name)

    def split(x, y):
        return Split(to_input(torch.from_numpy(x), 28, scaling, info.mean, info.std), torch.from_numpy(y))

    return Dataset(name, info.classes, split(train_x, train_y), split(test_x, test_y), scaling=scaling)


# ----------------------------------------------------------------------------------------------------------
# Contestants: each is a function round(steps) -> samples per second


def lenet_trainer(data: Dataset, recipe: str, **overrides) -> Callable[[int], float]:
    """lenet's `fit` for `steps` optimiser steps from a fresh, seeded model (the recipe's first steps)."""
    cfg = resolve(recipe, dataset=data.name, **overrides)

    def run(steps: int) -> float:
        torch.manual_seed(cfg.seed)
        model = init_weights(create_model(cfg.model, **cfg.model_kwargs), cfg.init)
        history = fit(model, data, cfg, max_steps=steps)
        return history.examples_per_sec

    return run


def d2l_loop(data: Dataset, batch_size: int = 256, lr: float = 0.9) -> Callable[[int], float]:
    """Seed 004's train_ch6 loop on lenet5-d2l (its plotting left out, its per-batch metrics kept)."""
    from torch.utils.data import DataLoader, TensorDataset

    loader = DataLoader(TensorDataset(data.train.images, data.train.labels), batch_size, shuffle=True)

    def accuracy(y_hat, y):  # d2l.accuracy
        if len(y_hat.shape) > 1 and y_hat.shape[1] > 1:
            y_hat = y_hat.argmax(axis=1)
        cmp = y_hat.type(y.dtype) == y
        return float(cmp.type(y.dtype).sum())

    def run(steps: int) -> float:
        torch.manual_seed(0)
        net = init_weights(create_model("lenet5-d2l"), "xavier")
        optimizer = torch.optim.SGD(net.parameters(), lr=lr)
        loss = nn.CrossEntropyLoss()
        metric = [0.0, 0.0, 0.0]  # d2l.Accumulator(3)
        net.train()
        started, seen = time.perf_counter(), 0
        for i, (X, y) in enumerate(loader):
            if i == steps:
                break
            optimizer.zero_grad()
            y_hat = net(X)
            ls = loss(y_hat, y)
            ls.backward()
            optimizer.step()
            with torch.no_grad():
                new = (ls * X.shape[0], accuracy(y_hat, y), X.shape[0])
                metric = [a + float(b) for a, b in zip(metric, new, strict=True)]
            _train_l, _train_acc = metric[0] / metric[2], metric[1] / metric[2]
            seen += X.shape[0]
        return seen / (time.perf_counter() - started)

    return run


class KerasWorker:
    """Keras `fit` on seed 002's net, in a child process (TensorFlow and PyTorch need not share one)."""

    def __init__(self, python: str, arrays, threads: int, batch_size: int = 256):
        self.folder = tempfile.TemporaryDirectory(prefix="lenet-bench-")
        path = Path(self.folder.name) / "train.npz"
        np.savez(path, x=arrays[0], y=arrays[1])
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
        self.proc = subprocess.Popen(
            [python, str(KERAS_WORKER), str(path), str(threads), str(batch_size)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )  # fmt: skip
        self.info = self._reply()

    def _reply(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            err = self.proc.stderr.read().strip().splitlines()
            raise LenetError(f"the Keras worker stopped: {err[-1] if err else 'no output'}")
        return json.loads(line)

    def __call__(self, steps: int) -> float:
        self.proc.stdin.write(f"{steps}\n")
        self.proc.stdin.flush()
        return self._reply()["samples_per_s"]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.folder.cleanup()


def keras_python(requested: str | None) -> str | None:
    """The interpreter that can import TensorFlow: `requested`, else this one if it can, else None."""
    candidates = [requested] if requested else [sys.executable]
    for python in candidates:
        probe = subprocess.run([python, "-c", "import tensorflow, keras"], capture_output=True,
                               env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))  # fmt: skip
        if probe.returncode == 0:
            return python
        if requested:
            raise LenetError(f"{requested} cannot import tensorflow and keras; install 'lenet[bench]' there")
    return None


# ----------------------------------------------------------------------------------------------------------
# The side-by-side


def side_by_side(
    dataset: str = "mnist",
    root=None,
    *,
    rounds: int = 5,
    steps: int = 40,
    keras: str | None = None,
    with_keras: bool = True,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Interleaved rounds of every contestant; the medians, ratios and roof fraction as one dict."""
    log = log or (lambda line: None)
    arrays = load_images(dataset, root)
    name = dataset if arrays[4] != "random" else "mnist"
    unit, raw = to_dataset(name, arrays, "unit"), to_dataset(name, arrays, "none")
    small, small_raw = (Dataset(d.name, d.classes, d.train, Split(d.test.images[:500], d.test.labels[:500]))
                        for d in (unit, raw))  # fmt: skip
    contestants: dict[str, Callable[[int], float]] = {
        "lenet": lenet_trainer(small, "d2l"),
        "d2l_loop": d2l_loop(unit),
    }
    notes = []
    front = fast.match(create_model("lenet5-d2l")).front
    if fast.kernels(front) is None:
        notes.append(f"lenet ran without its fast path: {fast.unavailable(front)}")
    worker = None
    python = keras_python(keras) if with_keras else None
    if python:
        worker = KerasWorker(python, arrays, torch.get_num_threads())
        contestants["keras"] = worker
        contestants["lenet_keras_net"] = lenet_trainer(small_raw, "keras", batch_size=256, val_fraction=0.0)
    elif with_keras:
        notes.append("Keras skipped: no TensorFlow here (pip install 'lenet[bench]', or --keras PYTHON)")
    flops = flops_per_sample(init_weights(create_model("lenet5-d2l"), "xavier"))
    results: dict[str, list[float]] = {k: [] for k in contestants}
    roofs: list[float] = []
    try:
        for run in contestants.values():  # warm-up: kernels built, graphs traced, caches filled
            run(min(steps, 8))
        for r in range(rounds):
            order = list(contestants)
            order = order[r % len(order) :] + order[: r % len(order)]
            for key in order:
                results[key].append(contestants[key](steps))
            roofs.append(sgemm_gflops())
            log(f"round {r + 1}/{rounds}: " + ", ".join(f"{k} {results[k][-1]:,.0f}" for k in contestants)
                + f" samples/s; sgemm {roofs[-1]:.0f} GFLOP/s")  # fmt: skip
    finally:
        if worker:
            worker.close()
    med = {k: statistics.median(v) for k, v in results.items()}
    ratios = [a / b for a, b in zip(results["lenet"], results["d2l_loop"], strict=True)]
    roof_gflops = statistics.median(roofs)
    roof = roof_gflops * 1e9 / flops
    out = {
        "samples_per_s": med["lenet"],
        "d2l_loop_samples_per_s": med["d2l_loop"],
        "ratio_vs_d2l_loop": statistics.median(ratios),
        "roof_fraction": statistics.median(x * flops / (g * 1e9) for x, g in zip(results["lenet"], roofs, strict=True)),
        "roof_samples_per_s": roof,
        "sgemm_gflops": roof_gflops,
        "flops_per_sample": flops,
        "rounds": rounds,
        "steps_per_round": steps,
        "batch_size": 256,
        "data": arrays[4],
        "per_round": {k: [round(x, 1) for x in v] for k, v in results.items()} | {"sgemm_gflops": roofs},
        "machine": machine(),
        "notes": notes,
    }
    if "keras" in med:
        out.update(
            keras_samples_per_s=med["keras"],
            lenet_keras_net_samples_per_s=med["lenet_keras_net"],
            ratio_vs_keras=statistics.median(
                a / b for a, b in zip(results["lenet_keras_net"], results["keras"], strict=True)
            ),
            keras_versions=worker.info,
        )
    return out


def format_report(r: dict) -> str:
    """The side-by-side as a few aligned lines."""
    lines = [
        f"machine: {r['machine']['cpu']}, {r['machine']['threads']} threads, torch {r['machine']['torch']}",
        f"data: {r['data']}; batch {r['batch_size']}; {r['rounds']} interleaved rounds of "
        f"{r['steps_per_round']} steps; medians",
        f"  lenet (d2l recipe)      {r['samples_per_s']:>10,.0f} samples/s   "
        f"{r['ratio_vs_d2l_loop']:5.2f}x the d2l loop   {100 * r['roof_fraction']:4.1f}% of the SGEMM roof",
        f"  d2l loop (seed 004)     {r['d2l_loop_samples_per_s']:>10,.0f} samples/s",
    ]
    if "keras_samples_per_s" in r:
        lines += [
            f"  lenet (seed 002's net)  {r['lenet_keras_net_samples_per_s']:>10,.0f} samples/s   "
            f"{r['ratio_vs_keras']:5.2f}x Keras",
            f"  Keras fit (seed 002)    {r['keras_samples_per_s']:>10,.0f} samples/s",
        ]
    lines.append(
        f"  roof: SGEMM {r['sgemm_gflops']:.0f} GFLOP/s / {r['flops_per_sample'] / 1e6:.3f} MFLOP per sample"
        f" = {r['roof_samples_per_s']:,.0f} samples/s"
    )
    lines += [f"note: {n}" for n in r["notes"]]
    return "\n".join(lines)
