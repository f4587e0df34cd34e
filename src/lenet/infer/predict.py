"""A trained model ready for inference on user images: preprocessing, probabilities, layer activations."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..config import Config, input_size
from ..data import get_dataset_info, to_input
from ..models import leaf_modules
from ..train.checkpoint import load_run
from .preprocess import MAX_IMAGE_PIXELS, preprocess


@dataclass
class Predictor:
    """A model with what it needs to read an image as its training data looked."""

    model: nn.Module
    config: Config
    classes: tuple[str, ...]
    info: dict  # the run's summary.json, when there was one

    @classmethod
    def from_run(cls, path: str | os.PathLike, device: str | torch.device = "cpu") -> Predictor:
        model, cfg, info = load_run(path, device)
        return cls(model, cfg, get_dataset_info(cfg.dataset).classes, info)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def prepare(self, source, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
        """An image (path, bytes, PIL image or 2-d array) as a 28x28 uint8 array in the dataset's style."""
        return preprocess(source, self.config.dataset, max_pixels)

    def to_input(self, images: np.ndarray) -> torch.Tensor:
        """uint8 (N, 28, 28) -> the normalised (N, 1, S, S) network input, exactly as in training."""
        info = get_dataset_info(self.config.dataset)
        x = torch.from_numpy(np.ascontiguousarray(images)).to(self.device)
        return to_input(x, input_size(self.config), self.config.scaling, info.mean, info.std, self.config.resize)

    @torch.inference_mode()
    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities (N, C) for uint8 images (N, 28, 28)."""
        return self.model(self.to_input(images)).softmax(1).cpu().numpy()

    @torch.inference_mode()
    def activations(self, image: np.ndarray) -> tuple[np.ndarray, list[tuple[str, str, np.ndarray]]]:
        """(probabilities, [(layer name, layer type, output)]) for one 28x28 image, every leaf layer's output."""
        outputs: list[tuple[str, str, np.ndarray]] = []
        hooks = []
        for name, module in leaf_modules(self.model):

            def record(mod, inputs, output, name=name):
                outputs.append((name, type(mod).__name__, output[0].float().cpu().numpy()))

            hooks.append(module.register_forward_hook(record))
        try:
            logits = self.model(self.to_input(image[None]))
        finally:
            for h in hooks:
                h.remove()
        return logits.softmax(1)[0].cpu().numpy(), outputs

    def top(self, probs: np.ndarray, k: int = 1) -> list[tuple[int, str, float]]:
        """The k most probable (class index, class name, probability), best first."""
        order = np.argsort(-probs)[:k]
        return [(int(i), self.classes[i], float(probs[i])) for i in order]
