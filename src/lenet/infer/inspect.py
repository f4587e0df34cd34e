"""Layer-by-layer summary of a model: the seeds' "output shape" loop and Keras' summary() in one table."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .. import fast
from ..errors import LenetError
from ..models import count_parameters, leaf_modules


@dataclass
class LayerRow:
    name: str
    type: str
    output_shape: list[int]
    params: int


@dataclass
class Summary:
    model: str
    input_shape: list[int]
    layers: list[LayerRow]
    params: int
    trainable_params: int
    flops_per_sample: int  # forward FLOPs of one sample, as torch.utils.flop_counter counts them (2 per MAC)
    fast_path: str = ""  # lenet.fast.plan's line for training the model on this machine (when asked for)

    def to_dict(self) -> dict:
        return asdict(self)


def summarize(model: nn.Module, input_size: int | None = None, name: str = "", fast_path: bool = False) -> Summary:
    """Run one sample through `model` and record every leaf layer's output shape and parameter count; with
    `fast_path`, also what lenet.fast does when training it here (building its kernels if needed)."""
    size = input_size or getattr(model, "input_size", 28)
    rows: list[LayerRow] = []
    hooks = []
    for layer_name, module in leaf_modules(model):

        def record(mod, inputs, output, layer_name=layer_name):
            params = sum(p.numel() for p in mod.parameters(recurse=False))
            shape = list(output.shape) if isinstance(output, torch.Tensor) else []
            rows.append(LayerRow(layer_name, type(mod).__name__, shape, params))

        hooks.append(module.register_forward_hook(record))
    was_training = model.training
    model.eval()
    x = torch.rand(1, 1, size, size, device=next(model.parameters()).device)
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise LenetError(f"{name or 'model'} does not take a {size}x{size} input ({first})") from None
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return Summary(
        model=name,
        input_shape=list(x.shape),
        layers=rows,
        params=count_parameters(model, trainable_only=False),
        trainable_params=count_parameters(model),
        flops_per_sample=counter.get_total_flops(),
        fast_path=str(fast.plan(model)) if fast_path else "",
    )


def format_summary(summary: Summary) -> str:
    """The summary as an aligned text table."""
    width = max([len(r.name) + len(r.type) + 3 for r in summary.layers] + [20])
    lines = [
        f"{summary.model}  input {tuple(summary.input_shape)}",
        f"{'layer (type)':<{width}}  {'output shape':<20}  params",
    ]
    lines.append("-" * (width + 32))
    for r in summary.layers:
        label = f"{r.name} ({r.type})"
        lines.append(f"{label:<{width}}  {str(r.output_shape):<20}  {r.params:>6,}")
    lines.append("-" * (width + 32))
    lines.append(f"total params: {summary.params:,}")
    lines.append(f"trainable params: {summary.trainable_params:,}")
    lines.append(f"forward FLOPs per sample: {summary.flops_per_sample:,}")
    if summary.fast_path:
        lines.append(summary.fast_path)
    return "\n".join(lines)
