"""d2l's aliases (config.ini of d2l-zh): the chapters write d2l.reshape(x, shape), d2l.size(y), ..."""

from __future__ import annotations

import torch
from torch import nn

__all__ = [  # d2l's names in this section, re-exported by lenet.d2l
    "abs", "arange", "argmax", "astype", "concat", "cos", "cosh", "exp", "eye", "float32", "int32", "linspace",
    "log", "matmul", "meshgrid", "nn_Module", "normal", "numpy", "ones", "rand", "randn", "reduce_mean",
    "reduce_sum", "reshape", "sin", "sinh", "size", "stack", "tanh", "tensor", "to", "transpose", "zeros",
]  # fmt: skip


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
