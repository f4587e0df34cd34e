"""The Keras contestant of `lenet bench`, run as a script in its own process (it imports nothing from lenet).

Usage: python keras_worker.py TRAIN.npz THREADS BATCH. Prints one JSON line of versions once ready; then, for
every line N read from stdin, trains N batches with Keras `fit` and prints {"samples_per_s": ...}.
The net, loss and optimiser are seed 002's: a sigmoid LeNet with max pooling on raw 0-255 pixels, sigmoid
outputs, sparse categorical cross-entropy, SGD with learning rate 0.9.
"""

import json
import sys
import time

import numpy as np


def main() -> None:
    path, threads, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    import keras
    from keras import layers

    arrays = np.load(path)
    x = arrays["x"].reshape(-1, 28, 28, 1).astype("float32")  # seed 002 feeds the raw pixels
    y = arrays["y"].astype("int64")

    def build():
        keras.utils.set_random_seed(0)
        net = keras.Sequential([
            keras.Input((28, 28, 1)),
            layers.Conv2D(6, 5, activation="sigmoid"),
            layers.MaxPool2D(2, 2),
            layers.Conv2D(16, 5, activation="sigmoid"),
            layers.MaxPool2D(2, 2),
            layers.Flatten(),
            layers.Dense(120, activation="sigmoid"),
            layers.Dense(84, activation="sigmoid"),
            layers.Dense(10, activation="sigmoid"),
        ])  # fmt: skip
        net.compile(optimizer=keras.optimizers.SGD(learning_rate=0.9), loss="sparse_categorical_crossentropy",
                    metrics=["accuracy"])  # fmt: skip
        return net

    print(json.dumps({"tensorflow": tf.__version__, "keras": keras.__version__}), flush=True)
    rng = np.random.default_rng(0)
    for line in sys.stdin:
        steps = int(line)
        idx = rng.permutation(len(x))[: steps * batch]
        net = build()
        net.fit(x[idx[:batch]], y[idx[:batch]], batch_size=batch, epochs=1, verbose=0)  # trace the step
        started = time.perf_counter()
        net.fit(x[idx], y[idx], batch_size=batch, epochs=1, verbose=0, shuffle=True)
        elapsed = time.perf_counter() - started
        print(json.dumps({"samples_per_s": len(idx) / elapsed}), flush=True)


if __name__ == "__main__":
    main()
