"""In memory: each split on the device as uint8 pixels, batches by on-device permutation (airbench's loader).

There are no loader workers and no per-batch host copies: an epoch is an on-device permutation sliced into
batches, each normalised as it is drawn (a quarter of the memory of a float copy, for the same numbers).
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
from .integrity import load_splits

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


def pad_pixels(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (N, H, W) -> (N, 1, size, size), padded with background (0) around the centre."""
    x = images.unsqueeze(1)
    h = x.shape[-1]
    if size == h:
        return x.contiguous()
    if size < h or (size - h) % 2:
        raise LenetError(f"cannot pad {h}x{h} images to {size}x{size}; use resize")
    return F.pad(x, [(size - h) // 2] * 4)


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


@dataclass(frozen=True)
class Normalise:
    """uint8 pixels (N, 1, H, W) -> the float network input, as `to_input` makes it (the same arithmetic)."""

    scaling: str
    mean: float = 0.0
    std: float = 1.0

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        return scale_images(pixels.to(torch.float32), self.scaling, self.mean, self.std).contiguous()


class Split:
    """One split on the device: images as the network reads them (N, 1, H, W) and int64 labels (N,).

    A loaded dataset keeps its images as uint8 pixels with a `normalise` step applied to each batch as it is
    drawn; `images` then makes the whole float tensor on demand (for the few callers that want it).
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, normalise: Normalise | None = None):
        self.stored, self.labels, self.normalise = images, labels, normalise

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def images(self) -> torch.Tensor:
        """Every image as network input (a float copy when the split keeps pixels)."""
        return self.inputs(slice(None))

    def inputs(self, index: torch.Tensor | slice) -> torch.Tensor:
        """The network input of the images at `index` (a slice, or a tensor of indices)."""
        if isinstance(index, torch.Tensor):
            # index_select copies whole rows (6x faster on a CPU than indexing's per-element gather)
            x = self.stored.index_select(0, index.to(self.stored.device))
        else:
            x = self.stored[index]
        return x if self.normalise is None else self.normalise(x)

    def subset(self, index: torch.Tensor | slice) -> Split:
        """The images and labels at `index`, kept as they are stored."""
        if isinstance(index, torch.Tensor):
            return Split(self.stored.index_select(0, index), self.labels.index_select(0, index), self.normalise)
        return Split(self.stored[index], self.labels[index], self.normalise)

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
                yield self.inputs(slice(start, start + batch_size)), self.labels[start : start + batch_size]
            else:
                idx = order[start : start + batch_size]
                yield self.inputs(idx), self.labels.index_select(0, idx)


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
    """Load a dataset onto `device`: uint8 pixels (padded to `size`), normalised batch by batch as drawn
    (resized images, which need floats to resample, are normalised once).

    val_fraction takes the *last* fraction of the training set as validation, as Keras' validation_split does.
    """
    if scaling not in SCALINGS:
        raise LenetError(f"unknown input scaling {scaling!r}; expected one of {', '.join(SCALINGS)}")
    if not 0.0 <= val_fraction < 1.0:
        raise LenetError(f"validation fraction must be in [0, 1), got {val_fraction}")
    info = get_dataset_info(name)
    (train_x, train_y), (test_x, test_y) = load_splits(name, ("train", "test"), root, verify)
    # 'standard' uses the catalogue's statistics, not this copy's, so a model needs no data to be served.
    mean, std = info.mean, info.std

    def split(x, y) -> Split:
        x, y = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
        if resize:
            return Split(to_input(x, size, scaling, mean, std, resize), y)
        return Split(pad_pixels(x, size), y, Normalise(scaling, mean, std))

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
