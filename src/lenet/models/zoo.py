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
# The seed notebooks' nets


@register("lenet5-d2l", "001, 004", 28, "d2l's LeNet: sigmoid, average pooling, conv padded to keep 28x28")
def lenet5_d2l() -> LeNet:
    # (B,1,28,28) -> conv1 (B,6,28,28) -> pool1 (B,6,14,14) -> conv2 (B,16,10,10) -> pool2 (B,16,5,5) -> 400
    return LeNet(
        OrderedDict(
            conv_block("1", 1, 6, 5, 2, nn.Sigmoid, nn.AvgPool2d)
            + conv_block("2", 6, 16, 5, 0, nn.Sigmoid, nn.AvgPool2d)
            + classifier((16 * 5 * 5, 120, 84, 10), nn.Sigmoid, first=3)
        )
    )


@register("lenet5-mxnet", "000", 28, "d2l's MXNet LeNet: sigmoid, max pooling, unpadded convs (256 features)")
def lenet5_mxnet() -> LeNet:
    # (B,1,28,28) -> conv1 (B,6,24,24) -> pool1 (B,6,12,12) -> conv2 (B,16,8,8) -> pool2 (B,16,4,4) -> 256
    return LeNet(
        OrderedDict(
            conv_block("1", 1, 6, 5, 0, nn.Sigmoid, nn.MaxPool2d)
            + conv_block("2", 6, 16, 5, 0, nn.Sigmoid, nn.MaxPool2d)
            + classifier((16 * 4 * 4, 120, 84, 10), nn.Sigmoid, first=3)
        )
    )


@register("lenet5-keras", "002", 28, "the Keras LeNet: as lenet5-mxnet, plus a sigmoid on the 10 outputs")
def lenet5_keras() -> LeNet:
    # Same shapes as lenet5-mxnet; the outputs go through a sigmoid and then Keras' loss arithmetic.
    layers = (
        conv_block("1", 1, 6, 5, 0, nn.Sigmoid, nn.MaxPool2d)
        + conv_block("2", 6, 16, 5, 0, nn.Sigmoid, nn.MaxPool2d)
        + classifier((16 * 4 * 4, 120, 84, 10), nn.Sigmoid, first=3)
    )
    layers += [("act5", nn.Sigmoid()), ("keras_log", ClippedLog())]
    return LeNet(OrderedDict(layers))


@register("lenet5-tutorial", "003 (official)", 32, "the PyTorch tutorial LeNet5: 32x32 input, ReLU, max pooling")
def lenet5_tutorial() -> LeNet:
    # (B,1,32,32) -> conv1 (B,6,28,28) -> pool1 (B,6,14,14) -> conv2 (B,16,10,10) -> pool2 (B,16,5,5) -> 400
    return LeNet(
        OrderedDict(
            conv_block("1", 1, 6, 5, 0, nn.ReLU, nn.MaxPool2d)
            + conv_block("2", 6, 16, 5, 0, nn.ReLU, nn.MaxPool2d)
            + classifier((16 * 5 * 5, 120, 84, 10), nn.ReLU, first=3)
        ),
        input_size=32,
    )


@register("lenet-community", "003 (民间版)", 28, "the community LeNet: 3x3 first conv, max pooling, no activations")
def lenet_community() -> LeNet:
    # No activation anywhere, as in the seed: the whole net is one affine map composed with max pooling.
    # (B,1,28,28) -> conv1 (B,6,28,28) -> pool1 (B,6,14,14) -> conv2 (B,16,10,10) -> pool2 (B,16,5,5) -> 400
    return LeNet(
        OrderedDict(
            conv_block("1", 1, 6, 3, 1, None, nn.MaxPool2d)
            + conv_block("2", 6, 16, 5, 0, None, nn.MaxPool2d)
            + classifier((16 * 5 * 5, 120, 84, 10), None)
        )
    )


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
def lenet5_modern(batch_norm: bool = True, channels: tuple[int, int] = (6, 16)) -> LeNet:
    # (B,1,28,28) -> conv1 (B,c1,28,28) -> pool1 (B,c1,14,14) -> conv2 (B,c2,10,10) -> pool2 (B,c2,5,5)
    c1, c2 = channels
    layers: list[tuple[str, nn.Module]] = []
    for i, (c_in, c_out, pad) in enumerate(((1, c1, 2), (c1, c2, 0)), start=1):
        layers.append((f"conv{i}", nn.Conv2d(c_in, c_out, 5, padding=pad, bias=not batch_norm)))
        if batch_norm:
            layers.append((f"bn{i}", nn.BatchNorm2d(c_out)))
        layers += [(f"act{i}", nn.ReLU()), (f"pool{i}", nn.MaxPool2d(2, 2))]
    layers += classifier((c2 * 5 * 5, 120, 84, 10), nn.ReLU, first=3)
    return LeNet(OrderedDict(layers))


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
