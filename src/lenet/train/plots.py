"""Figures drawn from a run's history and evaluation, written as image files (works headless)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display needed, none opened
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_curves(epochs: list[dict], path: str | Path) -> Path:
    """Train loss, train acc and test acc (and val acc) against epochs: what d2l's Animator draws."""
    fig, ax = plt.subplots(figsize=(5, 3.5))
    x = [r["epoch"] for r in epochs]
    series = [
        ("train_loss", "train loss", "-"),
        ("train_acc", "train acc", "--"),
        ("test_acc", "test acc", "-."),
    ]
    if any("val_acc" in r for r in epochs):
        series.append(("val_acc", "val acc", ":"))
    for key, label, style in series:
        ax.plot(x, [r.get(key, np.nan) for r in epochs], style, marker="o", markersize=3, label=label)
    ax.set_xlabel("epoch")
    ax.set_xlim(0.8, max(x[-1], 1) + 0.2)
    ax.grid(True, alpha=0.3)
    ax.legend()
    return _save(fig, Path(path))


def plot_confusion(confusion: list[list[int]], classes: list[str], path: str | Path, title: str = "") -> Path:
    """A confusion matrix (rows true, columns predicted) with counts in the cells."""
    m = np.asarray(confusion)
    n = len(classes)
    fig, ax = plt.subplots(figsize=(1.0 + 0.55 * n, 0.8 + 0.5 * n))
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
    return _save(fig, Path(path))


def plot_gallery(images: np.ndarray, titles: list[str], path: str | Path, columns: int = 8) -> Path:
    """Images (N, H, W) in a grid, each with its title (e.g. 'true 7 / pred 1 (0.83)')."""
    n = max(len(images), 1)
    rows = (n + columns - 1) // columns
    fig, axes = plt.subplots(rows, columns, figsize=(1.4 * columns, 1.6 * rows), squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k < len(images):
            ax.imshow(images[k], cmap="gray_r")
            ax.set_title(titles[k], fontsize=7)
    return _save(fig, Path(path))
