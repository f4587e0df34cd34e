"""The nets the fast-path tests run (the zoo's, and ones users write), and what lenet.fast.plan says of each.

The other test_fast_* modules import NETS, build() and the helpers from here.
"""

from __future__ import annotations

import copy
import os

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lenet import fast
from lenet.fast.chain import layers
from lenet.models import ClippedLog, create_model, init_weights

REQUIRE = os.environ.get("LENET_REQUIRE_FASTPATH") == "1"  # CI: kernels that cannot be built fail the tests


class UserNet(nn.Module):
    """A LeNet as people write it: layers as attributes, a forward that calls them (and functionals) in order."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5, padding=2)
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1, self.fc2, self.fc3 = nn.Linear(400, 120), nn.Linear(120, 84), nn.Linear(84, 10)

    def forward(self, x):
        x = self.pool(F.relu(self.conv1(x)))
        x = self.pool(F.relu(self.conv2(x)))
        x = x.view(x.size(0), -1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


class TutorialNet(nn.Module):
    """The PyTorch tutorial's style: 32x32 inputs, F.max_pool2d, torch.flatten, log_softmax at the end."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 6, 5), nn.Conv2d(6, 16, 5)
        self.fc1, self.fc2, self.fc3 = nn.Linear(400, 120), nn.Linear(120, 84), nn.Linear(84, 10)

    def forward(self, x):
        x = F.max_pool2d(torch.tanh(self.conv1(x)), (2, 2))
        x = F.max_pool2d(torch.tanh(self.conv2(x)), 2)
        x = torch.flatten(x, 1)
        x = torch.tanh(self.fc1(x))
        x = torch.tanh(self.fc2(x))
        return F.log_softmax(self.fc3(x), dim=1)


