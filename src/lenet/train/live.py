"""LiveCurves: lines that grow while training (d2l's Animator; `lenet.train(plot=True)`), live in Jupyter and a
PNG file anywhere else (a script, a terminal, CI)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from .figure import new_figure, png_bytes
from .progress import in_notebook

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
