"""The drawing page's model files, and `lenet export RUN --format web DIR`: the page without a server.

The page runs the network itself, in JavaScript (serve/static/js/engine.js): it needs every layer's output
before and after its activation, one unit's arithmetic, the gradient for the saliency map, and the weights
of any snapshot, and a forward pass of LeNet's ten kinds of layer is ~300 lines. onnxruntime-web would
bring ~10 MB of WebAssembly and give only the graph's outputs. This module describes a model's layers for
that engine, and writes what the page loads:

    site.js                    which models, where the test samples are, the page's thresholds
    models/<i>/model.js        the layers, the model's description, its snapshots
    models/<i>/weights.js      the weights: the safetensors bytes, base64
    models/<i>/snapshots/step-NNNNNNN.js
    samples.js                 (export only) test images for the Sample button

Every file is a script calling `lenetData(key, value)`, not JSON fetched: browsers refuse fetch() from a
page opened as a file, but run its scripts, so the exported folder works from a USB stick as well as from
any static host. `lenet serve` serves the same files, made by the same functions, beside its API.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save
from torch import nn

from ..config import Config, input_size
from ..data import get_dataset_info, load_raw, to_input
from ..errors import LenetError
from ..models import count_parameters, leaf_modules, model_spec
from ..models.lenet1998 import EuclideanRBF, SparseConv2d, Squash, Subsampling
from ..models.zoo import ClippedLog
from ..train.checkpoint import load_run, write_bytes_atomic
from ..train.snapshots import list_snapshots, snapshot_path
from .predict import Predictor

STATIC = Path(__file__).resolve().parent.parent / "serve" / "static"
PAGE_FILES = ("index.html", "style.css", "js")  # what of STATIC the exported page needs
EXPORT_SAMPLES = 200  # test images shipped with an export for its Sample button (157 KB)

# Honest answers (docs/teaching-page.md). "Coverage" is the fraction of the 28x28 input at half intensity
# or more. On MNIST's 60,000 training digits it is 0.036 at the 0.1th percentile, 0.129 at the median and
# 0.247 at the 99th; a dot tapped on the pad comes out at 0.39 and a small 0 in a corner at 0.28, because
# re-centring scales the drawing up, strokes and all. Outside [0.036, 0.25] the input looks like no digit
# the model saw. Digits only: clothes and kana have other shapes.
COVERAGE = {"mnist": (0.036, 0.25)}
UNSURE = 0.5  # the top probability below this: the model hesitates between classes


def verdict(image: np.ndarray, probs: np.ndarray | None, dataset: str) -> tuple[str, str]:
    """(kind, one line) for a 28x28 uint8 input: blank, thick, faint, unsure or ok."""
    if image.max() == 0:
        return "blank", "no ink: draw a digit"
    if dataset in COVERAGE:
        low, high = COVERAGE[dataset]
        coverage = float((image >= 128).mean())
        if coverage > high:
            return (
                "thick",
                f"ink covers {coverage:.0%} of the input (training digits: under {high:.0%}): draw it bigger",
            )
        if coverage < low:
            return "faint", f"ink covers {coverage:.1%} of the input (training digits: over {low:.1%}): draw bolder"
    if probs is not None and float(probs.max()) < UNSURE:
        return "unsure", f"the model is unsure (top probability {float(probs.max()):.0%})"
    return "ok", ""


def saliency(predictor: Predictor, image: np.ndarray, cls: int | None = None) -> tuple[int, np.ndarray]:
    """(class, 28x28 map): d(class score)/d(pixel) x pixel, pixels in [0, 1], the class's score the softmax's input.

    Gradient x input, with the blank canvas as the zero point whatever the input scaling; the page computes
    the same in JavaScript. Positive: that ink pushed towards the class; negative: away from it.
    """
    cfg, data = predictor.config, get_dataset_info(predictor.config.dataset)
    pixels = torch.tensor(image, dtype=torch.float32, device=predictor.device)[None] / 255.0
    pixels.requires_grad_(True)
    with torch.enable_grad():
        x = to_input(pixels * 255.0, input_size(cfg), cfg.scaling, data.mean, data.std, cfg.resize)
        logits = predictor.model(x)
        cls = int(logits[0].argmax()) if cls is None else cls
        (grad,) = torch.autograd.grad(logits[0, cls], pixels)
    return cls, (grad * pixels)[0].detach().cpu().numpy()


# ----------------------------------------------------------------------------------------------------------
# The layers as the page's engine reads them


def layer_spec(name: str, m: nn.Module) -> dict:
    """One leaf layer as a plain dict for the JavaScript engine, or a one-line error for a kind it lacks."""
    if isinstance(m, nn.Conv2d):
        if m.groups != 1 or m.dilation != (1, 1) or m.padding_mode != "zeros" or isinstance(m.padding, str):
            raise LenetError(f"the page cannot run layer {name}: only plain convolutions (no groups or dilation)")
        return {"type": "conv", "name": name, "in": m.in_channels, "out": m.out_channels, "kernel": m.kernel_size[0],
                "stride": m.stride[0], "padding": m.padding[0], "bias": m.bias is not None}  # fmt: skip
    if isinstance(m, SparseConv2d):
        table = [list(row) for row in m.table]
        return {"type": "sparseconv", "name": name, "in": m.in_channels, "out": m.out_channels,
                "kernel": m.weight.shape[-1], "stride": 1, "padding": 0, "table": table}  # fmt: skip
    if isinstance(m, nn.MaxPool2d | nn.AvgPool2d):
        k, s, p = (v if isinstance(v, int) else v[0] for v in (m.kernel_size, m.stride, m.padding))
        if p or m.ceil_mode:
            raise LenetError(f"the page cannot run layer {name}: only unpadded pooling")
        return {"type": "maxpool" if isinstance(m, nn.MaxPool2d) else "avgpool", "name": name, "kernel": k, "stride": s}
    simple = {nn.ReLU: "relu", nn.Sigmoid: "sigmoid", nn.Tanh: "tanh", nn.Flatten: "flatten", nn.Dropout: "identity",
              nn.Identity: "identity", Subsampling: "subsample", EuclideanRBF: "rbf"}  # fmt: skip
    for cls, kind in simple.items():
        if isinstance(m, cls):
            return {"type": kind, "name": name}
    if isinstance(m, nn.BatchNorm2d):
        return {"type": "batchnorm", "name": name, "eps": m.eps}
    if isinstance(m, nn.Linear):
        return {"type": "linear", "name": name, "in": m.in_features, "out": m.out_features}
    if isinstance(m, Squash):
        return {"type": "squash", "name": name, "amplitude": m.amplitude, "slope": m.slope}
    if isinstance(m, ClippedLog):
        return {"type": "clippedlog", "name": name, "eps": m.eps}
    raise LenetError(f"the page cannot run layer {name} ({type(m).__name__})")


def describe_model(model: nn.Module, cfg: Config, info: dict | None = None) -> dict:
    """What the page shows of a model and how it scales a 28x28 image into the network's input."""
    data = get_dataset_info(cfg.dataset)
    try:
        description = model_spec(cfg.model).description
    except LenetError:  # a model of the user's own
        description = ""
    return {
        "model": cfg.model, "recipe": cfg.recipe, "dataset": cfg.dataset, "classes": list(data.classes),
        "params": count_parameters(model), "test_acc": (info or {}).get("test_acc"), "description": description,
        "input": {"size": input_size(cfg), "scaling": cfg.scaling, "mean": data.mean, "std": data.std,
                  "resize": cfg.resize, "style": "whole" if cfg.dataset == "fashion-mnist" else "digit"},
        "layers": [layer_spec(name, m) for name, m in leaf_modules(model)],
    }  # fmt: skip


