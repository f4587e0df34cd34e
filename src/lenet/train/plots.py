"""Figures as values: curves, confusion matrices, galleries and activations that show inline in Jupyter and save
to files, and LiveCurves, the live training plot (d2l's Animator) for notebooks, scripts and CI alike.

Everything is drawn on its own `matplotlib.figure.Figure` with the Agg canvas: importing this module or calling
it never touches pyplot, the user's backend or any other global state, and never opens a window.
"""

from __future__ import annotations

import io
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import nn

from ..errors import LenetError
from .progress import in_notebook


def new_figure(figsize: tuple[float, float]) -> Figure:
    """A Figure of our own with an Agg canvas (no pyplot, no GUI)."""
    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig


def png_bytes(fig: Figure, dpi: int = 110) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


class Plot:
    """A finished figure as a value: shows inline in Jupyter (`_repr_png_`), `.save(path)` writes a PNG."""

    def __init__(self, figure: Figure):
        self.figure = figure

    def _repr_png_(self) -> bytes:
        return png_bytes(self.figure)

    def save(self, path: str | os.PathLike, dpi: int = 110) -> Path:
        """Write the figure to `path` (PNG, or what the suffix says: .svg, .pdf) and return the path."""
        path = Path(path)
        self.figure.savefig(path, dpi=dpi, bbox_inches="tight")
        return path

    def __repr__(self) -> str:
        w, h = self.figure.get_size_inches()
        return f"<lenet Plot {w:.1f}x{h:.1f} in: display it in Jupyter or .save(path)>"


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


# ----------------------------------------------------------------------------------------------------------
# LiveCurves: d2l's Animator, live in Jupyter, a PNG file elsewhere


_FILES_NAMED: list[Path] = []  # default file names handed out in this process


def _default_path() -> Path:
    n = len(_FILES_NAMED) + 1
    path = Path.cwd() / ("animator.png" if n == 1 else f"animator-{n}.png")
    _FILES_NAMED.append(path)
    return path


class LiveCurves:
    """Lines that grow point by point: d2l's Animator (same arguments, `add(x, y)`, `.fig`, `.axes`).

    In a Jupyter kernel the figure is one output updated in place through a display handle (no flicker, and
    the cell's printed lines stay). Anywhere else (a script, a terminal, CI) it never opens a window or
    blocks: it writes the figure to a PNG file, `path` (default ./animator.png, then animator-2.png, ...),
    and says the file's name once on stderr. `min_interval` (seconds) lets a fast loop skip redraws;
    `flush()` draws what was skipped.
    """

    def __init__(self, xlabel=None, ylabel=None, legend=None, xlim=None, ylim=None, xscale="linear",
                 yscale="linear", fmts=("-", "m--", "g-.", "r:"), nrows=1, ncols=1, figsize=(3.5, 2.5), *,
                 path: str | os.PathLike | None = None, live: bool | None = None,
                 min_interval: float = 0.0):  # fmt: skip
        self.fig = new_figure(figsize)
        axes = self.fig.subplots(nrows, ncols)
        self.axes = [axes] if nrows * ncols == 1 else axes
        legend = list(legend or [])
        self.config_axes = lambda: set_axes(self.axes[0], xlabel, ylabel, xlim, ylim, xscale, yscale, legend)
        self.X, self.Y, self.fmts = None, None, fmts
        self.live = in_notebook() if live is None else live
        self.path = Path(path) if path is not None else None
        self.min_interval = min_interval
        self._handle = None
        self._last_draw = -float("inf")
        self._pending = False
        self._announced = self._unwritable = False

    def add(self, x, y) -> None:
        """Add one point to each line (y a number or a sequence; None leaves that line out)."""
        if not hasattr(y, "__len__"):
            y = [y]
        n = len(y)
        if not hasattr(x, "__len__"):
            x = [x] * n
        if not self.X:
            self.X = [[] for _ in range(n)]
        if not self.Y:
            self.Y = [[] for _ in range(n)]
        for i, (a, b) in enumerate(zip(x, y, strict=False)):
            if a is not None and b is not None:
                self.X[i].append(float(a))
                self.Y[i].append(float(b))
        self._pending = True
        if time.perf_counter() - self._last_draw >= self.min_interval:
            self.flush()

    def flush(self) -> None:
        """Draw the lines now if anything was added since the last drawing."""
        if not self._pending:
            return
        self._pending = False
        self._last_draw = time.perf_counter()
        ax = self.axes[0]
        ax.cla()
        for xs, ys, fmt in zip(self.X or [], self.Y or [], self.fmts, strict=False):
            ax.plot(xs, ys, fmt)
        self.config_axes()
        if self.live:
            self._show()
        else:
            self._write()

    close = flush  # what a caller says when no more points will come

    def _show(self) -> None:
        from IPython.display import Image, display

        image = Image(data=png_bytes(self.fig, dpi=100), format="png")
        if self._handle is None:
            self._handle = display(image, display_id=True)
        else:
            self._handle.update(image)

    def _write(self) -> None:
        if self._unwritable:
            return
        if self.path is None:
            self.path = _default_path()
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        try:
            self.fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
            os.replace(tmp, self.path)  # a viewer never sees half a file
        except OSError as e:
            if not self._announced:
                print(f"Animator: cannot write {self.path} ({e.strerror}); curves not drawn", file=sys.stderr)
            self._announced = self._unwritable = True  # stop trying: later flushes only redraw in memory
            return
        if not self._announced:
            print(f"Animator: not in Jupyter, drawing to {self.path}", file=sys.stderr)
            self._announced = True

    def _repr_png_(self) -> bytes:
        return png_bytes(self.fig)


def set_axes(axes, xlabel, ylabel, xlim, ylim, xscale, yscale, legend) -> None:
    """d2l's set_axes: labels, scales, limits, legend and a grid."""
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.set_xscale(xscale)
    axes.set_yscale(yscale)
    if not (xlim and xlim[0] == xlim[-1]):  # one epoch's [1, 1] would only warn
        axes.set_xlim(xlim)
    axes.set_ylim(ylim)
    if legend:
        axes.legend(legend)
    axes.grid()


class TrainingCurves(LiveCurves):
    """LiveCurves for a training run: train loss and acc as the epoch goes, test acc at its end.

    Its `on_progress` and `on_epoch` are fit's hooks of those names; call `close()` when fit returns. Inside
    an epoch it redraws at most every `min_interval` seconds, counted from its creation, so that an epoch
    shorter than that spends none of its time drawing (fit's clock, like d2l's Timer, should time training);
    every epoch's end is drawn.
    """

    def __init__(self, epochs: int, *, path=None, live=None, min_interval: float = 1.0):
        super().__init__(xlabel="epoch", xlim=[1, epochs], legend=["train loss", "train acc", "test acc"],
                         path=path, live=live, min_interval=min_interval)  # fmt: skip
        self._last_draw = time.perf_counter()

    def on_progress(self, position: float, train_loss: float, train_acc: float) -> None:
        self.add(position, (train_loss, train_acc, None))

    def on_epoch(self, record: dict) -> None:
        if record.get("test_acc") is not None:
            self.add(record["epoch"], (None, None, record["test_acc"]))
        self.flush()
