"""A figure of lenet's own: a matplotlib Figure on the Agg canvas, never pyplot, so no backend or window is touched;
`Plot` shows one inline in Jupyter and saves it to a file."""

from __future__ import annotations

import io
import os
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


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
