"""The kernels built for ARM64 (NEON, 4 floats a vector) and run under qemu-user, against PyTorch on this machine.

Debian's gcc-aarch64-linux-gnu cross-compiles csrc/ with csrc/driver.c (statically linked) for each classic
net; qemu-aarch64 runs the driver on inputs written here, and what the engines computed (the front end's
forward and backward, the whole training step, the lane engine's forward) is compared with PyTorch, and
between 1 and 3 threads bit for bit. Speed under emulation means nothing: on an ARM machine, `lenet bench`.
"""

from __future__ import annotations

import copy
import shutil
import struct
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from test_fast_nets import CLASSIC, REQUIRE, build, close, front_layers, inputs
from torch import nn

from lenet import fast
from lenet.fast import build as builder

CC, QEMU = "aarch64-linux-gnu-gcc", "qemu-aarch64"
SMOOTHING, SCALE = 0.1, 0.5


@pytest.fixture(scope="module")
def drivers(tmp_path_factory) -> dict[str, Path]:
    """The driver for each classic net, cross-compiled for ARM64 with -Werror (two compilers at a time)."""
    missing = [tool for tool in (CC, QEMU) if shutil.which(tool) is None]
    if missing:
        (pytest.fail if REQUIRE else pytest.skip)(f"not installed: {', '.join(missing)} (apt: gcc-aarch64-linux-gnu "
                                                  "qemu-user)")  # fmt: skip
    root = tmp_path_factory.mktemp("arm")

    def compile_one(name: str) -> tuple[str, Path, subprocess.CompletedProcess]:
        folder = root / name
        folder.mkdir()
        (folder / "lenet_config.h").write_text(builder.config_header(fast.match(build(name)).front))
        flags = [*builder.BASE_FLAGS, "-O2", "-static", "-Wall", "-Wextra", "-Werror"]
        sources = [builder.CSRC / s for s in [*builder.SOURCES, "driver.c"]]
        command = builder.compile_command(CC, flags, folder, folder / "driver", sources)
        return name, folder / "driver", subprocess.run(command, capture_output=True, text=True)

    with ThreadPoolExecutor(2) as pool:
        built = list(pool.map(compile_one, CLASSIC))
    for name, _, result in built:
        assert result.returncode == 0, f"{CC} for {name}:\n{result.stderr[-2000:]}"
    return {name: path for name, path, _ in built}


def _array(t: torch.Tensor | None, fmt: str = "f") -> bytes:
    if t is None:
        return struct.pack("<i", 0)
    values = t.detach().contiguous().view(-1)
    return struct.pack("<i", values.numel()) + values.numpy().astype("<" + fmt).tobytes()


def _run(driver: Path, folder: Path, payload: bytes, threads: int) -> list[torch.Tensor]:
    (folder / "in").write_bytes(payload)
    result = subprocess.run([QEMU, str(driver), str(folder / "in"), str(folder / "out"), str(threads)],
                            capture_output=True, timeout=300)  # fmt: skip
    assert result.returncode == 0, f"the driver failed ({result.returncode}): {result.stderr.decode()[-500:]}"
    assert result.stdout.decode().split() == ["NEON", "4"], "the ARM64 build is not the NEON one"
    data, arrays, at = (folder / "out").read_bytes(), [], 0
    while at < len(data):
        (n,) = struct.unpack_from("<i", data, at)
        chunk = bytearray(data[at + 4 : at + 4 + 4 * n])
        arrays.append(torch.frombuffer(chunk, dtype=torch.float32) if n else torch.empty(0))
        at += 4 + 4 * n
    return arrays


