"""The fast path as PyTorch sees it: an autograd Function for the front end, and a whole training step."""

from __future__ import annotations

import ctypes
import math
from collections.abc import Callable

import torch
from torch import nn

from .kernels import ClassifierParams, Kernels, Params, ptr
from .match import Match
from .plan import WHOLE_STEP, engine, usable


def _params(found: Match, momentum: float = 0.0) -> tuple[Params, list[torch.Tensor | None]]:
    """The Params of a front end, and the tensors it points into (keep them alive while it is used)."""
    conv1, conv2, norms = found.conv1, found.conv2, found.norms
    tensors = [conv1.weight, conv1.bias, conv2.weight, conv2.bias]
    if norms:
        tensors += [norms[0].weight, norms[0].bias, norms[1].weight, norms[1].bias]
        tensors += [norms[0].running_mean, norms[0].running_var, norms[1].running_mean, norms[1].running_var]
    else:
        tensors += [None] * 8
    tensors = [t.detach().contiguous() if t is not None else None for t in tensors]
    prm = Params(*(ptr(t) for t in tensors), norms[0].eps if norms else 0.0, momentum)
    return prm, tensors


class _FrontEndFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, k: Kernels, found: Match, x, w1, b1, w2, b2, g1, be1, g2, be2):
        x = x.contiguous()
        norms = found.norms
        train = norms is not None and norms[0].training
        momentum = 0.0
        if train:  # as BatchNorm2d.forward: count the batch, then this step's factor for the running stats
            norms[0].num_batches_tracked.add_(1)
            norms[1].num_batches_tracked.add_(1)
            m = norms[0].momentum
            momentum = m if m is not None else 1.0 / float(norms[0].num_batches_tracked)
        prm, _alive = _params(found, momentum)
        stats = x.new_empty(2 * (k.front.conv1[0] + k.front.conv2[0])) if train else None
        f = x.new_empty(x.shape[0], k.features)
        keep = any(ctx.needs_input_grad[3:])
        with k.lock:
            k.forward(prm, x, train, keep, stats, f)
            ctx.generation = k.generation
        if keep:
            ctx.save_for_backward(x, w1, b1, w2, b2, g1, be1, g2, be2, stats)
            ctx.kernels, ctx.found, ctx.train = k, found, train
        return f

    @staticmethod
    def backward(ctx, gf):
        k: Kernels = ctx.kernels
        x, w1, b1, w2, b2, g1, be1, g2, be2, stats = ctx.saved_tensors
        batch = x.shape[0]
        gf = gf.contiguous()
        bn = k.front.batch_norm
        grads = x.new_empty(k.grad_floats)
        prm, _alive = _params(ctx.found)
        with k.lock:
            if ctx.generation != k.generation:  # another forward has used the buffers since: refill them
                f = k.buffer("f", batch * k.features)
                refill = Params.from_buffer_copy(prm)
                refill.momentum = 0.0  # the running statistics have moved for this batch already
                scratch = k.buffer("stats", stats.numel()) if ctx.train else None
                k.forward(refill, x, ctx.train, True, scratch, f)
                ctx.generation = k.generation
            k.backward(prm, x, stats, gf, grads, bn)
        sizes = [math.prod(shape) for shape in k.grad_shapes]
        parts = [g.view(shape) for g, shape in zip(grads.split(sizes), k.grad_shapes, strict=True)]
        parts += [None] * (8 - len(parts))
        wanted = (w1, b1, w2, b2, g1, be1, g2, be2)
        return (None, None, None, *(g if t is not None else None for g, t in zip(parts, wanted, strict=True)))


