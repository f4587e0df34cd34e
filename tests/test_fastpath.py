"""lenet.fast against plain PyTorch: the same forward, the same gradients, the same training steps."""

from __future__ import annotations

import copy
import os
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from torch import nn

from lenet import fast as fastpath
from lenet.config import resolve
from lenet.models import ClippedLog, create_model, init_weights
from lenet.train.loop import make_step
from lenet.train.setup import make_optimizer

# (model, keyword arguments): every activation, both poolings, padded and unpadded, 3x3 and 5x5, 28 and 32
FAMILY = [
    ("lenet5-d2l", {}),  # sigmoid, average pooling, conv1 padded to 28x28
    ("lenet5-mxnet", {}),  # sigmoid, max pooling, unpadded
    ("lenet5-modern", {"batch_norm": False}),  # ReLU, max pooling
    ("lenet5-modern", {}),  # batch norm in training mode
    ("lenet-community", {}),  # no activation, 3x3 first conv
    ("lenet5-tutorial", {}),  # 32x32 input
    ("lenet5-keras", {}),  # Keras' head: sigmoid outputs, clipped log
]


@pytest.fixture(scope="module", autouse=True)
def kernel_cache(tmp_path_factory):
    """Build the kernels into a fresh folder; where they cannot be built, skip saying why, or fail where CI
    expects them (LENET_REQUIRE_FASTPATH=1). test_fast_fallback.py's tests run either way."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
        fastpath.kernels.cache_clear()
        fronts = [fastpath.match(create_model(name, **kwargs)).front for name, kwargs in FAMILY]
        with ThreadPoolExecutor() as pool:  # one compiler per core
            built = list(pool.map(fastpath.kernels, fronts))
        if built[0] is None:
            reason = f"fast path unavailable here: {fastpath.unavailable(fronts[0])}"
            pytest.fail(reason) if os.environ.get("LENET_REQUIRE_FASTPATH") == "1" else pytest.skip(reason)
        yield
    fastpath.kernels.cache_clear()


def build(name: str, kwargs: dict, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = init_weights(create_model(name, **kwargs), "xavier")
    with torch.no_grad():  # batch norm's own initial gamma = 1, beta = 0 would hide half its arithmetic
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)
    return model


def batch(model: nn.Module, n: int = 19, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    size = model.input_size
    return torch.rand(n, 1, size, size, generator=g), torch.randint(0, 10, (n,), generator=g)


@pytest.mark.parametrize("name,kwargs", FAMILY)
def test_forward_and_gradients_match_pytorch(name, kwargs):
    model = build(name, kwargs)
    twin = copy.deepcopy(model)
    forward = fastpath.forward_fn(twin)
    assert forward is not None
    x, y = batch(model)
    reference, fast = model(x), forward(x)
    torch.testing.assert_close(fast, reference, rtol=1e-5, atol=2e-6)
    grads = []
    for out, m in ((reference, model), (fast, twin)):
        nn.functional.cross_entropy(out, y).backward()
        grads.append([p.grad for p in m.parameters()])
    for (pname, _), ref, got in zip(model.named_parameters(), *grads, strict=True):
        scale = ref.abs().max().item()
        assert (got - ref).abs().max().item() <= 1e-5 * scale + 1e-8, pname


def test_batch_norm_running_statistics_and_eval_mode():
    reference = build("lenet5-modern", {})
    model = copy.deepcopy(reference)
    forward = fastpath.forward_fn(model)
    for seed in range(3):  # three training batches: the running statistics move as BatchNorm2d moves them
        x, _ = batch(model, seed=seed)
        reference(x)
        forward(x)
    for name in ("bn1", "bn2"):
        ours, theirs = getattr(model, name), getattr(reference, name)
        torch.testing.assert_close(ours.running_mean, theirs.running_mean, rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(ours.running_var, theirs.running_var, rtol=1e-5, atol=1e-7)
        assert int(ours.num_batches_tracked) == int(theirs.num_batches_tracked) == 3
    model.eval()
    reference.eval()
    x, _ = batch(model, seed=5)
    with torch.no_grad():
        torch.testing.assert_close(forward(x), reference(x), rtol=1e-5, atol=2e-6)


def test_inference_mode_and_thread_counts_agree():
    model = build("lenet5-d2l", {})
    forward = fastpath.forward_fn(model)
    x, _ = batch(model, n=33)
    with torch.inference_mode():
        expected = model(x)
        got = forward(x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=2e-6)
    threads = torch.get_num_threads()
    try:
        outs = []
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            with torch.no_grad():
                outs.append(forward(x))
    finally:
        torch.set_num_threads(threads)
    # the forward is per sample, so the thread count cannot change a single bit of it
    assert all(torch.equal(outs[0], o) for o in outs[1:])


@pytest.mark.parametrize("recipe", ["d2l", "fast", "pytorch-tutorial"])
def test_training_steps_match_the_eager_step(recipe):
    """A few optimiser steps through the fast path land where the plain eager step lands."""
    cfg = resolve(recipe, dataset="mnist")
    assert fastpath.training_step(create_model(cfg.model, **cfg.model_kwargs)) is not None
    torch.manual_seed(0)
    eager_model = init_weights(create_model(cfg.model, **cfg.model_kwargs), cfg.init)
    fast_model = copy.deepcopy(eager_model)
    steps = []
    for model_, fast in ((eager_model, False), (fast_model, True)):
        optimizer = make_optimizer(cfg, model_)
        steps.append(make_step(model_, optimizer, cfg, fast=fast))
    losses = [[], []]
    for i in range(5):
        x, y = batch(eager_model, n=cfg.batch_size, seed=10 + i)
        for k, step in enumerate(steps):
            loss, _ = step(x, y, cfg.batch_size)
            losses[k].append(loss.item())
    assert losses[1] == pytest.approx(losses[0], rel=1e-5)
    for (pname, a), b in zip(eager_model.named_parameters(), fast_model.parameters(), strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6, msg=pname)


def test_unsupported_models_and_inputs_fall_back():
    assert fastpath.forward_fn(create_model("cnn-tf1").double()) is None  # float64 weights
    assert fastpath.match(nn.Sequential(nn.Linear(4, 2))) is None
    model = build("lenet5-d2l", {})
    hooked = copy.deepcopy(model)
    hooked.conv1.register_forward_hook(lambda *_: None)
    assert fastpath.forward_fn(hooked) is None  # a hook on the front end must see its layer run
    forward = fastpath.forward_fn(model)
    x, _ = batch(model)
    wanted = x.clone().requires_grad_()  # an input gradient: only the model itself computes it
    out = forward(wanted)
    out.sum().backward()
    assert wanted.grad is not None
    odd = torch.rand(3, 1, 24, 24)  # not the model's input size: the model's own error, not ours
    with pytest.raises(RuntimeError):
        forward(odd)


def test_evaluate_gives_the_eager_numbers():
    from lenet.data import Split
    from lenet.train.loop import evaluate

    model = build("lenet5-modern", {})
    x, y = batch(model, n=300, seed=7)
    for seed in range(2):  # move the running statistics off their initial values
        model(batch(model, seed=seed)[0])
    got = evaluate(model, Split(x, y), batch_size=128)
    model.eval()
    with torch.no_grad():
        logits = model(x)
    assert got["acc"] * len(y) == (logits.argmax(1) == y).sum().item()
    assert got["loss"] == pytest.approx(nn.functional.cross_entropy(logits, y).item(), rel=1e-5)
    assert model.training is False  # evaluate restored the mode it found


def test_two_forwards_then_backward_recomputes_what_was_overwritten():
    """The activations live in buffers that the next forward refills; an older graph must still be right."""
    model = build("lenet5-d2l", {})
    twin = copy.deepcopy(model)
    forward = fastpath.forward_fn(twin)
    (x1, y1), (x2, _) = batch(model, seed=1), batch(model, seed=2)
    first = forward(x1)
    forward(x2)  # overwrites the buffers first's backward needs
    nn.functional.cross_entropy(first, y1).backward()
    nn.functional.cross_entropy(model(x1), y1).backward()
    for a, b in zip(model.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-4, atol=1e-7)


STEP_FAMILY = [("lenet5-d2l", {}), ("lenet5-mxnet", {}), ("lenet5-modern", {}), ("lenet-community", {}),
               ("lenet5-tutorial", {}), ("lenet5-keras", {})]  # fmt: skip


@pytest.mark.parametrize("name,kwargs", STEP_FAMILY)
@pytest.mark.parametrize("n", [1, 16, 37])
def test_training_step_sets_the_gradients_backward_would(name, kwargs, n):
    model = build(name, kwargs)
    twin = copy.deepcopy(model)
    step = fastpath.training_step(twin, label_smoothing=0.1)
    x, y = batch(model, n=n, seed=3)
    losses = nn.functional.cross_entropy(model(x), y, reduction="none", label_smoothing=0.1)
    (losses.sum() * 0.5).backward()
    loss, correct = step(x, y, 0.5)
    assert loss.item() == pytest.approx(losses.sum().item(), rel=1e-5)
    assert correct.dtype == torch.int64
    for (pname, a), b in zip(model.named_parameters(), twin.parameters(), strict=True):
        assert (b.grad - a.grad).abs().max().item() <= 2e-5 * a.grad.abs().max().item() + 1e-8, pname


def test_the_whole_step_is_one_call_without_batch_norm():
    """Classic LeNets take lenet_step (a vector of samples at a time); batch norm, the forward/backward calls."""
    for name, kwargs in STEP_FAMILY:
        model = create_model(name, **kwargs)
        assert fastpath.kernels(fastpath.match(model).front).fused == (name != "lenet5-modern"), name


@pytest.mark.parametrize("name", ["lenet5-d2l", "lenet5-modern", "lenet5-keras"])
def test_training_step_does_not_depend_on_the_thread_count(name):
    """Bit for bit: resumed runs and runs on other machines must land where uninterrupted ones land."""
    x, y = batch(create_model(name), n=75, seed=4)
    results = []
    threads = torch.get_num_threads()
    try:
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            model = build(name, {})
            loss, correct = fastpath.training_step(model, label_smoothing=0.1)(x, y, 1 / 75)
            results.append([loss, correct] + [p.grad.clone() for p in model.parameters()])
    finally:
        torch.set_num_threads(threads)
    for other in results[1:]:
        assert all(torch.equal(a, b) for a, b in zip(results[0], other, strict=True))


@pytest.mark.parametrize("name,kwargs", [("lenet5-d2l", {}), ("lenet5-modern", {"batch_norm": False}),
                                         ("lenet5-keras", {}), ("lenet5-modern", {})])  # fmt: skip
def test_the_avx2_build_steps_as_pytorch_does(monkeypatch, tmp_path, name, kwargs):
    """AVX2-only CPUs get kernels of 8 floats per vector, blocked for 16 registers: built here on AVX-512 too
    (the lane engine, and with batch norm the per-sample ones)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("LENET_FASTPATH_CFLAGS", "-mno-avx512f")
    fastpath.kernels.cache_clear()
    try:
        model = build(name, kwargs)
        front = fastpath.match(model).front
        k = fastpath.kernels(front)
        if k is None:
            pytest.skip(f"no AVX2 build here: {fastpath.unavailable(front)}")
        assert k.vector_floats == 8 and k.isa == "AVX2" and k.fused == (kwargs != {} or name != "lenet5-modern")
        x, y = batch(model, n=37, seed=8)  # four whole groups of 8 and a partial one
        losses = nn.functional.cross_entropy(model(x), y, reduction="none", label_smoothing=0.1)
        losses.sum().backward()
        threads = torch.get_num_threads()
        results = []
        try:
            for n in (1, 2, 3):
                torch.set_num_threads(n)
                twin = build(name, kwargs)
                loss, correct = fastpath.training_step(twin, label_smoothing=0.1)(x, y, 1.0)
                results.append([loss, correct] + [p.grad.clone() for p in twin.parameters()])
        finally:
            torch.set_num_threads(threads)
        assert results[0][0].item() == pytest.approx(losses.sum().item(), rel=1e-5)
        for (pname, a), got in zip(model.named_parameters(), results[0][2:], strict=True):
            assert (got - a.grad).abs().max().item() <= 2e-5 * a.grad.abs().max().item() + 1e-8, pname
        for other in results[1:]:
            assert all(torch.equal(a, b) for a, b in zip(results[0], other, strict=True))
        forward = fastpath.forward_fn(build(name, kwargs))  # the per-sample kernels, at 8 floats per vector
        with torch.no_grad():
            torch.testing.assert_close(forward(x), model(x), rtol=1e-5, atol=2e-6)
    finally:
        fastpath.kernels.cache_clear()


