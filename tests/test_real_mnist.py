"""Checks on the real MNIST ($LENET_DATA; CI sets it and makes a missing copy a failure, not a skip)."""

import json

import numpy as np
import pytest
from PIL import Image

from lenet.cli import main
from lenet.data import load_raw

TRAIN_CLASS_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


def last_json(text: str) -> dict:
    return json.loads(text.strip().splitlines()[-1])


def test_verify_reports_counts_balance_and_official_checksums(real_root, capsys):
    assert main(["data", "verify", "mnist", "--root", str(real_root), "--json"]) == 0
    report = last_json(capsys.readouterr().out)
    assert report["official"]
    assert all(f["checksum"] in ("archive", "payload") for f in report["files"])
    train, test = report["splits"]["train"], report["splits"]["test"]
    assert (train["images"], train["labels"], test["images"], test["labels"]) == (
        60_000,
        60_000,
        10_000,
        10_000,
    )
    assert train["image_shape"] == [28, 28]
    assert train["class_counts"] == TRAIN_CLASS_COUNTS
    assert sum(test["class_counts"]) == 10_000


@pytest.fixture(scope="module")
def fast_run(real_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("real") / "fast"
    args = [
        "train",
        "--recipe",
        "fast",
        "--epochs",
        "1",
        "--root",
        str(real_root),
        "--out",
        str(out),
        "--json",
    ]
    assert main(args) == 0
    return out


def test_fast_recipe_one_epoch_reaches_98_percent(fast_run):
    summary = json.loads((fast_run / "summary.json").read_text())
    assert summary["dataset"] == "mnist" and summary["epochs"] == 1
    assert summary["test_acc"] >= 0.98


def test_eval_gives_the_training_accuracy(fast_run, real_root, capsys):
    assert main(["eval", str(fast_run), "--root", str(real_root), "--json"]) == 0
    result = last_json(capsys.readouterr().out)
    summary = json.loads((fast_run / "summary.json").read_text())
    assert result["test_acc"] == pytest.approx(summary["test_acc"], abs=1e-9)


def test_predict_reads_real_digits_drawn_like_a_user(fast_run, real_root, tmp_path, capsys):
    """MNIST test digits as a user would hand them in: dark ink on white paper, large, off-centre."""
    images, labels = load_raw("mnist", "test", real_root)
    rng = np.random.default_rng(0)
    picks = rng.choice(len(labels), 30, replace=False)
    files = []
    for k in picks:
        big = Image.fromarray(images[k]).resize((112, 112), Image.Resampling.BICUBIC)
        paper = Image.new("L", (300, 220), 255)
        paper.paste(Image.fromarray(255 - np.asarray(big)), (int(rng.integers(0, 180)), int(rng.integers(0, 100))))
        files.append(str(tmp_path / f"{k}.png"))
        paper.save(files[-1])
    assert main(["predict", str(fast_run), *files, "--json"]) == 0
    predicted = [last_json(line)["class"] for line in capsys.readouterr().out.splitlines()]
    correct = sum(int(p == labels[k]) for p, k in zip(predicted, picks, strict=True))
    assert correct >= 27, f"{correct}/30 real digits read correctly"


def test_keras_recipe_learns_from_raw_pixels(real_root, tmp_path):
    """Seed 002 feeds 0..255 pixels to sigmoids at lr 0.9: far out in their tails, where NaN once crept in."""
    out = tmp_path / "keras"
    args = ["train", "--recipe", "keras", "--dataset", "mnist", "--epochs", "1", "--root", str(real_root)]
    assert main([*args, "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert np.isfinite(summary["train_loss"]) and summary["test_acc"] >= 0.8