def weights_bytes(model: nn.Module) -> bytes:
    return save({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()})


def script(key: str, value) -> bytes:
    """A file the page loads with a <script> tag: lenetData(key, value); bytes go as a base64 string."""
    if isinstance(value, bytes):
        value = base64.b64encode(value).decode()
    return f"lenetData({json.dumps(key)}, {json.dumps(value, separators=(',', ':'))});\n".encode()


def model_manifest(index: int, model: nn.Module, cfg: Config, info: dict, run: Path | None) -> dict:
    """models/<index>/model.js's value: the description, the weights' file, the snapshots' files."""
    base = f"models/{index}"
    snapshots = []
    for entry in list_snapshots(run) if run is not None else []:
        stem = entry["file"].removesuffix(".safetensors")
        snapshots.append({**entry, "file": f"{base}/snapshots/{stem}.js"})
    return {**describe_model(model, cfg, info), "weights": f"{base}/weights.js", "snapshots": snapshots}


def site(models: list[str], dataset: str, mode: str, **extra) -> dict:
    """site.js's value: the models' manifests, the thresholds of the honest answers, and the mode's extras."""
    honesty = {"coverage": COVERAGE.get(dataset), "unsure": UNSURE}
    return {"mode": mode, "models": models, "honesty": honesty, **extra}


