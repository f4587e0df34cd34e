"""lenet: the reference toolkit for LeNet-family convolutional networks on MNIST-style data."""

__version__ = "0.1.0"

from .config import RECIPES, Config, resolve  # noqa: E402
from .d2l import load_data_fashion_mnist  # noqa: E402
from .data import DATASETS, download, load_dataset, read_idx, verify  # noqa: E402
from .errors import LenetError  # noqa: E402
from .models import count_parameters, create_model, list_models  # noqa: E402
from .train import evaluate, fit, train  # noqa: E402

__all__ = [
    "DATASETS", "RECIPES", "Config", "LenetError", "count_parameters", "create_model", "download", "evaluate",
    "fit", "list_models", "load_data_fashion_mnist", "load_dataset", "read_idx", "resolve", "train", "verify",
]  # fmt: skip
