"""Run folders and checkpoints: atomic writes, and loading that never executes code from a file.

A run folder holds config.json (the resolved recipe), metrics.csv, curves.png, model.safetensors (the
unwrapped model's weights, with the model name and config in its metadata, so it describes itself),
checkpoint.pt (everything needed to resume, read with torch.load(weights_only=True)) and summary.json.
"""

from __future__ import annotations

import csv
import io
import json
import os
import pickle
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save
from torch import nn

from .errors import LenetError
from .recipes import Config
from .train import build_model

CONFIG, METRICS, WEIGHTS, CHECKPOINT, SUMMARY = (
    "config.json", "metrics.csv", "model.safetensors", "checkpoint.pt", "summary.json",
)  # fmt: skip


def atomic_write(path: Path, write: Callable[[io.BufferedWriter], None]) -> None:
    """Write `path` through a temporary file in the same folder, fsync, then rename over the old file.

    Until the rename the previous file stays complete; a crash or a full disk leaves it untouched.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: Path, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside a DDP or torch.compile wrapper, whose state-dict keys carry no prefix."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, nn.Module):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


class RunDir:
    """A run's output folder."""

    def __init__(self, path: str | os.PathLike, create: bool = True):
        self.path = Path(path)
        if create:
            try:
                self.path.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise LenetError(f"{self.path}: cannot create the run folder ({e.strerror})") from None
            if not os.access(self.path, os.W_OK):
                raise LenetError(f"{self.path}: run folder is not writable")

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def write_json(self, name: str, obj) -> None:
        write_bytes_atomic(self.path / name, (json.dumps(obj, indent=2) + "\n").encode())

    def write_metrics(self, epochs: list[dict]) -> None:
        """metrics.csv: one row per epoch, every key any record has."""
        keys: list[str] = []
        for record in epochs:
            keys += [k for k in record if k not in keys]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=keys)
        writer.writeheader()
        writer.writerows(epochs)
        write_bytes_atomic(self.path / METRICS, buf.getvalue().encode())

    def save_weights(self, model: nn.Module, cfg: Config, extra: dict | None = None) -> None:
        state = {k: v.detach().cpu().contiguous() for k, v in unwrap(model).state_dict().items()}
        metadata = {"model": cfg.model, "config": json.dumps(cfg.to_dict())}
        metadata.update({k: str(v) for k, v in (extra or {}).items()})
        write_bytes_atomic(self.path / WEIGHTS, save(state, metadata=metadata))

    def save_checkpoint(self, model: nn.Module, optimizer: torch.optim.Optimizer, state, cfg: Config) -> None:
        """checkpoint.pt (to resume) then model.safetensors (to use); each file is replaced atomically."""
        payload = {
            "model": {k: v.detach().cpu() for k, v in unwrap(model).state_dict().items()},
            "optimizer": optimizer.state_dict(),
            "epoch": state.epoch,
            "step": state.step,
            "history": state.history.state_dict(),
            "data_rng_state": state.data_rng_state,
            "torch_rng_state": state.torch_rng_state,
            "config": cfg.to_dict(),
        }
        atomic_write(self.path / CHECKPOINT, lambda f: torch.save(payload, f))
        self.save_weights(model, cfg, {"epoch": state.epoch, "step": state.step})


def load_checkpoint(path: str | os.PathLike) -> dict:
    """A checkpoint.pt's contents. Only plain data and tensors load: a pickle that would run code is refused."""
    path = Path(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise LenetError(f"{path}: no such checkpoint") from None
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else e.__class__.__name__
        raise LenetError(f"{path}: refused to load checkpoint (not plain weights/data: {first})") from None


def _read_weights(path: Path) -> tuple[dict, dict]:
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
        return load_file(str(path)), metadata
    except (SafetensorError, OSError, ValueError) as e:
        raise LenetError(f"{path}: not a readable safetensors file ({e})") from None


def load_run(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[nn.Module, Config, dict]:
    """Rebuild a trained model from a run folder, a model.safetensors or a checkpoint.pt: (model, config, info).

    `info` holds the run's summary.json when there is one (test accuracy and the like).
    """
    path = Path(path)
    if path.is_dir():
        folder = path
        weights_path = path / WEIGHTS
        if not weights_path.is_file():
            raise LenetError(f"{path}: no {WEIGHTS} in this folder; is it a lenet run folder?")
    elif path.is_file():
        folder, weights_path = path.parent, path
    else:
        raise LenetError(f"{path}: no such run folder or checkpoint")

    if weights_path.suffix == ".pt":
        ckpt = load_checkpoint(weights_path)
        if not isinstance(ckpt, dict) or "model" not in ckpt or "config" not in ckpt:
            raise LenetError(f"{weights_path}: not a lenet checkpoint")
        state, cfg_dict = ckpt["model"], ckpt["config"]
    else:
        state, metadata = _read_weights(weights_path)
        if "config" not in metadata:
            raise LenetError(f"{weights_path}: no lenet config in its metadata; was it written by lenet?")
        cfg_dict = json.loads(metadata["config"])
    cfg = Config.from_dict(cfg_dict)
    model = build_model(cfg, initialise=False)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise LenetError(f"{weights_path}: weights do not fit model {cfg.model!r} ({first})") from None
    info = {}
    if (folder / SUMMARY).is_file():
        try:
            info = json.loads((folder / SUMMARY).read_text())
        except (OSError, json.JSONDecodeError):
            info = {}
    return model.to(device).eval(), cfg, info
