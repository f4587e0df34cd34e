"""The registry of named models (timm's pattern): every variant a short named builder, `create_model(name)`."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from torch import nn

from ..errors import LenetError


@dataclass(frozen=True)
class ModelSpec:
    name: str
    build: Callable[..., nn.Module]
    seed: str  # which seed notebook it comes from
    input_size: int
    description: str
    hidden: bool = False  # a builder for models of the user's own (models.custom), not a variant to list


_REGISTRY: dict[str, ModelSpec] = {}


def register(name: str, seed: str, input_size: int, description: str, hidden: bool = False):
    """Decorator: add a model builder to the registry under `name`."""

    def add(build: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _REGISTRY[name] = ModelSpec(name, build, seed, input_size, description, hidden)
        return build

    return add


def list_models() -> list[str]:
    """Names of every registered model variant, in registration order."""
    return [name for name, spec in _REGISTRY.items() if not spec.hidden]


def model_spec(name: str) -> ModelSpec:
    """The registry entry for `name`, or an error listing the known names."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise LenetError(f"unknown model {name!r}; known: {', '.join(list_models())}") from None


def create_model(name: str, pretrained: bool = False, **kwargs) -> nn.Module:
    """Build a registered model by name; keyword arguments go to its builder. pretrained=True loads the
    published weights shipped with lenet (trained on MNIST; see lenet.models.pretrained) in eval mode."""
    spec = model_spec(name)
    if pretrained and kwargs:
        raise LenetError(f"model {name!r}: the published weights are for the model as registered; drop "
                         f"{', '.join(kwargs)} or pretrained=True")  # fmt: skip
    try:
        model = spec.build(**kwargs)
    except TypeError as e:
        raise LenetError(f"model {name!r}: {e}") from None
    model.input_size = spec.input_size
    if pretrained:
        from .pretrained import load_pretrained

        model = load_pretrained(model, name)
    return model


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def leaf_modules(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """(name, module) of every module without children, in order: the layers a summary or a demo shows."""
    for name, module in model.named_modules():
        if name and next(module.children(), None) is None:
            yield name, module