def test_training_step_follows_parameters_that_move_or_are_not_contiguous():
    model = build("lenet5-d2l", {})
    twin = copy.deepcopy(model)
    step = fastpath.training_step(twin)
    x, y = batch(model, n=20, seed=6)
    for i in range(3):
        if i == 1:  # new storage for one weight, and a transposed (non-contiguous) view for another
            for m in (model, twin):
                m.fc2.weight.data = m.fc2.weight.data * 0.5
                m.fc1.weight.data = m.fc1.weight.data.t().contiguous().t()
        model.zero_grad()
        nn.functional.cross_entropy(model(x), y, reduction="sum").backward()
        step(x, y, 1.0)
        for (pname, a), b in zip(model.named_parameters(), twin.parameters(), strict=True):
            assert (b.grad - a.grad).abs().max().item() <= 2e-5 * a.grad.abs().max().item() + 1e-8, (i, pname)
            with torch.no_grad():  # the same update for both, in place (as an optimiser makes it)
                a -= 0.1 * a.grad
                b -= 0.1 * a.grad


@pytest.mark.parametrize("name", ["lenet5-keras", "lenet5-d2l"])
def test_raw_pixels_saturate_the_sigmoids_as_pytorch_does(name):
    """The Keras recipe feeds 0..255 pixels: pre-activations in the hundreds, far out in sigmoid's tails."""
    model = build(name, {}, seed=3)
    twin = copy.deepcopy(model)
    x, y = batch(model, n=21, seed=5)
    x = x * 255
    model(x).logsumexp(1).sum().backward()
    fused = fastpath.training_step(twin)
    if fused is not None:  # the whole step in C
        fused(x, y, 1.0)
        model.zero_grad()
        nn.functional.cross_entropy(model(x), y, reduction="sum").backward()
    else:  # the front end in C, the classifier in PyTorch
        fastpath.forward_fn(twin)(x).logsumexp(1).sum().backward()
    for (pname, a), b in zip(model.named_parameters(), twin.parameters(), strict=True):
        assert torch.isfinite(b.grad).all(), pname
        assert (b.grad - a.grad).abs().max().item() <= 1e-4 * a.grad.abs().max().item() + 1e-6, pname


