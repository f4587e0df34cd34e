"""Weights kept along a training run (`lenet train --snapshots`), so the drawing page can replay the learning.

RUN/snapshots/ holds one safetensors file per kept moment, named by the optimiser step, and index.json,
the list the page's slider reads. Kept: a few early steps of the first epoch (the sigmoid nets change most
there: at step 0 every digit reads alike, by step 200 the shapes are there) and the end of every epoch.
Each file is a whole model file, with the model name and config in its metadata as model.safetensors has
them, so `lenet predict RUN/snapshots/step-0000050.safetensors img.png` works too.

A LeNet's weights are ~250 KB, so a 10-epoch run keeps ~4 MB. Files are written atomically and named by
step: a resumed run that redoes a step rewrites the same file with the same weights, and the index is
rebuilt from what is on disk.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save
from torch import nn

from ..config import Config
from ..errors import LenetError
from .checkpoint import write_bytes_atomic
from .dist import unwrap

FOLDER, INDEX = "snapshots", "index.json"
EARLY_STEPS = (0, 10, 50, 100, 200, 500, 1000, 5000)  # kept when inside the first epoch
NAME = re.compile(r"step-(\d{7})\.safetensors")


def snapshot_name(step: int) -> str:
    return f"step-{step:07d}.safetensors"


class SnapshotWriter:
    """Keeps the model's weights at the early steps of the first epoch and after every finished epoch."""

    def __init__(self, run_dir: Path, steps_per_epoch: int, epochs: int):
        self.folder = Path(run_dir) / FOLDER
        self.steps_per_epoch, self.epochs = max(1, int(steps_per_epoch)), int(epochs)
        self.early = {s for s in EARLY_STEPS if s < self.steps_per_epoch}
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise LenetError(f"{self.folder}: cannot create the snapshot folder ({e.strerror})") from None
        # What a previous (resumed) run kept, so that the index keeps its epochs' records.
        self.entries = {entry["step"]: entry for entry in list_snapshots(run_dir)}

    def after_step(self, model: nn.Module, cfg: Config, step: int) -> None:
        """Called with step 0 before training and after every optimiser step; keeps the early ones."""
        if step in self.early and _main_rank():
            self._keep(model, cfg, step, {"kind": "step", "epoch": step / self.steps_per_epoch})

    def after_epoch(self, model: nn.Module, cfg: Config, record: dict) -> None:
        """Called after each finished epoch with its record (epoch, steps, train_loss, test_acc, ...)."""
        if record.get("partial") or not _main_rank():
            return  # a stopped epoch: its resume writes the finished one
        entry = {"kind": "epoch", "epoch": int(record["epoch"])}
        for key in ("train_loss", "train_acc", "val_acc", "test_acc"):
            if isinstance(record.get(key), int | float):
                entry[key] = float(record[key])
        self._keep(model, cfg, int(record["steps"]), entry)

    def _keep(self, model: nn.Module, cfg: Config, step: int, entry: dict) -> None:
        state = {k: v.detach().cpu().contiguous() for k, v in unwrap(model).state_dict().items()}
        metadata = {"model": cfg.model, "config": json.dumps(cfg.to_dict()), "step": str(step)}
        metadata["epoch"] = str(entry["epoch"])
        write_bytes_atomic(self.folder / snapshot_name(step), save(state, metadata=metadata))
        previous = self.entries.get(step, {})
        if previous.get("kind") == "epoch" and entry["kind"] == "step":
            entry = previous  # an epoch's end that is also an early step keeps its epoch record
        self.entries[step] = {"file": snapshot_name(step), "step": step, **entry}
        index = {"steps_per_epoch": self.steps_per_epoch, "epochs": self.epochs,
                 "snapshots": [self.entries[s] for s in sorted(self.entries)]}  # fmt: skip
        write_bytes_atomic(self.folder / INDEX, (json.dumps(index, indent=1) + "\n").encode())


def _main_rank() -> bool:
    return not (torch.distributed.is_available() and torch.distributed.is_initialized()) or (
        torch.distributed.get_rank() == 0
    )


def list_snapshots(run: str | os.PathLike) -> list[dict]:
    """The kept snapshots of a run folder (or of the folder of its model file), by step; [] when none.

    Entries whose file is gone are dropped; files the index does not know (a crash between a file and the
    index) are listed from their own metadata.
    """
    run = Path(run)
    folder = (run.parent if run.is_file() else run) / FOLDER
    if not folder.is_dir():
        return []
    try:
        listed = json.loads((folder / INDEX).read_text()).get("snapshots", [])
    except (OSError, ValueError, AttributeError):
        listed = []
    entries = {}
    for entry in listed:
        if isinstance(entry, dict) and NAME.fullmatch(str(entry.get("file"))) and (folder / entry["file"]).is_file():
            entries[int(entry["step"])] = entry
    for path in folder.glob("step-*.safetensors"):
        match = NAME.fullmatch(path.name)
        if match and int(match.group(1)) not in entries:
            entries[int(match.group(1))] = _entry_from_file(path, int(match.group(1)))
    return [entries[s] for s in sorted(entries)]


def _entry_from_file(path: Path, step: int) -> dict:
    try:
        with safe_open(str(path), framework="pt") as f:
            epoch = float((f.metadata() or {}).get("epoch", "nan"))
    except (SafetensorError, OSError, ValueError):
        epoch = float("nan")
    return {"file": path.name, "step": step, "kind": "step", "epoch": epoch if epoch == epoch else None}


def snapshot_path(run: str | os.PathLike, name: str) -> Path:
    """The file of snapshot `name` (as listed), refusing names that are not snapshot files of this run."""
    run = Path(run)
    path = (run if run.is_dir() else run.parent) / FOLDER / name
    if not NAME.fullmatch(name) or not path.is_file():
        raise LenetError(f"{name}: no such snapshot in {path.parent}")
    return path
