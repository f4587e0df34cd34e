"""The d2l helpers the LeNet chapters call (d2l.torch of d2l-zh 2.x), backed by lenet: `from lenet import d2l`."""

from __future__ import annotations

import os

from .data import DataIter, load_dataset


def load_data_fashion_mnist(
    batch_size: int,
    resize: int | None = None,
    root: str | os.PathLike | None = None,
    device="cpu",
    verify: bool = True,
) -> tuple[DataIter, DataIter]:
    """d2l's helper: (train_iter, test_iter) over Fashion-MNIST in [0, 1], optionally resized."""
    data = load_dataset(
        "fashion-mnist", root, scaling="unit", size=resize or 28, resize=bool(resize), device=device, verify=verify
    )
    return DataIter(data.train, batch_size, shuffle=True), DataIter(data.test, batch_size, shuffle=False)
