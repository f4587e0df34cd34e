"""The fast path as PyTorch sees it: an autograd Function for the front end, and a whole training step."""

from __future__ import annotations

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


def _count_batch(norms: tuple[nn.BatchNorm2d, nn.BatchNorm2d]) -> float:
    """As BatchNorm2d.forward in training: count the batch, and return this step's running-statistics factor."""
    norms[0].num_batches_tracked.add_(1)
    norms[1].num_batches_tracked.add_(1)
    m = norms[0].momentum
    return m if m is not None else 1.0 / float(norms[0].num_batches_tracked)


class _FrontEndFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, k: Kernels, found: Match, x, w1, b1, w2, b2, g1, be1, g2, be2):
        x = x.contiguous()
        norms = found.norms
        train = norms is not None and norms[0].training
        prm, _alive = _params(found, _count_batch(norms) if train else 0.0)
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
        gf = gf.contiguous()
        grads = x.new_empty(k.grad_floats)
        prm, _alive = _params(ctx.found)
        with k.lock:
            if ctx.generation != k.generation:  # another forward has used the buffers since: refill them
                refill = Params.from_buffer_copy(prm)
                refill.momentum = 0.0  # the running statistics have moved for this batch already
                scratch = k.buffer("stats", stats.numel()) if ctx.train else None
                k.forward(refill, x, ctx.train, True, scratch, k.buffer("f", x.shape[0] * k.features))
                ctx.generation = k.generation
            k.backward(prm, x, stats, gf, grads, k.front.batch_norm)
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


class TrainingStep:
    """step(x, y, scale): every parameter's .grad and the batch's (summed loss, number correct), in C.

    The gradients live in one flat buffer that every step overwrites (as zero_grad(set_to_none=False) and
    backward() would): each .grad is a view of it, bound again only when something else replaced it. Without
    batch norm the whole step is one call (the lane engine); with it, the front end's forward, the classifier
    and the front end's backward, three.
    """

    def __init__(self, found: Match, k: Kernels, label_smoothing: float):
        self.found, self.k, self.smoothing = found, k, label_smoothing
        fc1, fc2, fc3 = found.linears
        norms = found.norms
        bn = [norms[0].weight, norms[0].bias, norms[1].weight, norms[1].bias] if norms else []
        front = [found.conv1.weight, found.conv1.bias, found.conv2.weight, found.conv2.bias] + bn
        self.classifier = [fc1.weight, fc1.bias, fc2.weight, fc2.bias, fc3.weight, fc3.bias]
        shapes = k.grad_shapes + [tuple(p.shape) if p is not None else (fc.out_features,)
                                  for fc in (fc1, fc2, fc3) for p in (fc.weight, fc.bias)]  # fmt: skip
        self.grads = torch.empty(k.grad_floats + k.classifier_grad_floats)
        self.views, offset = [], 0
        for p, shape in zip(front + self.classifier, shapes, strict=True):
            n = math.prod(shape)
            if p is not None:
                self.views.append((p, self.grads[offset : offset + n].view(shape)))
            offset += n
        self.structs: dict = {}  # ctypes structs pointing at the parameters' storage, rebuilt when it moves

    def accepts(self, x: torch.Tensor, y: torch.Tensor) -> bool:
        """Whether the kernels can take this batch (else the caller's eager step does)."""
        size, norms = self.found.front.size, self.found.norms
        return (
            x.device.type == "cpu"
            and x.dtype == torch.float32
            and x.dim() == 4
            and x.shape[1:] == (1, size, size)
            and y.device.type == "cpu"
            and y.dtype == torch.int64
            and y.shape == (x.shape[0],)
            and x.shape[0] > 0
            and not (norms and not (norms[0].training and norms[1].training))
        )

    def _lane_structs(self) -> tuple[Params, ClassifierParams]:
        """The parameters' structs for the lane step, rebuilt only when a parameter's storage moved."""
        found = self.found
        tensors = [found.conv1.weight, found.conv1.bias, found.conv2.weight, found.conv2.bias, *self.classifier]
        key = tuple(t.data_ptr() if t is not None else None for t in tensors)
        if self.structs.get("key") != key:
            prm, alive = _params(found)
            kept = [t.detach().contiguous() if t is not None else None for t in self.classifier]
            self.structs.update(prm=prm, cls=ClassifierParams(*(ptr(t) for t in kept)), alive=(alive, kept))
            # a non-contiguous parameter was copied: the copy would not see the optimiser's updates
            contiguous = all(t is None or t.is_contiguous() for t in tensors)
            self.structs["key"] = key if contiguous else None
        return self.structs["prm"], self.structs["cls"]

    def _lanes(self, x, y, scale: float, out) -> int:
        prm, cls = self._lane_structs()
        with self.k.lock:
            return self.k.lanes_step(prm, cls, x, y, self.smoothing, scale, self.grads, out)

    def _per_sample(self, x, y, scale: float, out) -> int:
        k, norms = self.k, self.found.norms
        prm, _alive = _params(self.found, _count_batch(norms) if norms else 0.0)
        kept = [t.detach().contiguous() if t is not None else None for t in self.classifier]
        cls = ClassifierParams(*(ptr(t) for t in kept))
        stats = x.new_empty(2 * (k.front.conv1[0] + k.front.conv2[0])) if norms else None
        with k.lock:
            f = k.buffer("f", x.shape[0] * k.features).view(x.shape[0], k.features)
            gf = k.buffer("gf", x.shape[0] * k.features)
            k.forward(prm, x, norms is not None, True, stats, f)
            status = k.classifier_step(cls, f, y, self.smoothing, scale, gf, self.grads[k.grad_floats :], out)
            if status == 0:
                k.backward(prm, x, stats, gf, self.grads, norms is not None)
        return status

    def __call__(self, x: torch.Tensor, y: torch.Tensor, scale: float):
        if not self.accepts(x, y):
            return None
        x, y = x.contiguous(), y.contiguous()
        out = torch.empty(2)
        status = (self._lanes if self.k.fused else self._per_sample)(x, y, scale, out)
        if status != 0:
            raise IndexError(f"a target is out of bounds: labels must be in [0, {self.found.linears[2].out_features})")
        for p, view in self.views:
            if p.requires_grad and p.grad is not view:
                p.grad = view
        return out[0], out[1].long()


def training_step(model: nn.Module, label_smoothing: float = 0.0) -> TrainingStep | None:
    """A whole training step's gradients in compiled code, or None when the model is not a LeNet it knows.

    step(x, y, scale) sets every parameter's .grad to the gradient of scale * (the summed cross-entropy of
    the batch, with `label_smoothing`), as zero_grad() and backward() would, and returns (summed loss, number
    correct) as tensors; or returns None, untouched, for a batch it cannot take. Batch norm layers move their
    running statistics as in a PyTorch training forward.
    """
    got = usable(model)
    if isinstance(got, str) or engine(*got)[0] != WHOLE_STEP:
        return None
    return TrainingStep(*got, label_smoothing)
