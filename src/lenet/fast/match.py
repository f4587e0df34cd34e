"""Which models the C kernels take: a LeNet's front end (conv, [bn], act, pool, twice) and classic classifier."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..models import ClippedLog

ACTIVATIONS = {nn.Identity: 0, nn.Sigmoid: 1, nn.ReLU: 2}
POOLS = {nn.AvgPool2d: 0, nn.MaxPool2d: 1}


@dataclass(frozen=True)
class FrontEnd:
    """The shape of a LeNet's front end: what fastpath.c is compiled for."""

    size: int  # input side S
    conv1: tuple[int, int, int]  # (out channels, kernel, padding)
    act1: int
    pool1: int
    conv2: tuple[int, int, int]
    act2: int
    pool2: int
    batch_norm: bool = False
    # (hidden 1, hidden 2, classes, activation, clip): clip > 0 for Keras' head, log(clamp(sigmoid, clip, 1 - clip))
    classifier: tuple[int, int, int, int, float] | None = None

    @property
    def macros(self) -> dict[str, int | float]:
        (c1, k1, pad1), (c2, k2, pad2) = self.conv1, self.conv2
        macros = dict(S=self.size, C1=c1, K1=k1, PAD1=pad1, ACT1=self.act1, POOL1=self.pool1, C2=c2, K2=k2,
                      PAD2=pad2, ACT2=self.act2, POOL2=self.pool2, BN=int(self.batch_norm))  # fmt: skip
        if self.classifier:
            macros.update(FC=1, H1=self.classifier[0], H2=self.classifier[1], NCLS=self.classifier[2],
                          ACTF=self.classifier[3])  # fmt: skip
            if self.classifier[4]:
                macros.update(OUT_CLIPLOG=1, CLIP_EPS=self.classifier[4])  # a float's repr is exact C
        return macros


@dataclass(frozen=True)
class Match:
    """Where a model's front end is: its layers, and the index of the first classifier layer."""

    front: FrontEnd
    conv1: nn.Conv2d
    conv2: nn.Conv2d
    norms: tuple[nn.BatchNorm2d, nn.BatchNorm2d] | None
    tail: int
    linears: tuple[nn.Linear, nn.Linear, nn.Linear] | None  # the classifier, when fastpath.c can train it


def _plain_conv(m: nn.Module) -> bool:
    return (
        type(m) is nn.Conv2d
        and m.stride == (1, 1)
        and m.dilation == (1, 1)
        and m.groups == 1
        and m.padding_mode == "zeros"
        and isinstance(m.padding, tuple)
        and m.padding[0] == m.padding[1]
        and m.kernel_size[0] == m.kernel_size[1]
    )


def _plain_pool(m: nn.Module) -> bool:
    if type(m) not in POOLS:
        return False
    two = (2, (2, 2))
    if m.kernel_size not in two or m.stride not in two or m.padding not in (0, (0, 0)) or m.ceil_mode:
        return False
    if isinstance(m, nn.AvgPool2d):
        return m.divisor_override is None
    return m.dilation in (1, (1, 1)) and not m.return_indices


def _plain_norm(m: nn.Module, channels: int) -> bool:
    if type(m) is not nn.BatchNorm2d or m.num_features != channels or not m.track_running_stats:
        return False
    return all(t.dtype == torch.float32 and t.is_contiguous() for t in (m.running_mean, m.running_var))


def _classifier(layers: list[nn.Module], features: int) -> tuple[tuple[nn.Linear, ...], int, float] | None:
    """Linear -> act -> Linear -> act -> Linear (the act the same both times, or none), optionally then Keras'
    head (Sigmoid, ClippedLog): its layers, act and the head's clip (0.0 without it)."""
    clip = 0.0
    if len(layers) >= 2 and type(layers[-2]) is nn.Sigmoid and type(layers[-1]) is ClippedLog:
        clip = layers[-1].eps
        if type(clip) is not float or not 0.0 < clip < 0.5 or _hooked(layers[-2]) or _hooked(layers[-1]):
            return None
        layers = layers[:-2]
    linears = [m for m in layers if type(m) is nn.Linear]
    acts = {type(m) for m in layers if type(m) is not nn.Linear}
    if len(linears) != 3 or len(acts) > 1 or any(_hooked(m) for m in layers):
        return None
    if acts and (len(layers) != 5 or [type(m) is nn.Linear for m in layers] != [True, False, True, False, True]):
        return None
    if acts and next(iter(acts)) not in ACTIVATIONS:
        return None
    fc1, fc2, fc3 = linears
    if (fc1.in_features, fc2.in_features, fc3.in_features) != (features, fc1.out_features, fc2.out_features):
        return None
    return tuple(linears), ACTIVATIONS[next(iter(acts))] if acts else 0, clip


def _hooked(m: nn.Module) -> bool:
    return bool(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks)


def match(model: nn.Module) -> Match | None:
    """The front end of `model` if fastpath can run it, else None."""
    if not isinstance(model, nn.Sequential):
        return None
    layers = list(model)
    i, found = 0, []
    for _ in range(2):
        if i >= len(layers) or not _plain_conv(layers[i]):
            return None
        conv, norm, act = layers[i], None, 0
        if i + 1 < len(layers) and _plain_norm(layers[i + 1], conv.out_channels):
            norm = layers[i + 1]
            i += 1
        if i + 1 < len(layers) and type(layers[i + 1]) in ACTIVATIONS:
            act = ACTIVATIONS[type(layers[i + 1])]
            i += 1
        if i + 1 >= len(layers) or not _plain_pool(layers[i + 1]):
            return None
        found.append((conv, norm, act, POOLS[type(layers[i + 1])]))
        i += 2
    if i >= len(layers) or not isinstance(layers[i], nn.Flatten) or layers[i].start_dim != 1:
        return None
    (conv1, norm1, act1, pool1), (conv2, norm2, act2, pool2) = found
    if (
        conv1.in_channels != 1
        or conv2.in_channels != conv1.out_channels
        or (norm1 is None) != (norm2 is None)
        or (norm1 is not None and (norm1.momentum, norm1.eps) != (norm2.momentum, norm2.eps))
    ):
        return None
    if any(_hooked(m) for m in layers[: i + 1]):
        return None
    size = getattr(model, "input_size", 28)
    o1 = size + 2 * conv1.padding[0] - conv1.kernel_size[0] + 1
    o2 = o1 // 2 + 2 * conv2.padding[0] - conv2.kernel_size[0] + 1
    if o1 < 2 or o1 % 2 or o2 < 2 or o2 % 2:
        return None
    fc = _classifier(layers[i + 1 :], conv2.out_channels * (o2 // 2) ** 2)
    dims = (fc[0][0].out_features, fc[0][1].out_features, fc[0][2].out_features, *fc[1:]) if fc else None
    front = FrontEnd(size, (conv1.out_channels, conv1.kernel_size[0], conv1.padding[0]), act1, pool1,
                     (conv2.out_channels, conv2.kernel_size[0], conv2.padding[0]), act2, pool2,
                     norm1 is not None, dims)  # fmt: skip
    norms = (norm1, norm2) if norm1 is not None else None
    return Match(front, conv1, conv2, norms, i + 1, fc[0] if fc else None)
