"""A fast CPU path for the LeNet family: compiled C for what PyTorch does slowly at this size.

A LeNet is conv -> activation -> 2x2 pool, twice, then flatten and a classifier. On a CPU, PyTorch spends
most of such a small net's time between its kernels, and in pooling and activation kernels built for big
tensors. fastpath.c does the work instead, compiled once per network shape with the system's C compiler
(cached under cache_dir()) and called through ctypes:

- `forward_fn(model)`: `model(x)` with the front end (convolutions, batch norms, activations, pools,
  forward and backward) in C and the classifier in PyTorch; autograd-compatible, any loss.
- `training_step(model)`: a whole step's gradients (front end, the classic Linear-act-Linear-act-Linear
  classifier and the cross-entropy) in C, written into the parameters' .grad; the optimiser stays PyTorch's.
  The classifier may end in Keras' head (Sigmoid, then models.ClippedLog), which only `lenet_step` takes.
  Without batch norm this is one call, `lenet_step`, that takes 16 samples per vector (8 with AVX2) through
  the whole step (about 5x the usual PyTorch loop's speed on a LeNet-5 with AVX-512); with batch norm, a
  forward, a classifier and a backward call.

The math is the model's own up to float rounding order (tests/test_fastpath.py compares them with plain
PyTorch; lenet_step also flushes values under 2^-126 to zero, as saturated sigmoids make them), and
results do not depend on the thread count (they do on the vector width: AVX2 and AVX-512 builds sum in
different orders). Supported: 1-channel input, two Conv2d (stride 1, square kernel, zero
padding), each optionally followed by BatchNorm2d (both or neither), Sigmoid, ReLU or no activation,
AvgPool2d(2) or MaxPool2d(2), float32 on the CPU, no input gradient, a CPU with AVX-512 or with AVX2 and FMA
(the kernels take vectors one register wide, and the whole step is blocked for either's register count).
Anything else (CUDA, a DDP wrapper, hooks on the front end, no C compiler, a CPU with neither) gets None,
and the caller uses the model itself.

LENET_FASTPATH_CFLAGS, for testing and diagnosis: extra compiler flags, appended to fastpath's own (and part
of the cache key). `LENET_FASTPATH_CFLAGS=-mno-avx512f` builds the AVX2 kernels on an AVX-512 machine.
"""

from __future__ import annotations

import ctypes
import hashlib
import math
import os
import platform
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import torch
from torch import nn

from .models import ClippedLog

SOURCE = Path(__file__).with_name("fastpath.c")
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


# ----------------------------------------------------------------------------------------------------------
# Building and loading the kernels


def cache_dir() -> Path:
    """Where compiled kernels are kept: $XDG_CACHE_HOME/lenet/kernels (default ~/.cache/lenet/kernels)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lenet" / "kernels"


def _cpu_signature() -> str:
    """What -march=native depends on, so that a shared cache never hands one CPU another's binary."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _compile(front: FrontEnd) -> Path:
    """The shared library for `front`, compiled on first use; raises OSError/CalledProcessError on failure."""
    cc = os.environ.get("CC", "cc")
    flags = ["-O3", "-march=native", "-mprefer-vector-width=512", "-std=gnu11", "-ffp-contract=fast",
             "-fno-math-errno", "-fno-trapping-math", "-fPIC", "-shared", "-fopenmp"]  # fmt: skip
    flags += os.environ.get("LENET_FASTPATH_CFLAGS", "").split()
    defines = [f"-D{k}={v}" for k, v in front.macros.items()]
    source = SOURCE.read_bytes()
    key = hashlib.sha256(
        b"\0".join([source, cc.encode(), " ".join(flags + defines).encode(), _cpu_signature().encode()])
    ).hexdigest()[:20]
    folder = cache_dir()
    lib = folder / f"lenet-{key}.so"
    if lib.is_file():
        return lib
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".lenet-", suffix=".so")
    os.close(fd)
    try:
        portable = [f for f in flags if f not in ("-fopenmp", "-mprefer-vector-width=512")]
        for attempt in (flags, portable, [f for f in portable if f != "-march=native"]):
            command = [cc, *attempt, *defines, str(SOURCE), "-o", tmp]
            result = subprocess.run(command, capture_output=True, text=True)
            if result.returncode == 0:
                os.replace(tmp, lib)
                return lib
        raise OSError(f"{cc} failed: {result.stderr.strip()[-500:]}")
    finally:
        Path(tmp).unlink(missing_ok=True)


