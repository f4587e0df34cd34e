"""A fast CPU path for the LeNet family: compiled C for what PyTorch does slowly at this size.

A LeNet is conv -> activation -> 2x2 pool, twice, then flatten and a classifier. On a CPU, PyTorch spends
most of such a small net's time between its kernels, and in pooling and activation kernels built for big
tensors. csrc/ does the work instead, compiled once per network shape with the system's C compiler
(cached under cache_dir()) and called through ctypes:

- `forward_fn(model)`: `model(x)` with the front end (convolutions, batch norms, activations, pools,
  forward and backward) in C and the classifier in PyTorch; autograd-compatible, any loss.
- `training_step(model)`: a whole step's gradients (front end, the classic Linear-act-Linear-act-Linear
  classifier and the cross-entropy) in C, written into the parameters' .grad; the optimiser stays PyTorch's.
  The classifier may end in Keras' head (Sigmoid, then models.ClippedLog), which only `lenet_step` takes.
  Without batch norm this is one call, `lenet_step`, that takes 16 samples per vector (8 with AVX2) through
  the whole step; with batch norm, a
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

Modules: match (which models), build (compiling csrc/), kernels (the ctypes interface), step (autograd and
the training step).
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
