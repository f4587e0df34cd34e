"""Compiling the C kernels for one network shape with the system's C compiler, cached on disk.

LENET_FASTPATH_CFLAGS, for testing and diagnosis: extra compiler flags, appended to fastpath's own (and part
of the cache key). `LENET_FASTPATH_CFLAGS=-mno-avx512f` builds the AVX2 kernels on an AVX-512 machine.
"""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess
import tempfile
from pathlib import Path

from .match import FrontEnd

SOURCE = Path(__file__).parent / "csrc" / "fastpath.c"


def cache_dir() -> Path:
    """Where compiled kernels are kept: $XDG_CACHE_HOME/lenet/kernels (default ~/.cache/lenet/kernels)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lenet" / "kernels"


def _cpu_signature() -> str:
    """What -march=native depends on, so that a shared cache never hands one CPU another's binary."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor() or platform.machine()


def compile_kernels(front: FrontEnd) -> Path:
    """The shared library for `front`, compiled on first use; raises OSError/CalledProcessError on failure."""
    cc = os.environ.get("CC", "cc")
    flags = ["-O3", "-march=native", "-mprefer-vector-width=512", "-std=gnu11", "-ffp-contract=fast",
             "-fno-math-errno", "-fno-trapping-math", "-fPIC", "-shared", "-fopenmp"]  # fmt: skip
    flags += os.environ.get("LENET_FASTPATH_CFLAGS", "").split()
    defines = [f"-D{k}={v}" for k, v in front.macros.items()]
    source = SOURCE.read_bytes()
    key = hashlib.sha256(
        b"\0".join([source, cc.encode(), " ".join(flags + defines).encode(), _cpu_signature().encode()])
    ).hexdigest()[:20]
    folder = cache_dir()
    lib = folder / f"lenet-{key}.so"
    if lib.is_file():
        return lib
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".lenet-", suffix=".so")
    os.close(fd)
    try:
        portable = [f for f in flags if f not in ("-fopenmp", "-mprefer-vector-width=512")]
        for attempt in (flags, portable, [f for f in portable if f != "-march=native"]):
            command = [cc, *attempt, *defines, str(SOURCE), "-o", tmp]
            result = subprocess.run(command, capture_output=True, text=True)
            if result.returncode == 0:
                os.replace(tmp, lib)
                return lib
        raise OSError(f"{cc} failed: {result.stderr.strip()[-500:]}")
    finally:
        Path(tmp).unlink(missing_ok=True)
