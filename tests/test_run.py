"""One run, from Python or the command line: the same folder, models of the user's own, a record that stays true."""

from __future__ import annotations

import csv
import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn

import lenet
from lenet.cli import main
from lenet.errors import LenetError

TIMING = {"seconds", "train_seconds", "examples_per_sec", "run_dir"}  # what differs between two equal runs


def cli_args(root: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--recipe", "fast", "--dataset", "mnist", "--root", str(root), "--no-verify",
            "--out", str(out), *extra]  # fmt: skip


def untimed(printed: str, run: Path) -> str:
    """A run's printout without what depends on the clock (and with its folder's name left out)."""
    printed = re.sub(r"time [\d.]+ sec", "time", printed.replace(str(run), "RUN"))
    return re.sub(r"[\d.]+ examples/sec", "examples/sec", printed)


def said(err: str) -> list[str]:
    """stderr's lines but the warnings about the generated data's checksums."""
    return [line for line in err.strip().splitlines() if not line.startswith("warning: ")]


def rows(run: Path) -> list[dict]:
    with open(run / "metrics.csv") as f:
        return list(csv.DictReader(f))


def without(d: dict, keys: set) -> dict:
    return {k: v for k, v in d.items() if k not in keys}


def same_weights(a: Path, b: Path) -> bool:
    x, y = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def test_cli_and_python_write_identical_run_folders(fake_root, tmp_path, capsys):
    assert main(cli_args(fake_root, tmp_path / "cli", "--epochs", "2", "--seed", "3")) == 0
    printed = capsys.readouterr().out
    run = lenet.train("fast", dataset="mnist", epochs=2, seed=3, root=fake_root, verify=False,
                      out=tmp_path / "py")  # fmt: skip
    assert untimed(capsys.readouterr().out, tmp_path / "py") == untimed(printed, tmp_path / "cli")
    cli, py = tmp_path / "cli", tmp_path / "py"
    assert {p.name for p in cli.iterdir()} == {p.name for p in py.iterdir()}
    for name in ("config.json", "run.json"):
        assert (cli / name).read_text() == (py / name).read_text(), name
    assert [without(r, TIMING) for r in rows(cli)] == [without(r, TIMING) for r in rows(py)]
    summaries = [json.loads((run / "summary.json").read_text()) for run in (cli, py)]
    assert without(summaries[0], TIMING) == without(summaries[1], TIMING)
    assert same_weights(cli, py)
    with safe_open(str(cli / "model.safetensors"), "pt") as a, safe_open(str(py / "model.safetensors"), "pt") as b:
        assert a.metadata() == b.metadata()
    # what Python gets back is what the folder holds
    assert run.path == py and run.summary == summaries[1] and run.stopped is None
    model, history = run
    assert len(history.epochs) == 2 and model is run.model
    loaded = lenet.load(py)
    assert loaded.config == run.config and loaded.history.epochs == history.epochs
    assert str(loaded.data_root) == json.loads((py / "run.json").read_text())["data_root"]


def plain_lenet() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10),
    )  # fmt: skip


def test_a_users_sequential_trains_in_python_then_the_cli_evaluates_exports_and_predicts(fake_root, tmp_path, capsys):
    out = tmp_path / "mine"
    run = lenet.train("fast", model=plain_lenet(), epochs=3, root=fake_root, verify=False, out=out, verbose=False)
    assert run.summary["test_acc"] > 0.5 and run.config.model == "sequential"
    assert run.summary["fast_path"].startswith("fast path: whole-step"), run.summary["fast_path"]
    capsys.readouterr()
    assert main(["eval", str(out), "--json", "--no-verify"]) == 0  # no --root: the run remembers its data
    result = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert result["test_acc"] == pytest.approx(run.summary["test_acc"])
    assert main(["export", str(out), "--format", "torchscript"]) == 0
    assert (out / "model.torchscript.pt").is_file()
    path, difference = lenet.export(run, "torchscript", tmp_path / "again.pt")  # and from Python, on the Run
    assert path.is_file() and difference < 1e-5
    assert lenet.evaluate(run, verify=False, figures=False)["test_acc"] == pytest.approx(run.summary["test_acc"])
    image = tmp_path / "seven.png"
    Image.new("L", (40, 40), 255).save(image)
    assert main(["predict", str(out), str(image), "--json"]) == 0
    assert set(json.loads(capsys.readouterr().out.splitlines()[-1])) >= {"class", "probability"}


