"""SGD with torch.optim.SGD's arithmetic, without torch.optim.

torch.optim's optimisers import torch._dynamo on their first use (their methods are wrapped to keep the
compiler out), which costs ~1.5 s of a process's start: half of what the `fast` recipe needs to reach 99 %.
This is the same update, op for op as torch.optim.SGD runs it on a CPU (its single-tensor path), so the
results are bit-identical (tests/test_optim.py holds it to that), and its state_dict has the same layout:
checkpoints written with either load into the other.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from ..errors import LenetError


class SGD:
    """Stochastic gradient descent with momentum, dampening, Nesterov and weight decay, as torch.optim.SGD."""

    def __init__(
        self,
        params: Iterable[nn.Parameter],
        lr: float,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
    ):
        self.params = list(params)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise LenetError("Nesterov momentum needs a momentum and zero dampening")
        self.param_groups = [{
            "params": self.params, "lr": lr, "momentum": momentum, "dampening": dampening,
            "weight_decay": weight_decay, "nesterov": nesterov, "maximize": False, "foreach": None,
            "differentiable": False, "fused": None,
        }]  # fmt: skip
        self.state: dict[nn.Parameter, dict] = {}

    @torch.no_grad()
    def step(self) -> None:
        group = self.param_groups[0]
        lr, momentum, dampening = group["lr"], group["momentum"], group["dampening"]
        weight_decay, nesterov = group["weight_decay"], group["nesterov"]
        for p in self.params:
            if p.grad is None:
                continue
            grad = p.grad
            if weight_decay != 0:
                grad = grad.add(p, alpha=weight_decay)
            if momentum != 0:
                buffer = self.state.get(p, {}).get("momentum_buffer")
                if buffer is None:
                    buffer = self.state.setdefault(p, {})["momentum_buffer"] = grad.detach().clone()
                else:
                    buffer.mul_(momentum).add_(grad, alpha=1 - dampening)
                grad = grad.add(buffer, alpha=momentum) if nesterov else buffer
            p.add_(grad, alpha=-lr)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            if p.grad is None:
                continue
            if set_to_none:
                p.grad = None
            else:
                p.grad.zero_()

    def state_dict(self) -> dict:
        """torch.optim's layout: per-parameter state by index, and the hyperparameters."""
        index = {p: i for i, p in enumerate(self.params)}
        state = {index[p]: {"momentum_buffer": s["momentum_buffer"]} for p, s in self.state.items()}
        group = {k: v for k, v in self.param_groups[0].items() if k != "params"}
        return {"state": state, "param_groups": [{**group, "params": list(range(len(self.params)))}]}

    def load_state_dict(self, state_dict: dict) -> None:
        groups = state_dict["param_groups"]
        if len(groups) != 1 or len(groups[0]["params"]) != len(self.params):
            raise ValueError("loaded state dict has a different number of parameters or groups")
        for key in ("lr", "momentum", "dampening", "weight_decay", "nesterov"):
            self.param_groups[0][key] = groups[0][key]
        self.state = {}
        for i, p in enumerate(self.params):
            saved = state_dict["state"].get(i, {}).get("momentum_buffer")
            if saved is not None:
                self.state[p] = {"momentum_buffer": saved.to(device=p.device, dtype=p.dtype).clone()}
