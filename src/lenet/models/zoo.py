"""Every LeNet of the seed notebooks, built exactly, and ours.

Each model is an `nn.Sequential` of named layers, so `for layer in net: x = layer(x)` walks it as the seed
notebooks do, and `forward` returns logits (scores whose argmax is the class; softmax gives probabilities).
Shapes in the comments are for one input of the model's own size.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import torch
from torch import nn

from ..errors import LenetError
from .registry import register

# ----------------------------------------------------------------------------------------------------------
# Building blocks


class ClippedLog(nn.Module):
    """Keras' probability -> logit step: log(clip(p, eps, 1 - eps)).

    Keras' `sparse_categorical_crossentropy` on non-softmax outputs (TensorFlow backend, from_logits=False)
    clips the outputs to [1e-7, 1 - 1e-7], takes their log and feeds that to
    `sparse_softmax_cross_entropy_with_logits`. Ending the net with this layer makes torch's cross-entropy
    do the same arithmetic: softmax(log p) = p / sum(p), so the loss is -log(p_y / sum_i p_i) on clipped p.
    """

    def __init__(self, eps: float = 1e-7):
        super().__init__()
        self.eps = eps

    def forward(self, p: torch.Tensor) -> torch.Tensor:
        return torch.log(p.clamp(self.eps, 1.0 - self.eps))


class LeNet(nn.Sequential):
    """A feed-forward net of named layers; `input_size` is the side of the square 1-channel input it expects."""

    def __init__(self, layers: OrderedDict[str, nn.Module], input_size: int = 28):
        super().__init__(layers)
        self.input_size = input_size


def conv_block(prefix: str, c_in: int, c_out: int, k: int, pad: int, act: Callable[[], nn.Module] | None, pool):
    """conv -> activation -> pool, named `<layer><prefix>` in the seeds' numbering (conv1, act1, pool1)."""
    layers = [(f"conv{prefix}", nn.Conv2d(c_in, c_out, k, padding=pad))]
    if act is not None:
        layers.append((f"act{prefix}", act()))
    layers.append((f"pool{prefix}", pool(2, 2)))
    return layers


def classifier(sizes: tuple[int, ...], act: Callable[[], nn.Module] | None, first: int = 1):
    """Flatten, then Linear layers through `sizes` with `act` between them (none after the last)."""
    layers: list[tuple[str, nn.Module]] = [("flatten", nn.Flatten())]
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append((f"fc{i + 1}", nn.Linear(n_in, n_out)))
        if act is not None and i < len(sizes) - 2:
            layers.append((f"act{first + i}", act()))
    return layers


# ----------------------------------------------------------------------------------------------------------
# The chapter's exercises as options of the classic LeNets (d2l 6.6's exercises: max pooling instead of
# average, ReLU, other kernel sizes, channel counts and numbers of layers). No option gives the seed's net
# exactly; `lenet train --model-arg KEY=VALUE` sets them from the command line.

ACTIVATIONS: dict[str, Callable[[], nn.Module] | None] = {
    "sigmoid": nn.Sigmoid, "relu": nn.ReLU, "tanh": nn.Tanh, "leaky_relu": nn.LeakyReLU, "elu": nn.ELU,
    "gelu": nn.GELU, "silu": nn.SiLU, "none": None,
}  # fmt: skip
POOLINGS = {"avg": nn.AvgPool2d, "max": nn.MaxPool2d}
OPTIONS = ("activation", "pooling", "kernel_size", "channels", "conv_layers", "hidden", "fc_layers")
MORE_CHANNELS = (6, 16, 32, 64)  # conv layers 1..4, when only `conv_layers` is given
MORE_HIDDEN = (120, 84, 64)  # hidden Linear layers 1..3, when only `fc_layers` is given


