"""What a training run prints, in the format of the seed notebook its recipe reproduces."""

from __future__ import annotations

import math
import sys
from typing import TextIO

from torch import nn

from ..config import Config

CHANCE_EPOCHS = 2  # after this many epochs at chance accuracy, the run suggests a lower learning rate


def chance_hint(model: nn.Module, record: dict, lr: float, num_classes: int = 10) -> str | None:
    """A one-line hint when training ended diverged or at chance accuracy; None when it learned.

    `record` is the last epoch's (train_loss, train_acc, and steps: the optimiser steps taken in all).
    """
    loss, acc, steps = record.get("train_loss", 0.0), record.get("train_acc", 1.0), record.get("steps")
    relu = any(isinstance(m, nn.ReLU | nn.LeakyReLU | nn.ELU | nn.GELU | nn.SiLU) for m in model.modules())
    saturating = any(isinstance(m, nn.Sigmoid | nn.Tanh) for m in model.modules())
    if not math.isfinite(loss):
        return f"hint: the loss diverged ({loss}); try a lower learning rate than {lr}, e.g. {lr / 10:g}"
    if acc > 1.5 / num_classes:
        return None
    if relu and lr > 0.2:
        return (f"hint: train acc {acc:.3f} is chance level: ReLU nets at lr {lr} often die or diverge; "
                "try a lower learning rate, e.g. 0.1")  # fmt: skip
    if saturating and steps is not None and steps < 2000:
        # measured on MNIST (README): the d2l net at lr 0.9 leaves chance in its 4th epoch, ~800 steps in
        return (f"hint: train acc {acc:.3f} is chance level after {steps} steps: sigmoid LeNets at lr {lr} sit "
                "near chance for several hundred steps; train longer (d2l: 10 epochs of 235 steps)")  # fmt: skip
    return f"hint: train acc {acc:.3f} is chance level; try another learning rate than {lr}, or more epochs"


class Reporter:
    """Prints a run's start, one line per epoch in the recipe's format, and its closing lines."""

    def __init__(self, cfg: Config, device: str, out: TextIO | None = None, model: nn.Module | None = None):
        self.cfg, self.device, self.out, self.model = cfg, device, out, model
        self.hinted = False

    def print(self, line: str) -> None:
        print(line, file=self.out or sys.stdout, flush=True)

    def start(self, samples: int, params: int, plan) -> None:
        cfg = self.cfg
        self.print(f"training on {self.device}")
        detail = f"{cfg.model} ({params:,} params) on {cfg.dataset} ({samples:,} training images)"
        self.print(f"recipe {cfg.recipe}: {detail}, batch {cfg.batch_size}, {cfg.optimizer} lr {cfg.lr}")
        self.print(str(plan))

    def step_eval(self, step: int, test_acc: float) -> None:
        """tf1's periodic evaluation (the seed printed test accuracy every few steps)."""
        self.print(f"step {step}, test acc {test_acc:.4f}")

    def epoch(self, r: dict) -> None:
        if r.get("partial"):
            self._partial(r)
            return
        fmt, epochs = self.cfg.log_format, self.cfg.epochs
        if fmt == "keras":
            steps = math.ceil(r["examples"] / self.cfg.batch_size)
            line = (
                f"{steps}/{steps} - {r['seconds']:.0f}s - loss: {r['train_loss']:.4f} - accuracy: {r['train_acc']:.4f}"
            )
            if "val_loss" in r:
                line += f" - val_loss: {r['val_loss']:.4f} - val_accuracy: {r['val_acc']:.4f}"
            self.print(f"Epoch {r['epoch']}/{epochs}")
            self.print(line)
        elif fmt == "community":
            self.print(f"[{r['epoch']}/{epochs}] Loss: {r['train_loss']:.5f}, Acc: {100 * r['train_acc']:.2f}, "
                       f"Time: {r['seconds']:.2f} s")  # fmt: skip
        else:  # d2l and tf1: d2l's train_ch5 line
            val = f", val acc {r['val_acc']:.3f}" if "val_acc" in r else ""
            test = f", test acc {r['test_acc']:.3f}" if "test_acc" in r else ""
            self.print(f"epoch {r['epoch']}, loss {r['train_loss']:.4f}, train acc {r['train_acc']:.3f}{val}"
                       f"{test}, time {r['seconds']:.1f} sec")  # fmt: skip
        self._hint(r)

    def _partial(self, r: dict) -> None:
        """An epoch cut short (max_steps): said as such, never as a finished epoch's line."""
        test = f", test acc {r['test_acc']:.3f}" if "test_acc" in r else ""
        self.print(f"epoch {r['epoch']} stopped after {r['batches']} batches ({100 * r['fraction']:.0f} % of it): "
                   f"loss {r['train_loss']:.4f}, train acc {r['train_acc']:.3f}{test}")  # fmt: skip

    def _hint(self, r: dict) -> None:
        """A net stuck at chance (or diverged) after a few epochs: say what usually helps, once."""
        if self.hinted or self.model is None or (r["epoch"] < CHANCE_EPOCHS and math.isfinite(r["train_loss"])):
            return
        hint = chance_hint(self.model, r, self.cfg.lr)
        if hint:
            self.hinted = True
            self.print(hint)

    def finish(self, summary: dict) -> None:
        """The seed's closing lines, then throughput."""
        fmt = self.cfg.log_format
        if summary["test_acc"] is None:  # trained without test data
            self.print(f"loss {summary['train_loss']:.3f}, train acc {summary['train_acc']:.3f}")
        elif fmt == "keras":  # model.evaluate(verbose=2) at Keras' default batch of 32
            steps = math.ceil(summary["test_examples"] / 32)
            self.print(f"{steps}/{steps} - loss: {summary['test_loss']:.4f} - accuracy: {summary['test_acc']:.4f}")
        elif fmt == "community":
            self.print("Finished Training")
            self.print(f"Test: Loss: {summary['test_loss']:.5f}, Acc: {100 * summary['test_acc']:.2f} %")
        else:
            self.print(f"loss {summary['train_loss']:.3f}, train acc {summary['train_acc']:.3f}, "
                       f"test acc {summary['test_acc']:.3f}")  # fmt: skip
        self.print(f"{summary['examples_per_sec']:.1f} examples/sec on {summary['device']}")
