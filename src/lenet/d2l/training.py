"""Training and evaluation (d2l sections 3.6, 6.2, 6.6): Timer, Accumulator, accuracy, the chapters' loops;
train_ch6 through lenet's trainer."""

from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn

from ..config import resolve
from ..data import DataIter, Split, as_split
from ..train.report import chance_hint
from .data import get_fashion_mnist_labels, show_images

__all__ = [  # d2l's names in this section, re-exported by lenet.d2l
    "Accumulator", "Timer", "accuracy", "corr2d", "evaluate_accuracy", "evaluate_accuracy_gpu", "linreg",
    "predict_ch3", "sgd", "squared_loss", "train_ch3", "train_ch6", "train_epoch_ch3", "try_all_gpus", "try_gpu",
]  # fmt: skip


class Timer:
    """Record running times (d2l's Timer)."""

    def __init__(self):
        self.times: list[float] = []
        self.start()

    def start(self) -> None:
        self.tik = time.time()

    def stop(self) -> float:
        self.times.append(time.time() - self.tik)
        return self.times[-1]

    def avg(self) -> float:
        return sum(self.times) / len(self.times)

    def sum(self) -> float:
        return sum(self.times)

    def cumsum(self) -> list[float]:
        return np.array(self.times).cumsum().tolist()


class Accumulator:
    """Sums over n variables (d2l's Accumulator)."""

    def __init__(self, n: int):
        self.data = [0.0] * n

    def add(self, *args) -> None:
        self.data = [a + float(b) for a, b in zip(self.data, args, strict=False)]

    def reset(self) -> None:
        self.data = [0.0] * len(self.data)

    def __getitem__(self, idx):
        return self.data[idx]


def accuracy(y_hat, y) -> float:
    """The number of correct predictions (d2l's accuracy)."""
    if len(y_hat.shape) > 1 and y_hat.shape[1] > 1:
        y_hat = y_hat.argmax(axis=1)
    cmp = y_hat.type(y.dtype) == y
    return float(cmp.type(y.dtype).sum())


def evaluate_accuracy(net, data_iter) -> float:
    """A model's accuracy on a dataset (d2l section 3.6)."""
    if isinstance(net, nn.Module):
        net.eval()
    return _accuracy(net, data_iter, None)


def evaluate_accuracy_gpu(net, data_iter, device=None) -> float:
    """A model's accuracy on a dataset, computed on `device` (default: where the net's parameters are)."""
    if isinstance(net, nn.Module):
        net.eval()
        if not device:
            device = next(iter(net.parameters())).device
    return _accuracy(net, data_iter, device)


def _accuracy(net, data_iter, device) -> float:
    if isinstance(data_iter, DataIter) and isinstance(net, nn.Module):  # whole-split batches on the fast path
        from ..train.loop import evaluate

        split = _on(data_iter.split, device) if device is not None else data_iter.split
        with torch.no_grad():  # a hand-written batch norm (d2l 7.5) reads is_grad_enabled() for its mode
            return evaluate(net, split)["acc"]
    metric = Accumulator(2)
    with torch.no_grad():
        for X, y in data_iter:
            if device is not None:
                X = [x.to(device) for x in X] if isinstance(X, list) else X.to(device)
                y = y.to(device)
            metric.add(accuracy(net(X), y), y.numel())
    return metric[0] / metric[1]


def _on(split: Split, device) -> Split:
    device = torch.device(device)
    if split.labels.device == device:
        return split
    return Split(split.images.to(device), split.labels.to(device))


def sgd(params, lr, batch_size) -> None:
    """Minibatch stochastic gradient descent (d2l section 3.2)."""
    with torch.no_grad():
        for param in params:
            param -= lr * param.grad / batch_size
            param.grad.zero_()


def linreg(X, w, b):
    return torch.matmul(X, w) + b


def squared_loss(y_hat, y):
    return (y_hat - y.reshape(y_hat.shape)) ** 2 / 2


def train_epoch_ch3(net, train_iter, loss, updater):
    """One epoch of d2l chapter 3's loop; returns (train loss, train accuracy)."""
    if isinstance(net, nn.Module):
        net.train()
    metric = Accumulator(3)
    for X, y in train_iter:
        y_hat = net(X)
        l = loss(y_hat, y)  # noqa: E741  (d2l's name)
        if isinstance(updater, torch.optim.Optimizer):
            updater.zero_grad()
            l.mean().backward()
            updater.step()
        else:
            l.sum().backward()
            updater(X.shape[0])
        metric.add(float(l.sum()), accuracy(y_hat, y), y.numel())
    return metric[0] / metric[2], metric[1] / metric[2]


