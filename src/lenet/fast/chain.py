"""A model as the chain of layers its forward runs: nn.Sequential as it is, other modules through torch.fx.

`class MyNet(nn.Module)` whose forward calls conv1, act, pool, ..., torch.flatten / x.view(x.size(0), -1),
fc1, F.relu, ... in order computes what the nn.Sequential of those layers computes, so it can take the same
fast path. Functional calls become their module twins (F.relu -> nn.ReLU(), F.max_pool2d(x, 2) ->
nn.MaxPool2d(2), torch.flatten(x, 1) -> nn.Flatten()); calls that have no twin are kept as `Call`s, which
the classifier's PyTorch tail can still run but the front end's kernels cannot.
"""

from __future__ import annotations

import operator
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import fx, nn


class Call(nn.Module):
    """A call from a traced forward that has no module twin, e.g. F.log_softmax(x, dim=1): run as it was."""

    def __init__(self, fn: Callable, args: tuple, kwargs: dict, name: str):
        super().__init__()
        self.fn, self.args, self.kwargs, self.name = fn, args, kwargs, name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x, *self.args, **self.kwargs)

    def extra_repr(self) -> str:
        return self.name


class FlattenTo(nn.Flatten):
    """x.view(-1, n): a flatten per sample only when n is the features per sample (match checks it)."""

    def __init__(self, features: int):
        super().__init__()
        self.features = features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(-1, self.features)


def _pool(cls: type[nn.Module], names: tuple[str, ...]) -> Callable[..., nn.Module]:
    """F.max_pool2d / F.avg_pool2d's arguments (in F's order) as the pooling module's keywords."""

    def make(*args, **kwargs) -> nn.Module:
        kwargs.update(zip(names, args, strict=False))
        return cls(**kwargs)

    return make


def _leaky(negative_slope: float = 0.01, inplace: bool = False) -> nn.Module:
    return nn.LeakyReLU(negative_slope)


def _flatten(start_dim: int = 0, end_dim: int = -1) -> nn.Module | None:
    return nn.Flatten(1, -1) if (start_dim, end_dim) == (1, -1) else None


def _ignore_inplace(cls: type[nn.Module]) -> Callable[..., nn.Module]:
    return lambda inplace=False: cls()


# functions and tensor methods that are a layer: their twin, built from the call's other arguments
FUNCTIONS: dict[Callable, Callable[..., nn.Module | None]] = {
    F.relu: _ignore_inplace(nn.ReLU),
    torch.relu: nn.ReLU,
    F.sigmoid: nn.Sigmoid,
    torch.sigmoid: nn.Sigmoid,
    F.tanh: nn.Tanh,
    torch.tanh: nn.Tanh,
    F.leaky_relu: _leaky,
    F.max_pool2d: _pool(nn.MaxPool2d, ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")),
    F.avg_pool2d: _pool(
        nn.AvgPool2d, ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override")
    ),  # fmt: skip
    torch.flatten: _flatten,
}
METHODS: dict[str, Callable[..., nn.Module | None]] = {
    "relu": nn.ReLU,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "flatten": _flatten,
}


def _is_batch_size(node, seen: set) -> bool:
    """node is x.size(0) (or x.shape[0], x.size()[0]) of a value x in the chain: every layer keeps the batch."""
    if not isinstance(node, fx.Node):
        return False
    if node.op == "call_method" and node.target == "size" and node.args[0] in seen:
        return node.args[1:] == (0,) or node.kwargs == {"dim": 0}
    if node.op == "call_function" and node.target is operator.getitem and node.args[1] == 0:
        inner = node.args[0]
        return isinstance(inner, fx.Node) and (
            (inner.op == "call_method" and inner.target == "size" and len(inner.args) == 1 and inner.args[0] in seen)
            or (inner.op == "call_function" and inner.target is getattr and inner.args[1:] == ("shape",)
                and inner.args[0] in seen)
        )  # fmt: skip
    return False


def _view(node: fx.Node, seen: set) -> nn.Module | None:
    """x.view / x.reshape / torch.reshape to (batch, -1) or (-1, n): a flatten."""
    shape = node.args[1:]
    if len(shape) == 1 and isinstance(shape[0], tuple | list):
        shape = tuple(shape[0])
    if len(shape) != 2:
        return None
    if _is_batch_size(shape[0], seen) and shape[1] == -1:
        return nn.Flatten()
    if shape[0] == -1 and isinstance(shape[1], int) and shape[1] > 0:
        return FlattenTo(shape[1])
    return None


def _helper(node, seen: set) -> bool:
    """A node that only reads the batch size of a value in the chain, for a view (x.size(0) and the like)."""
    return isinstance(node, fx.Node) and (
        _is_batch_size(node, seen)
        or (
            node.op in ("call_method", "call_function")
            and node.target in ("size", getattr)
            and node.args[0] in seen
            and all(_is_batch_size(user, seen) for user in node.users)
        )
    )


def _layer(gm: fx.GraphModule, node: fx.Node, seen: set) -> nn.Module:
    """The module that node computes from x (its only tensor input)."""
    if node.op == "call_module":
        return gm.get_submodule(str(node.target))
    rest, kwargs = node.args[1:], dict(node.kwargs)
    name = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", str(node.target))
    if node.target in ("view", "reshape") or node.target is torch.reshape:
        twin = _view(node, seen)
    elif node.op == "call_function" and node.target in FUNCTIONS:
        twin = FUNCTIONS[node.target](*rest, **kwargs)
    elif node.op == "call_method" and node.target in METHODS:
        twin = METHODS[node.target](*rest, **kwargs)
    else:
        twin = None
    if twin is not None:
        return twin
    fn = node.target if node.op == "call_function" else (lambda t, *a, _m=node.target, **k: getattr(t, _m)(*a, **k))
    return Call(fn, tuple(rest), kwargs, str(name))


def layers(model: nn.Module) -> list[nn.Module] | str:
    """The layers `model` runs, in order, or why they cannot be known."""
    if _hooked(model):
        return f"a hook on the {type(model).__name__}"
    if isinstance(model, nn.Sequential):
        out = []
        for m in model:
            inner = layers(m) if isinstance(m, nn.Sequential) else [m]
            if isinstance(inner, str):
                return inner
            out += inner
        return out
    try:
        gm = fx.symbolic_trace(model)
    except Exception as e:  # noqa: BLE001 (tracing runs user code: any error means "not a plain chain")
        return f"its forward is not a plain chain of layers (torch.fx: {str(e).splitlines()[0][:80]})"
    nodes = list(gm.graph.nodes)
    inputs = [n for n in nodes if n.op == "placeholder"]
    if len(inputs) != 1:
        return f"its forward takes {len(inputs)} inputs"
    x, chain, seen = inputs[0], [], {inputs[0]}
    for node in nodes[1:]:
        if node.op == "output":
            return chain if node.args[0] is x else "its forward does more than run its layers in order"
        if _helper(node, seen):
            continue
        tensors = [a for a in (*node.args, *node.kwargs.values()) if isinstance(a, fx.Node) and not _helper(a, seen)]
        if (
            node.op == "get_attr"
            or tensors != [x]
            or node.args[:1] != (x,)
            or len(x.users) != 1 + sum(_helper(u, seen) for u in x.users)
        ):
            return "its forward does more than run its layers in order"
        chain.append(_layer(gm, node, seen))
        x = node
        seen.add(x)
    return "its forward does more than run its layers in order"


def _hooked(m: nn.Module) -> bool:
    return bool(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks)
