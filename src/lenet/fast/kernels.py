"""The compiled kernels through ctypes: the Python side of csrc/api.h, checked against the library's own
description of it before the first call, and the kernels' scratch buffers."""

from __future__ import annotations

import ctypes
import subprocess
import threading
from functools import cache
from pathlib import Path

import torch

from .build import compile_kernels
from .match import FrontEnd

INTERFACE_VERSION = 2  # csrc/api.h's LENET_INTERFACE_VERSION


def ptr(t: torch.Tensor | None) -> int | None:
    """A tensor's address for ctypes (None: a NULL pointer)."""
    return None if t is None else t.data_ptr()


class Params(ctypes.Structure):
    """csrc's LenetParams: pointers to the front end's parameters in PyTorch's layouts (NULL for absent ones)."""

    _fields_ = [(name, ctypes.c_void_p) for name in (
        "w1", "b1", "w2", "b2", "gamma1", "beta1", "gamma2", "beta2", "mean1", "var1", "mean2", "var2"
    )] + [("eps", ctypes.c_float), ("momentum", ctypes.c_float)]  # fmt: skip


class ClassifierParams(ctypes.Structure):
    """csrc's LenetClassifier: the three Linear layers' weights and biases (NULL for absent biases)."""

    _fields_ = [(name, ctypes.c_void_p) for name in ("w1", "b1", "w2", "b2", "w3", "b3")]


_p, _i, _f, _long = ctypes.c_void_p, ctypes.c_int, ctypes.c_float, ctypes.c_long
_params, _classifier = ctypes.POINTER(Params), ctypes.POINTER(ClassifierParams)
# csrc/api.h's LENET_API: (result, argument types) of every entry point that takes arguments
SIGNATURES = {
    "lenet_use_host_threads": (None, [_p, _p]),
    "lenet_frontend_workspace_floats": (_long, [_i]),
    "lenet_frontend_chunk_floats": (_long, [_i]),
    "lenet_frontend_chunk_doubles": (_long, [_i]),
    "lenet_frontend_forward": (None, [_i, _i, _params, _i] + [_p] * 8),
    "lenet_frontend_backward": (None, [_i, _i, _params] + [_p] * 12),
    "lenet_classifier_workspace_floats": (_long, [_i, _i]),
    "lenet_classifier_step": (_i, [_i, _i, _classifier, _p, _p, _f, _f, _p, _p, _p, _p]),
    "lenet_lanes_workspace_floats": (_long, [_i, _i]),
    "lenet_lanes_step": (_i, [_i, _i, _params, _classifier, _p, _p, _f, _f, _p, _p, _p]),
    "lenet_lanes_forward": (None, [_i, _i, _params, _classifier, _p, _p, _p, _p]),
    "lenet_reference_step": (_i, [_i, _params, _classifier, _p, _p, _f, _f, _p, _p, _p]),
}
QUERIES = ["lenet_vector_floats", "lenet_features", "lenet_front_grad_floats", "lenet_classifier_grad_floats",
           "lenet_s1_floats", "lenet_p1_floats", "lenet_s2_floats", "lenet_lanes_supported"]  # fmt: skip


@cache
def host_openmp() -> tuple[int | None, int | None]:
    """The addresses of GOMP_parallel and omp_get_thread_num in PyTorch's OpenMP runtime ((None, None) where
    PyTorch runs none): the kernels run their tasks on PyTorch's own threads (csrc/pool.c says why)."""
    for path in sorted((Path(torch.__file__).parent / "lib").glob("lib*omp*")):
        try:
            lib = ctypes.CDLL(str(path))  # loaded already, by torch: the same library
            functions = lib.GOMP_parallel, lib.omp_get_thread_num
        except (OSError, AttributeError):
            continue
        return tuple(ctypes.cast(f, ctypes.c_void_p).value for f in functions)
    return None, None


class InterfaceMismatch(OSError):
    """The library was built from a csrc/ whose interface differs from this module's (a bug, or a stale build)."""