def test_training_step_refuses_what_it_cannot_take():
    model = build("lenet5-modern", {})
    step = fastpath.training_step(model)
    x, y = batch(model)
    with pytest.raises(IndexError):
        step(x, y + 10, 1.0)
    model.eval()  # frozen batch norm statistics: the eager path's business
    assert step(x, y, 1.0) is None
    model.train()
    assert step(x.double(), y, 1.0) is None
    assert step(x, y.int(), 1.0) is None
    half_head = nn.Sequential(*create_model("lenet5-mxnet"), nn.Sigmoid())  # sigmoid outputs as logits
    assert fastpath.match(half_head).linears is None


def test_keras_head_clips_as_pytorch_does():
    """Outputs clamped at both ends get no gradient, one exactly at the upper bound does; clamped ties in the
    correct count go to the first class, as argmax does."""
    model = build("lenet5-keras", {})
    with torch.no_grad():  # z = bias alone for classes 0-3: sigmoid 1.0, 1.0 (a tie), exactly 1 - 2^-23, ~2e-9
        model.fc3.weight[:4] = 0.0
        model.fc3.bias[:4] = torch.tensor([20.0, 20.0, 15.95, -20.0])
    assert torch.sigmoid(torch.tensor(15.95)).item() == torch.tensor(1 - 1e-7).item()
    twin, exact = copy.deepcopy(model), copy.deepcopy(model).double()
    x, y = batch(model, n=37, seed=9)
    y[::2] = 1  # the second of the tied classes: wrong for argmax
    y[1::4] = 0
    out = model(x)
    nn.functional.cross_entropy(out, y, reduction="sum").backward()
    loss, correct = fastpath.training_step(twin)(x, y, 1.0)
    assert correct.item() == (out.argmax(1) == y).sum().item() == (y == 0).sum().item()
    assert loss.item() == pytest.approx(nn.functional.cross_entropy(out, y, reduction="sum").item(), rel=1e-5)
    for m in (model, twin):
        assert (m.fc3.bias.grad[[0, 1, 3]] == 0).all() and m.fc3.bias.grad[2] != 0, m
    # float32 autograd loses ~1e-3 of the convolutions' small gradients here to cancellation: compare with float64
    nn.functional.cross_entropy(exact(x.double()), y, reduction="sum").backward()
    for (pname, a), b in zip(exact.named_parameters(), twin.parameters(), strict=True):
        assert (b.grad - a.grad).abs().max().item() <= 2e-5 * a.grad.abs().max().item() + 1e-8, pname


def test_keras_head_with_batch_norm_steps_as_pytorch_does():
    """The per-sample classifier takes Keras' head too (sigmoid outputs, clipped log), so batch norm nets with it
    train in C."""
    torch.manual_seed(0)
    model = nn.Sequential(*build("lenet5-modern", {}), nn.Sigmoid(), ClippedLog())
    twin = copy.deepcopy(model)
    step = fastpath.training_step(twin, label_smoothing=0.1)
    assert step is not None and not step.k.fused
    x, y = torch.rand(37, 1, 28, 28), torch.randint(0, 10, (37,))
    losses = nn.functional.cross_entropy(model(x), y, reduction="none", label_smoothing=0.1)
    losses.sum().backward()
    loss, _ = step(x, y, 1.0)
    assert loss.item() == pytest.approx(losses.sum().item(), rel=1e-5)
    for (pname, a), b in zip(model.named_parameters(), twin.parameters(), strict=True):
        assert (b.grad - a.grad).abs().max().item() <= 2e-5 * a.grad.abs().max().item() + 1e-8, pname
