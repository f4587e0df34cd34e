"""Progress bars that work in a terminal and in Jupyter (tqdm.auto), and stay off in logs and CI."""

from __future__ import annotations

import sys
import warnings


def in_notebook() -> bool:
    """True inside a Jupyter kernel: stderr is not a terminal, but a person is watching, and display handles
    update outputs in place."""
    ipython = sys.modules.get("IPython")  # never imported here: a kernel has imported it already
    shell = ipython.get_ipython() if ipython is not None and hasattr(ipython, "get_ipython") else None
    return getattr(shell, "kernel", None) is not None


def interactive() -> bool:
    """Whether a person is watching the output: a terminal or a notebook."""
    return sys.stderr.isatty() or in_notebook()


def progress_bar(total: int, description: str, enabled: bool | None = None, initial: int = 0):
    """A tqdm bar over `total` steps, or None when `enabled` is False (None: when interactive())."""
    if not (interactive() if enabled is None else enabled):
        return None
    with warnings.catch_warnings():  # tqdm.auto warns when a notebook lacks ipywidgets, then draws text
        warnings.simplefilter("ignore")
        from tqdm.auto import tqdm

    # A notebook without ipywidgets gets tqdm's text bar, each redraw a new output: redraw less often there.
    return tqdm(total=total, initial=initial, desc=description, unit="batch", leave=False, file=sys.stderr,
                dynamic_ncols=True, mininterval=1.0 if in_notebook() else 0.2)  # fmt: skip
