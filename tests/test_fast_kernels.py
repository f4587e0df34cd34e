"""Each engine of csrc/, forward and backward on its own, against PyTorch: a failure names the kernel.

  lenet_frontend_forward / _backward   the per-sample front end (conv, batch norm, activation, pool, twice)
  lenet_classifier_step                the per-sample classifier with its loss, from PyTorch's features
  lenet_lanes_forward / lenet_lanes_step   the lane engine: V samples a vector, the whole step
  lenet_reference_step                 csrc/reference.c: the same step in plain loops, what the engines compute
And the interface check, and every shape compiling warning-free with GCC and Clang.
"""

from __future__ import annotations

import copy
import ctypes
import importlib
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from test_fast_nets import NETS, REQUIRE, build, close, front_layers, inputs, kernels_for
from torch import nn

from lenet import fast
from lenet.fast import build as builder
from lenet.fast.kernels import ClassifierParams, InterfaceMismatch, check_interface, ptr
from lenet.fast.step import _params

kernel_module = importlib.import_module("lenet.fast.kernels")  # (lenet.fast.kernels is also the function)
KERNEL_NETS = [n for n in NETS if n not in ("tutorial-module",)]  # (the same front end as lenet5-tutorial's)
CLASSIFIED = [n for n in KERNEL_NETS if n != "cnn-tf1"]


def classifier_params(found) -> tuple[ClassifierParams, list]:
    tensors = [t.detach() if t is not None else None for fc in found.linears for t in (fc.weight, fc.bias)]
    return ClassifierParams(*(ptr(t) for t in tensors)), tensors


@pytest.mark.parametrize("train", [False, True])
@pytest.mark.parametrize("name", KERNEL_NETS)
def test_frontend_forward(name, train):
    model = build(name).train(train)
    k, found = kernels_for(model), fast.match(model)
    x, _ = inputs(model)
    want = front_layers(model)(x).detach()
    norms = found.norms
    prm, _alive = _params(found, 0.0)
    stats = x.new_empty(2 * (found.front.conv1[0] + found.front.conv2[0])) if norms and train else None
    f = x.new_empty(x.shape[0], k.features)
    k.forward(prm, x, bool(norms) and train, True, stats, f)
    close(f, want, f"lenet_frontend_forward ({'training' if train else 'inference'})", rel=1e-5)


@pytest.mark.parametrize("name", KERNEL_NETS)
def test_frontend_backward(name):
    model = build(name)
    k, found = kernels_for(model), fast.match(model)
    x, _ = inputs(model)
    gf = torch.randn(x.shape[0], k.features, generator=torch.Generator().manual_seed(2))
    front = front_layers(model)
    (front(x) * gf).sum().backward()
    train = found.norms is not None
    prm, _alive = _params(found, 0.0)
    stats = x.new_empty(2 * (found.front.conv1[0] + found.front.conv2[0])) if train else None
    k.forward(prm, x, train, True, stats, x.new_empty(x.shape[0], k.features))
    grads = x.new_empty(k.grad_floats)
    k.backward(prm, x, stats, gf, grads, train)
    offset = 0
    for (pname, p), shape in zip(_front_parameters(found), k.grad_shapes, strict=True):
        n = torch.Size(shape).numel()
        if p is not None:
            close(grads[offset : offset + n].view(shape), p.grad, f"lenet_frontend_backward: {pname}")
        offset += n


def _front_parameters(found) -> list[tuple[str, torch.Tensor | None]]:
    norms = found.norms or (None, None)
    named = [("conv1.weight", found.conv1.weight), ("conv1.bias", found.conv1.bias),
             ("conv2.weight", found.conv2.weight), ("conv2.bias", found.conv2.bias)]  # fmt: skip
    if found.norms:
        named += [(f"bn{i + 1}.{a}", getattr(norms[i], a)) for i in range(2) for a in ("weight", "bias")]
    return named


@pytest.mark.parametrize("name", CLASSIFIED)
def test_classifier_step(name):
    model = build(name)
    k, found = kernels_for(model), fast.match(model)
    x, y = inputs(model)
    f = front_layers(model)(x).detach().requires_grad_()
    h = f
    for layer in found.tail:
        h = layer(h)
    loss = nn.functional.cross_entropy(h, y, reduction="sum", label_smoothing=0.1)
    (loss * 0.25).backward()
    cls, _alive = classifier_params(found)
    gf, grads, out = torch.empty_like(f), torch.empty(k.classifier_grad_floats), torch.empty(2)
    assert k.classifier_step(cls, f.detach(), y, 0.1, 0.25, gf, grads, out) == 0
    assert out[0].item() == pytest.approx(loss.item(), rel=1e-5), "lenet_classifier_step: the loss"
    assert out[1].item() == (h.argmax(1) == y).sum().item(), "lenet_classifier_step: the correct count"
    close(gf, f.grad, "lenet_classifier_step: d loss / d features")
    offset = 0
    for i, fc in enumerate(found.linears, start=1):
        for part, p in (("weight", fc.weight), ("bias", fc.bias)):
            n = p.numel() if p is not None else fc.out_features
            if p is not None:
                close(grads[offset : offset + n].view_as(p), p.grad, f"lenet_classifier_step: fc{i}.{part}")
            offset += n


