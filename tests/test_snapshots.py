"""Snapshots (`lenet train --snapshots`): the weights at a few early steps and after every epoch, for the page."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open

from lenet.config import resolve
from lenet.errors import LenetError
from lenet.infer.predict import Predictor
from lenet.models import create_model
from lenet.train.snapshots import SnapshotWriter, list_snapshots, snapshot_name, snapshot_path


def train(run, steps_per_epoch: int, epochs: int, seed: int = 0, writer=None, stop_at: int | None = None):
    """A tiny loop calling the writer as `lenet train` does; returns the weights at every step."""
    torch.manual_seed(seed)
    model, cfg = create_model("lenet5-d2l"), resolve("d2l", dataset="mnist")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    x, y = torch.rand(4, 1, 28, 28), torch.randint(0, 10, (4,))
    writer = writer or SnapshotWriter(run, steps_per_epoch, epochs)
    kept = {0: {k: v.clone() for k, v in model.state_dict().items()}}
    writer.after_step(model, cfg, 0)
    step = 0
    for epoch in range(epochs):
        for _ in range(steps_per_epoch):
            optimizer.zero_grad()
            F.cross_entropy(model(x), y).backward()
            optimizer.step()
            step += 1
            writer.after_step(model, cfg, step)
            kept[step] = {k: v.clone() for k, v in model.state_dict().items()}
            if step == stop_at:
                writer.after_epoch(model, cfg, {"epoch": epoch + 1, "steps": step, "partial": True})
                return kept
        record = {"epoch": epoch + 1, "steps": step, "train_loss": 2.0 - epoch, "test_acc": 0.1 * (epoch + 1)}
        writer.after_epoch(model, cfg, record)
    return kept


def test_early_steps_and_every_epoch_are_kept(tmp_path):
    kept = train(tmp_path, steps_per_epoch=60, epochs=2)
    entries = list_snapshots(tmp_path)
    assert [(e["step"], e["kind"]) for e in entries] == [
        (0, "step"), (10, "step"), (50, "step"), (60, "epoch"), (120, "epoch"),
    ]  # fmt: skip
    assert entries[2]["epoch"] == pytest.approx(50 / 60) and entries[3]["epoch"] == 1
    assert entries[4]["test_acc"] == pytest.approx(0.2) and entries[4]["train_loss"] == pytest.approx(1.0)
    index = json.loads((tmp_path / "snapshots" / "index.json").read_text())
    assert index["steps_per_epoch"] == 60 and index["snapshots"] == entries
    for entry in entries:
        path = snapshot_path(tmp_path, entry["file"])
        assert path.stat().st_size < 300_000  # a LeNet's weights, nothing else
        predictor = Predictor.from_run(path)  # each snapshot is a whole model file
        assert predictor.config.model == "lenet5-d2l"
        for name, tensor in predictor.model.state_dict().items():
            assert torch.equal(tensor, kept[entry["step"]][name]), (entry["step"], name)


def test_steps_kept_depend_on_the_epoch_length(tmp_path):
    model, cfg = create_model("lenet5-d2l"), resolve("d2l", dataset="mnist")
    for steps_per_epoch, epochs, expected in ((10, 3, [0, 10, 20, 30]), (250, 1, [0, 10, 50, 100, 200, 250])):
        run = tmp_path / str(steps_per_epoch)
        writer = SnapshotWriter(run, steps_per_epoch, epochs)
        for step in range(steps_per_epoch * epochs + 1):
            writer.after_step(model, cfg, step)
            if step and step % steps_per_epoch == 0:
                writer.after_epoch(model, cfg, {"epoch": step // steps_per_epoch, "steps": step})
        assert [e["step"] for e in list_snapshots(run)] == expected


def test_a_resumed_run_rewrites_the_same_snapshots(tmp_path):
    """A run stopped in epoch 2 and resumed from its epoch-1 checkpoint redoes steps 13..: the same snapshots."""
    whole = tmp_path / "whole"
    train(whole, steps_per_epoch=12, epochs=2)
    resumed = tmp_path / "resumed"
    train(resumed, steps_per_epoch=12, epochs=2, stop_at=15)  # the partial epoch keeps nothing
    assert [e["step"] for e in list_snapshots(resumed)] == [0, 10, 12]
    train(resumed, steps_per_epoch=12, epochs=2, writer=SnapshotWriter(resumed, 12, 2))  # replayed from the start
    assert list_snapshots(resumed) == list_snapshots(whole)
    for entry in list_snapshots(whole):
        with safe_open(str(snapshot_path(whole, entry["file"])), "pt") as a:
            with safe_open(str(snapshot_path(resumed, entry["file"])), "pt") as b:
                assert a.metadata() == b.metadata() and set(a.keys()) == set(b.keys())
                for name in a.keys():
                    assert torch.equal(a.get_tensor(name), b.get_tensor(name)), (entry["step"], name)
    assert not list((resumed / "snapshots").glob(".*.tmp"))


def test_the_listing_follows_the_files(tmp_path):
    train(tmp_path, steps_per_epoch=60, epochs=1)
    folder = tmp_path / "snapshots"
    (folder / snapshot_name(10)).unlink()  # gone: dropped from the list
    shutil.copyfile(folder / snapshot_name(50), folder / snapshot_name(55))  # on disk, not in the index
    (folder / "notes.safetensors").write_bytes(b"x")  # not a snapshot's name: ignored
    entries = list_snapshots(tmp_path)
    assert [e["step"] for e in entries] == [0, 50, 55, 60]
    assert entries[2]["kind"] == "step" and entries[2]["epoch"] == pytest.approx(50 / 60)  # from its metadata
    (folder / "index.json").write_text("{not json")
    assert [e["step"] for e in list_snapshots(tmp_path)] == [0, 50, 55, 60]
    assert list_snapshots(tmp_path / "nowhere") == []


def test_snapshot_names_are_checked(tmp_path):
    train(tmp_path, steps_per_epoch=10, epochs=1)
    assert snapshot_path(tmp_path, snapshot_name(10)).is_file()
    for bad in ("../model.safetensors", "index.json", snapshot_name(5), "step-10.safetensors"):
        with pytest.raises(LenetError, match="no such snapshot"):
            snapshot_path(tmp_path, bad)