def _sequential(act, pool, fc_act=None, channels=(6, 16), kernels=(5, 5), pads=(2, 0), size=28, hidden=(120, 84)):
    c1, c2 = channels
    o2 = (size + 2 * pads[0] - kernels[0] + 1) // 2 + 2 * pads[1] - kernels[1] + 1
    fc_act = fc_act or act
    net = nn.Sequential(
        nn.Conv2d(1, c1, kernels[0], padding=pads[0]), act(), pool(2),
        nn.Conv2d(c1, c2, kernels[1], padding=pads[1]), act(), pool(2),
        nn.Flatten(),
        nn.Linear(c2 * (o2 // 2) ** 2, hidden[0]), fc_act(), nn.Linear(hidden[0], hidden[1]), fc_act(),
        nn.Linear(hidden[1], 10),
    )  # fmt: skip
    net.input_size = size
    return net


# name -> (builder, the engine plan() picks)
NETS = {
    "lenet5-d2l": (lambda: create_model("lenet5-d2l"), "whole-step"),  # sigmoid, average pooling, padded conv1
    "lenet5-mxnet": (lambda: create_model("lenet5-mxnet"), "whole-step"),  # sigmoid, max pooling, unpadded
    "lenet5-keras": (lambda: create_model("lenet5-keras"), "whole-step"),  # Keras' head
    "lenet5-tutorial": (lambda: create_model("lenet5-tutorial"), "whole-step"),  # ReLU, 32x32 inputs
    "lenet-community": (lambda: create_model("lenet-community"), "whole-step"),  # no activations, 3x3 conv1
    "lenet5-modern": (lambda: create_model("lenet5-modern"), "whole-step"),  # batch norm (per-sample engines)
    "lenet5-modern-nobn": (lambda: create_model("lenet5-modern", batch_norm=False), "whole-step"),
    "keras-head-bn": (lambda: nn.Sequential(*create_model("lenet5-modern"), nn.Sigmoid(), ClippedLog()), "whole-step"),
    "tanh-avg": (lambda: _sequential(nn.Tanh, nn.AvgPool2d), "whole-step"),
    "leaky-max-32": (lambda: _sequential(lambda: nn.LeakyReLU(0.1), nn.MaxPool2d, size=32, pads=(0, 0)), "whole-step"),
    "odd-shapes": (
        lambda: _sequential(nn.ReLU, nn.MaxPool2d, nn.Sigmoid, (8, 12), (3, 3), (1, 0), 28, (50, 30)),
        "whole-step",
    ),  # fmt: skip
    "user-module": (UserNet, "whole-step"),
    "tutorial-module": (TutorialNet, "front-end"),  # log_softmax after the classifier: PyTorch runs it
    "cnn-tf1": (lambda: create_model("cnn-tf1"), "front-end"),  # dropout in the classifier
}
# the classic nets of issue 17, for the ARM checks
CLASSIC = ["lenet5-d2l", "lenet5-mxnet", "lenet5-keras", "lenet5-tutorial", "lenet-community", "lenet5-modern",
           "lenet5-modern-nobn"]  # fmt: skip


def build(name: str, seed: int = 0) -> nn.Module:
    """NETS[name], seeded, Xavier-initialised; batch norms' gamma and beta moved off 1 and 0 (which would hide
    half their arithmetic)."""
    torch.manual_seed(seed)
    model = init_weights(NETS[name][0](), "xavier")
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)
    return model


def inputs(model: nn.Module, n: int = 37, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    size = fast.match(model).front.size
    return torch.rand(n, 1, size, size, generator=g), torch.randint(0, 10, (n,), generator=g)


def front_layers(model: nn.Module) -> nn.Sequential:
    """The model's layers up to its flatten: what the front-end kernels compute, as PyTorch runs it."""
    chain = layers(model)
    end = next(i for i, m in enumerate(chain) if isinstance(m, nn.Flatten))
    return nn.Sequential(*chain[: end + 1])


def close(got: torch.Tensor, want: torch.Tensor, what: str, rel: float = 2e-5) -> None:
    """got within rel of want's largest magnitude, elementwise; the message names the kernel and tensor."""
    error = (got - want).abs().max().item()
    assert error <= rel * want.abs().max().item() + 1e-8, f"{what}: off by {error:.3g} (max {want.abs().max():.3g})"


def kernels_for(model: nn.Module) -> fast.Kernels:
    """The model's kernels, or the test fails (LENET_REQUIRE_FASTPATH=1) or skips saying why."""
    front = fast.match(model).front
    k = fast.kernels(front)
    if k is None:
        reason = f"kernels unavailable: {fast.unavailable(front)}"
        pytest.fail(reason) if REQUIRE else pytest.skip(reason)
    return k


@pytest.mark.parametrize("name", list(NETS))
def test_plan_picks_the_engine(name):
    model = build(name)
    kernels_for(model)
    plan = fast.plan(model)
    assert plan.engine == NETS[name][1], plan
    assert str(plan).startswith(f"fast path: {plan.engine} kernels ({plan.isa}, {plan.lanes} lanes)")


def test_plan_lines():
    model = build("cnn-tf1")
    kernels_for(model)
    plan = fast.plan(model)
    assert plan.reason == "Dropout" and str(plan).endswith(", classifier in PyTorch (Dropout)"), plan
    assert str(fast.plan(build("tutorial-module"))).endswith("classifier in PyTorch (log_softmax)")
    assert str(fast.Plan.off("--no-fastpath")) == "fast path: off (--no-fastpath); training with PyTorch"
    assert fast.Plan.off("x").engine is None and fast.plan(build("lenet5-d2l")).reason == ""


@pytest.mark.parametrize(
    "model,reason",
    [
        (_sequential(nn.GELU, nn.AvgPool2d), "GELU after conv1 is not supported"),
        (_sequential(lambda: nn.LeakyReLU(-0.5), nn.MaxPool2d), "a LeakyReLU with a negative slope after conv1"),
        (nn.Sequential(nn.Conv2d(1, 6, 5, stride=2), nn.ReLU(), nn.MaxPool2d(2)), "1 conv layers (the kernels take 2)"),
        (nn.Sequential(*[nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)] * 3), "3 conv layers"),
        (_sequential(nn.ReLU, lambda k: nn.MaxPool2d(3)), "MaxPool2d(3) after conv1 (the kernels take 2x2 pooling"),
        (create_model("lenet5-1998"), "after conv1 is not supported"),
        (nn.Sequential(nn.Flatten(), nn.Linear(784, 10)), "0 conv layers"),
    ],
)
def test_plan_says_why_not(model, reason):
    plan = fast.plan(model)
    assert plan.engine is None and reason in plan.reason, plan
    assert str(plan).startswith("fast path: off (") and str(plan).endswith("); training with PyTorch")


def test_plan_covers_the_model_not_the_run():
    assert fast.plan(build("lenet5-d2l").double()).reason == "the model's parameters are float64"
    hooked = build("lenet5-d2l")
    hooked.conv2.register_forward_hook(lambda *_: None)
    assert fast.plan(hooked).reason == "a hook on Conv2d"
    assert "not a plain chain" in fast.plan(Branchy()).reason or "does more" in fast.plan(Branchy()).reason


class Branchy(nn.Module):
    """A forward with a skip connection: not a chain of layers."""

    def __init__(self):
        super().__init__()
        self.body = _sequential(nn.ReLU, nn.MaxPool2d)

    def forward(self, x):
        return self.body(x) + self.body(x * 0.5)


def test_inspect_prints_the_fast_path_line(capsys):
    from lenet.cli import main

    kernels_for(build("cnn-tf1"))
    assert main(["inspect", "cnn-tf1"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("fast path: front-end kernels (") and last.endswith("classifier in PyTorch (Dropout)")


@pytest.mark.parametrize("name", ["user-module", "tutorial-module"])
def test_modules_users_write_compute_what_they_compute(name):
    """A module traced by torch.fx runs through the kernels as its own forward would: same outputs, same
    gradients (the autograd front end), and the same step (the whole-step kernels, where they take it)."""
    model = build(name)
    kernels_for(model)
    twin = copy.deepcopy(model)
    x, y = inputs(model, n=21)
    forward = fast.forward_fn(twin)
    out, want = forward(x), model(x)
    close(out.detach(), want.detach(), f"{name}: forward_fn", rel=1e-5)
    F.nll_loss(want, y).backward() if name == "tutorial-module" else F.cross_entropy(want, y).backward()
    F.nll_loss(out, y).backward() if name == "tutorial-module" else F.cross_entropy(out, y).backward()
    for (pname, a), b in zip(model.named_parameters(), twin.parameters(), strict=True):
        close(b.grad, a.grad, f"{name}: the front end under autograd, {pname}")
    step = fast.training_step(copy.deepcopy(model))
    assert (step is None) == (name == "tutorial-module")
