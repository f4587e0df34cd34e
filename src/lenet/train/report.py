"""What a training run prints, in the format of the seed notebook its recipe reproduces."""

from __future__ import annotations

import math
import sys
import time
from typing import TextIO

from ..config import Config


class Reporter:
    """Prints a run's progress: one line per epoch in the recipe's format, and a progress bar on terminals."""

    def __init__(self, cfg: Config, device: str, out: TextIO | None = None, progress: bool | None = None):
        self.cfg, self.device, self.out = cfg, device, out
        # The bar is for people watching a terminal; logs and CI get only whole lines.
        self.progress = sys.stderr.isatty() if progress is None else progress
        self._last_draw = 0.0
        self._epoch_start = time.perf_counter()

    def print(self, line: str) -> None:
        print(line, file=self.out or sys.stdout, flush=True)

    def start(self, samples: int, params: int) -> None:
        cfg = self.cfg
        self.print(f"training on {self.device}")
        detail = f"{cfg.model} ({params:,} params) on {cfg.dataset} ({samples:,} training images)"
        self.print(f"recipe {cfg.recipe}: {detail}, batch {cfg.batch_size}, {cfg.optimizer} lr {cfg.lr}")

    def step(self, step: int, epoch: int, index: int, batches: int) -> None:
        if not self.progress:
            return
        if index == 0:
            self._epoch_start = time.perf_counter()
        now = time.perf_counter()
        if now - self._last_draw < 0.1 and index + 1 < batches:
            return
        self._last_draw = now
        done = (index + 1) / batches
        rate = (index + 1) * self.cfg.batch_size / max(now - self._epoch_start, 1e-9)
        bar = "#" * int(30 * done) + "." * (30 - int(30 * done))
        print(f"\r  epoch {epoch + 1}/{self.cfg.epochs} [{bar}] {index + 1}/{batches} {rate:,.0f} samples/s",
              end="", file=sys.stderr, flush=True)  # fmt: skip

    def _clear_bar(self) -> None:
        if self.progress:
            print("\r" + " " * 90 + "\r", end="", file=sys.stderr, flush=True)

    def step_eval(self, step: int, test_acc: float) -> None:
        """tf1's periodic evaluation (the seed printed test accuracy every few steps)."""
        self._clear_bar()
        self.print(f"step {step}, test acc {test_acc:.4f}")

    def epoch(self, r: dict) -> None:
        self._clear_bar()
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
            self.print(f"epoch {r['epoch']}, loss {r['train_loss']:.4f}, train acc {r['train_acc']:.3f}{val}, "
                       f"test acc {r['test_acc']:.3f}, time {r['seconds']:.1f} sec")  # fmt: skip

    def finish(self, summary: dict) -> None:
        """The seed's closing lines, then throughput."""
        fmt = self.cfg.log_format
        if fmt == "keras":  # model.evaluate(verbose=2) at Keras' default batch of 32
            steps = math.ceil(summary["test_examples"] / 32)
            self.print(f"{steps}/{steps} - loss: {summary['test_loss']:.4f} - accuracy: {summary['test_acc']:.4f}")
        elif fmt == "community":
            self.print("Finished Training")
            self.print(f"Test: Loss: {summary['test_loss']:.5f}, Acc: {100 * summary['test_acc']:.2f} %")
        else:
            self.print(f"loss {summary['train_loss']:.3f}, train acc {summary['train_acc']:.3f}, "
                       f"test acc {summary['test_acc']:.3f}")  # fmt: skip
        self.print(f"{summary['examples_per_sec']:.1f} examples/sec on {summary['device']}")
