"""Which models the C kernels take, and why not when they do not.

A LeNet's front end is conv -> [batch norm] -> [activation] -> 2x2 pool, twice, then a flatten; the kernels
compute it for any channel counts and kernel sizes. The classic classifier after it, Linear -> act -> Linear
-> act -> Linear (optionally ending in Keras' head: Sigmoid, then models.ClippedLog), they take too, with the
loss; any other classifier runs in PyTorch after the front end's kernels. `analyse` says which, and why.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..models import ClippedLog
from .chain import Call, FlattenTo, layers

# the activations the kernels compute (their numbers in csrc/common.h), and the poolings
ACTIVATIONS = {nn.Identity: 0, nn.Sigmoid: 1, nn.ReLU: 2, nn.Tanh: 3, nn.LeakyReLU: 4}
POOLS = {nn.AvgPool2d: 0, nn.MaxPool2d: 1}


def activation(m: nn.Module) -> tuple[int, float] | None:
    """(csrc's number, LeakyReLU's negative slope or 0.0) for an activation the kernels compute, else None.

    The kernels take a LeakyReLU's gradient from its output, which tells the sign of its input only for a
    slope >= 0."""
    code = ACTIVATIONS.get(type(m))
    if code is None:
        return None
    slope = float(m.negative_slope) if isinstance(m, nn.LeakyReLU) else 0.0
    return None if slope < 0.0 else (code, slope)


@dataclass(frozen=True)
class FrontEnd:
    """The shape of a LeNet's front end: what the kernels are compiled for."""

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
    slopes: tuple[float, float, float] = (0.0, 0.0, 0.0)  # LeakyReLU's: after conv1, conv2, in the classifier

    @property
    def macros(self) -> dict[str, int | float]:
        """The shape as csrc/ reads it (lenet_config.h's LENET_* macros)."""
        (c1, k1, pad1), (c2, k2, pad2) = self.conv1, self.conv2
        macros = dict(S=self.size, C1=c1, K1=k1, PAD1=pad1, ACT1=self.act1, POOL1=self.pool1, C2=c2, K2=k2,
                      PAD2=pad2, ACT2=self.act2, POOL2=self.pool2, BN=int(self.batch_norm))  # fmt: skip
        if self.classifier:
            macros.update(FC=1, H1=self.classifier[0], H2=self.classifier[1], NCLS=self.classifier[2],
                          ACTF=self.classifier[3])  # fmt: skip
            if self.classifier[4]:
                macros.update(CLIPLOG=1, CLIP_EPS=self.classifier[4])  # a float's repr is exact C
        for name, slope in zip(("SLOPE1", "SLOPE2", "SLOPEF"), self.slopes, strict=True):
            if slope:
                macros[name] = slope
        return {f"LENET_{k}": v for k, v in macros.items()}


@dataclass(frozen=True)
class Match:
    """Where a model's front end is: its layers, and what runs after it."""

    front: FrontEnd
    conv1: nn.Conv2d
    conv2: nn.Conv2d
    norms: tuple[nn.BatchNorm2d, nn.BatchNorm2d] | None
    tail: tuple[nn.Module, ...]  # the layers after the front end's flatten, as PyTorch runs them
    linears: tuple[nn.Linear, nn.Linear, nn.Linear] | None  # the classifier, when the kernels can train it
    classifier_reason: str = ""  # why they cannot (linears is None)


def describe(m: nn.Module) -> str:
    """A layer as a plan's reason names it: its class, with the arguments that made it unsupported."""
    if isinstance(m, Call):
        return m.name
    if isinstance(m, nn.MaxPool2d | nn.AvgPool2d):
        return f"{type(m).__name__}({m.kernel_size})"
    return type(m).__name__


def _conv_problem(m: nn.Conv2d, name: str) -> str | None:
    problems = [
        (m.stride != (1, 1), f"stride {m.stride[0]}"),
        (m.dilation != (1, 1), "dilation"),
        (m.groups != 1, "groups"),
        (m.padding_mode != "zeros", f"{m.padding_mode} padding"),
        (not isinstance(m.padding, tuple) or m.padding[0] != m.padding[1], "uneven padding"),
        (m.kernel_size[0] != m.kernel_size[1], f"a {m.kernel_size[0]}x{m.kernel_size[1]} kernel"),
    ]
    for bad, what in problems:
        if bad:
            return f"{name} has {what} (the kernels take stride 1, square kernels, zero padding)"
    return None