class Params(ctypes.Structure):
    """fastpath.c's Params: pointers to the parameters in PyTorch's layouts (NULL for absent ones)."""

    _fields_ = [(name, ctypes.c_void_p) for name in (
        "w1", "b1", "w2", "b2", "gamma1", "beta1", "gamma2", "beta2", "mean1", "var1", "mean2", "var2"
    )] + [("eps", ctypes.c_float), ("momentum", ctypes.c_float)]  # fmt: skip


class ClassifierParams(ctypes.Structure):
    """fastpath.c's Classifier: the three Linear layers' weights and biases (NULL for absent biases)."""

    _fields_ = [(name, ctypes.c_void_p) for name in ("w1", "b1", "w2", "b2", "w3", "b3")]


class Kernels:
    """fastpath.c compiled for one front-end shape, with its buffer sizes."""

    def __init__(self, front: FrontEnd, path: Path):
        lib = ctypes.CDLL(str(path))
        self.vector_floats = lib.lenet_vector_floats()  # 16 with AVX-512, 8 with AVX2
        if not self.vector_floats:
            raise OSError("neither AVX-512 nor AVX2 with FMA here (CPU or compiler): kernels not built for it")
        p, i = ctypes.c_void_p, ctypes.c_int
        lib.lenet_forward.argtypes = [i, i, ctypes.POINTER(Params), i] + [p] * 8
        lib.lenet_forward.restype = None
        lib.lenet_backward.argtypes = [i, i, ctypes.POINTER(Params)] + [p] * 12
        lib.lenet_backward.restype = None
        for name in ("lenet_workspace_floats", "lenet_chunk_floats", "lenet_chunk_doubles"):
            getattr(lib, name).argtypes = [i]
            getattr(lib, name).restype = ctypes.c_long
        self.lib, self.front = lib, front
        self.features = lib.lenet_features()
        self.s1, self.p1, self.s2 = lib.lenet_s1_floats(), lib.lenet_p1_floats(), lib.lenet_s2_floats()
        (c1, k1, _), (c2, k2, _) = front.conv1, front.conv2
        # the gradients as lenet_backward writes them: PyTorch's shapes, one after the other
        self.grad_shapes = [(c1, 1, k1, k1), (c1,), (c2, c1, k2, k2), (c2,)]
        self.grad_shapes += [(c1,), (c1,), (c2,), (c2,)] if front.batch_norm else []
        self.grad_floats = lib.lenet_grad_floats()
        if front.classifier:
            lib.lenet_classifier.argtypes = [i, i, ctypes.POINTER(ClassifierParams), p, p, ctypes.c_float,
                                             ctypes.c_float, p, p, p, p]  # fmt: skip
            lib.lenet_classifier.restype = i
            lib.lenet_classifier_workspace_floats.argtypes = [i, i]
            lib.lenet_classifier_workspace_floats.restype = ctypes.c_long
            self.classifier_grad_floats = lib.lenet_classifier_grad_floats()
        # the whole step in one call, a vector of samples at a time (built for classic classifiers, no batch norm)
        self.fused = bool(front.classifier) and bool(lib.lenet_step_supported())
        if self.fused:
            lib.lenet_step.argtypes = [i, i, ctypes.POINTER(Params), ctypes.POINTER(ClassifierParams), p, p,
                                       ctypes.c_float, ctypes.c_float, p, p, p]  # fmt: skip
            lib.lenet_step.restype = i
            lib.lenet_step_workspace_floats.argtypes = [i, i]
            lib.lenet_step_workspace_floats.restype = ctypes.c_long
        self._step_floats: dict[tuple[int, int], int] = {}
        # Scratch and activation buffers live as long as the kernels: fresh multi-megabyte tensors every
        # step would cost page faults. `generation` counts refills of the activation buffers, so that a
        # backward whose forward's activations were overwritten (two forwards, one backward) recomputes them.
        self.lock = threading.Lock()
        self.generation = 0
        self._buffers: dict[str, torch.Tensor] = {}

    def buffer(self, name: str, size: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """A scratch tensor of `size` elements that persists between calls (hold the lock while using it)."""
        t = self._buffers.get(name)
        if t is None or t.numel() < size:
            t = self._buffers[name] = torch.empty(size, dtype=dtype)
        return t[:size]

    def step_workspace(self, batch: int, threads: int) -> int:
        """Floats of workspace lenet_step needs for this batch and thread count."""
        floats = self._step_floats.get((batch, threads))
        if floats is None:
            floats = self._step_floats[batch, threads] = self.lib.lenet_step_workspace_floats(batch, threads)
        return floats

    def workspace(self, threads: int) -> torch.Tensor:
        return self.buffer("workspace", self.lib.lenet_workspace_floats(threads))

    def activations(self, batch: int) -> tuple[torch.Tensor, ...]:
        """The buffers lenet_forward keeps the activations in for lenet_backward: s1, p1, s2."""
        return (
            self.buffer("s1", batch * self.s1),
            self.buffer("p1", batch * self.p1),
            self.buffer("s2", batch * self.s2),
        )

    def forward(self, prm: Params, x, train: bool, keep: bool, stats, f) -> None:
        """lenet_forward into f; with keep or train, refill the activation buffers (and write stats)."""
        batch, threads = x.shape[0], torch.get_num_threads()
        s1 = p1 = s2 = dsum = None
        if keep or train:
            s1, p1, s2 = self.activations(batch)
            self.generation += 1
        if train:
            dsum = self.buffer("dsum", self.lib.lenet_chunk_doubles(batch), torch.float64)
        self.lib.lenet_forward(batch, threads, ctypes.byref(prm), int(train), x.data_ptr(), _ptr(stats),
                               _ptr(s1), _ptr(p1), _ptr(s2), f.data_ptr(), self.workspace(threads).data_ptr(),
                               _ptr(dsum))  # fmt: skip

    def backward(self, prm: Params, x, stats, gf, grads, train: bool) -> None:
        """lenet_backward from the kept activations and the features' gradient gf into grads (train: through
        batch norm's batch statistics in stats)."""
        batch, threads = x.shape[0], torch.get_num_threads()
        s1, p1, s2 = self.activations(batch)
        chunks = self.buffer("chunks", self.lib.lenet_chunk_floats(batch))
        dsum = self.buffer("dsum", self.lib.lenet_chunk_doubles(batch), torch.float64) if train else None
        gy1, gy2 = (self.buffer("gy1", batch * self.s1), self.buffer("gy2", batch * self.s2)) if train else (None, None)
        self.lib.lenet_backward(batch, threads, ctypes.byref(prm), _ptr(stats), x.data_ptr(), s1.data_ptr(),
                                p1.data_ptr(), s2.data_ptr(), gf.data_ptr(), _ptr(gy1), _ptr(gy2),
                                grads.data_ptr(), chunks.data_ptr(), _ptr(dsum),
                                self.workspace(threads).data_ptr())  # fmt: skip


_failures: dict[FrontEnd, str] = {}


@cache
def kernels(front: FrontEnd) -> Kernels | None:
    """The compiled kernels for `front`, or None (the reason is in `unavailable(front)`)."""
    try:
        return Kernels(front, _compile(front))
    except (OSError, subprocess.SubprocessError) as e:
        _failures[front] = f"could not build {SOURCE.name}: {e}"
        return None


def unavailable(front: FrontEnd) -> str | None:
    """Why the kernels for `front` could not be built, or None if they were (or were not tried)."""
    return _failures.get(front)


# ----------------------------------------------------------------------------------------------------------
# The front end as an autograd function


def _ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


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
    prm = Params(*(_ptr(t) for t in tensors), norms[0].eps if norms else 0.0, momentum)
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
    found = match(model)
    if found is None or sys.byteorder != "little":
        return None
    weight = found.conv1.weight
    if weight.device.type != "cpu" or weight.dtype != torch.float32:
        return None
    k = kernels(found.front)
    if k is None:
        return None
    conv1, conv2, norms, tail = found.conv1, found.conv2, found.norms, list(model)[found.tail :]
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
    found = match(model)
    if found is None or found.linears is None or sys.byteorder != "little":
        return None
    if any(p.device.type != "cpu" or p.dtype != torch.float32 for p in model.parameters()):
        return None
    k = kernels(found.front)
    if k is None or (found.front.classifier[4] and not k.fused):  # only lenet_step takes Keras' head
        return None
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
            structs.update(prm=prm, cls=ClassifierParams(*(_ptr(t) for t in kept)), alive=(alive, kept))
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
        cls = ClassifierParams(*(_ptr(t) for t in kept))
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
