"""Run folders and checkpoints: atomic writes, and loading that never executes code from a file.

A run folder holds config.json (the resolved recipe), run.json (where its data came from), metrics.csv,
curves.png, model.safetensors (the unwrapped model's weights, with the model name and config in its metadata,
so it describes itself), checkpoint.pt (everything needed to resume, read with torch.load(weights_only=True))
and summary.json.

checkpoint.pt is the run's commit point: it is replaced first, and model.safetensors and metrics.csv are
derived from it. A process that dies between the renames leaves them one epoch behind; a resume brings
them up to date from checkpoint.pt, so they always end consistent.
"""

from __future__ import annotations

import csv
import io
import json
import os
import pickle
import re
import shutil
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save
from torch import nn

from ..config import Config, validate
from ..errors import LenetError
from .dist import unwrap
from .setup import build_model
from .state import TrainState

CONFIG, RUN_INFO, METRICS, WEIGHTS, CHECKPOINT, SUMMARY = (
    "config.json", "run.json", "metrics.csv", "model.safetensors", "checkpoint.pt", "summary.json",
)  # fmt: skip
# What a run writes into its folder (`--overwrite` removes these, and only these): its own files, the
# figures and exports derived from it, its snapshots and TensorBoard events.
RUN_FILES = (CONFIG, RUN_INFO, METRICS, WEIGHTS, CHECKPOINT, SUMMARY, "curves.png", "model.onnx",
             "model.torchscript.pt")  # fmt: skip
RUN_PATTERNS = ("confusion-*.png", "misclassified-*.png", ".*.tmp")
RUN_FOLDERS = ("snapshots", "tensorboard", "web")


def atomic_write(path: Path, write: Callable[[io.BufferedWriter], None]) -> None:
    """Write `path` through a temporary file in the same folder, fsync, then rename over the old file.

    Until the rename the previous file stays complete; a crash or a full disk leaves it untouched.
    """
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise LenetError(f"{path}: cannot write ({e.strerror})") from None
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes it private; a run's files are as open as any other
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise LenetError(f"{path}: cannot write ({e.strerror or e}); the previous file is intact") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes_atomic(path: Path, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))


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

    def holds_run(self) -> bool:
        """Whether the folder already holds (part of) a run."""
        return any((self.path / name).exists() for name in (CONFIG, CHECKPOINT, WEIGHTS))

    def clear(self) -> None:
        """Remove a previous run's files (and nothing else the folder holds)."""
        try:
            for name in RUN_FILES:
                (self.path / name).unlink(missing_ok=True)
            for pattern in RUN_PATTERNS:
                for path in self.path.glob(pattern):
                    path.unlink()
            for name in RUN_FOLDERS:
                if (self.path / name).is_dir():
                    shutil.rmtree(self.path / name)
        except OSError as e:
            raise LenetError(f"{self.path}: cannot clear the previous run ({e.strerror or e})") from None

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
        """checkpoint.pt (to resume), then what derives from it: model.safetensors and metrics.csv."""
        payload = {
            "model": {k: v.detach().cpu() for k, v in unwrap(model).state_dict().items()},
            "optimizer": optimizer.state_dict(),
            **state.to_dict(),
            "config": cfg.to_dict(),
        }
        buf = io.BytesIO()  # serialised first, so that writing is the only step that can fail part-way
        torch.save(payload, buf)
        write_bytes_atomic(self.path / CHECKPOINT, buf.getvalue())
        self.save_weights(model, cfg, {"epoch": state.epoch, "step": state.step})
        self.write_metrics(state.history.epochs)

    def catch_up(self, ckpt: dict, model: nn.Module, cfg: Config) -> None:
        """Bring model.safetensors and metrics.csv up to checkpoint.pt (a crash may come between them)."""
        for stale in self.path.glob(".*.tmp"):  # a write that a crash cut short
            stale.unlink(missing_ok=True)
        try:
            with safe_open(str(self.path / WEIGHTS), framework="pt") as f:
                step = (f.metadata() or {}).get("step")
        except (SafetensorError, OSError):
            step = None
        if step != str(ckpt["step"]):
            self.save_weights(model, cfg, {"epoch": ckpt["epoch"], "step": ckpt["step"]})
        self.write_metrics(ckpt["history"]["epochs"])


def _reason(e: Exception) -> str:
    """The first telling line of an error (load_state_dict's first line only says that it failed)."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith("Error(s) in loading state_dict")] or [""]
    return lines[0][:200]


def load_checkpoint(path: str | os.PathLike) -> dict:
    """A checkpoint.pt's contents. Only plain data and tensors load: a pickle that runs code is refused."""
    path = Path(path)
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols on its way to refusing a file
            warnings.simplefilter("ignore")
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise LenetError(f"{path}: no such checkpoint") from None
    except pickle.UnpicklingError as e:
        found = re.search(r"WeightsUnpickler error:\s*([^\n]+?)(\. |$)", str(e), re.MULTILINE)
        reason = found.group(1) if found else str(e).strip().splitlines()[0]
        raise LenetError(f"{path}: refused: it holds more than plain data and tensors ({reason})") from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise LenetError(f"{path}: not a readable checkpoint ({_reason(e) or 'empty or cut short'})") from None
    if not isinstance(ckpt, dict) or not {"model", "config"} <= ckpt.keys():
        raise LenetError(f"{path}: not a lenet checkpoint")
    return ckpt


