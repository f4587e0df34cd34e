"""The d2l helpers of the LeNet chapters (d2l.torch of d2l-zh 2.x), backed by lenet: `from lenet import d2l`.

Same names, arguments, printout and figures as d2l's, so the chapters' code runs with only its import line
changed; `train_ch6` trains through lenet's trainer (its compiled fast path when the net is a classic LeNet on
the CPU) with d2l's semantics: Xavier-uniform Linear/Conv2d weights, SGD, mean cross-entropy, the same lines.
`Animator` draws live in Jupyter and to a PNG file anywhere else (a script, a terminal, CI).

One module as d2l's is, laid out by its sections: plotting (2.4), data (3.x), training (3.6, 6.x), aliases.

Not d2l's: the data come from lenet's verified files (`root=` or $LENET_DATA, else ~/.cache/lenet, downloaded
on first use) as on-device tensors, not torchvision's DataLoader; pyplot is imported only when a helper that
draws through it (`plt`, `plot`, `show_images`, `set_figsize`) is used; d2l's assertions in train_ch3 are left out.
"""

from __future__ import annotations

# d2l is one flat module; lenet's copy is laid out by its sections, and every name is here as d2l.NAME
from .aliases import *  # noqa: F403
from .data import *  # noqa: F403
from .plotting import *  # noqa: F403
from .training import *  # noqa: F403


def __getattr__(name: str):
    if name == "plt":  # d2l.plt: the user's pyplot, with the user's backend
        import matplotlib.pyplot

        return matplotlib.pyplot
    if name == "Animator":  # d2l's Animator(xlabel, ylabel, legend, xlim, ...), add(x, y): lenet's LiveCurves
        from ..train.live import LiveCurves

        return LiveCurves
    if name == "display":  # d2l.display: IPython's display module
        from IPython import display

        return display
    raise AttributeError(f"module 'lenet.d2l' has no attribute {name!r}")
