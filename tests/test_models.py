"""The model zoo against the seed notebooks' own printouts, and what every registered model must do."""

import json
import re

import pytest
import torch
from torch import nn

from lenet import count_parameters, create_model, list_models
from lenet.cli import main
from lenet.errors import LenetError
from lenet.infer.inspect import summarize
from lenet.models import ClippedLog, init_weights, model_spec

SEED_MODELS = ["lenet5-d2l", "lenet5-mxnet", "lenet5-keras", "lenet5-tutorial", "lenet-community", "cnn-tf1",
               "lenet5-modern"]  # fmt: skip


def test_registry_has_every_seed_net():
    assert set(SEED_MODELS) <= set(list_models())


def test_unknown_model_lists_known_names():
    with pytest.raises(LenetError, match="unknown model 'lenet6'; known: .*lenet5-d2l"):
        create_model("lenet6")


def test_d2l_shapes_as_seed_001_prints_them():
    """Seed 001's loop `for layer in net: X = layer(X); print(layer.__class__.__name__, X.shape)`."""
    net = create_model("lenet5-d2l")
    X = torch.rand(1, 1, 28, 28)
    printed = []
    for layer in net:
        X = layer(X)
        printed.append((layer.__class__.__name__, list(X.shape)))
    assert printed == [
        ("Conv2d", [1, 6, 28, 28]), ("Sigmoid", [1, 6, 28, 28]), ("AvgPool2d", [1, 6, 14, 14]),
        ("Conv2d", [1, 16, 10, 10]), ("Sigmoid", [1, 16, 10, 10]), ("AvgPool2d", [1, 16, 5, 5]),
        ("Flatten", [1, 400]), ("Linear", [1, 120]), ("Sigmoid", [1, 120]), ("Linear", [1, 84]),
        ("Sigmoid", [1, 84]), ("Linear", [1, 10]),
    ]  # fmt: skip
    assert count_parameters(net) == 61_706


def test_keras_summary_as_seed_002_prints_it():
    rows = [r for r in summarize(create_model("lenet5-keras")).layers if r.type not in ("Sigmoid", "ClippedLog")]
    # Keras prints NHWC, (None, 24, 24, 6); torch is NCHW.
    assert [(r.output_shape[1:], r.params) for r in rows] == [
        ([6, 24, 24], 156), ([6, 12, 12], 0), ([16, 8, 8], 2416), ([16, 4, 4], 0), ([256], 0),
        ([120], 30840), ([84], 10164), ([10], 850),
    ]  # fmt: skip
    assert count_parameters(create_model("lenet5-keras")) == 44_426


def test_keras_loss_arithmetic():
    """Keras: clip sigmoid outputs to [1e-7, 1-1e-7], log, softmax cross-entropy = -log(p_y / sum p)."""
    p = torch.tensor([[0.9, 0.5, 1.0, 0.0]])
    logits = ClippedLog()(p)
    loss = nn.functional.cross_entropy(logits, torch.tensor([0]))
    clipped = p.clamp(1e-7, 1 - 1e-7)
    assert loss.item() == pytest.approx(-torch.log(clipped[0, 0] / clipped.sum()).item(), rel=1e-6)


def test_tutorial_parameters_as_seed_003_prints_them():
    params = list(create_model("lenet5-tutorial").parameters())
    assert len(params) == 10 and list(params[0].size()) == [6, 1, 5, 5]
    assert model_spec("lenet5-tutorial").input_size == 32


def test_community_net_has_no_activations():
    net = create_model("lenet-community")
    kinds = {type(m) for m in net.modules()} - {type(net)}
    assert kinds == {nn.Conv2d, nn.MaxPool2d, nn.Flatten, nn.Linear}
    assert net.conv1.kernel_size == (3, 3) and net.conv1.padding == (1, 1)


