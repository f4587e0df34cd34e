"""The training loop and evaluation. `fit` returns a history and never prints or plots; callers do that."""

from __future__ import annotations

import hashlib
import itertools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .. import fast as fastpath
from ..config import Config, input_size, resolve, validate
from ..data import Dataset, Split, load_dataset
from ..errors import LenetError
from ..models import create_model, init_weights
from ..models.lenet1998 import SDLM, distort, map_loss
from .dist import all_reduce, any_rank, unwrap, wrap

# ----------------------------------------------------------------------------------------------------------
# Set-up: device, data, model, optimiser, schedule, loss


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


def make_optimizer(cfg: Config, model: nn.Module) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=cfg.weight_decay
        )
    if cfg.optimizer == "adam":  # eps 1e-8, as TF1's AdamOptimizer
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
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
# Evaluation


@torch.inference_mode()
def evaluate(model: nn.Module, data: Split | Dataset, batch_size: int = 2000, num_classes: int = 10) -> dict:
    """Loss, accuracy and confusion matrix (rows: true class, columns: predicted) of `model` on a split.

    Given a Dataset, evaluates its test split. The model's train/eval mode is restored afterwards.
    """
    split = data.test if isinstance(data, Dataset) else data
    was_training = model.training
    model.eval()
    forward = fastpath.forward_fn(model) or model  # the model's logits, computed faster on a CPU
    loss_sum = torch.zeros((), device=split.labels.device)
    confusion = torch.zeros(num_classes * num_classes, dtype=torch.int64, device=split.labels.device)
    for x, y in split.batches(batch_size):
        logits = forward(x)
        loss_sum += F.cross_entropy(logits, y, reduction="sum")
        confusion += torch.bincount(y * num_classes + logits.argmax(1), minlength=num_classes * num_classes)
    model.train(was_training)
    confusion = confusion.view(num_classes, num_classes).cpu()
    n = int(confusion.sum())
    return {
        "loss": loss_sum.item() / max(n, 1),
        "acc": confusion.diag().sum().item() / max(n, 1),
        "n": n,
        "confusion": confusion.tolist(),
    }


def evaluate_ranks(model: nn.Module, split: Split, batch_size: int, num_classes: int, rank: int, world: int):
    """evaluate() with the split shared out: each rank evaluates its part, the sums are all-reduced."""
    if world == 1:
        return evaluate(model, split, batch_size, num_classes)
    part = Split(split.images.tensor_split(world)[rank], split.labels.tensor_split(world)[rank])
    m = evaluate(unwrap(model), part, batch_size, num_classes)  # the plain module: DDP's forward syncs
    sums = torch.tensor([m["loss"] * m["n"], m["acc"] * m["n"], m["n"]], dtype=torch.float64)
    loss_sum, correct, n = all_reduce(sums.to(split.labels.device)).tolist()
    return {"loss": loss_sum / max(n, 1), "acc": round(correct) / max(n, 1), "n": int(n)}


@torch.inference_mode()
def predict_split(model: nn.Module, split: Split, batch_size: int = 2000) -> torch.Tensor:
    """Class probabilities (N, C) of every example in `split`."""
    was_training = model.training
    model.eval()
    probs = torch.cat([model(x).softmax(1) for x, _ in split.batches(batch_size)])
    model.train(was_training)
    return probs


# ----------------------------------------------------------------------------------------------------------
# The loop

TrainStep = Callable[[torch.Tensor, torch.Tensor, float], tuple[torch.Tensor, torch.Tensor]]


FAST_OPTIMIZERS = ("sgd", "adam", "adamw")  # optimisers that see only .grad, so lenet.fastpath may fill it


