"""A cache of verified, decoded dataset files: the second run reads the array instead of inflating and hashing.

Inflating, hashing and parsing MNIST's files is a tenth of the `fast` recipe's whole run, and reading the
decoded arrays back a tenth of that (README, Speed and Data). An entry is keyed by the file's identity and
every stat field a change to its bytes moves (device, inode, size, mtime and ctime: ctime cannot be set back
by a user, so even a file rewritten with its old mtime restored is read and verified again), and by the
checksums it was verified against. `lenet data verify` never reads the cache.

Only real datasets are kept (files over CACHE_MIN_BYTES: tests' and users' tiny IDX files are not worth it),
and at most MAX_ENTRIES entries, the least recently used dropped. Any trouble with the cache (unwritable,
full, a damaged entry) means reading the file as if there were none.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path

import numpy as np

from .catalogue import DataFile

CACHE_MIN_BYTES = 1 << 20
MAX_ENTRIES = 16  # MNIST, Fashion-MNIST and KMNIST are 4 files each


def cache_dir() -> Path:
    """$XDG_CACHE_HOME/lenet/decoded (default ~/.cache/lenet/decoded), beside the kernels' cache."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lenet" / "decoded"


def _key(path: Path, spec: DataFile) -> str | None:
    try:
        st = path.stat()
    except OSError:
        return None
    if st.st_size < CACHE_MIN_BYTES:
        return None
    identity = (os.path.realpath(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns,
                spec.name, spec.archive_md5, spec.payload_md5)  # fmt: skip
    return hashlib.sha256(repr(identity).encode()).hexdigest()[:32]


def lookup(path: Path, spec: DataFile) -> tuple[np.ndarray, str] | None:
    """The array and checksum status decoded from `path` before, if it has not changed since."""
    key = _key(path, spec)
    if key is None:
        return None
    for entry in cache_dir().glob(f"{key}-*.npy"):
        try:
            array = np.load(entry, allow_pickle=False)
            os.utime(entry)  # recently used
        except (OSError, ValueError):
            return None
        return array, entry.stem.split("-", 1)[1]
    return None


def store(path: Path, spec: DataFile, array: np.ndarray, status: str) -> None:
    """Keep `array` (decoded from `path`, with its checksum status) for the next run; quietly, or not at all."""
    key = _key(path, spec)
    if key is None:
        return
    folder = cache_dir()
    entry = folder / f"{key}-{status}.npy"
    tmp = folder / f".{entry.name}.{os.getpid()}.tmp"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            np.save(f, array, allow_pickle=False)
        os.replace(tmp, entry)  # a reader never sees half an entry
        entries = sorted(folder.glob("*.npy"), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in entries[MAX_ENTRIES:]:
            old.unlink(missing_ok=True)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()
