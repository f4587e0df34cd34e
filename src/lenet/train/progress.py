"""Progress bars that work in a terminal and in Jupyter (tqdm.auto), and stay off in logs and CI."""

from __future__ import annotations

import sys
import warnings


def in_notebook() -> bool:
    """True inside a Jupyter kernel (where stderr is not a terminal but a person is watching)."""
    shell = sys.modules.get("IPython")
    ipython = getattr(shell, "get_ipython", lambda: None)() if shell else None
    return type(ipython).__name__ == "ZMQInteractiveShell"


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

    return tqdm(total=total, initial=initial, desc=description, unit="batch", leave=False, file=sys.stderr,
                dynamic_ncols=True, mininterval=0.2)  # fmt: skip
