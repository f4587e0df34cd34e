"""`lenet sweep` on this machine: the product of settings and seeds in worker processes, each a normal run folder;
resumable after Ctrl-C (bit-identical) or a killed worker; `lenet sweep report` with mean ± std per setting."""

from __future__ import annotations

import csv
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import write_dataset
from safetensors.torch import load_file

import lenet
from lenet.cli import main
from lenet.errors import LenetError
from lenet.sweep.spec import parse_seeds, parse_settings

EPOCHS = 6  # on the larger generated data: ~0.5 s an epoch on one core, long enough to stop in the middle


@pytest.fixture(scope="module")
def big_root(tmp_path_factory) -> Path:
    """A generated MNIST ten times the default size, so that a run lasts a few seconds."""
    return write_dataset(tmp_path_factory.mktemp("sweep-data"), "mnist", n_train=6000, n_test=1000)


def sweep_args(root: Path, out: Path, *extra: str) -> list[str]:
    return ["sweep", "fast", "--root", str(root), "--no-verify", "--device", "cpu", "--out", str(out), *extra]


def start(root: Path, out: Path, *extra: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "lenet", *sweep_args(root, out, *extra)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def under_way(out: Path) -> list[Path]:
    return [p for p in out.glob("seed=*") if (p / "checkpoint.pt").is_file() and not (p / "summary.json").is_file()]


def wait_for(condition, proc: subprocess.Popen, what: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"the sweep ended before {what}: {proc.communicate()}"
        assert time.monotonic() < deadline, f"never saw {what}"
        time.sleep(0.05)


def reference_weights(root: Path, seed: int, tmp_path: Path) -> dict:
    run = lenet.train("fast", seed=seed, epochs=EPOCHS, root=root, verify=False, device="cpu", verbose=False,
                      progress=False, out=tmp_path / f"reference-{seed}")  # fmt: skip
    return load_file(str(run.path / "model.safetensors"))


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ----------------------------------------------------------------------------------------------------------
# What is asked


def test_seeds_and_settings_read_as_documented():
    assert parse_seeds("3") == [0, 1, 2]
    assert parse_seeds("0-9") == list(range(10))
    assert parse_seeds("0,2,5-7,2") == [0, 2, 5, 6, 7]
    fixed, grid = parse_settings(["lr=0.05,0.1", "epochs=3", "distort=true,false", "dataset=mnist"])
    assert fixed == {"epochs": 3, "dataset": "mnist"}
    assert grid == {"lr": [0.05, 0.1], "distort": [True, False]}
    assert isinstance(fixed["epochs"], int) and all(isinstance(v, float) for v in grid["lr"])


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--seeds", "3-1"], "not a range of seeds"),
        (["--seeds", "0"], "at least one seed"),
        (["--seeds", "a"], "expected N"),
        (["--set", "lr=fast"], "'fast' is not a number"),
        (["--set", "epochs=1.5"], "not a whole number"),
        (["--set", "seed=1,2"], "use --seeds"),
        (["--set", "nope=1"], "unknown setting"),
        (["--set", "lr"], "expected KEY=VALUE"),
        (["--set", "lr=0.1,0.1"], "listed twice"),
        (["--set", "lr=0.1", "--set", "lr=0.2"], "given twice"),
        (["--set", "batch_size=0,1"], "batch size must be at least 1"),
        (["--set", "optimizer=sgd,nadam"], "unknown optimizer"),
    ],
)
def test_a_bad_sweep_is_one_line_and_starts_nothing(extra, message, fake_root, tmp_path, capsys):
    out = tmp_path / "sweep"
    assert main(sweep_args(fake_root, out, *extra)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_an_unknown_recipe_and_a_missing_dataset_are_one_line(fake_root, tmp_path, capsys):
    assert main(["sweep", "nope", "--out", str(tmp_path / "a")]) == 2
    assert "unknown recipe 'nope'" in capsys.readouterr().err
    assert main(["sweep", "fast", "--root", str(tmp_path), "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "not found" in err and "lenet data download mnist" in err and len(err.strip().splitlines()) == 1


# ----------------------------------------------------------------------------------------------------------
# Running, growing, reporting


def test_a_sweep_is_the_product_of_settings_and_seeds_each_a_normal_run(fake_root, tmp_path, capsys):
    out = tmp_path / "sweep"
    args = sweep_args(fake_root, out, "--seeds", "2", "--set", "lr=0.1,0.2", "--set", "epochs=2", "--workers", "2",
                      "--threads", "1", "--json")  # fmt: skip
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "4 runs: 0 finished, 0 to resume, 4 to start; 2 workers x 1 thread" in captured.err
    names = {"lr=0.1,seed=0", "lr=0.1,seed=1", "lr=0.2,seed=0", "lr=0.2,seed=1"}
    assert {p.name for p in out.iterdir() if p.is_dir()} == names
    asked = json.loads((out / "sweep.json").read_text())
    assert asked["recipe"] == "fast" and asked["seeds"] == [0, 1] and asked["grid"] == {"lr": [0.1, 0.2]}
    assert asked["fixed"] == {"epochs": 2} and asked["command"].startswith("lenet sweep fast")
    results = json.loads(captured.out.strip().splitlines()[-1])
    assert [r["status"] for r in results] == ["done"] * 4

    # each a normal run folder: lenet.load and lenet eval take it as it is
    for name in names:
        run = lenet.load(out / name)
        lr, seed = name.split(",")
        assert run.config.lr == float(lr.split("=")[1]) and run.config.seed == int(seed.split("=")[1])
        assert run.config.epochs == 2 and run.summary["epochs"] == 2
    assert main(["eval", str(out / "lr=0.2,seed=1"), "--root", str(fake_root), "--no-verify"]) == 0
    capsys.readouterr()

    # the report: mean ± std over the seeds of each setting, as the summaries say
    assert main(["sweep", "report", str(out), "--json"]) == 0
    printed = capsys.readouterr().out
    rows = json.loads(printed.strip().splitlines()[-1])
    with open(out / "report.csv", newline="") as f:
        table = list(csv.DictReader(f))
    for row, line in zip(rows, table, strict=True):
        accs = [
            json.loads((out / f"{row['setting']},seed={s}" / "summary.json").read_text())["test_acc"] for s in (0, 1)
        ]
        assert row["n"] == 2 and row["test_acc_mean"] == pytest.approx(statistics.fmean(accs))
        assert row["test_acc_std"] == pytest.approx(statistics.stdev(accs))
        assert (row["test_acc_min"], row["test_acc_max"]) == (min(accs), max(accs))
        assert float(line["test_acc_mean"]) == pytest.approx(row["test_acc_mean"])
        assert f"| `{row['setting']}` | 2 | {row['test_acc_mean']:.4f} ± {row['test_acc_std']:.4f} |" in printed
    assert (out / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "](report.png)" in (out / "report.md").read_text()

    # in Jupyter: a table and the figure inline
    report = lenet.sweep_report(out)
    html = report._repr_html_()
    assert "<table>" in html and "lr=0.1" in html and "data:image/png;base64," in html
    assert report._repr_markdown_() == report.markdown()


def test_a_sweep_grows_keeps_what_finished_and_refuses_another_sweep(fake_root, tmp_path, capsys):
    out = tmp_path / "sweep"
    assert main(sweep_args(fake_root, out, "--seeds", "1", "--set", "epochs=1")) == 0
    first = (out / "seed=0" / "summary.json").stat().st_mtime_ns
    assert main(sweep_args(fake_root, out, "--seeds", "0-1", "--set", "epochs=1")) == 0
    assert "2 runs: 1 finished, 0 to resume, 1 to start" in capsys.readouterr().err
    assert (out / "seed=0" / "summary.json").stat().st_mtime_ns == first
    assert json.loads((out / "sweep.json").read_text())["seeds"] == [0, 1]
    assert main(["sweep", "--resume", str(out), "--root", str(fake_root), "--no-verify", "--device", "cpu"]) == 0
    assert "2 runs: 2 finished, 0 to resume, 0 to start" in capsys.readouterr().err

    assert main(sweep_args(fake_root, out, "--seeds", "2", "--set", "epochs=2")) == 2
    err = capsys.readouterr().err
    assert "holds a sweep with fixed {'epochs': 1}" in err and len(err.strip().splitlines()) == 1
    assert main(["sweep", "report", str(tmp_path / "nothing")]) == 2
    assert "no sweep.json" in capsys.readouterr().err


def test_run_sweep_from_python(fake_root, tmp_path):
    result = lenet.run_sweep("fast", seeds=[3], settings={"epochs": 1, "batch_size": [64, 128]}, out=tmp_path / "s",
                             root=fake_root, verify=False, device="cpu", progress=False)  # fmt: skip
    assert result.complete and [r["name"] for r in result.results] == ["batch_size=64,seed=3", "batch_size=128,seed=3"]
    assert lenet.load(tmp_path / "s" / "batch_size=128,seed=3").config.batch_size == 128


# ----------------------------------------------------------------------------------------------------------
# Stopping and resuming


def test_ctrl_c_stops_every_worker_with_a_checkpoint_and_the_sweep_resumes_bit_identical(big_root, tmp_path):
    out = tmp_path / "sweep"
    extra = ("--seeds", "2", "--set", f"epochs={EPOCHS}", "--workers", "2", "--threads", "1")
    proc = start(big_root, out, *extra)
    wait_for(lambda: len(under_way(out)) == 2, proc, "both runs under way")
    proc.send_signal(signal.SIGINT)  # what a Ctrl-C in the terminal sends the sweep (its workers are apart)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "every run keeps its last checkpoint: lenet sweep --resume" in stderr
    for run in out.glob("seed=*"):  # each stopped with a checkpoint of where it was (a partial epoch)
        assert (run / "checkpoint.pt").is_file() and not (run / "summary.json").is_file()
        rows = (run / "metrics.csv").read_text().strip().splitlines()
        assert len(rows) - 1 < EPOCHS

    assert main(sweep_args(big_root, out, *extra)) == 0
    for seed in (0, 1):
        mine = load_file(str(out / f"seed={seed}" / "model.safetensors"))
        assert same_weights(mine, reference_weights(big_root, seed, tmp_path))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the worker processes through /proc")
def test_a_killed_worker_loses_only_its_run_and_the_next_sweep_resumes_it(big_root, tmp_path, capsys):
    out = tmp_path / "sweep"
    extra = ("--seeds", "3", "--set", f"epochs={EPOCHS}", "--workers", "2", "--threads", "1", "--json")
    proc = start(big_root, out, *extra)
    wait_for(lambda: len(under_way(out)) == 2, proc, "two runs under way")
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
    workers = [int(pid) for pid in children if b"lenet.sweep.worker" in Path(f"/proc/{pid}/cmdline").read_bytes()]
    assert len(workers) == 2
    os.kill(workers[0], signal.SIGKILL)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 2, stderr
    results = json.loads(stdout.strip().splitlines()[-1])
    crashed = [r for r in results if r["status"] == "crashed"]
    assert len(crashed) == 1 and "exit code -9" in crashed[0]["error"]
    assert sorted(r["status"] for r in results) == ["crashed", "done", "done"]  # a fresh worker took the rest

    assert main(sweep_args(big_root, out, *extra)) == 0
    assert "3 runs: 2 finished, 1 to resume, 0 to start" in capsys.readouterr().err
    seed = int(crashed[0]["name"].split("=")[1])
    mine = load_file(str(out / f"seed={seed}" / "model.safetensors"))
    assert same_weights(mine, reference_weights(big_root, seed, tmp_path))


def test_a_sweep_folder_holding_something_else_is_refused(fake_root, tmp_path, capsys):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    assert main(sweep_args(fake_root, tmp_path / "busy")) == 2
    assert "is not a sweep folder" in capsys.readouterr().err
    with pytest.raises(LenetError, match="drop the recipe"):
        lenet.run_sweep("fast", resume=tmp_path / "busy")
