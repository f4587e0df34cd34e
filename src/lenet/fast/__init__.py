"""A fast CPU path for the LeNet family: compiled C for what PyTorch does slowly at this size.

A LeNet is conv -> [batch norm] -> activation -> 2x2 pool, twice, then flatten and a classifier. On a CPU,
PyTorch spends most of such a small net's time between its kernels. csrc/ does the work instead, compiled
once per network shape with the system's C compiler (cached under cache_dir()) and called through ctypes:

- `plan(model)`: what the fast path does for a model, and why not more, as the line a run prints:
  `fast path: whole-step kernels (AVX-512, 16 lanes)`.
- `training_step(model)`: a whole step's gradients (front end, the classic Linear-act-Linear-act-Linear
  classifier, possibly ending in Keras' head, and the cross-entropy) in C, into the parameters' .grad; the
  optimiser stays PyTorch's. Without batch norm one call (the lane engine, a vector of samples at a time);
  with it three (the per-sample front end forward, the classifier, the front end backward).
- `forward_fn(model)`: `model(x)` with the front end in C and the rest of the model in PyTorch;
  autograd-compatible, any loss and any classifier (Dropout, log_softmax, ...).

Models are matched by the layers their forward runs: an nn.Sequential, or a module whose forward is the
same chain of calls (found with torch.fx). The math is the model's own up to float rounding order (the
tests compare every engine with PyTorch), and no result depends on the thread count. docs/fast-path.md
says what is supported, how it is built and tested (ARM64 under qemu included), and what it measured.

Modules: chain (a model's layers), match (which models, and why not), build (compiling csrc/), kernels
(the ctypes interface, checked against the library's own description), step (autograd and the training
step), plan (the one-line answer).
"""

from .build import cache_dir
from .kernels import Kernels, kernels, unavailable
from .match import FrontEnd, Match, analyse, match
from .plan import Plan, plan
from .step import forward_fn, training_step

__all__ = [
    "FrontEnd", "Kernels", "Match", "Plan", "analyse", "cache_dir", "forward_fn", "kernels", "match", "plan",
    "training_step", "unavailable",
]  # fmt: skip
