"""The datasets lenet knows: their classes, official files and checksums, mirrors, and where they live on disk."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import LenetError


@dataclass(frozen=True)
class DataFile:
    """One of a dataset's four official files and what its bytes must hash to."""

    name: str  # official file name, e.g. "train-images-idx3-ubyte.gz"
    archive_md5: str | None  # md5 of the .gz as the dataset's own page publishes it
    payload_md5: str | None  # md5 of the decompressed IDX payload (lets a re-compressed copy pass)


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    classes: tuple[str, ...]
    train_images: DataFile
    train_labels: DataFile
    test_images: DataFile
    test_labels: DataFile
    mirrors: tuple[str, ...]  # base URLs, tried in order
    homepage: str
    mean: float  # pixel mean and std of the training images in [0, 1], for 'standard' scaling
    std: float

    @property
    def files(self) -> tuple[DataFile, ...]:
        return (self.train_images, self.train_labels, self.test_images, self.test_labels)

    def split_files(self, split: str) -> tuple[DataFile, DataFile]:
        if split == "train":
            return self.train_images, self.train_labels
        if split == "test":
            return self.test_images, self.test_labels
        raise LenetError(f"unknown split {split!r}; expected 'train' or 'test'")


DATASETS: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo(
        name="mnist",
        classes=tuple(str(d) for d in range(10)),
        train_images=DataFile(
            "train-images-idx3-ubyte.gz",
            "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "6bbc9ace898e44ae57da46a324031adb",
        ),
        train_labels=DataFile(
            "train-labels-idx1-ubyte.gz",
            "d53e105ee54ea40749a09fcbcd1e9432",
            "a25bea736e30d166cdddb491f175f624",
        ),
        test_images=DataFile(
            "t10k-images-idx3-ubyte.gz",
            "9fb629c4189551a2d022fa330f9573f3",
            "2646ac647ad5339dbf082846283269ea",
        ),
        test_labels=DataFile(
            "t10k-labels-idx1-ubyte.gz",
            "ec29112dd5afa0611ce80d1b7f02629c",
            "27ae3e4e09519cfbb04c329615203637",
        ),
        # yann.lecun.com has answered 403 for years; it stays last as the historical source.
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
            "http://yann.lecun.com/exdb/mnist/",
        ),
        homepage="http://yann.lecun.com/exdb/mnist/",
        mean=0.1307,
        std=0.3081,
    ),
    "fashion-mnist": DatasetInfo(
        name="fashion-mnist",
        classes=(
            "t-shirt",
            "trouser",
            "pullover",
            "dress",
            "coat",
            "sandal",
            "shirt",
            "sneaker",
            "bag",
            "ankle boot",
        ),  # fmt: skip
        # Image payload md5s are not published; a re-compressed copy of the images must match the archive.
        train_images=DataFile("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d", None),
        train_labels=DataFile(
            "train-labels-idx1-ubyte.gz",
            "25c81989df183df01b3e8a0aad5dffbe",
            "9018921c3c673c538a1fc5bad174d6f9",
        ),
        test_images=DataFile("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79", None),
        test_labels=DataFile(
            "t10k-labels-idx1-ubyte.gz",
            "bb300cfdad3c16e7a12a480ee83cd310",
            "15d484375f8d13e6eb1aabb0c3f46965",
        ),
        mirrors=(
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
            "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
        ),
        homepage="https://github.com/zalandoresearch/fashion-mnist",
        mean=0.2860,
        std=0.3530,
    ),
    "kmnist": DatasetInfo(
        name="kmnist",
        classes=("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"),
        train_images=DataFile("train-images-idx3-ubyte.gz", "bdb82020997e1d708af4cf47b453dcf7", None),
        train_labels=DataFile("train-labels-idx1-ubyte.gz", "e144d726b3acfaa3e44228e80efcd344", None),
        test_images=DataFile("t10k-images-idx3-ubyte.gz", "5c965bf0a639b31b8f53240b1b52f4d7", None),
        test_labels=DataFile("t10k-labels-idx1-ubyte.gz", "7320c461ea6c1c855c0b718fb2a4b134", None),
        mirrors=(
            "https://storage.googleapis.com/kuzushiji-mnist/",
            "http://codh.rois.ac.jp/kmnist/dataset/kmnist/",
        ),
        homepage="https://github.com/rois-codh/kmnist",
        mean=0.1918,
        std=0.3483,
    ),
}


def get_dataset_info(name: str) -> DatasetInfo:
    """The catalogue entry for `name`, or an error that lists the known datasets."""
    try:
        return DATASETS[name]
    except KeyError:
        raise LenetError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}") from None


def resolve_root(root: str | os.PathLike | None = None) -> Path:
    """The data root: `root` if given, else $LENET_DATA, else ~/.cache/lenet."""
    if root is not None:
        return Path(root).expanduser()
    if os.environ.get("LENET_DATA"):
        return Path(os.environ["LENET_DATA"]).expanduser()
    return Path.home() / ".cache" / "lenet"