@pytest.mark.parametrize("name", CLASSIC)
def test_neon_kernels_match_pytorch(name, drivers, tmp_path):
    model = build(name)
    found = fast.match(model)
    x, y = inputs(model, n=13)  # three groups of four and one sample
    gf = torch.randn(
        13, found.front.size and front_layers(model)(x).shape[1], generator=torch.Generator().manual_seed(5)
    )
    norms = found.norms
    tensors = [found.conv1.weight, found.conv1.bias, found.conv2.weight, found.conv2.bias]
    if norms:
        tensors += [norms[0].weight, norms[0].bias, norms[1].weight, norms[1].bias]
        tensors += [norms[0].running_mean, norms[0].running_var, norms[1].running_mean, norms[1].running_var]
    else:
        tensors += [None] * 8
    tensors += [t for fc in found.linears for t in (fc.weight, fc.bias)]
    eps, momentum = (norms[0].eps, norms[0].momentum) if norms else (0.0, 0.0)
    payload = struct.pack("<i4f", 13, SMOOTHING, SCALE, eps, momentum) + b"".join(_array(t) for t in tensors)
    payload += _array(x) + _array(gf) + _array(y, "i8")
    got = _run(drivers[name], tmp_path, payload, threads=3)
    again = _run(drivers[name], tmp_path, payload, threads=1)
    assert all(torch.equal(a, b) for a, b in zip(got, again, strict=True)), "NEON: results depend on the thread count"
    f, mean1, var1, mean2, var2, front_grads, step, result, lanes_f, lanes_z = got

    # the front end, forward in training mode (batch statistics) and backward from gf
    reference = copy.deepcopy(model).train()
    features = front_layers(reference)(x)
    close(f.view_as(features), features.detach(), "NEON lenet_frontend_forward", rel=1e-5)
    if norms:
        stats = {"bn1.running_mean": mean1, "bn1.running_var": var1, "bn2.running_mean": mean2, "bn2.running_var": var2}
        for key, value in stats.items():
            close(value, reference.get_buffer(key), f"NEON lenet_frontend_forward: {key}", rel=1e-5)
    (features * gf).sum().backward()
    offset = 0
    for (pname, p), shape in zip(_front_parameters(reference), _front_shapes(found), strict=True):
        n = torch.Size(shape).numel()
        if p is not None:
            close(front_grads[offset : offset + n].view(shape), p.grad, f"NEON lenet_frontend_backward: {pname}")
        offset += n

    # the whole step
    reference = copy.deepcopy(model).train()
    logits = reference(x)
    loss = nn.functional.cross_entropy(logits, y, reduction="sum", label_smoothing=SMOOTHING)
    (loss * SCALE).backward()
    engine = "lenet_lanes_step" if lanes_f.numel() else "lenet_classifier_step and the front end"
    assert result[0].item() == pytest.approx(loss.item(), rel=1e-5), f"NEON {engine}: the loss"
    assert result[1].item() == (logits.argmax(1) == y).sum().item(), f"NEON {engine}: the correct count"
    offset = 0
    for (pname, p), n in zip(_step_parameters(reference, found), _step_sizes(found), strict=True):
        if p is not None:
            close(step[offset : offset + n].view_as(p), p.grad, f"NEON {engine}: {pname}")
        offset += n
    if lanes_f.numel():
        close(lanes_f.view_as(features), features.detach(), "NEON lenet_lanes_forward: the features", rel=1e-5)
        z = features
        for layer in fast.match(reference).tail:
            z = layer(z)
            if layer is fast.match(reference).linears[2]:
                break
        close(lanes_z.view_as(z), z.detach(), "NEON lenet_lanes_forward: the last Linear's outputs", rel=1e-5)


def _front_shapes(found) -> list[tuple[int, ...]]:
    (c1, k1, _), (c2, k2, _) = found.front.conv1, found.front.conv2
    shapes = [(c1, 1, k1, k1), (c1,), (c2, c1, k2, k2), (c2,)]
    return shapes + ([(c1,), (c1,), (c2,), (c2,)] if found.norms else [])


def _front_parameters(reference: nn.Module) -> list[tuple[str, torch.Tensor | None]]:
    found = fast.match(reference)
    named = [("conv1.weight", found.conv1.weight), ("conv1.bias", found.conv1.bias),
             ("conv2.weight", found.conv2.weight), ("conv2.bias", found.conv2.bias)]  # fmt: skip
    if found.norms:
        named += [(f"bn{i + 1}.{a}", getattr(found.norms[i], a)) for i in range(2) for a in ("weight", "bias")]
    return named


def _step_parameters(reference: nn.Module, found) -> list[tuple[str, torch.Tensor | None]]:
    linears = fast.match(reference).linears
    named = [(f"fc{i}.{a}", getattr(fc, a)) for i, fc in enumerate(linears, 1) for a in ("weight", "bias")]
    return _front_parameters(reference) + named


def _step_sizes(found) -> list[int]:
    sizes = [torch.Size(s).numel() for s in _front_shapes(found)]
    for fc in found.linears:
        sizes += [fc.weight.numel(), fc.out_features]
    return sizes