def _whole(name: str, key: str, value, low: int, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise LenetError(f"model {name!r}: {key} takes a whole number from {low} to {high}, not {value!r}")
    return value


def _per_layer(name: str, key: str, value, count: int, low: int, high: int) -> tuple[int, ...]:
    """An int (every layer) or a list of ints (one per layer), each in [low, high]."""
    values = [value] * count if isinstance(value, int) and not isinstance(value, bool) else value
    if not isinstance(values, list | tuple):
        raise LenetError(f"model {name!r}: {key} takes a whole number or a list of them, not {value!r}")
    if len(values) != count:
        raise LenetError(f"model {name!r}: {key} lists {len(values)} values for {count} layers")
    return tuple(_whole(name, key, v, low, high) for v in values)


def classic(name: str, input_size: int, options: dict, *, activation: str, pooling: str, kernel_size=5,
            pad_first: bool, batch_norm: bool = False) -> LeNet:  # fmt: skip
    """A classic LeNet: conv stages (conv, [bn], activation, 2x2 pool), then Flatten and Linear layers.

    Keyword defaults are the seed's net; `options` (the user's, see OPTIONS) override them. The first conv
    is padded to keep its input's size when `pad_first` (d2l's), the second never, a third or fourth always
    ('same', so that they fit a 28x28 input). A bad option is a one-line error naming it and what it takes.
    """
    unknown = sorted(set(options) - set(OPTIONS) - ({"batch_norm"} if name == "lenet5-modern" else set()))
    if unknown:
        raise LenetError(f"model {name!r} has no option {unknown[0]!r}; its options: {', '.join(OPTIONS)}")
    activation, pooling = options.get("activation", activation), options.get("pooling", pooling)
    batch_norm = options.get("batch_norm", batch_norm)
    if activation not in ACTIVATIONS:
        raise LenetError(f"model {name!r}: activation {activation!r} is not one of {', '.join(ACTIVATIONS)}")
    if pooling not in POOLINGS:
        raise LenetError(f"model {name!r}: pooling {pooling!r} is not one of {', '.join(POOLINGS)}")
    if not isinstance(batch_norm, bool):
        raise LenetError(f"model {name!r}: batch_norm takes true or false, not {batch_norm!r}")
    given = options.get("channels")
    n_conv = _whole(name, "conv_layers", options.get("conv_layers", len(given) if isinstance(given, list | tuple)
                                                     else 2), 1, 4)  # fmt: skip
    channels = _per_layer(name, "channels", given if given is not None else MORE_CHANNELS[:n_conv], n_conv, 1, 1024)
    if isinstance(kernel_size, tuple):  # a seed's per-layer kernels, stretched to the number of layers
        kernel_size = (kernel_size + kernel_size[-1:] * n_conv)[:n_conv]
    kernels = _per_layer(name, "kernel_size", options.get("kernel_size", kernel_size), n_conv, 1, input_size)
    given = options.get("hidden")
    n_fc = _whole(name, "fc_layers", options.get("fc_layers", len(given) + 1 if isinstance(given, list | tuple)
                                                 else 3), 1, 4)  # fmt: skip
    hidden = _per_layer(name, "hidden", given if given is not None else MORE_HIDDEN[: n_fc - 1], n_fc - 1, 1, 65536)
    act, pool = ACTIVATIONS[activation], POOLINGS[pooling]

    layers: list[tuple[str, nn.Module]] = []
    side, c_in = input_size, 1
    for i, (c_out, k) in enumerate(zip(channels, kernels, strict=True), start=1):
        pad = k // 2 if (i == 1 and pad_first) or i > 2 else 0
        side = side + 2 * pad - k + 1  # conv i's output side; the pool halves it (rounding down)
        if side < 2:
            raise LenetError(f"model {name!r}: conv{i} ({k}x{k}) leaves {max(side, 0)}x{max(side, 0)} maps of a "
                             f"{input_size}x{input_size} input, too small to pool; use smaller kernels or fewer "
                             "conv layers")  # fmt: skip
        layers.append((f"conv{i}", nn.Conv2d(c_in, c_out, k, padding=pad, bias=not batch_norm)))
        if batch_norm:
            layers.append((f"bn{i}", nn.BatchNorm2d(c_out)))
        if act is not None:
            layers.append((f"act{i}", act()))
        layers.append((f"pool{i}", pool(2, 2)))
        side, c_in = side // 2, c_out
    layers += classifier((c_in * side * side, *hidden, 10), act, first=n_conv + 1)
    return LeNet(OrderedDict(layers), input_size)


# ----------------------------------------------------------------------------------------------------------
# The seed notebooks' nets (each takes the options above)


@register("lenet5-d2l", "001, 004", 28, "d2l's LeNet: sigmoid, average pooling, conv padded to keep 28x28")
def lenet5_d2l(**options) -> LeNet:
    # (B,1,28,28) -> conv1 (B,6,28,28) -> pool1 (B,6,14,14) -> conv2 (B,16,10,10) -> pool2 (B,16,5,5) -> 400
    return classic("lenet5-d2l", 28, options, activation="sigmoid", pooling="avg", pad_first=True)


@register("lenet5-mxnet", "000", 28, "d2l's MXNet LeNet: sigmoid, max pooling, unpadded convs (256 features)")
def lenet5_mxnet(**options) -> LeNet:
    # (B,1,28,28) -> conv1 (B,6,24,24) -> pool1 (B,6,12,12) -> conv2 (B,16,8,8) -> pool2 (B,16,4,4) -> 256
    return classic("lenet5-mxnet", 28, options, activation="sigmoid", pooling="max", pad_first=False)


@register("lenet5-keras", "002", 28, "the Keras LeNet: as lenet5-mxnet, plus a sigmoid on the 10 outputs")
def lenet5_keras(**options) -> LeNet:
    # Same shapes as lenet5-mxnet; the outputs go through a sigmoid and then Keras' loss arithmetic.
    net = classic("lenet5-keras", 28, options, activation="sigmoid", pooling="max", pad_first=False)
    acts = sum(name.startswith("act") for name, _ in net.named_children())
    net.add_module(f"act{acts + 1}", nn.Sigmoid())  # act5 in the seed's net
    net.add_module("keras_log", ClippedLog())
    return net


@register("lenet5-tutorial", "003 (official)", 32, "the PyTorch tutorial LeNet5: 32x32 input, ReLU, max pooling")
def lenet5_tutorial(**options) -> LeNet:
    # (B,1,32,32) -> conv1 (B,6,28,28) -> pool1 (B,6,14,14) -> conv2 (B,16,10,10) -> pool2 (B,16,5,5) -> 400
    return classic("lenet5-tutorial", 32, options, activation="relu", pooling="max", pad_first=False)


@register("lenet-community", "003 (民间版)", 28, "the community LeNet: 3x3 first conv, max pooling, no activations")
def lenet_community(**options) -> LeNet:
    # No activation anywhere, as in the seed: the whole net is one affine map composed with max pooling.
    # (B,1,28,28) -> conv1 (B,6,28,28) -> pool1 (B,6,14,14) -> conv2 (B,16,10,10) -> pool2 (B,16,5,5) -> 400
    return classic("lenet-community", 28, options, activation="none", pooling="max", kernel_size=(3, 5),
                   pad_first=True)  # fmt: skip


@register(
    "cnn-tf1",
    "003 (TF)",
    28,
    "the TF1 MNIST CNN: 32/64 'SAME' convs, 1024-unit FC with dropout (3.3M params)",
)
def cnn_tf1(dropout: float = 0.5) -> LeNet:
    # 'SAME' padding for a 5x5 kernel at stride 1 is 2 on each side; 2x2/2 'SAME' pooling of an even size
    # pads nothing. (B,1,28,28) -> conv1 (B,32,28,28) -> pool1 (B,32,14,14) -> conv2 (B,64,14,14)
    # -> pool2 (B,64,7,7) -> 3136 -> 1024 -> 10
    net = LeNet(
        OrderedDict(
            conv_block("1", 1, 32, 5, 2, nn.ReLU, nn.MaxPool2d)
            + conv_block("2", 32, 64, 5, 2, nn.ReLU, nn.MaxPool2d)
            + [
                ("flatten", nn.Flatten()),
                ("fc1", nn.Linear(7 * 7 * 64, 1024)),
                ("act3", nn.ReLU()),
                ("dropout", nn.Dropout(dropout)),  # keep_prob 0.5 in training, 1 in evaluation
                ("fc2", nn.Linear(1024, 10)),
            ]
        )
    )
    # tf.truncated_normal(stddev=0.1) redraws values beyond two standard deviations; biases are 0.1.
    for m in net.modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.1, a=-0.2, b=0.2)
            nn.init.constant_(m.bias, 0.1)
    return net