def check_interface(description: str) -> None:
    """Compare lenet_interface()'s description with this module's declarations; raise InterfaceMismatch."""
    got = dict(item.split("=", 1) for item in description.split())
    want = {
        "version": INTERFACE_VERSION,
        "params": ctypes.sizeof(Params),
        "classifier": ctypes.sizeof(ClassifierParams),
    }
    want |= {name: len(args) for name, (_, args) in SIGNATURES.items()}
    for key, value in want.items():
        if got.get(key) != str(value):
            what = "interface version" if key == "version" else f"{key}'s size in bytes" if key in (
                "params", "classifier") else f"{key}'s argument count"  # fmt: skip
            raise InterfaceMismatch(
                f"the kernels' {what} is {got.get(key, 'missing')} in C but {value} in lenet/fast/kernels.py"
            )


class Kernels:
    """csrc/ compiled for one front-end shape: its entry points, sizes and scratch buffers."""

    def __init__(self, front: FrontEnd, path: Path):
        lib = ctypes.CDLL(str(path))
        lib.lenet_interface.restype = ctypes.c_char_p
        lib.lenet_isa.restype = ctypes.c_char_p
        check_interface(lib.lenet_interface().decode())
        for name, (restype, argtypes) in SIGNATURES.items():
            if hasattr(lib, name):  # the classifier's and the lane step's only with a classic classifier
                getattr(lib, name).argtypes = argtypes
                getattr(lib, name).restype = restype
        lib.lenet_use_host_threads(*host_openmp())
        self.vector_floats = lib.lenet_vector_floats()  # 16 with AVX-512, 8 with AVX2, 4 with NEON
        if not self.vector_floats:
            raise OSError("no AVX-512, AVX2 with FMA or NEON here (CPU or compiler): kernels not built for it")
        self.isa = lib.lenet_isa().decode()
        self.lib, self.front = lib, front
        self.features = lib.lenet_features()
        self.s1, self.p1, self.s2 = lib.lenet_s1_floats(), lib.lenet_p1_floats(), lib.lenet_s2_floats()
        (c1, k1, _), (c2, k2, _) = front.conv1, front.conv2
        # the front end's gradients as the kernels write them: PyTorch's shapes, one after the other
        self.grad_shapes = [(c1, 1, k1, k1), (c1,), (c2, c1, k2, k2), (c2,)]
        self.grad_shapes += [(c1,), (c1,), (c2,), (c2,)] if front.batch_norm else []
        self.grad_floats = lib.lenet_front_grad_floats()
        self.classifier_grad_floats = lib.lenet_classifier_grad_floats()
        # the whole step in one call, a vector of samples at a time (classic classifiers, no batch norm)
        self.fused = bool(front.classifier) and bool(lib.lenet_lanes_supported())
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

    def activations(self, batch: int) -> tuple[torch.Tensor, ...]:
        """The buffers the front end's forward keeps its activations in for its backward: s1, p1, s2."""
        return (
            self.buffer("s1", batch * self.s1),
            self.buffer("p1", batch * self.p1),
            self.buffer("s2", batch * self.s2),
        )

    def _workspace(self, threads: int) -> torch.Tensor:
        return self.buffer("workspace", self.lib.lenet_frontend_workspace_floats(threads))

    def forward(self, prm: Params, x, train: bool, keep: bool, stats, f) -> None:
        """The front end forward into f; with keep or train, refill the activation buffers (and write stats)."""
        batch, threads = x.shape[0], torch.get_num_threads()
        s1 = p1 = s2 = dsum = None
        if keep or train:
            s1, p1, s2 = self.activations(batch)
            self.generation += 1
        if train:
            dsum = self.buffer("dsum", self.lib.lenet_frontend_chunk_doubles(batch), torch.float64)
        self.lib.lenet_frontend_forward(batch, threads, ctypes.byref(prm), int(train), x.data_ptr(), ptr(stats),
                                        ptr(s1), ptr(p1), ptr(s2), f.data_ptr(), self._workspace(threads).data_ptr(),
                                        ptr(dsum))  # fmt: skip

    def backward(self, prm: Params, x, stats, gf, grads, train: bool) -> None:
        """The front end backward from the kept activations and the features' gradient gf into grads (train:
        through batch norm's batch statistics in stats)."""
        batch, threads = x.shape[0], torch.get_num_threads()
        s1, p1, s2 = self.activations(batch)
        parts = self.buffer("parts", self.lib.lenet_frontend_chunk_floats(batch))
        dsum = self.buffer("dsum", self.lib.lenet_frontend_chunk_doubles(batch), torch.float64) if train else None
        gy1, gy2 = (self.buffer("gy1", batch * self.s1), self.buffer("gy2", batch * self.s2)) if train else (None, None)
        self.lib.lenet_frontend_backward(batch, threads, ctypes.byref(prm), ptr(stats), x.data_ptr(), s1.data_ptr(),
                                         p1.data_ptr(), s2.data_ptr(), gf.data_ptr(), ptr(gy1), ptr(gy2),
                                         grads.data_ptr(), parts.data_ptr(), ptr(dsum),
                                         self._workspace(threads).data_ptr())  # fmt: skip

    def classifier_step(self, cls: ClassifierParams, f, y, smoothing: float, scale: float, gf, grads, out) -> int:
        """The classifier's forward, loss and backward from the features f: gf, its gradients, out = (loss,
        correct); 0, or -1 for a label out of range."""
        batch, threads = f.shape[0], torch.get_num_threads()
        ws = self.buffer("classifier", self.lib.lenet_classifier_workspace_floats(batch, threads))
        return self.lib.lenet_classifier_step(batch, threads, ctypes.byref(cls), f.data_ptr(), y.data_ptr(),
                                              smoothing, scale, gf.data_ptr(), grads.data_ptr(), out.data_ptr(),
                                              ws.data_ptr())  # fmt: skip

    def lanes_step(self, prm: Params, cls: ClassifierParams, x, y, smoothing: float, scale: float, grads, out) -> int:
        """The whole step, V samples a vector: every gradient into grads, out = (loss, correct); 0, or -1 for a
        label out of range."""
        batch, threads = x.shape[0], torch.get_num_threads()
        ws = self.buffer("lanes", self.lib.lenet_lanes_workspace_floats(batch, threads))
        return self.lib.lenet_lanes_step(batch, threads, ctypes.byref(prm), ctypes.byref(cls), x.data_ptr(),
                                         y.data_ptr(), smoothing, scale, grads.data_ptr(), out.data_ptr(),
                                         ws.data_ptr())  # fmt: skip

    def lanes_forward(self, prm: Params, cls: ClassifierParams, x) -> tuple[torch.Tensor, torch.Tensor]:
        """The lane step's forward alone: the features and the last Linear's outputs (for checking it)."""
        batch, threads = x.shape[0], torch.get_num_threads()
        f, z = x.new_empty(batch, self.features), x.new_empty(batch, self.front.classifier[2])
        ws = self.buffer("lanes", self.lib.lenet_lanes_workspace_floats(batch, threads))
        self.lib.lenet_lanes_forward(batch, threads, ctypes.byref(prm), ctypes.byref(cls), x.data_ptr(),
                                     f.data_ptr(), z.data_ptr(), ws.data_ptr())  # fmt: skip
        return f, z

    def reference_step(self, prm: Params, cls: ClassifierParams, x, y, smoothing: float, scale: float, grads, out):
        """The whole step in csrc/reference.c's plain loops (slow; for checking): as lanes_step, and returns the
        features."""
        f = x.new_empty(x.shape[0], self.features)
        status = self.lib.lenet_reference_step(x.shape[0], ctypes.byref(prm), ctypes.byref(cls), x.data_ptr(),
                                               y.data_ptr(), smoothing, scale, grads.data_ptr(), out.data_ptr(),
                                               f.data_ptr())  # fmt: skip
        if status != 0:
            raise IndexError("a target is out of bounds")
        return f


_failures: dict[FrontEnd, str] = {}


@cache
def kernels(front: FrontEnd) -> Kernels | None:
    """The compiled kernels for `front`, or None (the reason is in `unavailable(front)`)."""
    try:
        return Kernels(front, compile_kernels(front))
    except (OSError, subprocess.SubprocessError) as e:
        _failures[front] = f"could not build the kernels: {e}" if not isinstance(e, InterfaceMismatch) else str(e)
        return None


def unavailable(front: FrontEnd) -> str | None:
    """Why the kernels for `front` could not be built, or None if they were (or were not tried)."""
    return _failures.get(front)
