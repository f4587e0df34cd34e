"""`lenet train`, `lenet eval` and `lenet predict` on generated data, through the CLI and the Python API."""

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import lenet
from lenet.cli import main
from lenet.config import RECIPES, resolve
from lenet.train.setup import lr_at

RUN_FILES = {"config.json", "metrics.csv", "curves.png", "model.safetensors", "checkpoint.pt", "summary.json"}


def last_json(text: str) -> dict:
    return json.loads(text.strip().splitlines()[-1])


def train_cli(root, out, *extra) -> list[str]:
    return ["train", "--root", str(root), "--no-verify", "--out", str(out), *extra]


@pytest.mark.parametrize("recipe", list(RECIPES))
def test_every_recipe_runs_two_steps_and_writes_its_run_folder(recipe, fake_root, tmp_path, capsys):
    out = tmp_path / recipe
    assert main(train_cli(fake_root, out, "--recipe", recipe, "--max-steps", "2", "--json")) == 0
    summary = last_json(capsys.readouterr().out)
    assert RUN_FILES <= {p.name for p in out.iterdir()}
    assert summary["steps"] == 2 and summary["recipe"] == recipe
    for key in ("test_acc", "train_acc", "train_loss", "examples_per_sec", "seconds", "device"):
        assert summary[key] is not None, key
    config = json.loads((out / "config.json").read_text())
    assert config == resolve(recipe).to_dict()
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert len(rows) == 1 and float(rows[0]["test_acc"]) == pytest.approx(summary["test_acc"])
    assert Image.open(out / "curves.png").size[0] > 100


def test_d2l_output_format(fake_root, tmp_path, capsys):
    args = train_cli(fake_root, tmp_path / "run", "--dataset", "mnist", "--epochs", "2", "--batch-size", "64")
    assert main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "training on cpu"
    epoch_lines = [line for line in lines if line.startswith("epoch ")]
    assert len(epoch_lines) == 2
    for n, line in enumerate(epoch_lines, start=1):
        # epoch 1, loss 2.3181, train acc 0.102, test acc 0.100, time 6.7 sec
        assert line.startswith(f"epoch {n}, loss ") and ", train acc 0." in line and line.endswith(" sec")
    assert any(line.startswith("loss ") and ", test acc " in line for line in lines)
    assert any(line.endswith("examples/sec on cpu") for line in lines)


def test_keras_and_community_formats(fake_root, tmp_path, capsys):
    assert main(train_cli(fake_root, tmp_path / "k", "--recipe", "keras", "--epochs", "1")) == 0
    out = capsys.readouterr().out
    assert "Epoch 1/1" in out and " - val_accuracy: " in out
    assert "7/7 - loss: " in out  # evaluate at Keras' batch 32: ceil(200 / 32) = 7 steps
    assert main(train_cli(fake_root, tmp_path / "c", "--recipe", "community", "--epochs", "1")) == 0
    out = capsys.readouterr().out
    assert "[1/1] Loss: " in out and "Finished Training" in out and "Test: Loss: " in out


