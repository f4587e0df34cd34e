"""The training loop and evaluation: `fit` trains a model on data and returns its history.

`fit` prints nothing but an optional progress bar; a run (train/run.py) adds the run folder, the seed's
printout, checkpoints and signals.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .. import fast as fastpath
from ..config import Config, resolve, validate
from ..data import Dataset, Split, as_split, batch_size_of
from ..errors import LenetError
from ..fast import Plan
from ..models.lenet1998 import distort
from .dist import all_reduce, any_rank, unwrap, wrap
from .progress import progress_bar
from .setup import loss_denominator, lr_at, make_optimizer, per_sample_loss
from .state import History, TrainState

# ----------------------------------------------------------------------------------------------------------
# Evaluation


def _eval_split(data) -> Split:
    return data.test if isinstance(data, Dataset) else as_split(data, "evaluation data")


@torch.inference_mode()
def evaluate(model: nn.Module, data, batch_size: int = 500, num_classes: int | None = None) -> dict:
    """Loss, accuracy and confusion matrix (rows: true class, columns: predicted) of `model` on some data.

    `data`: a Dataset (its test split), a Split, a DataIter, a DataLoader or (images, labels) tensors. The
    number of classes is the model's output width unless given. The model's train/eval mode is restored.
    """
    split = _eval_split(data)
    was_training = model.training
    model.eval()
    forward = fastpath.forward_fn(model) or model  # the model's logits, computed faster on a CPU
    loss_sum = torch.zeros((), device=split.labels.device)
    confusion = None
    for x, y in split.batches(batch_size):
        logits = forward(x)
        classes = num_classes or logits.shape[1]
        if confusion is None:
            confusion = torch.zeros(classes * classes, dtype=torch.int64, device=split.labels.device)
        loss_sum += F.cross_entropy(logits, y, reduction="sum")
        confusion += torch.bincount(y * classes + logits.argmax(1), minlength=classes * classes)
    model.train(was_training)
    if confusion is None:
        raise LenetError("evaluation data is empty")
    classes = math.isqrt(confusion.numel())
    confusion = confusion.view(classes, classes).cpu()
    n = int(confusion.sum())
    return {
        "loss": loss_sum.item() / max(n, 1),
        "acc": confusion.diag().sum().item() / max(n, 1),
        "n": n,
        "confusion": confusion.tolist(),
    }


def evaluate_ranks(model: nn.Module, split: Split, batch_size: int, rank: int, world: int) -> dict:
    """evaluate() with the split shared out: each rank evaluates its part, the sums are all-reduced."""
    if world == 1:
        return evaluate(model, split, batch_size)
    sizes = [len(split) // world + (r < len(split) % world) for r in range(world)]  # as tensor_split cuts
    start = sum(sizes[:rank])
    part = split.subset(slice(start, start + sizes[rank]))
    m = evaluate(unwrap(model), part, batch_size)  # the plain module: DDP's forward syncs
    sums = torch.tensor([m["loss"] * m["n"], m["acc"] * m["n"], m["n"]], dtype=torch.float64)
    loss_sum, correct, n = all_reduce(sums.to(split.labels.device)).tolist()
    return {"loss": loss_sum / max(n, 1), "acc": round(correct) / max(n, 1), "n": int(n)}


@torch.inference_mode()
def predict_split(model: nn.Module, split: Split, batch_size: int = 500) -> torch.Tensor:
    """Class probabilities (N, C) of every example in `split`."""
    was_training = model.training
    model.eval()
    probs = torch.cat([model(x).softmax(1) for x, _ in split.batches(batch_size)])
    model.train(was_training)
    return probs


# ----------------------------------------------------------------------------------------------------------
# One optimiser step

FAST_OPTIMIZERS = ("sgd", "adam", "adamw")  # optimisers that see only .grad, so lenet.fast may fill it


def fast_path_plan(model: nn.Module, cfg: Config, world_size: int = 1, enabled: bool = True) -> Plan:
    """Which fast path a training step of `model` under `cfg` takes, and why (see lenet.fast.plan)."""
    device = next(model.parameters()).device
    if not enabled:
        return Plan.off("--no-fastpath")
    if device.type != "cpu":
        return Plan.off(f"it is for the CPU; on {device.type} PyTorch's own kernels run")
    if world_size > 1:
        return Plan.off("data-parallel processes (DDP) synchronise through PyTorch's backward")
    if cfg.optimizer not in FAST_OPTIMIZERS:
        return Plan.off(f"optimizer {cfg.optimizer} needs more than the gradients")
    if cfg.loss != "cross-entropy":
        return Plan.off(f"the {cfg.loss} loss is not in the kernels")
    return fastpath.plan(model)


class Step:
    """One optimiser step on a batch: step(x, y, denominator) -> (summed per-sample loss, number correct).

    Both results stay on the device (detached), so the caller can accumulate them without a host sync.
    On the fast path (`plan`), a LeNet on the CPU runs compiled code (the same math up to float rounding):
    the whole step's gradients when its classifier is one the kernels know, else its front end only.
    """

    def __init__(self, model: nn.Module, optimizer, cfg: Config, world_size: int = 1, fast: bool = True):
        self.model, self.optimizer, self.cfg, self.world_size = model, optimizer, cfg, world_size
        self.plan = fast_path_plan(unwrap(model), cfg, world_size, fast)
        self.forward, self.fused = model, None
        if self.plan.engine is not None:
            self.forward = fastpath.forward_fn(model) or model
            self.fused = fastpath.training_step(model, cfg.label_smoothing)

    def __call__(self, x: torch.Tensor, y: torch.Tensor, denominator: float) -> tuple[torch.Tensor, torch.Tensor]:
        scale = self.world_size / denominator  # DDP averages gradients over ranks; world_size undoes that
        if self.fused is not None:
            done = self.fused(x, y, scale)  # every .grad set, as zero_grad + backward would
            if done is not None:
                self.optimizer.step()
                return done
        logits = self.forward(x)
        losses = per_sample_loss(self.cfg, logits, y)
        self.optimizer.zero_grad(set_to_none=True)
        (losses.sum() * scale).backward()
        self.optimizer.step()
        return losses.detach().sum(), (logits.detach().argmax(1) == y).sum()


def make_step(model: nn.Module, optimizer, cfg: Config, world_size: int = 1, fast: bool = True) -> Step:
    return Step(model, optimizer, cfg, world_size, fast)


StepHook = Callable[[int, int, int, int], None]  # (global step, epoch, batch index, batches per epoch)
EpochHook = Callable[[dict], None]  # called with each epoch's record (a partial one when stopped part-way)
ProgressHook = Callable[[float, float, float], None]  # (epoch + fraction done, train loss so far, train acc)
CheckpointHook = Callable[[nn.Module, torch.optim.Optimizer, TrainState, Config], None]
PROGRESS_POINTS = 5  # on_progress calls per epoch: d2l's Animator plots the training curves 5 times an epoch


def keyed_generator(device: torch.device, *key) -> torch.Generator:
    """A generator seeded by `key` alone (seed, purpose, epoch or step).

    What it draws depends on nothing drawn before, so a run resumed mid-epoch draws what an unbroken one does.
    """
    generator = torch.Generator(device=device)
    generator.manual_seed(int.from_bytes(hashlib.sha256(repr(key).encode()).digest()[:8], "little") >> 1)
    return generator


def as_dataset(data, test=None) -> Dataset:
    """A Dataset from fit's arguments: a Dataset as it is, else training data (and test data) of any kind."""
    if isinstance(data, Dataset):
        if test is not None:
            raise LenetError("fit: a Dataset already holds its test split; pass test= only with training data")
        return data
    train = as_split(data, "training data")
    test_split = as_split(test, "test data") if test is not None else None
    classes = tuple(str(c) for c in range(int(train.labels.max()) + 1 if len(train) else 0))
    return Dataset("custom", classes, train, test_split, size=train.stored.shape[-1])


