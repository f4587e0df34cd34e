"""lenet: the reference toolkit for LeNet-family convolutional networks on MNIST-style data.

The public API, loaded on first use (so that `lenet --help`, and a Ctrl-C during start-up, need no torch):

    lenet.train(recipe_or_config, out=..., model=..., resume=...) -> Run   # what `lenet train` runs
    lenet.load(run_folder) -> Run                                        # model, config, history, summary
    lenet.fit(model, data, cfg) -> History                               # the loop alone
    lenet.evaluate(model, data) / lenet.evaluate(run)                    # metrics (and figures for a run)
    lenet.export(run, "onnx" | "torchscript" | "web")                    # deployable files
    lenet.create_model(name, **options), lenet.list_models()
    lenet.load_dataset(name), lenet.load_data_fashion_mnist(batch_size)  # on-device data, d2l's iterators
    lenet.resolve(recipe, **overrides) -> Config, lenet.RECIPES
    lenet.run_sweep(recipe, seeds="0-9", settings=["lr=0.1,0.2"]), lenet.sweep_report(dir)  # many runs
    lenet.reproduce(seeds=5) -> REPRODUCE.md                             # every recipe over seeds
    from lenet import d2l, plots
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> (module, attribute); None: the module itself
_API = {
    "Config": ("config", "Config"), "RECIPES": ("config", "RECIPES"), "resolve": ("config", "resolve"),
    "DATASETS": ("data", "DATASETS"), "download": ("data", "download"), "load_dataset": ("data", "load_dataset"),
    "read_idx": ("data", "read_idx"), "verify": ("data", "verify"),
    "LenetError": ("errors", "LenetError"),
    "count_parameters": ("models", "count_parameters"), "create_model": ("models", "create_model"),
    "list_models": ("models", "list_models"),
    "Run": ("train.run", "Run"), "load": ("train.run", "load"),
    "fit": ("train.loop", "fit"), "History": ("train.state", "History"),
    "evaluate": ("infer.evaluation", "evaluate"), "export": ("infer.export", "export_run"),
    "load_data_fashion_mnist": ("d2l", "load_data_fashion_mnist"),
    "plots": ("train.plots", None),
    "run_sweep": ("sweep.runner", "run_sweep"), "sweep_report": ("sweep.report", "sweep_report"),
    "reproduce": ("sweep.reproduce", "reproduce"),
}  # fmt: skip

__all__ = sorted([*_API, "train"])

# The subpackage lenet.train is imported first (it is light), so that importing it later cannot rebind the
# name `lenet.train`, which is the function below.
from . import train as _training  # noqa: E402, F401


def train(config="d2l", **options):
    """Train a recipe (by name) or a lenet.Config end to end, as `lenet train` does; returns a lenet.Run,
    which unpacks as (model, history). Options (out=, model=, resume=, epochs=, ...): lenet.train.run.train."""
    from .train.run import train as run

    return run(config, **options)


def __getattr__(name: str):
    if name not in _API:
        raise AttributeError(f"module 'lenet' has no attribute {name!r}")
    module, attribute = _API[name]
    value = importlib.import_module(f".{module}", __name__)
    if attribute is not None:
        value = getattr(value, attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
