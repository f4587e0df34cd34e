"""Named training recipes: each seed notebook's settings as plain data, plus ours.

A recipe is a set of overrides of `Config`'s defaults; `resolve(recipe, **overrides)` gives the full config
a run uses, and that resolved config is what a run folder stores, so eval/export/serve need no flags.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from .data import DATASETS, SCALINGS
from .errors import LenetError
from .models import INITS, list_models, model_spec

OPTIMIZERS = ("sgd", "adam", "adamw", "sdlm")
SCHEDULES = ("constant", "onecycle", "cosine", "piecewise")
REDUCTIONS = ("mean", "sum", "nominal")
LOG_FORMATS = ("d2l", "keras", "community", "tf1")
LOSSES = ("cross-entropy", "map")

# lecun98: the paper's eta for its 20 passes (2 x 5e-4, 3 x 2e-4, 3 x 1e-4, 4 x 5e-5, then 1e-5) as factors of
# lr = 5e-4, so that --lr moves the whole schedule; and the mini-batch whose mean gradient stands in for the
# paper's per-sample updates (lenet.sdlm says why).
LECUN98_LR_FACTORS = [1.0] * 2 + [0.4] * 3 + [0.2] * 3 + [0.1] * 4 + [0.02] * 8
LECUN98_BATCH = 4


@dataclass
class Config:
    """Everything that decides what a training run computes (not where or how fast it runs)."""

    recipe: str = "d2l"
    model: str = "lenet5-d2l"
    model_kwargs: dict = field(default_factory=dict)
    dataset: str = "fashion-mnist"
    scaling: str = "unit"  # none | unit | standard | lecun (see lenet.data.scale_images)
    input_size: int = 0  # 0: the model's own input size; 28 -> 32 pads with background
    resize: bool = False  # reach input_size by bilinear resizing instead of padding
    val_fraction: float = 0.0  # the last fraction of the training set, held out (Keras' validation_split)
    batch_size: int = 256
    epochs: int = 10
    optimizer: str = "sgd"
    lr: float = 0.9
    momentum: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0
    schedule: str = "constant"
    lr_factors: list[float] = field(default_factory=list)  # piecewise: each epoch's lr / lr, the last repeats
    warmup: float = 0.25  # onecycle: fraction of the steps spent warming up
    loss: str = "cross-entropy"
    reduction: str = "mean"  # mean over the batch | sum over it | sum / nominal batch size (Gluon's step(bs))
    label_smoothing: float = 0.0
    init: str = "default"  # default | xavier | glorot (see lenet.models.init_weights)
    distort: bool = False  # random affine distortions of the training images (LeCun 1998)
    seed: int = 0
    log_format: str = "d2l"
    log_every: int = 0  # tf1: evaluate the test set every this many steps
    eval_batch_size: int = 500  # larger batches evaluate no faster here, and the fast path keeps buffers this big

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Config:
        """Rebuild a config from JSON, ignoring keys this version does not know."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass(frozen=True)
class Recipe:
    name: str
    seed: str  # the seed notebook it reproduces
    description: str
    seed_result: str  # what the seed printed, to compare against
    settings: dict


RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in [
        Recipe(
            "d2l",
            "001, 004",
            "d2l's PyTorch LeNet on Fashion-MNIST (train_ch6)",
            "d2l's builds: loss 0.455-0.512, train acc 0.803-0.831, test acc 0.761-0.826",
            dict(model="lenet5-d2l", dataset="fashion-mnist", scaling="unit", batch_size=256, epochs=10,
                 optimizer="sgd", lr=0.9, init="xavier", reduction="mean", log_format="d2l"),
        ),
        Recipe(
            "d2l-mxnet",
            "000",
            "d2l's MXNet LeNet on Fashion-MNIST (train_ch5): max pooling, Gluon's loss.sum() + step(batch_size)",
            "epoch 14: loss 0.4006, train acc 0.850, test acc 0.857",
            dict(model="lenet5-mxnet", dataset="fashion-mnist", scaling="unit", batch_size=256, epochs=50,
                 optimizer="sgd", lr=0.9, init="glorot", reduction="nominal", log_format="d2l"),
        ),
        Recipe(
            "keras",
            "002",
            "the Keras LeNet: raw 0-255 input, batch 32, last 10% of train for validation, sigmoid outputs",
            "test: loss 0.5288 - accuracy 0.7966",
            dict(model="lenet5-keras", dataset="fashion-mnist", scaling="none", batch_size=32, epochs=5,
                 optimizer="sgd", lr=0.9, init="glorot", reduction="mean", val_fraction=0.1, log_format="keras"),
        ),
        Recipe(
            "pytorch-tutorial",
            "003 (official)",
            "the PyTorch tutorial LeNet5 on MNIST padded to 32x32: SGD with momentum 0.9, lr 0.01, batch 64",
            "(the seed only runs a forward pass)",
            dict(model="lenet5-tutorial", dataset="mnist", scaling="unit", input_size=32, batch_size=64, epochs=5,
                 optimizer="sgd", lr=0.01, momentum=0.9, reduction="mean", log_format="d2l"),
        ),
        Recipe(
            "community",
            "003 (民间版)",
            "the community LeNet on MNIST: batch 64, SGD lr 1e-3 on the summed cross-entropy",
            "[10/10] Loss: 0.03946, Acc: 98.75",
            dict(model="lenet-community", dataset="mnist", scaling="unit", batch_size=64, epochs=10,
                 optimizer="sgd", lr=1e-3, reduction="sum", log_format="community"),
        ),
        Recipe(
            "tf1-cnn",
            "003 (TF)",
            "the TF1 MNIST CNN: Adam 1e-3, batch 20, dropout 0.5; test accuracy every 500 steps",
            "(the seed ran 100 steps of batch 20)",
            dict(model="cnn-tf1", dataset="mnist", scaling="unit", batch_size=20, epochs=1, optimizer="adam",
                 lr=1e-3, reduction="mean", log_format="tf1", log_every=500),
        ),
        Recipe(
            "fast",
            "ours",
            "lenet5-modern with batch norm, Nesterov SGD and a one-cycle schedule: >= 99% on MNIST in seconds",
            "",
            dict(model="lenet5-modern", dataset="mnist", scaling="standard", batch_size=256, epochs=2,
                 optimizer="sgd", lr=0.2, momentum=0.9, nesterov=True, weight_decay=5e-4, schedule="onecycle",
                 warmup=0.2, label_smoothing=0.1, reduction="mean", log_format="d2l"),
        ),
        Recipe(
            "lecun98",
            "paper",
            "LeCun et al. 1998's LeNet-5 on MNIST at 32x32: MAP loss, stochastic diagonal Levenberg-"
            "Marquardt with the paper's eta schedule (one step per batch of 4), 20 passes",
            "LeCun et al. 1998: 0.95% test error (0.8% with --distort)",
            dict(model="lenet5-1998", dataset="mnist", scaling="lecun", input_size=32,
                 batch_size=LECUN98_BATCH, epochs=20, optimizer="sdlm", lr=5e-4, schedule="piecewise",
                 lr_factors=LECUN98_LR_FACTORS, loss="map", reduction="mean", log_format="d2l"),
        ),
    ]
}  # fmt: skip