class Chain(nn.Module):
    """The same layers as plain_lenet, as a module of its own with a forward that calls them in order."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 6, 5, padding=2), nn.Conv2d(6, 16, 5)
        self.fc1, self.fc2, self.fc3 = nn.Linear(400, 120), nn.Linear(120, 84), nn.Linear(84, 10)

    def forward(self, x):
        x = nn.functional.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = nn.functional.max_pool2d(torch.relu(self.conv2(x)), 2)
        x = torch.flatten(x, 1)
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


def test_a_module_of_ones_own_is_saved_for_python_and_the_cli_says_what_it_needs(fake_root, tmp_path, capsys):
    class Local(Chain):  # not importable by name: the command line cannot build it
        pass

    out = tmp_path / "local"
    run = lenet.train("d2l", model=Local(), dataset="mnist", lr=0.1, epochs=1, root=fake_root, verify=False,
                      out=out, verbose=False)  # fmt: skip
    assert run.config.model == "module" and "Local" in run.config.model_kwargs["qualname"]
    again = lenet.load(out, model=Local())
    x = torch.rand(3, 1, 28, 28)
    assert torch.equal(again.model(x), run.model.eval()(x))
    capsys.readouterr()
    assert main(["eval", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "lenet.load(RUN, model=Local())" in err and "Traceback" not in err


def test_the_start_line_says_which_path_runs(fake_root, tmp_path, capsys):
    assert main(cli_args(fake_root, tmp_path / "a", "--max-steps", "1", "--no-fastpath")) == 0
    assert "fast path: off (--no-fastpath); training with PyTorch" in capsys.readouterr().out
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["fast_path"] == "fast path: off (--no-fastpath); training with PyTorch"
    assert main(cli_args(fake_root, tmp_path / "b", "--max-steps", "1", "--recipe", "lecun98")) == 0
    assert "fast path: off (optimizer sdlm" in capsys.readouterr().out


# ----------------------------------------------------------------------------------------------------------
# The record stays true


def start(argv: list[str]) -> subprocess.Popen:
    env = {"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "PATH": "/usr/bin:/bin"}
    return subprocess.Popen([sys.executable, "-m", "lenet", *argv], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip


def test_the_program_exits_quickly_with_everything_written_and_said(fake_root, tmp_path):
    """`lenet train` skips Python's teardown (os._exit) once the run is complete: nothing may be lost to it."""
    argv = [sys.executable, "-m", "lenet", *cli_args(fake_root, tmp_path / "run", "--epochs", "2"), "--json"]
    env = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}  # stdout a pipe, block-buffered: it must be flushed
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    printed = json.loads(out.strip().splitlines()[-1])
    folder = tmp_path / "run"
    assert printed == json.loads((folder / "summary.json").read_text())
    assert len(list(csv.DictReader((folder / "metrics.csv").open()))) == 2
    assert lenet.load(folder).summary == printed and (folder / "curves.png").stat().st_size > 0


def test_a_reader_that_leaves_stops_the_program_quietly(fake_root, tmp_path):
    """`lenet train | head -1`: the run stops as a command killed by SIGPIPE would, with no traceback."""
    proc = start([*cli_args(fake_root, tmp_path / "run", "--epochs", "3"), "--batch-size", "10"])
    assert proc.stdout.readline() == "training on cpu\n"
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=300) == 128 + signal.SIGPIPE
    assert "Traceback" not in err and "Exception ignored" not in err, err


