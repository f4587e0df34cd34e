"""The compiled kernels through ctypes: the Python side of the C interface, and their scratch buffers."""

from __future__ import annotations

import ctypes
import subprocess
import threading
from functools import cache
from pathlib import Path

import torch

from .build import SOURCE, compile_kernels
from .match import FrontEnd


def ptr(t: torch.Tensor | None) -> int | None:
    """A tensor's address for ctypes (None: a NULL pointer)."""
    return None if t is None else t.data_ptr()


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
        self.isa = {16: "AVX-512", 8: "AVX2", 4: "NEON"}.get(self.vector_floats, f"{self.vector_floats} floats")
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
        self.lib.lenet_forward(batch, threads, ctypes.byref(prm), int(train), x.data_ptr(), ptr(stats),
                               ptr(s1), ptr(p1), ptr(s2), f.data_ptr(), self.workspace(threads).data_ptr(),
                               ptr(dsum))  # fmt: skip

    def backward(self, prm: Params, x, stats, gf, grads, train: bool) -> None:
        """lenet_backward from the kept activations and the features' gradient gf into grads (train: through
        batch norm's batch statistics in stats)."""
        batch, threads = x.shape[0], torch.get_num_threads()
        s1, p1, s2 = self.activations(batch)
        chunks = self.buffer("chunks", self.lib.lenet_chunk_floats(batch))
        dsum = self.buffer("dsum", self.lib.lenet_chunk_doubles(batch), torch.float64) if train else None
        gy1, gy2 = (self.buffer("gy1", batch * self.s1), self.buffer("gy2", batch * self.s2)) if train else (None, None)
        self.lib.lenet_backward(batch, threads, ctypes.byref(prm), ptr(stats), x.data_ptr(), s1.data_ptr(),
                                p1.data_ptr(), s2.data_ptr(), gf.data_ptr(), ptr(gy1), ptr(gy2),
                                grads.data_ptr(), chunks.data_ptr(), ptr(dsum),
                                self.workspace(threads).data_ptr())  # fmt: skip


_failures: dict[FrontEnd, str] = {}


@cache
def kernels(front: FrontEnd) -> Kernels | None:
    """The compiled kernels for `front`, or None (the reason is in `unavailable(front)`)."""
    try:
        return Kernels(front, compile_kernels(front))
    except (OSError, subprocess.SubprocessError) as e:
        _failures[front] = f"could not build {SOURCE.name}: {e}"
        return None


def unavailable(front: FrontEnd) -> str | None:
    """Why the kernels for `front` could not be built, or None if they were (or were not tried)."""
    return _failures.get(front)