def load_resume(folder: str | os.PathLike) -> tuple[Config, dict | None]:
    """A run folder's config and its latest checkpoint (None when the run stopped before its first one)."""
    folder = Path(folder)
    if (folder / CHECKPOINT).is_file():
        ckpt = load_checkpoint(folder / CHECKPOINT)
        return _config(ckpt["config"], folder / CHECKPOINT), ckpt
    if (folder / CONFIG).is_file():
        try:
            return _config(json.loads((folder / CONFIG).read_text()), folder / CONFIG), None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise LenetError(f"{folder / CONFIG}: unreadable ({e})") from None
    raise LenetError(f"{folder}: no {CHECKPOINT} or {CONFIG} here; is it a lenet run folder?")


def _config(d, source: Path) -> Config:
    try:
        return validate(Config.from_dict(d))
    except (TypeError, AttributeError) as e:
        raise LenetError(f"{source}: not a lenet config ({e})") from None


def restore(ckpt: dict, model: nn.Module, optimizer: torch.optim.Optimizer, device: torch.device) -> TrainState:
    """Load a checkpoint into `model` and `optimizer`; the TrainState to resume from."""
    try:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        state = TrainState.from_dict(ckpt)
        # Fail here, in one line, rather than in the middle of fit, on states from another kind of device.
        torch.Generator(device).set_state(state.data_rng_state)
        torch.Generator().set_state(state.torch_rng_state)
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        name = ckpt["config"].get("model") if isinstance(ckpt["config"], dict) else "?"
        reason = _reason(e) or e.__class__.__name__
        raise LenetError(f"{CHECKPOINT} does not fit model {name!r} on {device.type} ({reason})") from None
    return state


def _read_weights(path: Path) -> tuple[dict, dict]:
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
        return load_file(str(path)), metadata
    except (SafetensorError, OSError, ValueError) as e:
        raise LenetError(f"{path}: not a readable safetensors file ({e})") from None


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff")


def _weights_file(path: Path) -> tuple[Path, Path]:
    """(run folder, weights file) of what the user named: a run folder, a model.safetensors or a checkpoint.pt."""
    if path.is_dir():
        if not (path / WEIGHTS).is_file():
            raise LenetError(f"{path}: no {WEIGHTS} in this folder; is it a lenet run folder?")
        return path, path / WEIGHTS
    if not path.is_file():
        raise LenetError(f"{path}: no such run folder or checkpoint")
    if path.suffix.lower() in IMAGE_SUFFIXES:
        raise LenetError(f"{path} is an image, not a run; the run comes first: lenet predict RUN IMAGE...")
    if path.suffix not in (".safetensors", ".pt"):
        raise LenetError(f"{path}: not a run folder, a {WEIGHTS} or a {CHECKPOINT}")
    return path.parent, path


def read_json(path: Path) -> dict:
    """A small JSON file of a run's ({} when it is missing or unreadable: these files are informative)."""
    try:
        value = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return value if isinstance(value, dict) else {}


def load_run(
    path: str | os.PathLike, device: str | torch.device = "cpu", model: nn.Module | None = None
) -> tuple[nn.Module, Config, dict]:
    """A trained model from a run folder, a model.safetensors or a checkpoint.pt: (model, config, info).

    `model`, when given, receives the weights (a module of the user's own must be given this way unless its
    class can be imported and built without arguments). `info` holds the run's summary.json when there is
    one (test accuracy and the like) and `data_root`, the data the run was trained on (None when unknown).
    """
    folder, weights_path = _weights_file(Path(path))
    if weights_path.suffix == ".pt":
        ckpt = load_checkpoint(weights_path)
        state, cfg_dict = ckpt["model"], ckpt["config"]
    else:
        state, metadata = _read_weights(weights_path)
        if "config" not in metadata:
            raise LenetError(f"{weights_path}: no lenet config in its metadata; was it written by lenet?")
        cfg_dict = json.loads(metadata["config"])
    cfg = _config(cfg_dict, weights_path)
    if model is None:
        model = build_model(cfg, initialise=False)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        name = cfg.model if cfg.model != "module" else cfg.model_kwargs.get("qualname", "your model")
        raise LenetError(f"{weights_path}: weights do not fit model {name!r} ({_reason(e)})") from None
    # a run's summary, or the model card beside published weights (lenet/models/pretrained/NAME.json)
    info = read_json(folder / SUMMARY) or read_json(weights_path.with_suffix(".json"))
    info["data_root"] = read_json(folder / RUN_INFO).get("data_root")
    return model.to(device).eval(), cfg, info
