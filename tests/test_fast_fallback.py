"""Without the fast path, training is PyTorch's: these run whether or not the kernels can be built here."""

from __future__ import annotations

import copy

import pytest
import torch

from lenet import fast
from lenet.config import resolve
from lenet.models import create_model, init_weights
from lenet.train.loop import make_optimizer, make_step


@pytest.fixture
def no_compiler(monkeypatch, tmp_path):
    """A machine whose C compiler is missing (and an empty kernel cache)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    fast.kernels.cache_clear()
    yield
    fast.kernels.cache_clear()


def test_a_missing_compiler_is_reported_not_raised(no_compiler):
    model = create_model("lenet5-mxnet")
    assert fast.forward_fn(model) is None and fast.training_step(model) is None
    reason = fast.unavailable(fast.match(model).front)
    assert reason and "no-such-cc" in reason
    line = str(fast.plan(model))
    assert line.startswith("fast path: off (could not build the kernels: ") and "no-such-cc" in line
    assert line.endswith("; training with PyTorch")


def test_training_without_kernels_is_the_eager_step(no_compiler):
    cfg = resolve("d2l", dataset="mnist")
    torch.manual_seed(0)
    model = init_weights(create_model(cfg.model), cfg.init)
    twin = copy.deepcopy(model)
    wanted = make_step(model, make_optimizer(cfg, model), cfg)
    assert wanted.plan.engine is None and "no-such-cc" in wanted.plan.reason
    eager = make_step(twin, make_optimizer(cfg, twin), cfg, fast=False)
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        x, y = torch.rand(64, 1, 28, 28, generator=g), torch.randint(0, 10, (64,), generator=g)
        assert wanted(x, y, 64)[0].item() == eager(x, y, 64)[0].item()
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), twin.parameters(), strict=True))


def test_make_step_keeps_the_eager_step_for_other_optimizers(monkeypatch):
    def refuse(model):
        raise AssertionError("lenet.fast must not be asked")

    monkeypatch.setattr(fast, "forward_fn", refuse)
    monkeypatch.setattr(fast, "training_step", refuse)
    model = create_model("lenet5-d2l")
    others = [(resolve("d2l", optimizer="sdlm"), 1), (resolve("d2l"), 2), (resolve("d2l", loss="map"), 1)]
    for cfg, world in others:
        step = make_step(model, torch.optim.SGD(model.parameters(), lr=0.1), cfg, world_size=world)
        assert step.plan.engine is None and step.plan.reason


def test_models_the_kernels_do_not_take_are_left_to_pytorch():
    assert fast.match(torch.nn.Sequential(torch.nn.Linear(4, 2))) is None
    assert fast.forward_fn(create_model("cnn-tf1").double()) is None  # float64 weights
    assert fast.training_step(create_model("lenet5-1998")) is None
    assert fast.plan(create_model("lenet5-1998")).engine is None
