"""Seed 002's Keras LeNet as the notebook wrote it, on MNIST or Fashion-MNIST read from lenet's data root.

The accuracy reference for `lenet train --recipe keras`: same net, same raw 0-255 input, SGD lr 0.9, batch 32,
5 epochs, the last 10 % of the training set for validation. Needs TensorFlow (the `bench` extra, or any Python
that has it):

    /tmp/tf/bin/python benchmarks/seed002_keras.py --root DATA [--dataset mnist] [--seed 0]
"""

import argparse
import gzip
from pathlib import Path

import numpy as np
import tensorflow as tf
from tensorflow.keras import layers, models


def read_idx(path: Path) -> np.ndarray:
    data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * dims).reshape(shape)


def load(root: Path, name: str) -> np.ndarray:
    for candidate in (root / f"{name}.gz", root / name):
        if candidate.is_file():
            return read_idx(candidate)
    raise SystemExit(f"{root / name}(.gz) is missing")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, help="lenet's data root (holding mnist/ or fashion-mnist/)")
    parser.add_argument("--dataset", default="mnist", choices=["mnist", "fashion-mnist"])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    folder = Path(args.root) / args.dataset
    tf.keras.utils.set_random_seed(args.seed)

    # the seed's lenet_model(), layer for layer
    lenet = models.Sequential()
    lenet.add(layers.Conv2D(filters=6, kernel_size=5, activation="sigmoid", input_shape=(28, 28, 1)))
    lenet.add(layers.MaxPool2D(pool_size=2, strides=2))
    lenet.add(layers.Conv2D(filters=16, kernel_size=5, activation="sigmoid"))
    lenet.add(layers.MaxPool2D(pool_size=2, strides=2))
    lenet.add(layers.Flatten())
    lenet.add(layers.Dense(120, activation="sigmoid"))
    lenet.add(layers.Dense(84, activation="sigmoid"))
    lenet.add(layers.Dense(10, activation="sigmoid"))

    train_images = tf.reshape(load(folder, "train-images-idx3-ubyte"), (60000, 28, 28, 1))
    test_images = tf.reshape(load(folder, "t10k-images-idx3-ubyte"), (10000, 28, 28, 1))
    train_labels, test_labels = load(folder, "train-labels-idx1-ubyte"), load(folder, "t10k-labels-idx1-ubyte")
    optimizer = tf.keras.optimizers.SGD(learning_rate=0.9, momentum=0.0, nesterov=False)
    lenet.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    lenet.fit(train_images, train_labels, epochs=5, validation_split=0.1, verbose=2)
    lenet.evaluate(test_images, test_labels, verbose=2)


if __name__ == "__main__":
    main()