def test_training_learns_and_is_repeatable(fake_root, tmp_path, capsys):
    args = ["--recipe", "fast", "--dataset", "mnist", "--epochs", "3", "--json"]
    assert main(train_cli(fake_root, tmp_path / "a", *args)) == 0
    first = last_json(capsys.readouterr().out)
    assert first["test_acc"] >= 0.9  # the generated classes are easy
    assert main(train_cli(fake_root, tmp_path / "b", *args)) == 0
    second = last_json(capsys.readouterr().out)
    assert (first["test_acc"], first["train_loss"]) == (second["test_acc"], second["train_loss"])
    a, b = (load_file(tmp_path / run / "model.safetensors") for run in ("a", "b"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_target_acc_sets_exit_status(fake_root, tmp_path, capsys):
    base = train_cli(fake_root, tmp_path / "t", "--dataset", "mnist", "--max-steps", "1")
    assert main([*base, "--target-acc", "1.0"]) == 1
    assert "below the target" in capsys.readouterr().err
    assert main([*base, "--target-acc", "0", "--overwrite"]) == 0


def test_overrides_reach_the_config(fake_root, tmp_path):
    args = ["--recipe", "d2l", "--model", "lenet5-tutorial", "--dataset", "kmnist", "--lr", "0.05",
            "--optimizer", "adam", "--batch-size", "32", "--seed", "7", "--max-steps", "1"]  # fmt: skip
    assert main(train_cli(fake_root, tmp_path / "o", *args)) == 0
    config = json.loads((tmp_path / "o" / "config.json").read_text())
    assert (config["model"], config["dataset"], config["lr"], config["optimizer"]) == (
        "lenet5-tutorial", "kmnist", 0.05, "adam",
    )  # fmt: skip
    assert (config["batch_size"], config["seed"]) == (32, 7)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--recipe", "nope"], "invalid choice: 'nope'"),
        (["--model", "lenet9"], "unknown model 'lenet9'"),
        (["--lr", "-1"], "must be > 0"),
        (["--batch-size", "0"], "must be >= 1"),
        (["--epochs", "two"], "not a valid int"),
        (["--device", "tpu"], "unknown device 'tpu'"),
        (["--device", "cuda"], "CUDA is not available"),
    ],
)
def test_bad_flags_are_one_line_and_exit_2(args, message, fake_root, tmp_path, capsys):
    if "cuda" in args and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(SystemExit) as e:
        status = main(train_cli(fake_root, tmp_path / "x", *args))
        raise SystemExit(status)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_missing_data_says_how_to_download(tmp_path, capsys):
    assert main(["train", "--root", str(tmp_path), "--out", str(tmp_path / "r"), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "run: lenet data download fashion-mnist --root" in err and len(err.strip().splitlines()) == 1


def test_tensorboard_event_files(fake_root, tmp_path):
    assert main(train_cli(fake_root, tmp_path / "tb", "--dataset", "mnist", "--max-steps", "2", "--tensorboard")) == 0
    assert list((tmp_path / "tb" / "tensorboard").glob("events.out.tfevents.*"))


@pytest.fixture(scope="module")
def trained_run(fake_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "fast"
    assert main(train_cli(fake_root, out, "--recipe", "fast", "--dataset", "mnist", "--epochs", "2")) == 0
    return out


def test_eval_rebuilds_the_model_from_the_run_folder(trained_run, fake_root, capsys):
    summary = json.loads((trained_run / "summary.json").read_text())
    for target in (trained_run, trained_run / "model.safetensors", trained_run / "checkpoint.pt"):
        assert main(["eval", str(target), "--root", str(fake_root), "--no-verify", "--json"]) == 0
        result = last_json(capsys.readouterr().out)
        assert result["test_acc"] == pytest.approx(summary["test_acc"])
        assert sum(map(sum, result["confusion"])) == 200 and set(result["per_class_acc"]) == set("0123456789")
    assert (trained_run / "confusion-mnist-test.png").is_file()
    assert (trained_run / "misclassified-mnist-test.png").is_file()
    assert main(["eval", str(trained_run), "--root", str(fake_root), "--no-verify", "--split", "train"]) == 0
    assert "mnist train (600 images)" in capsys.readouterr().out


def test_eval_of_a_missing_run_is_one_line(tmp_path, capsys):
    assert main(["eval", str(tmp_path / "nothing")]) == 2
    assert "no such run folder" in capsys.readouterr().err


def test_predict_prints_class_and_probability(trained_run, tmp_path, capsys):
    digit = np.full((280, 200), 255, np.uint8)  # a dark stroke on white paper, as a user would draw
    digit[40:240, 90:110] = 0
    Image.fromarray(digit).save(tmp_path / "one.png")
    Image.fromarray(digit).convert("RGB").save(tmp_path / "one.jpg")
    (tmp_path / "notes.png").write_text("not an image")
    files = [str(tmp_path / "one.png"), str(tmp_path / "one.jpg"), str(tmp_path / "notes.png")]
    assert main(["predict", str(trained_run), *files, "--json", "--top", "3"]) == 2  # one bad file
    captured = capsys.readouterr()
    rows = [json.loads(line) for line in captured.out.splitlines()]
    assert [r["file"] for r in rows] == files[:2]
    for r in rows:
        assert 0 <= r["class"] <= 9 and r["label"] == str(r["class"]) and 0 < r["probability"] <= 1
        assert len(r["top"]) == 3 and r["top"][0]["probability"] >= r["top"][1]["probability"]
    assert rows[0]["class"] == rows[1]["class"]
    assert "notes.png: not an image in a format Pillow reads" in captured.err


def test_python_api_returns_model_and_history(fake_root, monkeypatch):
    cfg = resolve("fast", dataset="mnist", epochs=1)
    data = lenet.load_dataset("mnist", fake_root, scaling=cfg.scaling, verify=False)
    model, history = lenet.train(cfg, data=data, device="cpu")
    assert len(history.epochs) == 1 and history.examples_per_sec > 0
    metrics = lenet.evaluate(model, data)
    assert metrics["acc"] == pytest.approx(history.last["test_acc"])


def test_schedules():
    cfg = resolve("fast")
    lrs = [lr_at(cfg, s, 100, 0) for s in range(100)]
    assert lrs[0] == pytest.approx(cfg.lr * 0.1) and max(lrs) == pytest.approx(cfg.lr, rel=0.05)
    assert lrs[-1] < 0.02 * cfg.lr
    assert lr_at(resolve("d2l"), 57, 100, 3) == 0.9
    piecewise = resolve("d2l", schedule="piecewise", lr_factors=[1.0, 0.5], lr=0.4)
    assert [lr_at(piecewise, 0, 10, e) for e in range(4)] == [0.4, 0.2, 0.2, 0.2]
    lecun = resolve("lecun98")
    etas = [lr_at(lecun, 0, 1, e) for e in range(20)]
    assert etas[:2] == [5e-4] * 2 and etas[2:5] == pytest.approx([2e-4] * 3) and etas[-1] == pytest.approx(1e-5)