def test_resume_after_ctrl_c_keeps_one_row_per_epoch_and_the_whole_runs_numbers(fake_root, tmp_path, capsys):
    args = ["--epochs", "6", "--batch-size", "50", "--seed", "5", "--schedule", "constant"]  # 12 steps an epoch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the subprocess: the same arithmetic
    try:
        assert main(cli_args(fake_root, tmp_path / "whole", *args)) == 0
        whole_out = capsys.readouterr().out
        proc = start(cli_args(fake_root, tmp_path / "cut", *args))
        for line in proc.stdout:
            if line.startswith("epoch 1,"):
                break
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate()
        if proc.returncode == 0:
            pytest.skip("the run finished before the signal arrived")  # a starved CPU; nothing to test
        assert proc.returncode == 130 and len(said(err)) == 1, err
        stop = re.match(r"interrupted by SIGINT at epoch (\d+), step (\d+); checkpoint saved; continue with: "
                        r"lenet train --resume ", said(err)[0])  # fmt: skip
        assert stop, err
        epoch, step = int(stop[1]), int(stop[2])
        assert not any(line.startswith(f"epoch {epoch},") for line in out.splitlines())  # not a finished epoch
        cut = tmp_path / "cut"
        epochs = [r["epoch"] for r in rows(cut)]
        assert epochs == [str(e) for e in range(1, epoch + (step % 12 > 0))]
        assert (rows(cut)[-1].get("partial") == "True") == (step % 12 > 0)
        assert main(["train", "--resume", str(cut), "--no-verify"]) == 0  # the run knows its data root
        resumed_out = capsys.readouterr().out
    finally:
        torch.set_num_threads(threads)
    whole = tmp_path / "whole"
    assert same_weights(cut, whole)
    keys = ("epoch", "train_loss", "train_acc", "test_loss", "test_acc", "steps", "examples")
    assert [{k: r[k] for k in keys} for r in rows(cut)] == [{k: r[k] for k in keys} for r in rows(whole)]
    assert not any(r.get("partial") for r in rows(cut))
    summaries = [json.loads((run / "summary.json").read_text()) for run in (cut, whole)]
    for key in ("train_loss", "train_acc", "test_acc", "epochs", "steps"):
        assert summaries[0][key] == summaries[1][key], key
    line = [line for line in whole_out.splitlines() if line.startswith(f"epoch {epoch},")][0]
    assert line.split(", time")[0] in resumed_out  # the resumed epoch's line, with whole-epoch numbers


def test_a_finished_constant_lr_run_extends_and_a_scheduled_one_says_why_not(fake_root, tmp_path, capsys):
    args = ["--batch-size", "100", "--seed", "2", "--schedule", "constant"]
    assert main(cli_args(fake_root, tmp_path / "three", *args, "--epochs", "3")) == 0
    assert main(cli_args(fake_root, tmp_path / "two", *args, "--epochs", "2")) == 0
    assert main(["train", "--resume", str(tmp_path / "two"), "--epochs", "3", "--no-verify"]) == 0
    assert same_weights(tmp_path / "two", tmp_path / "three")
    assert [r["epoch"] for r in rows(tmp_path / "two")] == ["1", "2", "3"]
    assert json.loads((tmp_path / "two" / "config.json").read_text())["epochs"] == 3
    assert main(cli_args(fake_root, tmp_path / "cycle", "--epochs", "1", "--batch-size", "100")) == 0
    capsys.readouterr()
    assert main(["train", "--resume", str(tmp_path / "cycle"), "--epochs", "2", "--no-verify"]) == 2
    assert "onecycle schedule was laid out over 1 epochs" in capsys.readouterr().err