def train_ch3(net, train_iter, test_iter, loss, num_epochs, updater):
    """d2l chapter 3's training loop with its Animator (d2l's closing assertions left out)."""
    from ..train.live import LiveCurves

    animator = LiveCurves(xlabel="epoch", xlim=[1, num_epochs], ylim=[0.3, 0.9],
                        legend=["train loss", "train acc", "test acc"])  # fmt: skip
    for epoch in range(num_epochs):
        train_metrics = train_epoch_ch3(net, train_iter, loss, updater)
        test_acc = evaluate_accuracy(net, test_iter)
        animator.add(epoch + 1, (*train_metrics, test_acc))


def predict_ch3(net, test_iter, n=6):
    """Show the first n test images with their true and predicted labels."""
    X, y = next(iter(test_iter))
    trues = get_fashion_mnist_labels(y)
    preds = get_fashion_mnist_labels(net(X).argmax(axis=1))
    titles = [true + "\n" + pred for true, pred in zip(trues, preds, strict=False)]
    show_images(X[0:n].reshape((n, X.shape[-2], X.shape[-1])), 1, n, titles=titles[0:n])


def try_gpu(i=0) -> torch.device:
    """cuda:i if there is such a GPU, else the CPU (d2l's try_gpu)."""
    if torch.cuda.device_count() >= i + 1:
        return torch.device(f"cuda:{i}")
    return torch.device("cpu")


def try_all_gpus() -> list[torch.device]:
    """Every GPU, or [cpu] when there is none."""
    devices = [torch.device(f"cuda:{i}") for i in range(torch.cuda.device_count())]
    return devices if devices else [torch.device("cpu")]


def corr2d(X, K):
    """2-d cross-correlation (d2l section 6.2)."""
    h, w = K.shape
    Y = torch.zeros((X.shape[0] - h + 1, X.shape[1] - w + 1))
    for i in range(Y.shape[0]):
        for j in range(Y.shape[1]):
            Y[i, j] = (X[i : i + h, j : j + w] * K).sum()
    return Y


def train_ch6(net, train_iter, test_iter, num_epochs, lr, device):
    """Train a model on `device` (d2l section 6.6): d2l's init, SGD, loss, Animator and printout, lenet's trainer.

    `net` is any module (an nn.Sequential LeNet takes lenet's compiled fast path on the CPU); the iterators
    are those of load_data_fashion_mnist, DataLoaders or anything yielding (X, y) batches.
    """
    from ..train.live import TrainingCurves
    from ..train.loop import fit

    def init_weights(m):
        if type(m) is nn.Linear or type(m) is nn.Conv2d:
            nn.init.xavier_uniform_(m.weight)

    net.apply(init_weights)
    print("training on", device)
    net.to(device)
    train_data, test_data = _to_device(train_iter, device), _to_device(test_iter, device)
    cfg = resolve("d2l", lr=lr, epochs=num_epochs, batch_size=train_data.batch_size)
    animator = TrainingCurves(num_epochs)
    history = fit(net, train_data, cfg, test=test_data, on_progress=animator.on_progress, on_epoch=animator.on_epoch,
                  progress=False)  # fmt: skip
    animator.close()
    last = history.epochs[-1]
    print(f"loss {last['train_loss']:.3f}, train acc {last['train_acc']:.3f}, test acc {last['test_acc']:.3f}")
    print(f"{history.examples_per_sec:.1f} examples/sec on {device}")
    hint = chance_hint(net, last, lr)
    if hint:
        print(hint)


def _to_device(data, device) -> DataIter:
    """The data as a DataIter over tensors on `device`, moved there once (a DataLoader is read once)."""
    if isinstance(data, DataIter):
        return DataIter(_on(data.split, device), data.batch_size, data.shuffle, data.generator)
    batch_size = getattr(data, "batch_size", None)
    return DataIter(_on(as_split(data), device), batch_size if isinstance(batch_size, int) else 256, shuffle=True)