def test_tf1_cnn_shapes_and_init():
    net = create_model("cnn-tf1")
    shapes = {r.name: r.output_shape for r in summarize(net).layers}
    assert shapes["pool2"] == [1, 64, 7, 7] and shapes["fc1"] == [1, 1024]
    w = net.fc1.weight
    assert w.abs().max() <= 0.2 and 0.07 < w.std() < 0.095  # truncated at 2 std of 0.1
    assert torch.all(net.fc1.bias == 0.1)


def test_modern_is_lenet5_sized():
    assert count_parameters(create_model("lenet5-modern")) <= 62_000
    assert count_parameters(create_model("lenet5-modern", batch_norm=False)) <= 62_000


def test_init_schemes():
    torch.manual_seed(0)
    net = init_weights(create_model("lenet5-mxnet"), "glorot")
    assert torch.all(net.fc1.bias == 0)
    bound = (6 / (256 + 120)) ** 0.5
    assert net.fc1.weight.abs().max() <= bound and net.fc1.weight.abs().max() > 0.9 * bound
    xavier = init_weights(create_model("lenet5-d2l"), "xavier")
    assert xavier.fc1.bias.abs().max() > 0  # d2l leaves biases as PyTorch made them
    with pytest.raises(LenetError):
        init_weights(net, "he")


@pytest.mark.parametrize("name", list_models())
def test_every_model_trains_and_exports(name):
    torch.manual_seed(0)
    model = create_model(name)
    size = model_spec(name).input_size
    x = torch.randn(3, 1, size, size)
    out = model(x)
    assert out.shape == (3, 10) and torch.isfinite(out).all()
    out.logsumexp(1).sum().backward()
    for pname, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and torch.isfinite(p.grad).all(), pname
    model.eval()
    exported = torch.export.export(model, (x,))
    assert torch.allclose(exported.module()(x), model(x), atol=1e-6)


