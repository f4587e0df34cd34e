"""Figures as values: curves, confusion matrices, galleries and activations that show inline in Jupyter and save
to files. `lenet.plots` is this module, with LiveCurves (d2l's Animator, `live.py`) beside them.

Everything is drawn on its own `matplotlib.figure.Figure` with the Agg canvas: importing this module or calling
it never touches pyplot, the user's backend or any other global state, and never opens a window.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import LenetError
from .figure import Plot, new_figure
from .live import LiveCurves, TrainingCurves, set_axes  # noqa: F401  (lenet.plots.LiveCurves)

# ----------------------------------------------------------------------------------------------------------
# A run's history, a confusion matrix, a gallery


def curves(history, title: str = "") -> Plot:
    """Train loss, train acc and test acc (and val acc) against epochs: what d2l's Animator draws.

    `history` is a History (from fit/train) or its list of per-epoch records.
    """
    epochs = list(getattr(history, "epochs", history))
    if not epochs:
        raise LenetError("no epochs to plot: the history is empty")
    fig = new_figure((5, 3.5))
    ax = fig.subplots()
    x = [r["epoch"] for r in epochs]
    series = [("train_loss", "train loss", "-"), ("train_acc", "train acc", "--"), ("test_acc", "test acc", "-.")]
    if any("val_acc" in r for r in epochs):
        series.append(("val_acc", "val acc", ":"))
    for key, label, style in series:
        ax.plot(x, [r.get(key, np.nan) for r in epochs], style, marker="o", markersize=3, label=label)
    ax.set_xlabel("epoch")
    ax.set_xlim(0.8, max(x[-1], 1) + 0.2)
    ax.grid(True, alpha=0.3)
    ax.legend()
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return Plot(fig)


def confusion(matrix, classes: Sequence[str], title: str = "") -> Plot:
    """A confusion matrix (rows true, columns predicted) with counts in the cells."""
    m = np.asarray(matrix)
    n = len(classes)
    fig = new_figure((1.0 + 0.55 * n, 0.8 + 0.5 * n))
    ax = fig.subplots()
    ax.imshow(m, cmap="Blues")
    ax.set_xticks(range(n), classes, rotation=45, ha="right")
    ax.set_yticks(range(n), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if title:
        ax.set_title(title)
    threshold = m.max() / 2 if m.size else 0
    for i in range(n):
        for j in range(n):
            ax.text(j, i, str(m[i, j]), ha="center", va="center", fontsize=7,
                    color="white" if m[i, j] > threshold else "black")  # fmt: skip
    fig.tight_layout()
    return Plot(fig)


def gallery(images, titles: Sequence[str] = (), columns: int = 8) -> Plot:
    """Images (N, H, W) in a grid, each with its title (e.g. 'true 7 / pred 1 (0.83)')."""
    images = _numpy_images(images)
    n = max(len(images), 1)
    columns = min(columns, n)
    rows = (n + columns - 1) // columns
    fig = new_figure((1.4 * columns, 1.6 * rows))
    for k, ax in enumerate(fig.subplots(rows, columns, squeeze=False).flat):
        ax.axis("off")
        if k < len(images):
            ax.imshow(images[k], cmap="gray_r")
            if k < len(titles):
                ax.set_title(titles[k], fontsize=7)
    fig.tight_layout()
    return Plot(fig)


def misclassified(model: nn.Module, data, classes: Sequence[str] | None = None, n: int = 32) -> Plot:
    """The first `n` images of `data` that `model` gets wrong, titled 'true -> predicted (probability)'.

    `data` is a Dataset (its test split), a Split, a DataIter or (images, labels) tensors.
    """
    classes = list(classes or getattr(data, "classes", None) or [str(i) for i in range(10)])
    images, labels = _images_labels(data)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        probs = torch.cat([model(images[i : i + 2000]).softmax(1) for i in range(0, len(images), 2000)])
    model.train(was_training)
    pred = probs.argmax(1)
    wrong = (pred != labels).nonzero().flatten()[:n].tolist()
    titles = [f"{classes[int(labels[i])]} -> {classes[int(pred[i])]} ({float(probs[i, pred[i]]):.2f})" for i in wrong]
    return gallery(images[wrong, 0], titles)


def _images_labels(data) -> tuple[torch.Tensor, torch.Tensor]:
    split = getattr(data, "test", None) if hasattr(data, "classes") and hasattr(data, "test") else data
    split = getattr(split, "split", split)  # a DataIter's split
    if hasattr(split, "images") and hasattr(split, "labels"):
        return split.images, split.labels
    if isinstance(split, tuple | list) and len(split) == 2:
        images, labels = (torch.as_tensor(t) for t in split)
        return (images.unsqueeze(1) if images.dim() == 3 else images).float(), labels.long()
    raise LenetError(f"cannot take images and labels from {type(data).__name__}")


def _numpy_images(images) -> np.ndarray:
    if isinstance(images, torch.Tensor):
        images = images.detach().float().cpu().numpy()
    images = np.asarray(images)
    return images[:, 0] if images.ndim == 4 else images


# The old file-writing names, still used by the CLI.
def plot_curves(epochs: list[dict], path: str | os.PathLike) -> Path:
    return curves(epochs).save(path)


def plot_confusion(matrix, classes: list[str], path: str | os.PathLike, title: str = "") -> Path:
    return confusion(matrix, classes, title).save(path)


def plot_gallery(images, titles: list[str], path: str | os.PathLike, columns: int = 8) -> Path:
    return gallery(images, titles, columns).save(path)


# ----------------------------------------------------------------------------------------------------------
# Activations: the chapter's last exercise


# Layers that end a conv stage's output when walking forward from a convolution.
_STAGE_ENDS = (nn.Conv2d, nn.Linear, nn.Flatten, nn.Dropout, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d,
               nn.AdaptiveMaxPool2d, nn.LPPool2d)  # fmt: skip


def default_layers(model: nn.Module, count: int = 2) -> list[str]:
    """The outputs of the first `count` conv stages: each convolution plus the norms and activation after it."""
    leaves = [(name, m) for name, m in model.named_modules() if name and next(m.children(), None) is None]
    chosen = []
    for i, (_, module) in enumerate(leaves):
        if isinstance(module, nn.Conv2d) and len(chosen) < count:
            j = i
            while j + 1 < len(leaves) and not isinstance(leaves[j + 1][1], _STAGE_ENDS):
                j += 1
            chosen.append(leaves[j][0])
    if not chosen:
        raise LenetError("the model has no Conv2d layer; name the layers to show (layers=[...])")
    return chosen


def _resolve_layers(model: nn.Module, layers) -> list[tuple[str, nn.Module]]:
    modules = dict(model.named_modules())
    children = list(model.named_children())
    out = []
    for layer in [layers] if isinstance(layers, str | int) else layers:
        if isinstance(layer, int) and -len(children) <= layer < len(children):
            out.append(children[layer])
        elif isinstance(layer, str) and layer in modules and layer:
            out.append((layer, modules[layer]))
        else:
            known = ", ".join(name for name in modules if name)
            raise LenetError(f"unknown layer {layer!r}; the model's layers: {known}")
    return out


def layer_outputs(model: nn.Module, x: torch.Tensor, layers=None) -> list[tuple[str, nn.Module, torch.Tensor]]:
    """[(name, module, output)] of the chosen layers (default: the first two conv stages) for a batch x."""
    chosen = _resolve_layers(model, layers if layers is not None else default_layers(model))
    found: dict[str, torch.Tensor] = {}
    hooks = [
        module.register_forward_hook(lambda _m, _i, out, name=name: found.__setitem__(name, out.detach()))
        for name, module in chosen
    ]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(x)
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return [(name, module, found[name]) for name, module in chosen]


def _as_batch(images, model: nn.Module) -> torch.Tensor:
    x = torch.as_tensor(np.asarray(images) if not isinstance(images, torch.Tensor) else images).float()
    if x.dim() == 2:
        x = x[None, None]
    elif x.dim() == 3:
        x = x[:, None]
    if x.dim() != 4:
        raise LenetError(f"images must be (N, 1, H, W), (N, H, W) or (H, W), got shape {tuple(x.shape)}")
    param = next(model.parameters(), None)
    return x.to(param.device) if param is not None else x


def activations(model: nn.Module, images, layers=None, titles: Sequence[str] = (), max_maps: int = 16) -> Plot:
    """Each image's feature maps at `layers` (names or indices; default the first two conv stages' outputs).

    `images` are network inputs, scaled as the model was trained: (N, 1, H, W), (N, H, W) or one (H, W).
    One block of rows per image: the input, then a row of maps per layer (at most `max_maps` per row).
    """
    x = _as_batch(images, model)
    outputs = layer_outputs(model, x, layers)
    width = min(max(_maps(out[0]).shape[0] for _, _, out in outputs), max_maps)
    rows = len(x) * len(outputs)
    fig = new_figure((1.2 + 0.75 * width, 0.95 * rows + 0.3))
    axes = fig.subplots(rows, width + 1, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for n in range(len(x)):
        top = n * len(outputs)
        axes[top, 0].imshow(x[n, 0].cpu().numpy(), cmap="gray")
        axes[top, 0].set_title(titles[n] if n < len(titles) else f"input {n + 1}", fontsize=8)
        for k, (name, module, out) in enumerate(outputs):
            maps = _maps(out[n])
            label = f"{name} ({type(module).__name__}) {maps.shape[0]}@{maps.shape[1]}x{maps.shape[2]}"
            axes[top + k, 1].set_title(label, fontsize=8, loc="left")
            for c in range(min(len(maps), max_maps)):
                axes[top + k, c + 1].imshow(maps[c], cmap="viridis")
    fig.tight_layout(pad=0.3)
    return Plot(fig)


def _maps(out: torch.Tensor) -> np.ndarray:
    """One sample's layer output as (C, H, W) maps; a vector becomes one 1-pixel-high map."""
    out = out.float().cpu()
    if out.dim() == 1:
        out = out[None, None]
    elif out.dim() == 2:
        out = out[None]
    return out.numpy()
