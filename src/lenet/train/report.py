"""What a training run prints, in the format of the seed notebook its recipe reproduces."""

from __future__ import annotations

import math
import sys
from typing import TextIO

from ..config import Config

CHANCE_EPOCHS = 2  # after this many epochs at chance accuracy, the run suggests a lower learning rate


class Reporter:
    """Prints a run's start, one line per epoch in the recipe's format, and its closing lines."""

    def __init__(self, cfg: Config, device: str, out: TextIO | None = None, relu: bool = False):
        self.cfg, self.device, self.out = cfg, device, out
        self.relu = relu  # the net has ReLU-like units: at chance, its learning rate is the usual suspect
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
        stuck = not math.isfinite(r["train_loss"]) or (r["epoch"] >= CHANCE_EPOCHS and r["train_acc"] < 0.12)
        if not stuck or self.hinted:
            return
        self.hinted = True
        where = f"training accuracy is still at chance ({r['train_acc']:.3f}) after epoch {r['epoch']}"
        if self.relu or not math.isfinite(r["train_loss"]):
            self.print(f"hint: {where}: lr {self.cfg.lr} is likely too high for this net; try --lr 0.1")
        else:
            self.print(f"hint: {where}; sigmoid LeNets often start slowly (d2l's sat at chance for its first "
                       "epochs); if it stays there, try more epochs or a lower --lr")  # fmt: skip

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