def test_models_and_inspect_commands(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name in SEED_MODELS:
        assert name in out
    assert "61,706" in out and "44,426" in out

    assert main(["inspect", "lenet5-d2l"]) == 0
    out = capsys.readouterr().out
    for shape in (
        "[1, 6, 28, 28]",
        "[1, 6, 14, 14]",
        "[1, 16, 10, 10]",
        "[1, 16, 5, 5]",
        "[1, 400]",
        "[1, 84]",
    ):
        assert shape in out
    assert "total params: 61,706" in out

    assert main(["inspect", "lenet5-keras", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert [r["params"] for r in info["layers"] if r["params"]] == [156, 2416, 30840, 10164, 850]
    assert info["params"] == 44_426 and info["flops_per_sample"] > 0

    assert main(["inspect", "lenet5-d2l", "--input-size", "32", "--json"]) == 2  # 32x32 does not fit fc1
    assert "error:" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------------------
# The chapter's exercises as model options (d2l 6.6: max pooling, ReLU, kernel sizes, channels, layers)

CLASSIC = ["lenet5-d2l", "lenet5-mxnet", "lenet5-keras", "lenet5-tutorial", "lenet-community", "lenet5-modern"]


@pytest.mark.parametrize(
    "options,changed",
    [
        ({"activation": "relu", "pooling": "max"}, {"act1": nn.ReLU, "pool1": nn.MaxPool2d, "act3": nn.ReLU}),
        ({"activation": "tanh"}, {"act2": nn.Tanh, "act4": nn.Tanh}),
        ({"kernel_size": 3}, {"conv1": (3, 1), "conv2": (3, 0)}),  # conv1 stays padded to keep 28x28
        ({"kernel_size": [7, 3]}, {"conv1": (7, 3), "conv2": (3, 0)}),
        ({"channels": [16, 32]}, {"conv2": 32, "fc1": ("in", 32 * 5 * 5)}),
        ({"conv_layers": 3}, {"conv3": 32, "fc1": ("in", 32 * 2 * 2)}),  # a third stage: 'same' padding, 5x5 -> 2x2
        ({"conv_layers": 1}, {"fc1": ("in", 6 * 14 * 14)}),
        ({"hidden": [256]}, {"fc1": ("out", 256), "fc2": ("out", 10)}),
        ({"fc_layers": 4}, {"fc3": ("out", 64), "fc4": ("out", 10)}),
        ({"fc_layers": 1}, {"fc1": ("out", 10)}),
    ],
)
def test_d2l_exercises_as_options(options, changed):
    net = create_model("lenet5-d2l", **options)
    assert net(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    layers = dict(net.named_children())
    for name, want in changed.items():
        layer = layers[name]
        if isinstance(want, type):
            assert type(layer) is want, name
        elif isinstance(layer, nn.Conv2d) and isinstance(want, tuple):
            assert (layer.kernel_size[0], layer.padding[0]) == want, name
        elif isinstance(layer, nn.Conv2d):
            assert layer.out_channels == want, name
        else:
            side, n = want
            assert (layer.in_features if side == "in" else layer.out_features) == n, name


@pytest.mark.parametrize("name", CLASSIC)
def test_every_classic_lenet_takes_the_options(name):
    size = model_spec(name).input_size
    net = create_model(name, activation="relu", pooling="avg", kernel_size=3, channels=[8, 12], fc_layers=2)
    assert net(torch.rand(2, 1, size, size)).shape == (2, 10)
    assert isinstance(net.act1, nn.ReLU) and isinstance(net.pool2, nn.AvgPool2d) and net.conv2.out_channels == 12


def test_defaults_are_the_seeds_nets_and_options_show_in_the_shapes():
    """No option: the seed's net (parameter counts as the seeds print them); options move the counts."""
    assert [count_parameters(create_model(n)) for n in CLASSIC] == [61_706, 44_426, 44_426, 61_706, 61_610, 61_728]
    assert count_parameters(create_model("lenet5-d2l", kernel_size=3)) == 81_194
    assert create_model("lenet-community", conv_layers=3).conv3.kernel_size == (5, 5)  # its (3, 5) stretched
    assert create_model("lenet5-modern", batch_norm=False).conv1.bias is not None


@pytest.mark.parametrize(
    "options,message",
    [
        ({"activation": "swish"}, "activation 'swish' is not one of sigmoid, relu, tanh, leaky_relu, elu, gelu"),
        ({"pooling": "min"}, "pooling 'min' is not one of avg, max"),
        ({"kernel_size": 0}, "kernel_size takes a whole number from 1 to 28, not 0"),
        ({"kernel_size": [5]}, "kernel_size lists 1 values for 2 layers"),
        ({"kernel_size": "5x5"}, "kernel_size takes a whole number or a list of them, not '5x5'"),
        ({"channels": [6, 16, 32], "conv_layers": 2}, "channels lists 3 values for 2 layers"),
        ({"conv_layers": 5}, "conv_layers takes a whole number from 1 to 4, not 5"),
        ({"conv_layers": 3, "kernel_size": 9}, "conv3 (9x9) leaves 1x1 maps of a 28x28 input, too small to pool"),
        ({"hidden": [0]}, "hidden takes a whole number from 1 to 65536, not 0"),
        ({"fc_layers": True}, "fc_layers takes a whole number from 1 to 4, not True"),
        ({"batch_norm": True}, "model 'lenet5-mxnet' has no option 'batch_norm'; its options: activation, pooling"),
        ({"dropout": 0.5}, "has no option 'dropout'; its options: activation, pooling, kernel_size, channels"),
    ],
)
def test_bad_options_are_one_line_errors_naming_the_option(options, message):
    with pytest.raises(LenetError, match=re.escape(message)):
        create_model("lenet5-mxnet", **options)


def test_fast_path_takes_the_main_exercises():
    """Max pooling, ReLU, other kernel sizes and channel counts stay on the compiled path (two conv stages)."""
    from lenet.fast import match

    for options in ({"activation": "relu", "pooling": "max"}, {"kernel_size": 3}, {"channels": [16, 32]}):
        found = match(create_model("lenet5-d2l", **options))
        assert found is not None and found.linears is not None, options
