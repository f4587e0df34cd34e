"""The d2l helpers of the LeNet chapters (d2l.torch of d2l-zh 2.x), backed by lenet: `from lenet import d2l`.

Same names, arguments, printout and figures as d2l's, so the chapters' code runs with only its import line
changed; `train_ch6` trains through lenet's trainer (its compiled fast path when the net is a classic LeNet on
the CPU) with d2l's semantics: Xavier-uniform Linear/Conv2d weights, SGD, mean cross-entropy, the same lines.
`Animator` draws live in Jupyter and to a PNG file anywhere else (a script, a terminal, CI).

Not d2l's: the data come from lenet's verified files (`root=` or $LENET_DATA, else ~/.cache/lenet, downloaded
on first use) as on-device tensors, not torchvision's DataLoader; pyplot is imported only when a helper that
draws through it (`plt`, `plot`, `show_images`, `set_figsize`) is used; d2l's assertions in train_ch3 are left out.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np
import torch
from torch import nn

from .config import resolve
from .data import DataIter, Split, as_split, get_dataset_info, load_dataset, locate, resolve_root
from .data.download import download_file
from .errors import LenetError
from .train.report import chance_hint

# ----------------------------------------------------------------------------------------------------------
# Plotting (d2l section 2.4): through pyplot, as in d2l, but imported only when used


def __getattr__(name: str):
    if name == "plt":  # d2l.plt: the user's pyplot, with the user's backend
        import matplotlib.pyplot

        return matplotlib.pyplot
    if name == "Animator":  # d2l's Animator(xlabel, ylabel, legend, xlim, ...), add(x, y): lenet's LiveCurves
        from .train.live import LiveCurves

        return LiveCurves
    if name == "display":  # d2l.display: IPython's display module
        from IPython import display

        return display
    raise AttributeError(f"module 'lenet.d2l' has no attribute {name!r}")


def _plt():
    import matplotlib.pyplot

    return matplotlib.pyplot


def use_svg_display() -> None:
    """Show pyplot figures as SVG in Jupyter (a no-op outside IPython)."""
    if "IPython" in sys.modules:
        try:
            from matplotlib_inline.backend_inline import set_matplotlib_formats
        except ImportError:
            return
        set_matplotlib_formats("svg")


def set_figsize(figsize=(3.5, 2.5)) -> None:
    """Set pyplot's default figure size (and SVG display, as d2l does)."""
    use_svg_display()
    _plt().rcParams["figure.figsize"] = figsize


def plot(X, Y=None, xlabel=None, ylabel=None, legend=None, xlim=None, ylim=None, xscale="linear",
         yscale="linear", fmts=("-", "m--", "g-.", "r:"), figsize=(3.5, 2.5), axes=None):  # fmt: skip
    """Plot data points (d2l's `plot`): one or several lines, Y against X."""
    set_figsize(figsize)
    axes = axes if axes else _plt().gca()

    def has_one_axis(v):
        return (hasattr(v, "ndim") and v.ndim == 1) or (isinstance(v, list) and not hasattr(v[0], "__len__"))

    if has_one_axis(X):
        X = [X]
    if Y is None:
        X, Y = [[]] * len(X), X
    elif has_one_axis(Y):
        Y = [Y]
    if len(X) != len(Y):
        X = X * len(Y)
    axes.cla()
    for x, y, fmt in zip(X, Y, fmts, strict=False):
        axes.plot(x, y, fmt) if len(x) else axes.plot(y, fmt)
    from .train.live import set_axes

    set_axes(axes, xlabel, ylabel, xlim, ylim, xscale, yscale, legend or [])


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


# ----------------------------------------------------------------------------------------------------------
# Data (d2l sections 3.2, 3.3, 3.5)


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


# ----------------------------------------------------------------------------------------------------------
# Training and evaluation (d2l sections 3.6, 6.2, 6.6)


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
        from .train.loop import evaluate

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
    from .train.live import LiveCurves

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
    from .train.loop import fit
    from .train.plots import TrainingCurves

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


# ----------------------------------------------------------------------------------------------------------
# d2l's aliases (config.ini of d2l-zh): the chapters write d2l.reshape(x, shape), d2l.size(y), ...

nn_Module = nn.Module
ones, zeros, tensor, arange, meshgrid = torch.ones, torch.zeros, torch.tensor, torch.arange, torch.meshgrid
sin, sinh, cos, cosh, tanh, linspace = torch.sin, torch.sinh, torch.cos, torch.cosh, torch.tanh, torch.linspace
exp, log, normal, rand, randn, matmul = torch.exp, torch.log, torch.normal, torch.rand, torch.randn, torch.matmul
int32, float32, concat, stack, abs, eye = torch.int32, torch.float32, torch.cat, torch.stack, torch.abs, torch.eye  # noqa: A001


def numpy(x, *args, **kwargs):
    return x.detach().numpy(*args, **kwargs)


def size(x, *args, **kwargs):
    return x.numel(*args, **kwargs)


def reshape(x, *args, **kwargs):
    return x.reshape(*args, **kwargs)


def to(x, *args, **kwargs):
    return x.to(*args, **kwargs)


def reduce_sum(x, *args, **kwargs):
    return x.sum(*args, **kwargs)


def reduce_mean(x, *args, **kwargs):
    return x.mean(*args, **kwargs)


def argmax(x, *args, **kwargs):
    return x.argmax(*args, **kwargs)


def astype(x, *args, **kwargs):
    return x.type(*args, **kwargs)


def transpose(x, *args, **kwargs):
    return x.t(*args, **kwargs)