LANE_NETS = [n for n in CLASSIFIED if "modern" not in n and "bn" not in n] + ["lenet5-modern-nobn"]


@pytest.mark.parametrize("name", LANE_NETS)
def test_lanes_forward(name):
    model = build(name)
    k, found = kernels_for(model), fast.match(model)
    assert k.fused, "the lane engine takes classic LeNets without batch norm"
    x, _ = inputs(model)
    prm, _alive = _params(found)
    cls, _kept = classifier_params(found)
    f, z = k.lanes_forward(prm, cls, x)
    want = front_layers(model)(x)
    close(f, want.detach(), "lenet_lanes_forward: the features", rel=1e-5)
    h = want
    for layer in found.tail:
        h = layer(h)
        if layer is found.linears[2]:
            break
    close(z, h.detach(), "lenet_lanes_forward: the last Linear's outputs", rel=1e-5)


@pytest.mark.parametrize("name", LANE_NETS)
@pytest.mark.parametrize("n", [1, 17])
def test_lanes_step(name, n):
    model = build(name)
    k, found = kernels_for(model), fast.match(model)
    x, y = inputs(model, n=n)
    loss = nn.functional.cross_entropy(model(x), y, reduction="sum", label_smoothing=0.1)
    loss.backward()
    prm, _alive = _params(found)
    cls, _kept = classifier_params(found)
    grads, out = torch.empty(k.grad_floats + k.classifier_grad_floats), torch.empty(2)
    assert k.lanes_step(prm, cls, x, y, 0.1, 1.0, grads, out) == 0
    assert out[0].item() == pytest.approx(loss.item(), rel=1e-5), "lenet_lanes_step: the loss"
    offset = 0
    named = _front_parameters(found) + [(f"fc{i}.{a}", getattr(fc, a)) for i, fc in enumerate(found.linears, 1)
                                        for a in ("weight", "bias")]  # fmt: skip
    for pname, p in named:
        n_ = p.numel()
        close(grads[offset : offset + n_].view_as(p), p.grad, f"lenet_lanes_step: {pname}")
        offset += n_


@pytest.mark.parametrize("name", CLASSIFIED)
def test_reference_step(name):
    model = build(name)
    k, found = kernels_for(model), fast.match(model)
    reference = copy.deepcopy(model)  # batch norm's running statistics move in both
    # (seed 1's fourth sample has two of lenet-community's conv2 outputs a rounding apart under a max pool:
    # summed in another order they swap, and the gradient goes to the other one; seed 3 has no such tie)
    x, y = inputs(model, n=9, seed=3)
    loss = nn.functional.cross_entropy(model(x), y, reduction="sum", label_smoothing=0.1)
    (loss * 0.5).backward()
    prm, _alive = _params(fast.match(reference), found.norms[0].momentum if found.norms else 0.0)
    cls, _kept = classifier_params(fast.match(reference))
    grads, out = torch.empty(k.grad_floats + k.classifier_grad_floats), torch.empty(2)
    features = k.reference_step(prm, cls, x, y, 0.1, 0.5, grads, out)
    close(features, front_layers(copy.deepcopy(reference).train())(x).detach(), "lenet_reference_step: features")
    assert out[0].item() == pytest.approx(loss.item(), rel=1e-5), "lenet_reference_step: the loss"
    offset = 0
    named = _front_parameters(found) + [(f"fc{i}.{a}", getattr(fc, a)) for i, fc in enumerate(found.linears, 1)
                                        for a in ("weight", "bias")]  # fmt: skip
    for pname, p in named:
        n = p.numel() if p is not None else 0
        if p is not None:
            close(grads[offset : offset + n].view_as(p), p.grad, f"lenet_reference_step: {pname}")
        offset += n if p is not None else _missing_size(found, pname)
    for key, value in dict(reference.named_buffers()).items():
        if "running" in key:
            close(value, model.get_buffer(key), f"lenet_reference_step: {key}", rel=1e-5)


