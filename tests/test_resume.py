"""Checkpoints and resume: a run killed anywhere and resumed ends bit-identical to one never interrupted.

Every run here uses one thread (in-process and in the subprocesses), so that the arithmetic is the same
in each; on the CPU with a fixed seed training is then deterministic.
"""

from __future__ import annotations

import csv
import os
import pickle
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lenet.cli import main
from lenet.errors import LenetError
from lenet.train.checkpoint import CHECKPOINT, CONFIG, METRICS, WEIGHTS, load_checkpoint

# lenet5-modern with Nesterov momentum and a one-cycle schedule: the optimiser's buffers and the schedule's
# position must come back. 600 examples / 50 = 12 steps an epoch.
EPOCHS, STEPS_PER_EPOCH = 4, 12
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def train_args(root: Path, out: Path) -> list[str]:
    return ["train", "--recipe", "fast", "--model", "lenet5-modern", "--optimizer", "sgd", "--momentum",
            "0.9", "--schedule", "onecycle", "--dataset", "mnist", "--root", str(root), "--no-verify",
            "--epochs", str(EPOCHS), "--batch-size", "50", "--seed", "7", "--out", str(out)]  # fmt: skip


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def reference(fake_root, tmp_path_factory) -> Path:
    """An uninterrupted run's folder."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("reference") / "run"
    try:
        assert main(train_args(fake_root, out)) == 0
    finally:
        torch.set_num_threads(before)
    return out


def assert_same_weights(run: Path, reference: Path) -> None:
    got, want = load_file(run / WEIGHTS), load_file(reference / WEIGHTS)
    assert got.keys() == want.keys()
    for name in want:
        assert torch.equal(got[name], want[name]), f"{name} differs"
    assert torch.equal(load_checkpoint(run / CHECKPOINT)["model"]["fc3.weight"], want["fc3.weight"])


def metrics(run: Path, keys=("epoch", "train_loss", "train_acc", "test_loss", "test_acc", "lr", "steps")):
    with open(run / METRICS) as f:
        return [{k: row[k] for k in keys} for row in csv.DictReader(f)]


def resume(run: Path, root: Path, *extra: str) -> int:
    return main(["train", "--resume", str(run), "--root", str(root), "--no-verify", *extra])


def start(fake_root: Path, out: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "lenet", *train_args(fake_root, out)]
    return subprocess.Popen(command, env=ONE_THREAD, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_epoch_line(proc: subprocess.Popen, out: Path, epoch: int) -> None:
    """Block until the run has printed its line for `epoch` (0: until its config.json exists)."""
    if epoch == 0:
        while not (out / CONFIG).exists() and proc.poll() is None:
            time.sleep(0.005)
        return
    for line in proc.stdout:
        if line.startswith(f"epoch {epoch},"):
            return


@pytest.mark.parametrize("epoch", [0, 1, 2])
def test_sigkill_at_a_random_point_then_resume_is_bit_identical(epoch, fake_root, reference, tmp_path, one_thread):
    delay = random.Random(epoch).uniform(0.0, 0.15)  # seconds after the run printed `epoch`'s line
    out = tmp_path / "run"
    proc = start(fake_root, out)
    wait_for_epoch_line(proc, out, epoch)
    time.sleep(delay)
    proc.kill()
    proc.communicate()
    print(f"killed after epoch {epoch} + {delay:.2f} s: {sorted(p.name for p in out.iterdir())}")

    assert resume(out, fake_root) == 0
    assert_same_weights(out, reference)
    assert metrics(out) == metrics(reference)
    assert not list(out.glob(".*.tmp"))


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_checkpoints_mid_epoch_and_resume_is_bit_identical(signum, fake_root, reference, tmp_path, one_thread):
    out = tmp_path / "run"
    proc = start(fake_root, out)
    wait_for_epoch_line(proc, out, 1)
    time.sleep(0.05)
    proc.send_signal(signum)
    _, err = proc.communicate()
    if proc.returncode == 0:
        pytest.skip("the run finished before the signal arrived")  # a starved CPU; nothing to test
    assert proc.returncode == 128 + signum, err
    assert err.strip().splitlines()[-1].startswith(f"interrupted by {signal.Signals(signum).name} at epoch ")
    assert "Traceback" not in err
    step = load_checkpoint(out / CHECKPOINT)["step"]
    assert 0 < step < EPOCHS * STEPS_PER_EPOCH

    assert resume(out, fake_root) == 0
    assert_same_weights(out, reference)


def test_max_steps_mid_epoch_then_resume_is_bit_identical(fake_root, reference, tmp_path, one_thread):
    out = tmp_path / "run"
    assert main([*train_args(fake_root, out), "--max-steps", "7"]) == 0  # stops in the middle of epoch 1
    ckpt = load_checkpoint(out / CHECKPOINT)
    assert (ckpt["epoch"], ckpt["step"]) == (0, 7)
    assert resume(out, fake_root, "--max-steps", "30") == 0  # again mid-epoch, in epoch 3
    assert load_checkpoint(out / CHECKPOINT)["step"] == 30
    assert resume(out, fake_root) == 0
    assert_same_weights(out, reference)


def test_resume_repairs_files_left_behind_by_a_death_between_renames(fake_root, reference, tmp_path, one_thread):
    out = tmp_path / "run"
    assert main([*train_args(fake_root, out), "--max-steps", str(STEPS_PER_EPOCH)]) == 0
    epoch1_weights, epoch1_metrics = (out / WEIGHTS).read_bytes(), (out / METRICS).read_bytes()
    assert resume(out, fake_root, "--max-steps", str(2 * STEPS_PER_EPOCH)) == 0
    # As if killed after checkpoint.pt was renamed but before model.safetensors and metrics.csv were:
    (out / WEIGHTS).write_bytes(epoch1_weights)
    (out / METRICS).write_bytes(epoch1_metrics)
    (out / ".checkpoint.pt.abc.tmp").write_bytes(b"half a checkpoint")
    assert resume(out, fake_root, "--max-steps", str(2 * STEPS_PER_EPOCH)) == 0  # nothing to train; catches up
    ckpt = load_checkpoint(out / CHECKPOINT)
    assert torch.equal(load_file(out / WEIGHTS)["fc3.weight"], ckpt["model"]["fc3.weight"])
    assert len(metrics(out)) == 2
    assert not (out / ".checkpoint.pt.abc.tmp").exists()
    assert resume(out, fake_root) == 0
    assert_same_weights(out, reference)


def test_resuming_a_finished_run_changes_nothing(reference, fake_root, capsys):
    before = {p.name: p.read_bytes() for p in reference.iterdir()}
    assert resume(reference, fake_root) == 0
    assert "already finished" in capsys.readouterr().out
    assert {p.name: p.read_bytes() for p in reference.iterdir()} == before


def test_checkpoint_holds_everything_to_resume(reference):
    ckpt = load_checkpoint(reference / CHECKPOINT)
    assert ckpt["epoch"] == EPOCHS and ckpt["step"] == EPOCHS * STEPS_PER_EPOCH
    assert ckpt["config"]["model"] == "lenet5-modern" and ckpt["config"]["seed"] == 7
    assert "fc3.weight" in ckpt["model"] and not any(k.startswith("module.") for k in ckpt["model"])
    assert ckpt["optimizer"]["state"]  # momentum buffers
    assert ckpt["data_rng_state"].dtype == torch.uint8 and ckpt["torch_rng_state"].dtype == torch.uint8
    assert len(ckpt["history"]["epochs"]) == EPOCHS


class RunsCode:
    """Unpickling this calls open(marker, "w"): it would create the file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_a_checkpoint_that_would_run_code_is_refused(writer, reference, tmp_path, capsys):
    marker = tmp_path / "pwned"
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    payload = {"model": RunsCode(marker), "config": {"model": "lenet5-modern"}}
    with open(run / CHECKPOINT, "wb") as f:
        torch.save(payload, f) if writer == "torch.save" else pickle.dump(payload, f)
    before = {p.name: p.read_bytes() for p in run.iterdir()}

    with pytest.raises(LenetError, match="refused"):
        load_checkpoint(run / CHECKPOINT)
    capsys.readouterr()
    for argv in (["train", "--resume", str(run)], ["eval", str(run / CHECKPOINT)]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "refused" in err and "Traceback" not in err, err
    assert not marker.exists()
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before