def _plain_pool(m: nn.Module) -> bool:
    if type(m) not in POOLS:
        return False
    two = (2, (2, 2))
    if m.kernel_size not in two or m.stride not in two or m.padding not in (0, (0, 0)) or m.ceil_mode:
        return False
    if isinstance(m, nn.AvgPool2d):
        return m.divisor_override is None
    return m.dilation in (1, (1, 1)) and not m.return_indices


def _norm_problem(m: nn.BatchNorm2d, channels: int, name: str) -> str | None:
    if type(m) is not nn.BatchNorm2d or m.num_features != channels:
        return f"{describe(m)} after {name} is not supported"
    if not m.track_running_stats:
        return "batch norm without running statistics"
    if not all(t.dtype == torch.float32 and t.is_contiguous() for t in (m.running_mean, m.running_var)):
        return "batch norm statistics that are not float32"
    return None


def _classifier(tail: list[nn.Module], features: int) -> tuple[tuple[nn.Linear, ...], tuple[int, float], float] | str:
    """Linear -> act -> Linear -> act -> Linear (the act the same both times, or none), optionally then Keras'
    head (Sigmoid, ClippedLog): its layers, act and the head's clip (0.0 without it); or why not."""
    clip = 0.0
    if len(tail) >= 2 and type(tail[-2]) is nn.Sigmoid and type(tail[-1]) is ClippedLog:
        clip = tail[-1].eps
        if type(clip) is not float or not 0.0 < clip < 0.5:
            return f"a ClippedLog with eps {clip!r}"
        tail = tail[:-2]
    others = [describe(m) for m in tail if type(m) is not nn.Linear and activation(m) is None]
    if others:
        return ", ".join(dict.fromkeys(others))
    linears = [m for m in tail if type(m) is nn.Linear]
    if len(linears) != 3:
        return f"{len(linears)} Linear layers; the whole-step kernels take 3"
    acts = {activation(m) for m in tail if type(m) is not nn.Linear}
    if len(acts) > 1:
        return "different activations between its Linear layers"
    if acts and [type(m) is nn.Linear for m in tail] != [True, False, True, False, True]:
        return "activations that are not one between each pair of Linear layers"
    fc1, fc2, fc3 = linears
    if (fc1.in_features, fc2.in_features, fc3.in_features) != (features, fc1.out_features, fc2.out_features):
        return "Linear layers whose sizes do not chain"
    return tuple(linears), next(iter(acts)) if acts else (0, 0.0), clip


def _hooked(m: nn.Module) -> bool:
    return bool(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks)


def _front_end(chain: list[nn.Module]) -> tuple[list, int] | str:
    """The two conv blocks (conv, norm, act, pool) at the head of `chain` and the flatten's index, or why not."""
    convs = sum(isinstance(m, nn.Conv2d) for m in chain)
    if convs != 2:
        return f"{convs} conv layers (the kernels take 2)"
    i, blocks = 0, []
    for n in (1, 2):
        name = f"conv{n}"
        if i >= len(chain) or type(chain[i]) is not nn.Conv2d:
            where = f"after conv{n - 1}" if n > 1 else "first"
            return f"{describe(chain[i]) if i < len(chain) else 'nothing'} {where} where a Conv2d was expected"
        conv, norm, act = chain[i], None, (0, 0.0)
        problem = _conv_problem(conv, name)
        if problem:
            return problem
        if i + 1 < len(chain) and isinstance(chain[i + 1], nn.modules.batchnorm._BatchNorm):
            norm = chain[i + 1]
            problem = _norm_problem(norm, conv.out_channels, name)
            if problem:
                return problem
            i += 1
        if i + 1 < len(chain) and activation(chain[i + 1]) is not None:
            act = activation(chain[i + 1])
            i += 1
        elif i + 1 < len(chain) and type(chain[i + 1]) is nn.LeakyReLU:
            return f"a LeakyReLU with a negative slope after {name} (the kernels take slopes >= 0)"
        after = chain[i + 1] if i + 1 < len(chain) else None
        if after is None or not _plain_pool(after):
            if type(after) in POOLS:
                return f"{describe(after)} after {name} (the kernels take 2x2 pooling of stride 2, no padding)"
            return f"{describe(after) if after is not None else 'nothing'} after {name} is not supported"
        blocks.append((conv, norm, act, POOLS[type(chain[i + 1])]))
        i += 2
    if i >= len(chain) or not isinstance(chain[i], nn.Flatten) or (chain[i].start_dim, chain[i].end_dim) != (1, -1):
        return f"{describe(chain[i]) if i < len(chain) else 'nothing'} after pool2 where a flatten was expected"
    return blocks, i


