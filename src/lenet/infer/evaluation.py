"""Evaluating a trained run: accuracy, per-class accuracy, a confusion matrix and its mistakes, as figures."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import LenetError
from ..train import loop
from ..train.checkpoint import load_run
from ..train.plots import plot_confusion, plot_gallery
from ..train.run import Run
from ..train.setup import data_root_for, load_data, select_device


def evaluate(target, data=None, *, split: str = "test", dataset: str | None = None, root=None, **options) -> dict:
    """`lenet.evaluate`: a model on some data, or a run (a folder or a lenet.Run) on its own data.

    evaluate(model, data): loss, accuracy and confusion matrix (data: a Dataset, a DataIter, a DataLoader
    or (images, labels)). evaluate(run): as `lenet eval RUN`, with the options of evaluate_run.
    """
    if isinstance(target, nn.Module):
        if data is None:
            raise LenetError("evaluate(model, data): the data to evaluate on is missing")
        return loop.evaluate(target, data)
    if isinstance(target, Run | str | os.PathLike):
        return evaluate_run(target, split=split, dataset=dataset, root=root, **options)
    raise LenetError(f"evaluate: expected a model or a run, not {type(target).__name__}")


def evaluate_run(
    run,
    *,
    split: str = "test",
    dataset: str | None = None,
    root=None,
    verify: bool = True,
    device: str = "auto",
    gallery: int = 32,
    figures: bool = True,
    model: nn.Module | None = None,
) -> dict:
    """A run's model on a split of its dataset (or of `dataset`): metrics, per-class accuracy, and figures
    named by dataset and split (confusion-mnist-test.png, misclassified-mnist-test.png) beside the weights.
    """
    if split not in ("test", "train"):
        raise LenetError(f"unknown split {split!r}; expected 'test' or 'train'")
    where = select_device(device)
    if isinstance(run, Run):
        model, cfg, folder = run.model.to(where).eval(), run.config, run.path
        remembered = run.data_root
    else:
        path = Path(run)
        model, cfg, info = load_run(path, where, model)
        folder = path if path.is_dir() else path.parent
        remembered = info.get("data_root")
    if dataset:
        cfg = type(cfg).from_dict({**cfg.to_dict(), "dataset": dataset})
    data = load_data(cfg, data_root_for(root, remembered), where, verify=verify)
    part = data.test if split == "test" else data.train
    metrics = loop.evaluate(model, part, cfg.eval_batch_size)
    confusion = np.asarray(metrics["confusion"])
    per_class = {
        name: float(confusion[i, i] / confusion[i].sum()) if confusion[i].sum() else 0.0
        for i, name in enumerate(data.classes)
    }
    result = {
        "model": cfg.model, "dataset": cfg.dataset, "split": split, "examples": metrics["n"],
        f"{split}_acc": metrics["acc"], f"{split}_loss": metrics["loss"], "per_class_acc": per_class,
        "confusion": metrics["confusion"], "figures": {}, "device": str(where),
    }  # fmt: skip
    if figures and folder is not None:
        result["figures"] = _figures(model, cfg, data, part, split, metrics, Path(folder), gallery)
    return result


def _figures(model, cfg, data, part, split, metrics, folder: Path, gallery: int) -> dict:
    """The confusion matrix and a gallery of mistakes, as PNG files; a folder that cannot take them is only a
    warning (the numbers are the result)."""
    name = f"{cfg.dataset}-{split}"
    figures = {}
    try:
        title = f"{cfg.model} on {cfg.dataset} {split}: acc {metrics['acc']:.4f}"
        figures["confusion"] = str(
            plot_confusion(metrics["confusion"], list(data.classes), folder / f"confusion-{name}.png", title)
        )
        probs = loop.predict_split(model, part, cfg.eval_batch_size)
        pred = probs.argmax(1)
        wrong = (pred != part.labels).nonzero().flatten()[:gallery].tolist()
        images = part.inputs(torch.tensor(wrong, dtype=torch.long))[:, 0].cpu().numpy()
        titles = [
            f"{data.classes[int(part.labels[i])]} -> {data.classes[int(pred[i])]} ({float(probs[i, pred[i]]):.2f})"
            for i in wrong
        ]
        figures["misclassified"] = str(plot_gallery(images, titles, folder / f"misclassified-{name}.png"))
    except OSError as e:
        print(f"warning: could not write figures to {folder} ({e.strerror})", file=sys.stderr)
    return figures
