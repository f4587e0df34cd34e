"""Export a trained model for deployment: ONNX (one self-contained file) or TorchScript.

The exported graph is the network alone: float input (batch, 1, S, S), already scaled as in training, and
logits out. How to scale the input (the dataset, its scaling, mean and std) and the class names travel in
the file's metadata (ONNX metadata_props / a TorchScript extra file), under the key "lenet".
"""

from __future__ import annotations

import io
import json
import logging
import os
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..config import Config, input_size
from ..data import get_dataset_info
from ..errors import LenetError
from ..train.checkpoint import load_run, write_bytes_atomic
from ..train.run import Run

FORMATS = {"onnx": ".onnx", "torchscript": ".torchscript.pt"}  # format -> file suffix
METADATA_KEY = "lenet"
TORCHSCRIPT_EXTRA = "lenet.json"


def describe(cfg: Config) -> dict:
    """What a deployment needs besides the graph: how the input was scaled and what the outputs mean."""
    info = get_dataset_info(cfg.dataset)
    return {
        "model": cfg.model, "dataset": cfg.dataset, "classes": list(info.classes),
        "input_size": input_size(cfg), "scaling": cfg.scaling, "mean": info.mean, "std": info.std,
        "resize": cfg.resize, "output": "logits",
    }  # fmt: skip


def export_onnx(model: nn.Module, size: int, path: Path, metadata: dict | None = None) -> Path:
    """Write `model` as one ONNX file (weights inside) with a dynamic batch dimension; onnx.checker passes."""
    try:
        import onnx
        import onnxscript  # noqa: F401  (the exporter needs it)
    except ModuleNotFoundError as e:
        raise LenetError(f"ONNX export needs the {e.name} package: pip install 'lenet[onnx]'") from None
    example = torch.zeros(2, 1, size, size)
    exporter_log = logging.getLogger("torch.onnx")
    level = exporter_log.level
    try:
        # The exporter's chatter (torchvision absent, torch-internal deprecations) is not for the user.
        exporter_log.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            program = torch.onnx.export(
                model.eval(), (example,), dynamo=True, verbose=False, input_names=["input"],
                output_names=["logits"], dynamic_shapes=({0: torch.export.Dim("batch")},),
            )  # fmt: skip
    finally:
        exporter_log.setLevel(level)
    if metadata:
        program.model.metadata_props[METADATA_KEY] = json.dumps(metadata)
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp) / path.name
        program.save(staged, external_data=False)
        onnx.checker.check_model(staged, full_check=True)
        write_bytes_atomic(path, staged.read_bytes())
    return path


def export_torchscript(model: nn.Module, size: int, path: Path, metadata: dict | None = None) -> Path:
    """Write `model` traced to TorchScript (loadable by torch.jit.load and C++ libtorch), any batch size."""
    example = torch.zeros(2, 1, size, size)
    with warnings.catch_warnings():
        # torch.jit is deprecated in favour of torch.export, but TorchScript is still what libtorch loads.
        warnings.simplefilter("ignore", DeprecationWarning)
        traced = torch.jit.trace(model.eval(), example)
        buf = io.BytesIO()
        torch.jit.save(traced, buf, _extra_files={TORCHSCRIPT_EXTRA: json.dumps(metadata or {})})
    write_bytes_atomic(path, buf.getvalue())
    return path


def load_exported(path: str | os.PathLike, fmt: str) -> Callable[[np.ndarray], np.ndarray]:
    """A function running the exported file on a float32 batch (N, 1, S, S): onnxruntime or torch.jit."""
    if fmt == "onnx":
        try:
            import onnxruntime
        except ModuleNotFoundError:
            raise LenetError("checking an ONNX file needs onnxruntime: pip install 'lenet[onnx]'") from None
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return lambda x: session.run(None, {"input": x})[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        module = torch.jit.load(str(path), map_location="cpu")

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(x)).numpy()

    return run


def max_difference(model: nn.Module, run: Callable[[np.ndarray], np.ndarray], size: int, seed=0) -> float:
    """Largest |exported - torch| over random inputs at batch 1 and 7 (7: the batch dimension is dynamic)."""
    generator = torch.Generator().manual_seed(seed)
    worst = 0.0
    for batch in (1, 7):
        x = torch.rand(batch, 1, size, size, generator=generator)
        with torch.inference_mode():
            expected = model.eval()(x).numpy()
        worst = max(worst, float(np.abs(run(x.numpy()) - expected).max()))
    return worst


def export_run(run, fmt: str = "onnx", out: str | os.PathLike | None = None) -> tuple[Path, float]:
    """Export a trained run (a folder, or a lenet.Run): (the file written, its largest difference from torch
    on random inputs).

    "web" writes the drawing page as a folder (lenet.infer.web; default RUN/web): its weights are the model's
    own bytes, so the difference is 0; the page's JavaScript forward pass is held to torch by the tests.
    """
    if isinstance(run, Run):
        if run.path is None:
            raise LenetError("export: this run has no folder; train it with out=FOLDER to export it")
        run = run.path
    if fmt == "web":
        from .web import export_web

        folder = Path(run) if Path(run).is_dir() else Path(run).parent
        return export_web(run, out if out is not None else folder / "web")[0], 0.0
    if fmt not in FORMATS:
        raise LenetError(f"unknown export format {fmt!r}; expected one of {', '.join(FORMATS)}, web")
    model, cfg, _ = load_run(run, "cpu")
    if out is None:
        folder = Path(run) if Path(run).is_dir() else Path(run).parent
        out = folder / f"model{FORMATS[fmt]}"
    path = Path(out)
    if not path.parent.is_dir():
        raise LenetError(f"{path.parent}: no such folder")
    size = input_size(cfg)
    write = export_onnx if fmt == "onnx" else export_torchscript
    try:
        write(model, size, path, describe(cfg))
    except OSError as e:
        raise LenetError(f"{path}: cannot write ({e.strerror or e})") from None
    return path, max_difference(model, load_exported(path, fmt), size)
