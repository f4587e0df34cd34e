"""Multi-process training: 2 CPU processes (gloo, `lenet train --nproc 2`) against 1, same global batch."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as tdist
from safetensors.torch import load_file

from lenet.cli import main
from lenet.cli.training import _without_option
from lenet.config import resolve
from lenet.train import dist
from lenet.train.checkpoint import CHECKPOINT, METRICS, WEIGHTS, load_checkpoint, load_run
from lenet.train.loop import fit
from lenet.train.setup import build_model, load_data

# The community LeNet (no batch norm, so a slice of a batch computes what the whole does) with an odd batch:
# 600 examples = 13 x 45 + 15, and 45 and 15 split unevenly over two ranks.
ARGS = ["--recipe", "community", "--dataset", "mnist", "--no-verify", "--epochs", "3", "--batch-size", "45",
        "--seed", "1"]  # fmt: skip

# Two processes sum the same gradients in another order (and one process may take lenet.fastpath), so they
# agree to float32 rounding: losses to a relative 1e-5, accuracies to one example in 600, weights to 1e-5
# (measured: 5e-7 against the fast path, 3e-8 against the eager step).
LOSS_RTOL, ACC_ATOL, WEIGHT_ATOL = 1e-5, 1 / 600, 1e-5


def rows(run: Path) -> list[dict]:
    with open(run / METRICS) as f:
        return list(csv.DictReader(f))


def test_two_processes_match_one_with_the_same_global_batch(fake_root, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    common = [sys.executable, "-m", "lenet", "train", *ARGS, "--root", str(fake_root)]
    result = subprocess.run([*common, "--out", str(two), "--nproc", "2"], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["train", *ARGS, "--root", str(fake_root), "--out", str(one)]) == 0
    finally:
        torch.set_num_threads(before)

    assert [line for line in result.stdout.splitlines() if line.startswith("[1/3]")] != []
    assert sum(line.startswith("[1/3]") for line in result.stdout.splitlines()) == 1  # only rank 0 prints
    assert "x 2 processes" in result.stdout
    got, want = rows(two), rows(one)
    assert len(got) == len(want) == 3
    for g, w in zip(got, want, strict=True):
        assert int(g["examples"]) == int(w["examples"]) == 600  # every example once per epoch
        assert g["steps"] == w["steps"]
        for key in ("train_loss", "test_loss"):
            assert float(g[key]) == pytest.approx(float(w[key]), rel=LOSS_RTOL), key
        for key in ("train_acc", "test_acc"):
            assert float(g[key]) == pytest.approx(float(w[key]), abs=ACC_ATOL), key

    weights, reference = load_file(two / WEIGHTS), load_file(one / WEIGHTS)
    assert weights.keys() == reference.keys()  # the unwrapped module's names: no "module." prefix
    for name in reference:
        torch.testing.assert_close(weights[name], reference[name], atol=WEIGHT_ATOL, rtol=0)
    assert load_checkpoint(two / CHECKPOINT)["model"].keys() == reference.keys()
    model, cfg, _ = load_run(two)  # one process loads what two wrote
    assert cfg.model == "lenet-community" and not isinstance(model, torch.nn.parallel.DistributedDataParallel)


def test_ddp_in_one_process_trains_as_the_plain_model(fake_root):
    """fit and make_step take a DDP-wrapped model: with one rank it trains as the plain one.

    To float rounding only: the plain model may take lenet.fastpath, which a DDP wrapper never does.
    """
    cfg = resolve("fast", dataset="mnist", epochs=1, batch_size=45)
    data = load_data(cfg, fake_root, verify=False)
    plain, wrapped, untrained = build_model(cfg), build_model(cfg), build_model(cfg)
    fit(plain, data, cfg, max_steps=5)
    tdist.init_process_group("gloo", store=tdist.HashStore(), rank=0, world_size=1)
    try:
        ddp = dist.wrap(wrapped)
        assert dist.unwrap(ddp) is wrapped
        fit(ddp, data, cfg, max_steps=5)
    finally:
        dist.finish()
    for name, value in wrapped.state_dict().items():
        torch.testing.assert_close(value, plain.state_dict()[name], atol=WEIGHT_ATOL, rtol=0)
    assert not torch.equal(wrapped.state_dict()["fc3.weight"], untrained.state_dict()["fc3.weight"])


def test_a_single_process_is_rank_0_of_1():
    assert not dist.launched()
    rank, device = dist.init(torch.device("cpu"))
    assert (rank.rank, rank.world_size, rank.main, device.type) == (0, 1, True, "cpu")
    values = torch.tensor([1.0, 2.0])
    assert dist.all_reduce(values) is values and values.tolist() == [1.0, 2.0]
    assert dist.any_rank(True, device) and not dist.any_rank(False, device)


def test_nproc_is_not_passed_on_to_torchrun():
    argv = ["train", "--nproc", "2", "--epochs", "3", "--nproc=4", "--out", "x"]
    assert _without_option(argv, "--nproc") == ["train", "--epochs", "3", "--out", "x"]