def check_same_dataset(configs: list[Config], names: list[str]) -> None:
    """Side by side, models must read the same drawing the same way: one dataset."""
    for cfg, name in zip(configs[1:], names[1:], strict=True):
        if cfg.dataset != configs[0].dataset:
            raise LenetError(f"{name} was trained on {cfg.dataset} and {names[0]} on {configs[0].dataset}: "
                             "models side by side must share a dataset")  # fmt: skip


# ----------------------------------------------------------------------------------------------------------
# lenet export RUN --format web DIR


def export_web(
    runs, out: str | os.PathLike, root: str | os.PathLike | None = None, verify: bool = True
) -> tuple[Path, int]:
    """Write the page and its model files for one or more runs into `out`: (the folder, files written)."""
    runs = [Path(r) for r in ([runs] if isinstance(runs, str | os.PathLike) else runs)]
    loaded = [load_run(r, "cpu") for r in runs]
    check_same_dataset([cfg for _, cfg, _ in loaded], [str(r) for r in runs])
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise LenetError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / "site.js").is_file():
        raise LenetError(f"{out}: not empty and not a lenet web export; pick an empty or new folder")
    files: dict[str, bytes] = {}
    manifests = []
    for i, ((model, cfg, info), run) in enumerate(zip(loaded, runs, strict=True)):
        manifest = model_manifest(i, model, cfg, info, run)
        files[f"models/{i}/model.js"] = script(f"models/{i}/model", manifest)
        files[f"models/{i}/weights.js"] = script(f"models/{i}/weights", weights_bytes(model))
        for entry in manifest["snapshots"]:
            stem = Path(entry["file"]).name.removesuffix(".js")
            data = snapshot_path(run, stem + ".safetensors").read_bytes()
            files[entry["file"]] = script(entry["file"].removesuffix(".js"), data)
        manifests.append(f"models/{i}/model.js")
    cfg, info = loaded[0][1], loaded[0][2]
    samples, note = export_samples(cfg.dataset, root if root is not None else info.get("data_root"), verify)
    if samples is not None:
        files["samples.js"] = script("samples", samples)
    files["site.js"] = script("site", site(manifests, cfg.dataset, "static", samples=samples is not None,
                                           sampleNote=note))  # fmt: skip
    try:
        copy_page(out)
        for name, data in files.items():
            (out / name).parent.mkdir(parents=True, exist_ok=True)
            write_bytes_atomic(out / name, data)
    except OSError as e:
        raise LenetError(f"{out}: cannot write ({e.strerror or e})") from None
    return out, len(files) + sum(1 for _ in (STATIC / "js").iterdir()) + 2


def copy_page(out: Path) -> None:
    """The page's static files, as lenet serve serves them under /static (index.html at the top)."""
    (out / "static").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(STATIC / "index.html", out / "index.html")
    shutil.copyfile(STATIC / "style.css", out / "static" / "style.css")
    shutil.copytree(STATIC / "js", out / "static" / "js", dirs_exist_ok=True)


def export_samples(dataset: str, root, verify: bool = True) -> tuple[dict | None, str]:
    """EXPORT_SAMPLES test images for the exported page, or (None, why not)."""
    if root is None:
        return None, "no test images in this export (export with --root DATA to add some)"
    try:
        images, labels = load_raw(dataset, "test", root, verify)
    except LenetError as e:
        return None, f"no test images in this export ({e})"
    pick = np.random.default_rng(0).choice(len(labels), size=min(EXPORT_SAMPLES, len(labels)), replace=False)
    pick.sort()
    pixels = base64.b64encode(np.ascontiguousarray(images[pick]).tobytes()).decode()
    return {"index": pick.tolist(), "labels": labels[pick].tolist(), "pixels": pixels}, ""