def _sides(conv1: nn.Conv2d, conv2: nn.Conv2d, size: int) -> tuple[int, int]:
    """conv1's and conv2's output sides for an input of `size`."""
    o1 = size + 2 * conv1.padding[0] - conv1.kernel_size[0] + 1
    return o1, o1 // 2 + 2 * conv2.padding[0] - conv2.kernel_size[0] + 1


def _input_size(model: nn.Module, conv1: nn.Conv2d, conv2: nn.Conv2d, tail: list[nn.Module]) -> int:
    """The model's input side: its `input_size`, else the one whose features the first Linear takes (28 first)."""
    if hasattr(model, "input_size"):
        return int(model.input_size)
    first = next((m for m in tail if isinstance(m, nn.Linear)), None)
    want = first.in_features if first is not None else None
    for size in (28, 32, *range(8, 129)):
        o1, o2 = _sides(conv1, conv2, size)
        if want is None or (o1 > 1 and o2 > 1 and conv2.out_channels * (o2 // 2) ** 2 == want):
            return size
    return 28


def analyse(model: nn.Module) -> Match | str:
    """The front end of `model` (and its classifier) as the kernels take it, or why they cannot."""
    chain = layers(model)
    if isinstance(chain, str):
        return chain
    front = _front_end(chain)
    if isinstance(front, str):
        return front
    ((conv1, norm1, act1, pool1), (conv2, norm2, act2, pool2)), i = front
    if conv1.in_channels != 1:
        return f"conv1 takes {conv1.in_channels} input channels (the kernels take 1)"
    if (norm1 is None) != (norm2 is None):
        return "batch norm after one conv layer but not the other"
    if norm1 is not None and (norm1.momentum, norm1.eps) != (norm2.momentum, norm2.eps):
        return "batch norms with different momentum or eps"
    hooked = next((describe(m) for m in chain[: i + 1] if _hooked(m)), None)
    if hooked:
        return f"a hook on {hooked}"
    tail = chain[i + 1 :]
    size = _input_size(model, conv1, conv2, tail)
    o1, o2 = _sides(conv1, conv2, size)
    if o1 < 2 or o1 % 2 or o2 < 2 or o2 % 2:
        return f"odd or tiny feature maps ({o1}x{o1}, then {o2}x{o2}) for {size}x{size} inputs"
    features = conv2.out_channels * (o2 // 2) ** 2
    if isinstance(chain[i], FlattenTo) and chain[i].features != features:
        return f"x.view(-1, {chain[i].features}) on {features} features per sample"
    fc = _classifier(tail, features) if not any(_hooked(m) for m in tail) else "a hook on the classifier"
    dims, slope = None, 0.0
    if not isinstance(fc, str):
        (fc1, fc2, fc3), (act, slope), clip = fc
        dims = (fc1.out_features, fc2.out_features, fc3.out_features, act, clip)
    front_end = FrontEnd(size, (conv1.out_channels, conv1.kernel_size[0], conv1.padding[0]), act1[0], pool1,
                         (conv2.out_channels, conv2.kernel_size[0], conv2.padding[0]), act2[0], pool2,
                         norm1 is not None, dims, (act1[1], act2[1], slope))  # fmt: skip
    norms = (norm1, norm2) if norm1 is not None else None
    if isinstance(fc, str):
        return Match(front_end, conv1, conv2, norms, tuple(tail), None, fc)
    return Match(front_end, conv1, conv2, norms, tuple(tail), fc[0])


def match(model: nn.Module) -> Match | None:
    """The front end of `model` if the kernels can run it, else None (`analyse` says why)."""
    found = analyse(model)
    return None if isinstance(found, str) else found