def make_step(
    model: nn.Module, optimizer: torch.optim.Optimizer, cfg: Config, world_size: int = 1, fast: bool = True
) -> TrainStep:
    """One optimiser step on a batch: step(x, y, denominator) -> (summed per-sample loss, number correct).

    Both results stay on the device (detached), so the caller can accumulate them without a host sync.
    With `fast`, a LeNet on the CPU goes through lenet.fast (the same math up to float rounding): the
    whole step's gradients in compiled code when its classifier is the classic three Linear layers, else its
    convolutions only. Other models, optimisers and losses, and data-parallel runs take the plain eager step.
    """
    forward, fused = model, None
    if fast and world_size == 1 and cfg.optimizer in FAST_OPTIMIZERS and cfg.loss == "cross-entropy":
        forward = fastpath.forward_fn(model) or model
        fused = fastpath.training_step(model, cfg.label_smoothing)

    def step(x: torch.Tensor, y: torch.Tensor, denominator: float):
        if fused is not None:
            done = fused(x, y, world_size / denominator)  # every .grad set, as zero_grad + backward would
            if done is not None:
                optimizer.step()
                return done
        logits = forward(x)
        losses = per_sample_loss(cfg, logits, y)
        # Data-parallel training averages gradients over ranks; scaling by world_size undoes that.
        loss = losses.sum() * (world_size / denominator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return losses.detach().sum(), (logits.detach().argmax(1) == y).sum()

    return step


@dataclass
class History:
    """One record per epoch (dicts of plain numbers), plus what the whole run measured."""

    epochs: list[dict] = field(default_factory=list)
    train_examples: int = 0
    train_seconds: float = 0.0

    @property
    def last(self) -> dict:
        return self.epochs[-1] if self.epochs else {}

    @property
    def examples_per_sec(self) -> float:
        return self.train_examples / self.train_seconds if self.train_seconds else 0.0

    def state_dict(self) -> dict:
        return {
            "epochs": self.epochs,
            "train_examples": self.train_examples,
            "train_seconds": self.train_seconds,
        }

    @classmethod
    def from_state_dict(cls, d: dict) -> History:
        return cls(list(d["epochs"]), int(d["train_examples"]), float(d["train_seconds"]))


@dataclass
class TrainState:
    """Where a run is: the epoch under way, optimiser steps taken, random generators, the history so far.

    `data_rng_state` is the data-order generator as the epoch under way began, so a run stopped part-way
    through an epoch redraws that epoch's order and skips the batches it already trained on.
    """

    epoch: int = 0
    step: int = 0
    history: History = field(default_factory=History)
    data_rng_state: torch.Tensor | None = None
    torch_rng_state: torch.Tensor | None = None
    cuda_rng_state: torch.Tensor | None = None
    stopped: bool = False  # fit returned early because `stop()` asked it to


StepHook = Callable[[int, int, int, int], None]  # (global step, epoch, batch index, batches per epoch)
EpochHook = Callable[[dict], None]  # called with each finished epoch's record
CheckpointHook = Callable[[nn.Module, torch.optim.Optimizer, TrainState, Config], None]


def keyed_generator(device: torch.device, *key) -> torch.Generator:
    """A generator seeded by `key` alone (seed, purpose, epoch or step).

    What it draws depends on nothing drawn before, so a run resumed mid-epoch draws what an unbroken one does.
    """
    generator = torch.Generator(device=device)
    generator.manual_seed(int.from_bytes(hashlib.sha256(repr(key).encode()).digest()[:8], "little") >> 1)
    return generator


def fit(
    model: nn.Module,
    data: Dataset,
    cfg: Config,
    *,
    max_steps: int | None = None,
    state: TrainState | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    on_step: StepHook | None = None,
    on_epoch: EpochHook | None = None,
    on_checkpoint: CheckpointHook | None = None,
    stop: Callable[[], bool] | None = None,
    rank: int = 0,
    world_size: int = 1,
) -> History:
    """Train `model` on `data.train` as `cfg` says; evaluate on `data.test` (and `data.val`) every epoch.

    Metrics are accumulated on the device and read once per epoch, so the hot loop never waits on the host.
    With world_size > 1 (under torchrun) the model is wrapped in DDP, every rank draws the same permutation
    and trains on its own slice of each global batch, and the metrics are summed over the ranks.
    `state` resumes a run: its epoch, step, history and random number generators are restored.
    `stop()` is asked before every step; when it says so (on any rank), the epoch ends there as with
    max_steps, and `state.stopped` is set.
    """
    device = data.train.labels.device
    optimizer = optimizer or make_optimizer(cfg, model)
    state = state or TrainState()
    data_rng = torch.Generator(device=device)
    data_rng.manual_seed(cfg.seed)
    if state.data_rng_state is not None:
        data_rng.set_state(state.data_rng_state)
    if state.torch_rng_state is not None:
        torch.set_rng_state(state.torch_rng_state)
    if state.cuda_rng_state is not None and device.type == "cuda":
        torch.cuda.set_rng_state(state.cuda_rng_state, device)
    steps_per_epoch = math.ceil(len(data.train) / cfg.batch_size)
    total_steps = steps_per_epoch * cfg.epochs
    history = state.history
    num_classes = len(data.classes)
    if world_size > 1:
        model = wrap(model)
    step = make_step(model, optimizer, cfg, world_size)

    for epoch in range(state.epoch, cfg.epochs):
        model.train()
        started = time.perf_counter()
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), dtype=torch.int64, device=device)
        seen = 0
        epoch_rng_state = data_rng.get_state()  # this epoch's order can be redrawn from it
        done = state.step - epoch * steps_per_epoch  # batches of this epoch trained before a resume
        if not 0 <= done < steps_per_epoch:
            raise LenetError(f"cannot resume at step {state.step} in epoch {epoch + 1}: checkpoint mismatch")
        if done == 0 and hasattr(optimizer, "start_epoch"):  # SDLM: estimate the curvature before each pass
            optimizer.start_epoch(data.train.images, keyed_generator(device, cfg.seed, "epoch", epoch))
        batches = data.train.batches(cfg.batch_size, shuffle=True, generator=data_rng)
        for i, (x, y) in enumerate(itertools.islice(batches, done, None), start=done):
            if max_steps is not None and state.step >= max_steps:
                break
            if stop is not None and (any_rank(stop(), device) if world_size > 1 else stop()):
                state.stopped = True
                break
            lr = lr_at(cfg, state.step, total_steps, epoch)
            for group in optimizer.param_groups:
                group["lr"] = lr
            denominator = loss_denominator(cfg, len(y))
            if cfg.distort:  # the global batch, before it is split over the ranks
                x = distort(x, keyed_generator(device, cfg.seed, "distort", state.step))
            if world_size > 1:
                x, y = x.tensor_split(world_size)[rank], y.tensor_split(world_size)[rank]
            batch_loss, batch_correct = step(x, y, denominator)
            loss_sum += batch_loss
            correct += batch_correct
            seen += len(y)
            state.step += 1
            if on_step is not None:
                on_step(state.step, epoch, i, steps_per_epoch)
        if seen == 0:
            break
        # The epoch's one host sync: loss, correct and examples summed over the ranks.
        totals = torch.stack([loss_sum.double(), correct.double(), loss_sum.new_tensor(seen).double()])
        loss_total, correct_total, seen = all_reduce(totals).tolist()
        seen = int(seen)
        train_loss, train_acc = loss_total / seen, correct_total / seen
        train_seconds = time.perf_counter() - started
        record = {"epoch": epoch + 1, "train_loss": train_loss, "train_acc": train_acc}
        if data.val is not None:
            val = evaluate_ranks(model, data.val, cfg.eval_batch_size, num_classes, rank, world_size)
            record.update(val_loss=val["loss"], val_acc=val["acc"])
        test = evaluate_ranks(model, data.test, cfg.eval_batch_size, num_classes, rank, world_size)
        record.update(test_loss=test["loss"], test_acc=test["acc"], lr=lr, examples=seen, steps=state.step)
        record.update(train_seconds=train_seconds, seconds=time.perf_counter() - started)
        history.epochs.append(record)
        history.train_examples += seen
        history.train_seconds += train_seconds
        partial = state.step - epoch * steps_per_epoch < steps_per_epoch
        state.epoch = epoch + (0 if partial else 1)
        state.data_rng_state = epoch_rng_state if partial else data_rng.get_state()
        state.torch_rng_state = torch.get_rng_state()
        state.cuda_rng_state = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
        if on_epoch is not None:
            on_epoch(record)
        if on_checkpoint is not None:
            on_checkpoint(model, optimizer, state, cfg)
        if partial:
            break
    return history


def train(
    config: Config | str = "d2l",
    *,
    root=None,
    device: str = "auto",
    verify: bool = True,
    max_steps: int | None = None,
    data: Dataset | None = None,
    **hooks,
) -> tuple[nn.Module, History]:
    """Train a recipe (by name) or a config end to end; returns (model, history)."""
    cfg = resolve(config) if isinstance(config, str) else validate(config)
    dev = select_device(device)
    data = data if data is not None else load_data(cfg, root, dev, verify)
    model = build_model(cfg).to(dev)
    history = fit(model, data, cfg, max_steps=max_steps, **hooks)
    return model, history