@register("lenet5-modern", "ours", 28, "LeNet-5 sized with ReLU, max pooling and batch norm: the fast default")
def lenet5_modern(**options) -> LeNet:
    # (B,1,28,28) -> conv1 (B,c1,28,28) -> pool1 (B,c1,14,14) -> conv2 (B,c2,10,10) -> pool2 (B,c2,5,5)
    # One more option than the others: batch_norm (default true; the convs then have no bias).
    return classic("lenet5-modern", 28, options, activation="relu", pooling="max", pad_first=True, batch_norm=True)


# ----------------------------------------------------------------------------------------------------------
# Initialisation schemes the recipes name

INITS = ("default", "xavier", "glorot")


def init_weights(model: nn.Module, scheme: str) -> nn.Module:
    """Re-initialise conv and linear layers.

    default: leave the model's own initialisation (PyTorch's, or the model's constructor's).
    xavier:  Xavier-uniform weights, biases as PyTorch made them (d2l's `init_weights` in train_ch6).
    glorot:  Xavier-uniform weights and zero biases (Keras' glorot_uniform/zeros, MXNet's init.Xavier()).
    """
    if scheme not in INITS:
        raise LenetError(f"unknown init {scheme!r}; expected one of {', '.join(INITS)}")
    if scheme == "default":
        return model
    for m in model.modules():
        if type(m) in (nn.Linear, nn.Conv2d):
            nn.init.xavier_uniform_(m.weight)
            if scheme == "glorot" and m.bias is not None:
                nn.init.zeros_(m.bias)
    return model