def forward_fn(model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """A function computing `model(x)` through the fast path, or None when the model is not a LeNet it knows.

    The function itself falls back to `model(x)` for inputs it cannot take (CUDA, float64, wrong shape, an
    input that needs its gradient, batch norm in eval mode with gradients wanted).
    """
    got = usable(model)
    if isinstance(got, str):
        return None
    found, k = got
    conv1, conv2, norms, tail = found.conv1, found.conv2, found.norms, found.tail
    size = found.front.size
    bn_params = (norms[0].weight, norms[0].bias, norms[1].weight, norms[1].bias) if norms else (None,) * 4

    def forward(x: torch.Tensor) -> torch.Tensor:
        if (
            x.device.type != "cpu"
            or x.dtype != torch.float32
            or x.dim() != 4
            or x.shape[1:] != (1, size, size)
            or x.requires_grad
            or conv1.weight.device.type != "cpu"
            or (norms and norms[0].training != norms[1].training)
            or (norms and not norms[0].training and torch.is_grad_enabled())
        ):
            return model(x)
        h = _FrontEndFunction.apply(k, found, x, conv1.weight, conv1.bias, conv2.weight, conv2.bias, *bn_params)
        for layer in tail:
            h = layer(h)
        return h

    return forward


def training_step(model: nn.Module, label_smoothing: float = 0.0) -> Callable | None:
    """A whole training step's gradients in compiled code, or None when the model is not a LeNet it knows.

    step(x, y, scale) sets every parameter's .grad to the gradient of scale * (the summed cross-entropy of
    the batch, with `label_smoothing`), as zero_grad() and backward() would (each .grad a view of one buffer
    that the next step overwrites), and returns (summed loss, number correct) as tensors; or returns None,
    untouched, for a batch it cannot take. Batch norm layers move their running statistics as in a PyTorch
    training forward.
    """
    got = usable(model)
    if isinstance(got, str) or engine(*got)[0] != WHOLE_STEP:
        return None
    found, k = got
    fc1, fc2, fc3 = found.linears
    norms, size, features = found.norms, found.front.size, k.features
    # where each parameter's gradient lands in the flat buffer: the front end's, then the classifier's
    bn = [norms[0].weight, norms[0].bias, norms[1].weight, norms[1].bias] if norms else []
    front = [found.conv1.weight, found.conv1.bias, found.conv2.weight, found.conv2.bias] + bn
    back = [fc1.weight, fc1.bias, fc2.weight, fc2.bias, fc3.weight, fc3.bias]
    shapes = k.grad_shapes + [tuple(fc1.weight.shape), (fc1.out_features,), tuple(fc2.weight.shape),
                              (fc2.out_features,), tuple(fc3.weight.shape), (fc3.out_features,)]  # fmt: skip
    total = k.grad_floats + k.classifier_grad_floats
    # The gradients live in one flat buffer that every step overwrites (as zero_grad(set_to_none=False) and
    # backward() would): each .grad is a view of it, bound again only when something else replaced it.
    grads = torch.empty(total)
    views, offset = [], 0
    for p, shape in zip(front + back, shapes, strict=True):
        n = math.prod(shape)
        if p is not None:
            views.append((p, grads[offset : offset + n].view(shape)))
        offset += n
    structs: dict = {}  # ctypes structs pointing at the parameters' storage, rebuilt when it moves

    def bind() -> None:
        for p, view in views:
            if p.requires_grad and p.grad is not view:
                p.grad = view

    def classifier() -> list[torch.Tensor | None]:
        return [fc1.weight, fc1.bias, fc2.weight, fc2.bias, fc3.weight, fc3.bias]

    def fused_structs() -> tuple[Params, ClassifierParams]:
        head = classifier()
        tensors = [found.conv1.weight, found.conv1.bias, found.conv2.weight, found.conv2.bias, *head]
        key = tuple(t.data_ptr() if t is not None else None for t in tensors)
        if structs.get("key") != key:
            prm, alive = _params(found)
            kept = [t.detach().contiguous() if t is not None else None for t in head]
            structs.update(prm=prm, cls=ClassifierParams(*(ptr(t) for t in kept)), alive=(alive, kept))
            # a non-contiguous parameter was copied: the copy would not see the optimiser's updates
            contiguous = all(t is None or t.is_contiguous() for t in tensors)
            structs["key"] = key if contiguous else None
        return structs["prm"], structs["cls"]

    def step(x: torch.Tensor, y: torch.Tensor, scale: float):
        batch = x.shape[0]
        if (
            x.device.type != "cpu"
            or x.dtype != torch.float32
            or x.dim() != 4
            or x.shape[1:] != (1, size, size)
            or y.device.type != "cpu"
            or y.dtype != torch.int64
            or y.shape != (batch,)
            or batch == 0
            or (norms and not (norms[0].training and norms[1].training))
        ):
            return None
        x, y = x.contiguous(), y.contiguous()
        out = torch.empty(2)
        threads = torch.get_num_threads()
        if k.fused:
            prm, cls = fused_structs()
            with k.lock:
                ws = k.buffer("step", k.step_workspace(batch, threads))
                status = k.lib.lenet_step(batch, threads, ctypes.byref(prm), ctypes.byref(cls), x.data_ptr(),
                                          y.data_ptr(), label_smoothing, scale, grads.data_ptr(), out.data_ptr(),
                                          ws.data_ptr())  # fmt: skip
            if status != 0:
                raise IndexError(f"a target is out of bounds: labels must be in [0, {fc3.out_features})")
            bind()
            return out[0], out[1].long()
        train = norms is not None
        momentum = 0.0
        if train:  # as BatchNorm2d.forward: count the batch, then this step's factor for the running stats
            norms[0].num_batches_tracked.add_(1)
            norms[1].num_batches_tracked.add_(1)
            m = norms[0].momentum
            momentum = m if m is not None else 1.0 / float(norms[0].num_batches_tracked)
        prm, _alive = _params(found, momentum)
        kept = [t.detach().contiguous() if t is not None else None for t in classifier()]
        cls = ClassifierParams(*(ptr(t) for t in kept))
        stats = x.new_empty(2 * (k.front.conv1[0] + k.front.conv2[0])) if train else None
        with k.lock:
            f, gf = k.buffer("f", batch * features), k.buffer("gf", batch * features)
            k.forward(prm, x, train, True, stats, f)
            ws = k.buffer("classifier", k.lib.lenet_classifier_workspace_floats(batch, threads))
            status = k.lib.lenet_classifier(batch, threads, ctypes.byref(cls), f.data_ptr(), y.data_ptr(),
                                            label_smoothing, scale, gf.data_ptr(),
                                            grads[k.grad_floats :].data_ptr(), out.data_ptr(),
                                            ws.data_ptr())  # fmt: skip
            if status != 0:
                raise IndexError(f"a target is out of bounds: labels must be in [0, {fc3.out_features})")
            k.backward(prm, x, stats, gf, grads, train)
        bind()
        return out[0], out[1].long()

    return step
