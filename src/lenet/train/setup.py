"""From a config to the objects a run trains: the device, the data, the model, its optimiser, schedule and loss."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..config import Config, input_size, resolve, validate
from ..data import Dataset, load_dataset
from ..data.catalogue import resolve_root
from ..errors import LenetError
from ..models import create_model, init_weights
from ..models.custom import describe
from ..models.lenet1998 import SDLM, map_loss
from .optim import SGD


def select_device(name: str = "auto") -> torch.device:
    """'auto' picks CUDA, then MPS, then the CPU; a named device must be available."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name not in ("cpu", "cuda", "mps") and not name.startswith("cuda:"):
        raise LenetError(f"unknown device {name!r}; expected auto, cpu, cuda, cuda:N or mps")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise LenetError(f"device {name!r} requested but CUDA is not available here; use --device cpu")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise LenetError("device 'mps' requested but MPS is not available here; use --device cpu")
    return torch.device(name)


def load_data(cfg: Config, root=None, device: torch.device | str = "cpu", verify: bool = True) -> Dataset:
    """The dataset as `cfg` wants it, on `device`."""
    return load_dataset(
        cfg.dataset,
        root,
        scaling=cfg.scaling,
        size=input_size(cfg),
        resize=cfg.resize,
        val_fraction=cfg.val_fraction,
        device=device,
        verify=verify,
    )


def build_model(cfg: Config, initialise: bool = True) -> nn.Module:
    """The model `cfg` names; with initialise, seeded and initialised by the recipe's scheme."""
    if initialise:
        torch.manual_seed(cfg.seed)
    model = create_model(cfg.model, **cfg.model_kwargs)
    return init_weights(model, cfg.init) if initialise else model


def make_optimizer(cfg: Config, model: nn.Module):
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "sgd":  # torch.optim.SGD's arithmetic, without its 1.5 s import of torch._dynamo
        return SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=cfg.weight_decay)
    # Adam's update in one fused kernel: for the TF1 CNN's 3.3 M parameters at batch 20 the unfused update
    # took 45 % of a training step (docs/fast-path.md)
    fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
    if cfg.optimizer == "adam":  # eps 1e-8, as TF1's AdamOptimizer
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused)
    if cfg.optimizer == "sdlm":  # LeCun 1998's stochastic diagonal Levenberg-Marquardt; needs an RBF output
        return SDLM(params, model, lr=cfg.lr)
    raise LenetError(f"optimizer {cfg.optimizer!r} is not available for model {cfg.model!r}")


def lr_at(cfg: Config, step: int, total_steps: int, epoch: int) -> float:
    """The learning rate for optimiser step `step` (0-based) of `total_steps`, a pure function of its inputs."""
    if cfg.schedule == "constant":
        return cfg.lr
    if cfg.schedule == "piecewise":
        return cfg.lr * cfg.lr_factors[min(epoch, len(cfg.lr_factors) - 1)]
    t = step / max(total_steps, 1)
    if cfg.schedule == "cosine":
        return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * t))
    # onecycle: a triangle from lr/10 up to lr at `warmup`, then down to 0 at the end
    if t < cfg.warmup:
        return cfg.lr * (0.1 + 0.9 * t / cfg.warmup)
    return cfg.lr * max(0.0, (1.0 - t) / (1.0 - cfg.warmup))


def per_sample_loss(cfg: Config, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The loss of each sample in the batch, (B,)."""
    if cfg.loss == "map":
        return map_loss(logits, y)
    return F.cross_entropy(logits, y, reduction="none", label_smoothing=cfg.label_smoothing)


def loss_denominator(cfg: Config, global_batch: int) -> float:
    """What the summed batch loss is divided by before backward.

    mean: the batch's size; sum: 1 (the community seed's reduction='sum'); nominal: the configured batch size
    even for the short last batch, as Gluon's `loss.sum()` + `trainer.step(batch_size)` does in seed 000.
    """
    return {"mean": global_batch, "sum": 1, "nominal": cfg.batch_size}[cfg.reduction]


# ----------------------------------------------------------------------------------------------------------
# From the caller's arguments to a config, a model of their own and a data root


def user_model_config(model: nn.Module, cfg: Config) -> Config:
    """The config of a run on a model of the user's own: how to rebuild it, and the input side it reads."""
    name, kwargs = describe(model)
    size = cfg.input_size or input_side(model)
    return dataclasses.replace(cfg, model=name, model_kwargs=kwargs, input_size=size)


def input_side(model: nn.Module) -> int:
    """28 or 32: the side a model of the user's own takes (tried on one blank image, 28 first)."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        for side in (28, 32):
            try:
                with torch.no_grad():
                    model(torch.zeros(1, 1, side, side, device=device))
                return side
            except RuntimeError:
                continue
    finally:
        model.train(was_training)
    raise LenetError("your model takes neither a 28x28 nor a 32x32 one-channel image; check its first layers")


def config_for(config, model, overrides) -> Config:
    if isinstance(model, str):  # a registered model's name: one more override
        overrides, model = {**overrides, "model": model}, None
    if isinstance(config, str):
        cfg = resolve(config, **overrides)
    elif isinstance(config, Config):
        unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(Config)})
        if unknown:
            raise LenetError(f"unknown config field(s): {', '.join(unknown)}")
        cfg = validate(dataclasses.replace(config, **{k: v for k, v in overrides.items() if v is not None}))
    else:
        raise LenetError(f"config: expected a recipe name or a lenet.Config, not {type(config).__name__}")
    if model is not None:
        if not isinstance(model, nn.Module):
            raise LenetError(f"model: expected a torch.nn.Module, not {type(model).__name__}")
        cfg = user_model_config(model, cfg)
    return cfg


def data_root_for(root, remembered: str | None = None) -> Path:
    """The data root: the one given, else `remembered` (the one a run was trained on, if it is still there),
    else $LENET_DATA or ~/.cache/lenet."""
    if root is None and remembered and Path(remembered).is_dir():
        return Path(remembered)
    return resolve_root(root).resolve()
