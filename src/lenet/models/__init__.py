"""The model zoo: every LeNet of the seed notebooks, the 1998 original, and a registry of them by name.

Importing this package registers every model (zoo, lenet1998); `create_model(name)` builds one.
"""

from . import custom, lenet1998, zoo  # noqa: F401  (registers the models)
from .registry import ModelSpec, count_parameters, create_model, leaf_modules, list_models, model_spec, register
from .zoo import INITS, ClippedLog, LeNet, init_weights

__all__ = [
    "INITS", "ClippedLog", "LeNet", "ModelSpec", "count_parameters", "create_model", "init_weights",
    "leaf_modules", "list_models", "model_spec", "register",
]  # fmt: skip
