"""What the fast path will do for a model, as one line: `fast path: whole-step kernels (AVX-512, 16 lanes)`."""

from __future__ import annotations

import sys
from dataclasses import dataclass

import torch
from torch import nn

from .kernels import Kernels, kernels, unavailable
from .match import Match, analyse

WHOLE_STEP = "whole-step"  # every gradient and the loss in C; the optimiser stays PyTorch's
FRONT_END = "front-end"  # the convolutions' forward and backward in C, the classifier and loss in PyTorch


@dataclass(frozen=True)
class Plan:
    """The fast path's engine for a model (None: off), why not more, and the kernels' vectors."""

    engine: str | None
    reason: str = ""  # off: why; front-end: why the classifier runs in PyTorch; whole-step: ""
    isa: str = ""  # "AVX-512", "AVX2", "NEON"
    lanes: int = 0  # floats per vector

    @classmethod
    def off(cls, reason: str) -> Plan:
        """No fast path, for `reason` (the model's, or the run's: an optimiser, CUDA, --no-fastpath)."""
        return cls(None, reason)

    def __str__(self) -> str:
        if self.engine is None:
            return f"fast path: off ({self.reason}); training with PyTorch"
        line = f"fast path: {self.engine} kernels ({self.isa}, {self.lanes} lanes)"
        return line + (f", classifier in PyTorch ({self.reason})" if self.engine == FRONT_END else "")


def engine(found: Match, k: Kernels) -> tuple[str, str]:
    """(engine, reason) for a matched model whose kernels are built: what training_step and forward_fn do."""
    if found.linears is None:
        return FRONT_END, found.classifier_reason
    return WHOLE_STEP, ""


def usable(model: nn.Module) -> tuple[Match, Kernels] | str:
    """The model's match and built kernels, or why the fast path cannot take it (compiling them if needed)."""
    if sys.byteorder != "little":
        return "a big-endian machine"
    found = analyse(model)
    if isinstance(found, str):
        return found
    params = list(model.parameters())
    device = next((p.device.type for p in params if p.device.type != "cpu"), None)
    if device:
        return f"the model is on {device}"
    others = sorted({str(p.dtype).removeprefix("torch.") for p in params if p.dtype != torch.float32})
    if others:
        return f"the model's parameters are {', '.join(others)}"
    k = kernels(found.front)
    if k is None:
        return unavailable(found.front) or "the kernels could not be built"
    return found, k


def plan(model: nn.Module) -> Plan:
    """What the fast path does for `model` in training (building its kernels first if needed)."""
    got = usable(model)
    if isinstance(got, str):
        return Plan.off(got)
    found, k = got
    name, reason = engine(found, k)
    return Plan(name, reason, k.isa, k.vector_floats)
