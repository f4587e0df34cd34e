"""In memory: one normalised tensor per split on the device, batches by on-device permutation (airbench's loader).

There are no loader workers and no per-batch host copies: an epoch is an on-device permutation sliced into batches.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..errors import LenetError
from .catalogue import get_dataset_info
from .integrity import load_raw

SCALINGS = ("none", "unit", "standard", "lecun")


def scale_images(x: torch.Tensor, scaling: str, mean: float = 0.0, std: float = 1.0) -> torch.Tensor:
    """Map raw 0..255 float pixels to the network's input range."""
    if scaling == "none":  # raw 0..255, as seed 002 feeds Keras
        return x
    if scaling == "unit":  # [0, 1], as torchvision's ToTensor
        return x / 255.0
    if scaling == "standard":  # zero mean, unit variance over the dataset's training images
        return (x / 255.0 - mean) / std
    if scaling == "lecun":  # LeCun 1998: background -0.1, ink 1.175, so the input has mean ~0 and variance ~1
        return x * (1.275 / 255.0) - 0.1
    raise LenetError(f"unknown input scaling {scaling!r}; expected one of {', '.join(SCALINGS)}")


def to_input(images: torch.Tensor, size: int = 28, scaling: str = "unit", mean=0.0, std=1.0, resize=False):
    """uint8 (N, H, W) images -> float (N, 1, size, size) network input, on the images' device.

    Padding adds background before scaling, so that under 'lecun' the border is -0.1 like the background.
    """
    x = images.to(torch.float32).unsqueeze(1)
    h = x.shape[-1]
    if size != h:
        if resize:
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=size < h)
        elif size > h and (size - h) % 2 == 0:
            x = F.pad(x, [(size - h) // 2] * 4)
        else:
            raise LenetError(f"cannot pad {h}x{h} images to {size}x{size}; use resize")
    return scale_images(x, scaling, mean, std).contiguous()


@dataclass
class Split:
    """One split on the device: normalised images (N, 1, H, W) and int64 labels (N,)."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def batches(
        self,
        batch_size: int,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        drop_last: bool = False,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One epoch of (x, y) batches; with shuffle, an on-device permutation drawn from `generator`."""
        n = len(self)
        order = torch.randperm(n, device=self.labels.device, generator=generator) if shuffle else None
        stop = n - n % batch_size if drop_last else n
        for start in range(0, stop, batch_size):
            if order is None:
                yield self.images[start : start + batch_size], self.labels[start : start + batch_size]
            else:
                idx = order[start : start + batch_size]
                # index_select copies whole rows (6x faster on a CPU than indexing's per-element gather)
                yield self.images.index_select(0, idx), self.labels.index_select(0, idx)


@dataclass
class Dataset:
    """A loaded dataset: its splits on one device and what the inputs mean."""

    name: str
    classes: tuple[str, ...]
    train: Split
    test: Split | None
    val: Split | None = None
    scaling: str = "unit"
    size: int = 28
    mean: float = 0.0
    std: float = 1.0
    extra: dict = field(default_factory=dict)


def load_dataset(
    name: str,
    root: str | os.PathLike | None = None,
    *,
    scaling: str = "unit",
    size: int = 28,
    resize: bool = False,
    val_fraction: float = 0.0,
    device: str | torch.device = "cpu",
    verify: bool = True,
) -> Dataset:
    """Load a dataset onto `device`, normalised once.

    val_fraction takes the *last* fraction of the training set as validation, as Keras' validation_split does.
    """
    if scaling not in SCALINGS:
        raise LenetError(f"unknown input scaling {scaling!r}; expected one of {', '.join(SCALINGS)}")
    if not 0.0 <= val_fraction < 1.0:
        raise LenetError(f"validation fraction must be in [0, 1), got {val_fraction}")
    info = get_dataset_info(name)
    train_x, train_y = load_raw(name, "train", root, verify)
    test_x, test_y = load_raw(name, "test", root, verify)
    # 'standard' uses the catalogue's statistics, not this copy's, so a model needs no data to be served.
    mean, std = info.mean, info.std

    def split(x, y) -> Split:
        x = torch.from_numpy(x).to(device)
        return Split(to_input(x, size, scaling, mean, std, resize), torch.from_numpy(y).to(device))

    val = None
    if val_fraction:
        cut = int(math.floor(len(train_y) * (1.0 - val_fraction)))
        val = split(train_x[cut:], train_y[cut:])
        train_x, train_y = train_x[:cut], train_y[:cut]
    return Dataset(
        name=name,
        classes=info.classes,
        train=split(train_x, train_y),
        test=split(test_x, test_y),
        val=val,
        scaling=scaling,
        size=size,
        mean=mean,
        std=std,
    )


class DataIter:
    """A re-iterable epoch of batches with a length, like d2l's DataLoader (reshuffles on every pass)."""

    def __init__(self, split: Split, batch_size: int, shuffle: bool, generator: torch.Generator | None = None):
        self.split, self.batch_size, self.shuffle, self.generator = split, batch_size, shuffle, generator

    def __iter__(self):
        return self.split.batches(self.batch_size, self.shuffle, self.generator)

    def __len__(self) -> int:
        return math.ceil(len(self.split) / self.batch_size)


def as_split(data, what: str = "data") -> Split:
    """A Split from what a user holds: a Split, a DataIter, (X, y) tensors, or any iterable of (X, y) batches
    (a DataLoader). Images become float (N, 1, H, W) on the device they came on; labels int64."""
    if isinstance(data, Split):
        return data
    if isinstance(data, DataIter):
        return data.split
    if isinstance(data, Dataset):
        raise LenetError(f"{what}: a Dataset holds several splits; pass one (e.g. data.train or data.test)")
    if isinstance(data, tuple | list) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
        images, labels = data
    else:
        try:
            batches = [(x, y) for x, y in data]
        except (TypeError, ValueError):
            raise LenetError(
                f"{what}: expected a DataIter, a DataLoader or (images, labels) tensors, not {type(data).__name__}"
            ) from None
        if not batches:
            raise LenetError(f"{what}: no batches in it")
        images, labels = torch.cat([x for x, _ in batches]), torch.cat([y for _, y in batches])
    if images.dim() == 3:
        images = images.unsqueeze(1)
    if images.dim() != 4 or images.shape[1] != 1 or len(images) != len(labels):
        raise LenetError(
            f"{what}: expected images (N, 1, H, W) and N labels, got {tuple(images.shape)} and {tuple(labels.shape)}"
        )
    if not images.is_floating_point():
        raise LenetError(f"{what}: images are {images.dtype}; scale them to floats first (e.g. X.float() / 255)")
    if labels.is_floating_point() or labels.dim() != 1:
        raise LenetError(
            f"{what}: labels must be a 1-d tensor of class indices, got {labels.dtype} {tuple(labels.shape)}"
        )
    return Split(images.float().contiguous(), labels.long().to(images.device))


def batch_size_of(data) -> int | None:
    """The batch size a DataIter or DataLoader was made with (None for other data)."""
    size = getattr(data, "batch_size", None)
    return size if isinstance(size, int) and size > 0 else None
