"""ONNX and TorchScript exports agree with torch: onnxruntime / torch.jit against the eager model."""

from __future__ import annotations

import json
import sys
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from lenet.cli import main
from lenet.errors import LenetError
from lenet.infer.export import export_onnx, export_torchscript
from lenet.models import create_model, list_models, model_spec
from lenet.train.checkpoint import load_run

onnx = pytest.importorskip("onnx", reason="the onnx extra is not installed")
ort = pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")


def random_model(name: str) -> nn.Module:
    """A registered model with random weights and batch-norm statistics, in eval mode."""
    torch.manual_seed(0)
    model = create_model(name)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def inputs(size: int):
    generator = torch.Generator().manual_seed(1)
    return [torch.rand(batch, 1, size, size, generator=generator) for batch in (1, 7)]


def onnx_outputs(path, x: torch.Tensor) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x.numpy()})[0]


def torch_outputs(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    with torch.inference_mode():
        return model(x).numpy()


@pytest.mark.parametrize("name", list_models())
def test_onnx_matches_torch(name, tmp_path):
    model, size = random_model(name), model_spec(name).input_size
    path = export_onnx(model, size, tmp_path / f"{name}.onnx", {"model": name})
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # one file, no external-data side file
    onnx.checker.check_model(str(path), full_check=True)
    proto = onnx.load(str(path))
    assert all(t.data_location != onnx.TensorProto.EXTERNAL for t in proto.graph.initializer)
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # the batch dimension is symbolic
    for x in inputs(size):
        np.testing.assert_allclose(onnx_outputs(path, x), torch_outputs(model, x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", list_models())
def test_torchscript_matches_torch(name, tmp_path):
    model, size = random_model(name), model_spec(name).input_size
    path = export_torchscript(model, size, tmp_path / f"{name}.pt", {"model": name})
    extra = {"lenet.json": ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        loaded = torch.jit.load(str(path), _extra_files=extra)
    assert json.loads(extra["lenet.json"]) == {"model": name}
    for x in inputs(size):
        np.testing.assert_allclose(torch_outputs(loaded, x), torch_outputs(model, x), rtol=1e-5, atol=1e-5)


def test_export_command(run_dir, tmp_path, capsys):
    model, cfg, _ = load_run(run_dir)
    path = tmp_path / "fast.onnx"
    assert main(["export", str(run_dir), "--format", "onnx", "-o", str(path)]) == 0
    assert f"wrote {path}" in capsys.readouterr().out
    meta = json.loads({p.key: p.value for p in onnx.load(str(path)).metadata_props}["lenet"])
    assert (meta["model"], meta["scaling"], meta["mean"]) == ("lenet5-modern", cfg.scaling, 0.1307)
    assert meta["classes"] == [str(d) for d in range(10)]
    for x in inputs(28):
        np.testing.assert_allclose(onnx_outputs(path, x), torch_outputs(model, x), rtol=1e-5, atol=1e-5)

    assert main(["export", str(run_dir / "model.safetensors"), "--format", "torchscript"]) == 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        loaded = torch.jit.load(str(run_dir / "model.torchscript.pt"))
    for x in inputs(28):
        np.testing.assert_allclose(torch_outputs(loaded, x), torch_outputs(model, x), rtol=1e-5, atol=1e-5)


def test_export_errors(run_dir, tmp_path, capsys):
    assert main(["export", str(tmp_path / "missing")]) == 2
    assert main(["export", str(run_dir), "-o", str(tmp_path / "no" / "such" / "model.onnx")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and "no such run folder" in err[0] and "no such folder" in err[1]


def test_missing_onnx_packages_are_named(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # as if not installed
    with pytest.raises(LenetError, match=r"onnxscript.*pip install 'lenet\[onnx\]'"):
        export_onnx(random_model("lenet5-modern"), 28, tmp_path / "m.onnx")
    assert not list(tmp_path.iterdir())