def input_size(cfg: Config) -> int:
    """The side of the square input the run's network reads: the config's, else the model's own."""
    return cfg.input_size or model_spec(cfg.model).input_size


def get_recipe(name: str) -> Recipe:
    try:
        return RECIPES[name]
    except KeyError:
        raise LenetError(f"unknown recipe {name!r}; known: {', '.join(RECIPES)}") from None


def resolve(recipe: str = "d2l", **overrides) -> Config:
    """The full config of `recipe` with `overrides` (None values ignored), checked for sense."""
    settings = dict(get_recipe(recipe).settings, recipe=recipe)
    settings.update({k: v for k, v in overrides.items() if v is not None})
    known = {f.name for f in dataclasses.fields(Config)}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise LenetError(f"unknown config field(s): {', '.join(unknown)}")
    return validate(Config(**settings))


# The named settings and their choices: validate() and the command line's choices both read this.
CHOICES = {
    "dataset": tuple(DATASETS), "scaling": SCALINGS, "optimizer": OPTIMIZERS, "schedule": SCHEDULES,
    "reduction": REDUCTIONS, "log_format": LOG_FORMATS, "loss": LOSSES, "init": INITS,
}  # fmt: skip

# Config's field annotations (strings, under `from __future__ import annotations`) -> what a value may be.
_KINDS = {"str": (str,), "int": (int,), "float": (int, float), "bool": (bool,), "dict": (dict,), "list[float]": (list,)}
_WORDS = {"str": "a string", "int": "a whole number", "float": "a number", "bool": "True or False",
          "dict": "a dict", "list[float]": "a list of numbers"}  # fmt: skip


def _check_types(cfg: Config) -> None:
    """Every field holds its type (ints pass for floats and become floats); else one line naming the field."""
    for f in dataclasses.fields(Config):
        value = getattr(cfg, f.name)
        ok = isinstance(value, _KINDS[f.type]) and (f.type == "bool" or not isinstance(value, bool))
        if ok and f.type == "list[float]":
            ok = all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
        if not ok:
            raise LenetError(f"config field {f.name!r} takes {_WORDS[f.type]}, not {value!r} ({type(value).__name__})")
        if f.type == "float":
            setattr(cfg, f.name, float(value))


def validate(cfg: Config) -> Config:
    """Raise a one-line error for any setting that cannot work."""
    _check_types(cfg)
    try:
        model_spec(cfg.model)
    except LenetError:
        raise LenetError(f"unknown model {cfg.model!r}; known: {', '.join(list_models())}") from None
    for name, choices in CHOICES.items():
        value = getattr(cfg, name)
        if value not in choices:
            raise LenetError(f"unknown {name.replace('_', ' ')} {value!r}; expected one of {', '.join(choices)}")
    checks = [
        (cfg.batch_size >= 1, f"batch size must be at least 1, got {cfg.batch_size}"),
        (cfg.epochs >= 1, f"epochs must be at least 1, got {cfg.epochs}"),
        (cfg.lr > 0, f"learning rate must be positive, got {cfg.lr}"),
        (cfg.momentum >= 0, f"momentum must be >= 0, got {cfg.momentum}"),
        (cfg.weight_decay >= 0, f"weight decay must be >= 0, got {cfg.weight_decay}"),
        (0 <= cfg.label_smoothing < 1, f"label smoothing must be in [0, 1), got {cfg.label_smoothing}"),
        (0 <= cfg.val_fraction < 1, f"validation fraction must be in [0, 1), got {cfg.val_fraction}"),
        (0 <= cfg.warmup < 1, f"warmup must be in [0, 1), got {cfg.warmup}"),
        (cfg.input_size in (0, 28, 32), f"input size must be 28 or 32, got {cfg.input_size}"),
        (cfg.eval_batch_size >= 1, f"eval batch size must be at least 1, got {cfg.eval_batch_size}"),
        (cfg.log_every >= 0, f"log-every must be >= 0, got {cfg.log_every}"),
        (cfg.schedule != "piecewise" or bool(cfg.lr_factors), "a piecewise schedule needs lr_factors"),
    ]
    for ok, message in checks:
        if not ok:
            raise LenetError(message)
    return cfg
