"""Plotting (d2l section 2.4): through pyplot, as in d2l, but pyplot is imported only when a helper draws."""

from __future__ import annotations

import sys

__all__ = [  # d2l's names in this section, re-exported by lenet.d2l
    "plot", "set_figsize", "use_svg_display",
]  # fmt: skip


def _plt():
    import matplotlib.pyplot

    return matplotlib.pyplot


def use_svg_display() -> None:
    """Show pyplot figures as SVG in Jupyter (a no-op outside IPython)."""
    if "IPython" in sys.modules:
        try:
            from matplotlib_inline.backend_inline import set_matplotlib_formats
        except ImportError:
            return
        set_matplotlib_formats("svg")


def set_figsize(figsize=(3.5, 2.5)) -> None:
    """Set pyplot's default figure size (and SVG display, as d2l does)."""
    use_svg_display()
    _plt().rcParams["figure.figsize"] = figsize


def plot(X, Y=None, xlabel=None, ylabel=None, legend=None, xlim=None, ylim=None, xscale="linear",
         yscale="linear", fmts=("-", "m--", "g-.", "r:"), figsize=(3.5, 2.5), axes=None):  # fmt: skip
    """Plot data points (d2l's `plot`): one or several lines, Y against X."""
    set_figsize(figsize)
    axes = axes if axes else _plt().gca()

    def has_one_axis(v):
        return (hasattr(v, "ndim") and v.ndim == 1) or (isinstance(v, list) and not hasattr(v[0], "__len__"))

    if has_one_axis(X):
        X = [X]
    if Y is None:
        X, Y = [[]] * len(X), X
    elif has_one_axis(Y):
        Y = [Y]
    if len(X) != len(Y):
        X = X * len(Y)
    axes.cla()
    for x, y, fmt in zip(X, Y, fmts, strict=False):
        axes.plot(x, y, fmt) if len(x) else axes.plot(y, fmt)
    from ..train.live import set_axes

    set_axes(axes, xlabel, ylabel, xlim, ylim, xscale, yscale, legend or [])
