"""Models of the user's own, described in a run's config so that they can be built again.

An `nn.Sequential` of standard layers is written down layer by layer (type, name, constructor arguments) and
rebuilt by `create_model("sequential", layers=...)`, so the command line can evaluate, export and serve it. Any
other module is recorded by its class (`create_model("module", qualname=...)`), which rebuilds it only where
that class can be imported and built without arguments; in Python, `lenet.load(run, model=MyNet())` always can.
"""

from __future__ import annotations

import importlib
from collections import OrderedDict

from torch import nn

from ..errors import LenetError
from .lenet1998 import EuclideanRBF, SparseConv2d, Squash, Subsampling
from .registry import register
from .zoo import ClippedLog

# What each layer type's constructor needs, read back from an instance.
_ARGUMENTS = {
    nn.Conv2d: lambda m: dict(
        in_channels=m.in_channels,
        out_channels=m.out_channels,
        kernel_size=m.kernel_size,
        stride=m.stride,
        padding=m.padding,
        dilation=m.dilation,
        groups=m.groups,
        bias=m.bias is not None,
        padding_mode=m.padding_mode,
    ),  # fmt: skip
    nn.Linear: lambda m: dict(in_features=m.in_features, out_features=m.out_features, bias=m.bias is not None),
    nn.BatchNorm1d: lambda m: _norm(m),
    nn.BatchNorm2d: lambda m: _norm(m),
    nn.MaxPool2d: lambda m: dict(
        kernel_size=m.kernel_size, stride=m.stride, padding=m.padding, dilation=m.dilation, ceil_mode=m.ceil_mode
    ),
    nn.AvgPool2d: lambda m: dict(
        kernel_size=m.kernel_size,
        stride=m.stride,
        padding=m.padding,
        ceil_mode=m.ceil_mode,
        count_include_pad=m.count_include_pad,
        divisor_override=m.divisor_override,
    ),  # fmt: skip
    nn.AdaptiveAvgPool2d: lambda m: dict(output_size=m.output_size),
    nn.AdaptiveMaxPool2d: lambda m: dict(output_size=m.output_size),
    nn.Flatten: lambda m: dict(start_dim=m.start_dim, end_dim=m.end_dim),
    nn.Dropout: lambda m: dict(p=m.p),
    nn.Dropout2d: lambda m: dict(p=m.p),
    nn.Identity: lambda m: {},
    nn.ReLU: lambda m: {},
    nn.ReLU6: lambda m: {},
    nn.Sigmoid: lambda m: {},
    nn.Tanh: lambda m: {},
    nn.SiLU: lambda m: {},
    nn.GELU: lambda m: dict(approximate=m.approximate),
    nn.ELU: lambda m: dict(alpha=m.alpha),
    nn.LeakyReLU: lambda m: dict(negative_slope=m.negative_slope),
    nn.Hardtanh: lambda m: dict(min_val=m.min_val, max_val=m.max_val),
    nn.Softmax: lambda m: dict(dim=m.dim),
    nn.LogSoftmax: lambda m: dict(dim=m.dim),
    ClippedLog: lambda m: dict(eps=m.eps),
    Squash: lambda m: dict(amplitude=m.amplitude, slope=m.slope),
    Subsampling: lambda m: dict(channels=len(m.weight)),
    SparseConv2d: lambda m: dict(table=m.table, in_channels=m.in_channels, kernel_size=m.weight.shape[-1]),
    EuclideanRBF: lambda m: dict(prototypes=m.prototypes.tolist()),
}
_TYPES = {cls.__name__: cls for cls in _ARGUMENTS}


def _norm(m) -> dict:
    return dict(num_features=m.num_features, eps=m.eps, momentum=m.momentum, affine=m.affine,
                track_running_stats=m.track_running_stats)  # fmt: skip


def _plain(value):
    """JSON-ready: tuples as lists, all the way down."""
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


def _tuples(value):
    """Back from JSON: lists as tuples (what the constructors were given)."""
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value


def describe_sequential(model: nn.Sequential, where: str = "") -> list[dict]:
    """The layers of an nn.Sequential as plain data: [{"name", "type", "args"}], nested Sequentials included.

    Raises a LenetError naming the first layer that is not a standard one (or has hooks or extra state).
    """
    layers = []
    for name, layer in model.named_children():
        here = f"{where}{name}"
        if type(layer) is nn.Sequential:
            layers.append({"name": name, "type": "Sequential", "layers": describe_sequential(layer, here + ".")})
            continue
        if type(layer) not in _ARGUMENTS:
            raise LenetError(f"layer {here} ({type(layer).__name__}) is not a standard layer lenet can write down")
        if isinstance(layer, nn.MaxPool2d) and layer.return_indices:
            raise LenetError(f"layer {here} (MaxPool2d) returns indices; lenet cannot write that down")
        args = {k: _plain(v) for k, v in _ARGUMENTS[type(layer)](layer).items()}
        layers.append({"name": name, "type": type(layer).__name__, "args": args})
    return layers


def build_sequential(layers: list[dict]) -> nn.Sequential:
    """The nn.Sequential that `describe_sequential` wrote down (freshly initialised)."""
    modules = OrderedDict()
    try:
        for spec in layers:
            if spec["type"] == "Sequential":
                modules[spec["name"]] = build_sequential(spec["layers"])
                continue
            cls = _TYPES.get(spec["type"])
            if cls is None:
                raise LenetError(f"unknown layer type {spec['type']!r} in the model's description")
            args = {k: _tuples(v) for k, v in spec.get("args", {}).items()}
            if cls is EuclideanRBF:
                import torch

                args["prototypes"] = torch.tensor(args["prototypes"])
            modules[spec["name"]] = cls(**args)
    except (KeyError, TypeError, ValueError) as e:
        raise LenetError(f"the model's description is not one lenet wrote ({e.__class__.__name__}: {e})") from None
    return nn.Sequential(modules)


def class_name(model: nn.Module) -> str:
    return f"{type(model).__module__}.{type(model).__qualname__}"


@register("sequential", "yours", 28, "an nn.Sequential of your own, rebuilt from its description", hidden=True)
def sequential(layers: list[dict]) -> nn.Sequential:
    return build_sequential(layers)


@register("module", "yours", 28, "a module of your own, rebuilt from its class", hidden=True)
def module(qualname: str) -> nn.Module:
    path, _, name = qualname.rpartition(".")
    how = f"load it in Python: lenet.load(RUN, model={name.split('.')[-1]}())"
    try:
        cls = importlib.import_module(path)
        for part in name.split("."):
            cls = getattr(cls, part)
        return cls()
    except (ImportError, AttributeError, TypeError) as e:
        raise LenetError(
            f"the run's model is a {qualname} of your own, which cannot be built here ({e}); {how}"
        ) from None


def describe(model: nn.Module) -> tuple[str, dict]:
    """(model name, model_kwargs) that rebuild `model`'s architecture: 'sequential' when it can be written down
    layer by layer, else 'module' (its class)."""
    if type(model) is nn.Sequential:
        try:
            return "sequential", {"layers": describe_sequential(model)}
        except LenetError:
            pass
    return "module", {"qualname": class_name(model)}
