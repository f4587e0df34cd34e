"""What a run has done so far: its history of epochs, and where it is (to checkpoint and resume)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class History:
    """One record per epoch (dicts of plain numbers), plus what the completed epochs measured.

    A run stopped part-way through an epoch ends with that epoch's partial record (`"partial": True`, the
    training metrics so far); it is replaced when the epoch completes.
    """

    epochs: list[dict] = field(default_factory=list)
    train_examples: int = 0
    train_seconds: float = 0.0

    @property
    def last(self) -> dict:
        return self.epochs[-1] if self.epochs else {}

    @property
    def complete(self) -> list[dict]:
        return [r for r in self.epochs if not r.get("partial")]

    def totals(self) -> tuple[int, float]:
        """Examples trained on and training seconds so far, a trailing partial epoch's included."""
        last = self.last
        if last.get("partial"):
            return self.train_examples + last["examples"], self.train_seconds + last["train_seconds"]
        return self.train_examples, self.train_seconds

    @property
    def examples_per_sec(self) -> float:
        examples, seconds = self.totals()
        return examples / seconds if seconds else 0.0

    def add(self, record: dict) -> None:
        """Append an epoch's record, replacing a partial record of the same epoch."""
        if self.epochs and self.epochs[-1].get("partial") and self.epochs[-1]["epoch"] == record["epoch"]:
            self.epochs.pop()
        self.epochs.append(record)
        if not record.get("partial"):
            self.train_examples += record["examples"]
            self.train_seconds += record["train_seconds"]

    def state_dict(self) -> dict:
        return {"epochs": self.epochs, "train_examples": self.train_examples, "train_seconds": self.train_seconds}

    def _repr_png_(self) -> bytes:
        """The training curves, inline in Jupyter (lenet.plots.curves)."""
        from .plots import curves

        return curves(self)._repr_png_()

    @classmethod
    def from_state_dict(cls, d: dict) -> History:
        return cls(list(d["epochs"]), int(d["train_examples"]), float(d["train_seconds"]))


@dataclass
class TrainState:
    """Where a run is: the epoch under way, optimiser steps taken, random generators, the history so far.

    `data_rng_state` is the data-order generator as the epoch under way began, so a run stopped part-way
    through an epoch redraws that epoch's order and skips the batches it already trained on; `partial`
    holds that epoch's sums so far (loss, correct, examples, seconds), so its record covers the whole epoch.
    """

    epoch: int = 0
    step: int = 0
    history: History = field(default_factory=History)
    data_rng_state: torch.Tensor | None = None
    torch_rng_state: torch.Tensor | None = None
    cuda_rng_state: torch.Tensor | None = None
    partial: dict | None = None
    stopped: bool = False  # fit returned early because `stop()` asked it to

    def to_dict(self) -> dict:
        """What a checkpoint keeps of the state (besides the model and optimiser)."""
        return {
            "epoch": self.epoch, "step": self.step, "history": self.history.state_dict(),
            "data_rng_state": self.data_rng_state, "torch_rng_state": self.torch_rng_state,
            "cuda_rng_state": self.cuda_rng_state, "partial": self.partial,
        }  # fmt: skip

    @classmethod
    def from_dict(cls, d: dict) -> TrainState:
        return cls(
            epoch=int(d["epoch"]), step=int(d["step"]), history=History.from_state_dict(d["history"]),
            data_rng_state=d["data_rng_state"], torch_rng_state=d["torch_rng_state"],
            cuda_rng_state=d.get("cuda_rng_state"), partial=d.get("partial"),
        )  # fmt: skip