def test_overwrite_replaces_a_run_and_only_its_files(fake_root, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(cli_args(fake_root, out, "--max-steps", "1")) == 0
    (out / "model.onnx").write_bytes(b"an old export")
    (out / "notes.txt").write_text("mine")
    before = (out / "model.safetensors").read_bytes()
    assert main(cli_args(fake_root, out, "--max-steps", "1")) == 2
    assert "already holds a run" in capsys.readouterr().err and (out / "model.onnx").exists()
    assert (out / "model.safetensors").read_bytes() == before
    assert main(cli_args(fake_root, out, "--max-steps", "2", "--overwrite")) == 0
    assert not (out / "model.onnx").exists() and (out / "notes.txt").read_text() == "mine"
    assert json.loads((out / "summary.json").read_text())["steps"] == 2


def test_eval_on_another_dataset_names_its_figures(fake_root, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(cli_args(fake_root, out, "--max-steps", "1")) == 0
    assert main(["eval", str(out), "--no-verify"]) == 0
    own = (out / "confusion-mnist-test.png").read_bytes()
    assert main(["eval", str(out), "--dataset", "kmnist", "--no-verify"]) == 0
    assert (out / "confusion-kmnist-test.png").is_file() and (out / "confusion-mnist-test.png").read_bytes() == own


def test_max_steps_prints_the_cut_epoch_as_cut(fake_root, tmp_path, capsys):
    assert main(cli_args(fake_root, tmp_path / "r", "--max-steps", "2", "--batch-size", "100")) == 0
    out = capsys.readouterr().out
    assert "epoch 1 stopped after 2 batches (33 % of it): loss " in out and "epoch 1," not in out


def wait_for(proc: subprocess.Popen, phase: str) -> None:
    """Block until the process is in `phase`: importing torch (its library mapped), or training (the line
    that says which fast path runs)."""
    if phase == "importing torch":
        maps = Path(f"/proc/{proc.pid}/maps")
        while proc.poll() is None and "libtorch" not in maps.read_text():
            time.sleep(0.001)
        return
    for line in proc.stdout:
        if line.startswith("fast path:"):
            return


@pytest.mark.parametrize("phase", ["importing torch", "training"])
@pytest.mark.parametrize("presses", [1, 2])
def test_ctrl_c_at_any_moment_is_one_line_and_leaves_a_resumable_run_or_none(phase, presses, fake_root, tmp_path):
    out = tmp_path / "run"
    proc = start(cli_args(fake_root, out, "--epochs", "40", "--batch-size", "20"))
    wait_for(proc, phase)
    for _ in range(presses):  # an impatient second Ctrl-C stops at once
        proc.send_signal(signal.SIGINT)
        time.sleep(0.02)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert len(said(err)) == 1 and "Traceback" not in err, err
    if out.exists():  # resumable, or not there at all
        assert (out / "checkpoint.pt").is_file(), sorted(p.name for p in out.iterdir())
        assert main(["train", "--resume", str(out), "--max-steps", "1", "--no-verify"]) == 0


def test_python_api_errors_name_the_field(fake_root):
    with pytest.raises(LenetError, match=r"config field 'lr' takes a number, not '0.1' \(str\)"):
        lenet.resolve("d2l", lr="0.1")
    with pytest.raises(LenetError, match="config field 'epochs' takes a whole number"):
        lenet.train("fast", epochs=2.5, root=fake_root, verify=False)
    with pytest.raises(LenetError, match="unknown config field"):
        lenet.train("fast", learning_rate=0.1, root=fake_root)
    with pytest.raises(LenetError, match="expected a torch.nn.Module"):
        lenet.train("fast", model=object(), root=fake_root)
    with pytest.raises(LenetError, match="expected a recipe name or a lenet.Config"):
        lenet.train(42, root=fake_root)


def test_fit_and_evaluate_take_what_users_hold(fake_root):
    from lenet import d2l

    train_iter, test_iter = d2l.load_data_fashion_mnist(64, root=fake_root, verify=False)
    net = plain_lenet()
    history = lenet.fit(net, train_iter, lenet.resolve("d2l", lr=0.1, epochs=1), test=test_iter, progress=False)
    assert len(history.epochs) == 1 and "test_acc" in history.last
    X, y = next(iter(test_iter))
    by_tensors = lenet.evaluate(net, (X, y))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, y), batch_size=16)
    assert lenet.evaluate(net, loader)["acc"] == by_tensors["acc"]
    assert lenet.evaluate(net, test_iter)["n"] == 200
    with pytest.raises(LenetError, match="images are torch.uint8"):
        lenet.evaluate(net, ((X * 255).to(torch.uint8), y))


def test_snapshots_are_kept_in_the_run_folder(fake_root, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(cli_args(fake_root, out, "--epochs", "2", "--batch-size", "20", "--snapshots")) == 0
    index = json.loads((out / "snapshots" / "index.json").read_text())
    assert [s["step"] for s in index["snapshots"]] == [0, 10, 30, 60]  # early steps, then each epoch's end
    assert all((out / "snapshots" / s["file"]).is_file() for s in index["snapshots"])
    with pytest.raises(LenetError, match="pass out="):
        lenet.train("fast", snapshots=True, root=fake_root, verify=False)


def test_a_relu_net_stuck_at_chance_gets_a_hint(fake_root, tmp_path, capsys):
    args = ["--recipe", "d2l", "--model-arg", "activation=relu", "--lr", "20", "--epochs", "2"]
    assert main(cli_args(fake_root, tmp_path / "run", *args)) == 0
    assert "\nhint: the loss diverged (nan); try a lower learning rate than 20.0" in capsys.readouterr().out


def test_a_run_cut_short_reports_its_throughput(fake_root):
    data = lenet.load_dataset("mnist", fake_root, verify=False)
    history = lenet.fit(plain_lenet(), data, lenet.resolve("d2l", lr=0.1), max_steps=2, progress=False)
    assert history.last["partial"] and history.examples_per_sec > 0  # what lenet bench reads


def test_a_stopped_adam_run_resumes_bit_identical(fake_root, tmp_path, capsys):
    args = ["--optimizer", "adam", "--lr", "0.001", "--epochs", "2", "--batch-size", "50", "--seed", "1"]
    assert main(cli_args(fake_root, tmp_path / "whole", *args)) == 0
    assert main(cli_args(fake_root, tmp_path / "cut", *args, "--max-steps", "17")) == 0
    assert main(["train", "--resume", str(tmp_path / "cut"), "--no-verify"]) == 0
    assert same_weights(tmp_path / "cut", tmp_path / "whole")
