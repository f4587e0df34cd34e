"""Data (d2l sections 3.2, 3.3, 3.5): the chapters' loaders, on lenet's verified files and on-device tensors."""

from __future__ import annotations

import os
import sys

import numpy as np
import torch

from ..data import DataIter, get_dataset_info, load_dataset, locate, resolve_root
from ..data.download import download_file
from ..errors import LenetError
from .plotting import _plt

__all__ = [  # d2l's names in this section, re-exported by lenet.d2l
    "FASHION_MNIST_LABELS", "get_dataloader_workers", "get_fashion_mnist_labels", "load_array",
    "load_data_fashion_mnist", "show_images", "synthetic_data",
]  # fmt: skip


def synthetic_data(w, b, num_examples):
    """y = Xw + b + noise (d2l section 3.2)."""
    X = torch.normal(0, 1, (num_examples, len(w)))
    y = torch.matmul(X, w) + b
    y += torch.normal(0, 0.01, y.shape)
    return X, y.reshape((-1, 1))


def load_array(data_arrays, batch_size, is_train=True):
    """A PyTorch DataLoader over tensors (d2l section 3.3)."""
    dataset = torch.utils.data.TensorDataset(*data_arrays)
    return torch.utils.data.DataLoader(dataset, batch_size, shuffle=is_train)


FASHION_MNIST_LABELS = ["t-shirt", "trouser", "pullover", "dress", "coat",
                        "sandal", "shirt", "sneaker", "bag", "ankle boot"]  # fmt: skip


def get_fashion_mnist_labels(labels):
    """Fashion-MNIST's text labels for class indices."""
    return [FASHION_MNIST_LABELS[int(i)] for i in labels]


def show_images(imgs, num_rows, num_cols, titles=None, scale=1.5):
    """A grid of images with titles, through pyplot (d2l's show_images); returns the axes."""
    _, axes = _plt().subplots(num_rows, num_cols, figsize=(num_cols * scale, num_rows * scale))
    axes = np.asarray(axes).flatten()
    for i, (ax, img) in enumerate(zip(axes, imgs, strict=False)):
        ax.imshow(img.detach().cpu().numpy() if torch.is_tensor(img) else img)
        ax.axes.get_xaxis().set_visible(False)
        ax.axes.get_yaxis().set_visible(False)
        if titles:
            ax.set_title(titles[i])
    return axes


def get_dataloader_workers() -> int:
    """d2l's 4 loader processes (lenet's iterators need none: the data are tensors already)."""
    return 4


def load_data_fashion_mnist(batch_size, resize=None, *, root=None, verify=None, dataset="fashion-mnist",
                            device="cpu", download=True) -> tuple[DataIter, DataIter]:  # fmt: skip
    """d2l's helper: (train_iter, test_iter) over Fashion-MNIST in [0, 1], optionally resized.

    The iterators yield (X (B, 1, H, W) float, y (B,) int64) like d2l's DataLoaders, the training one
    reshuffled on every pass; lenet.fit and lenet.evaluate take them as they are.
    Beyond d2l: `root` (default $LENET_DATA, else ~/.cache/lenet; missing files are downloaded and verified
    there when `download`), `verify=False` (or LENET_NO_VERIFY=1) to use a copy whose checksums are not the
    official ones after a one-line warning, `dataset` (e.g. "mnist": the same iterators over another dataset
    of the catalogue) and `device` (where the tensors live).
    """
    if verify is None:
        verify = os.environ.get("LENET_NO_VERIFY", "") not in ("1", "true", "yes")
    if isinstance(resize, tuple | list):
        if len(set(resize)) != 1:
            raise LenetError(f"resize={tuple(resize)}: lenet resizes to squares only")
        resize = resize[0]
    if download:
        _fetch_missing(dataset, root)
    try:
        data = load_dataset(dataset, root, scaling="unit", size=resize or 28, resize=bool(resize), device=device,
                            verify=verify)  # fmt: skip
    except LenetError as e:  # a notebook cannot pass the CLI's flag
        raise LenetError(str(e).replace("pass --no-verify", "pass verify=False (or set LENET_NO_VERIFY=1)")) from None
    return DataIter(data.train, batch_size, shuffle=True), DataIter(data.test, batch_size, shuffle=False)


def _fetch_missing(name: str, root) -> None:
    """Download the dataset's files that are not on disk (a copy the user has is left alone)."""
    info, folder = get_dataset_info(name), resolve_root(root)
    missing = [spec for spec in info.files if locate(info, spec, folder) is None]
    if not missing:
        return
    target = folder / info.name
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise LenetError(f"{target}: cannot create the data folder ({e.strerror})") from None
    for spec in missing:
        download_file(info, spec, target, info.mirrors, timeout=30.0, progress=sys.stderr.isatty())