# ----------------------------------------------------------------------------------------------------------
# The loop


def fit(
    model: nn.Module,
    data,
    cfg: Config | str | None = None,
    *,
    test=None,
    max_steps: int | None = None,
    state: TrainState | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    on_step: StepHook | None = None,
    on_epoch: EpochHook | None = None,
    on_progress: ProgressHook | None = None,
    on_checkpoint: CheckpointHook | None = None,
    stop: Callable[[], bool] | None = None,
    progress: bool | None = None,
    fast: bool = True,
    rank: int = 0,
    world_size: int = 1,
) -> History:
    """Train `model` as `cfg` says on `data`; evaluate on the test data (and validation data) every epoch.

    `data` is a lenet Dataset, or the training data as a DataIter, a DataLoader or (images, labels) tensors,
    with `test` the test data in the same kinds (or None). `cfg` is a Config or a recipe name; by default
    the d2l recipe at the data's batch size. The model is trained as it is (not re-initialised).
    Metrics are accumulated on the device and read once per epoch (and PROGRESS_POINTS times with
    `on_progress`), so the hot loop never waits on the host. `progress` shows a progress bar (None: when
    the output is a terminal or a notebook). `fast=False` keeps the fast path off.
    With world_size > 1 (under torchrun) the model is wrapped in DDP, every rank draws the same permutation
    and trains on its own slice of each global batch, and the metrics are summed over the ranks.
    `state` resumes a run: its epoch, step, history and random number generators are restored.
    `stop()` is asked before every step; when it says so (on any rank), the epoch ends there as with
    max_steps, and `state.stopped` is set.
    """
    if cfg is None:
        cfg = resolve("d2l", batch_size=batch_size_of(data))
    cfg = resolve(cfg) if isinstance(cfg, str) else validate(cfg)
    data = as_dataset(data, test)
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
    if world_size > 1:
        model = wrap(model)
    step = make_step(model, optimizer, cfg, world_size, fast)
    marks = {math.ceil(steps_per_epoch * k / PROGRESS_POINTS) for k in range(1, PROGRESS_POINTS + 1)}

    for epoch in range(state.epoch, cfg.epochs):
        model.train()
        done = state.step - epoch * steps_per_epoch  # batches of this epoch trained before a resume
        if not 0 <= done < steps_per_epoch:
            raise LenetError(f"cannot resume at step {state.step} in epoch {epoch + 1}: checkpoint mismatch")
        # the interrupted part's sums were all-reduced when saved: rank 0 carries them
        partial = (state.partial or {}) if done and rank == 0 else {}
        loss_sum = torch.tensor(partial.get("loss_sum", 0.0), dtype=torch.float32, device=device)
        correct = torch.tensor(partial.get("correct", 0), dtype=torch.int64, device=device)
        seen, seconds_before = partial.get("seen", 0), partial.get("seconds", 0.0)
        started, hook_seconds = time.perf_counter(), 0.0
        epoch_rng_state = data_rng.get_state()  # this epoch's order can be redrawn from it
        if done == 0 and hasattr(optimizer, "start_epoch"):  # SDLM: estimate the curvature before each pass
            optimizer.start_epoch(data.train, keyed_generator(device, cfg.seed, "epoch", epoch))
        bar = progress_bar(steps_per_epoch, f"epoch {epoch + 1}/{cfg.epochs}", progress, initial=done)
        batches = data.train.batches(cfg.batch_size, shuffle=True, generator=data_rng)
        lr = lr_at(cfg, state.step, total_steps, epoch)
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
            if bar is not None:
                bar.update()
            if on_progress is not None or on_step is not None:
                hooked = time.perf_counter()  # the callers' time (drawing, evaluating) is not training time
                if on_progress is not None and i + 1 in marks:
                    on_progress(epoch + (i + 1) / steps_per_epoch, loss_sum.item() / seen, correct.item() / seen)
                if on_step is not None:
                    on_step(state.step, epoch, i, steps_per_epoch)
                hook_seconds += time.perf_counter() - hooked
        if bar is not None:
            bar.close()
        batches_done = state.step - epoch * steps_per_epoch
        if batches_done == done:  # stopped before this call trained anything
            break
        # The epoch's one host sync: loss, correct and examples summed over the ranks.
        totals = torch.stack([loss_sum.double(), correct.double(), loss_sum.new_tensor(seen).double()])
        loss_total, correct_total, seen_total = all_reduce(totals).tolist()
        train_seconds = seconds_before + time.perf_counter() - started - hook_seconds
        record = {"epoch": epoch + 1, "train_loss": loss_total / seen_total, "train_acc": correct_total / seen_total}
        complete = batches_done == steps_per_epoch
        if not complete:
            record.update(partial=True, batches=batches_done, fraction=batches_done / steps_per_epoch)
        if not state.stopped:  # a signal wants out fast; a max_steps stop still reports where it got to
            if data.val is not None:
                val = evaluate_ranks(model, data.val, cfg.eval_batch_size, rank, world_size)
                record.update(val_loss=val["loss"], val_acc=val["acc"])
            if data.test is not None:
                test_metrics = evaluate_ranks(model, data.test, cfg.eval_batch_size, rank, world_size)
                record.update(test_loss=test_metrics["loss"], test_acc=test_metrics["acc"])
        record.update(lr=lr, examples=int(seen_total), steps=state.step, train_seconds=train_seconds)
        record["seconds"] = seconds_before + time.perf_counter() - started
        history.add(record)
        state.epoch = epoch + (1 if complete else 0)
        state.data_rng_state = data_rng.get_state() if complete else epoch_rng_state
        state.partial = None if complete else {
            "loss_sum": loss_total, "correct": int(correct_total), "seen": int(seen_total), "seconds": train_seconds,
        }  # fmt: skip
        state.torch_rng_state = torch.get_rng_state()
        state.cuda_rng_state = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
        if on_epoch is not None:
            on_epoch(record)
        if on_checkpoint is not None:
            on_checkpoint(model, optimizer, state, cfg)
        if not complete:
            break
    return history