def _missing_size(found, pname: str) -> int:
    """Floats the kernels keep for an absent parameter (a bias): the layer's outputs."""
    layer = {"conv1": found.conv1, "conv2": found.conv2}.get(pname.split(".")[0])
    if layer is not None:
        return layer.out_channels
    return found.linears[int(pname[2]) - 1].out_features


def test_an_interface_mismatch_is_one_clear_error(monkeypatch):
    """The library describes its interface (struct sizes, argument counts); kernels.py checks it before the
    first call, and a mismatch turns the fast path off with one line saying what differs."""
    model = build("lenet5-d2l")
    k = kernels_for(model)
    description = k.lib.lenet_interface().decode()
    check_interface(description)  # the library and kernels.py agree
    with pytest.raises(InterfaceMismatch, match="interface version is 1 in C but 2"):
        check_interface(description.replace("version=2", "version=1"))
    with pytest.raises(InterfaceMismatch, match="params's size in bytes is 96 in C but 104"):
        check_interface(description.replace("params=104", "params=96"))
    result, args = kernel_module.SIGNATURES["lenet_lanes_step"]
    monkeypatch.setitem(kernel_module.SIGNATURES, "lenet_lanes_step", (result, [*args, ctypes.c_int]))
    fast.kernels.cache_clear()
    try:
        front = fast.match(model).front
        assert fast.kernels(front) is None
        reason = "the kernels' lenet_lanes_step's argument count is 11 in C but 12 in lenet/fast/kernels.py"
        assert fast.unavailable(front) == reason
        assert str(fast.plan(model)) == f"fast path: off ({reason}); training with PyTorch"
    finally:
        fast.kernels.cache_clear()


COMPILERS = ["gcc", "clang"]


@pytest.mark.parametrize("cc", COMPILERS)
def test_every_shape_compiles_without_warnings(cc, tmp_path):
    """-Wall -Wextra -Werror, for every zoo net the kernels take (and the AVX2 build of two, on x86)."""
    if shutil.which(cc) is None:
        (pytest.fail if REQUIRE else pytest.skip)(f"{cc} is not installed")
    zoo = [name for name in NETS if name.startswith(("lenet", "cnn"))]
    builds = [(fast.match(build(name)).front, []) for name in zoo]
    if builder.machine_flags()[0][0].startswith("-march"):
        builds += [(fast.match(build(name)).front, ["-mno-avx512f"]) for name in ("lenet5-d2l", "lenet5-modern")]

    def compile_one(job):
        i, front, extra = job
        folder = tmp_path / f"{i}"
        folder.mkdir()
        (folder / "lenet_config.h").write_text(builder.config_header(front))
        flags = [*builder.BASE_FLAGS, *builder.machine_flags()[0], *extra, "-Wall", "-Wextra", "-Werror", "-O2",
                 "-shared"]  # fmt: skip
        sources = [builder.CSRC / s for s in builder.SOURCES]
        command = builder.compile_command(cc, flags, folder, folder / "lenet.so", sources)
        result = subprocess.run(command, capture_output=True, text=True)
        return front, extra, result.returncode, result.stderr

    jobs = [(i, front, extra) for i, (front, extra) in enumerate(builds)]
    with ThreadPoolExecutor(2) as pool:
        for front, extra, code, stderr in pool.map(compile_one, jobs):
            assert code == 0, f"{cc} {' '.join(extra)} on {front}:\n{stderr[-2000:]}"


@pytest.mark.parametrize("name", ["lenet5-d2l", "lenet5-modern"])
def test_pytorchs_threads_or_our_own_give_the_same_bits(name):
    """The kernels' tasks run on PyTorch's OpenMP threads where it has them, else on a pool of their own
    (csrc/pool.c says why); which ones, and how many, changes no bit."""
    model = build(name)
    k = kernels_for(model)
    x, y = inputs(model, n=75)
    results, threads = [], torch.get_num_threads()
    host = kernel_module.host_openmp()
    try:
        for own, n in ((False, 2), (True, 2), (True, 3), (True, 1)):
            k.lib.lenet_use_host_threads(*((None, None) if own else host))
            torch.set_num_threads(n)
            twin = copy.deepcopy(model)
            loss, correct = fast.training_step(twin, label_smoothing=0.1)(x, y, 1 / 75)
            results.append([loss, correct] + [p.grad.clone() for p in twin.parameters()])
    finally:
        k.lib.lenet_use_host_threads(*host)
        torch.set_num_threads(threads)
    for other in results[1:]:
        assert all(torch.equal(a, b) for a, b in zip(results[0], other, strict=True))
