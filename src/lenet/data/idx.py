"""The IDX format: magic (0, 0, dtype, ndim), then ndim big-endian uint32 sizes, then the payload.

The reader checks the header against the file's length before allocating anything.
"""

from __future__ import annotations

import gzip
import math
import os
import zlib
from pathlib import Path

import numpy as np

from ..errors import LenetError

IDX_UBYTE = 0x08
IDX_LABELS_MAGIC = 2049  # 0x00000801: ubyte, 1 dimension
IDX_IMAGES_MAGIC = 2051  # 0x00000803: ubyte, 3 dimensions
MAX_PAYLOAD_BYTES = 1 << 31  # 2 GiB: 40x MNIST's training images; a header claiming more is lying
GZIP_MAGIC = b"\x1f\x8b"


def parse_header(head: bytes, path: Path) -> tuple[int, tuple[int, ...]]:
    """(header length, dims) from the first bytes of an IDX payload; raise on anything off."""
    if len(head) == 0:
        raise LenetError(f"{path}: empty file")
    if len(head) < 4:
        raise LenetError(f"{path}: not an IDX file (only {len(head)} bytes)")
    zero, dtype, ndim = int.from_bytes(head[:2], "big"), head[2], head[3]
    magic = int.from_bytes(head[:4], "big")
    if zero != 0 or dtype != IDX_UBYTE or magic not in (IDX_LABELS_MAGIC, IDX_IMAGES_MAGIC):
        raise LenetError(f"{path}: not an MNIST-style IDX file (magic 0x{magic:08x}; expected 2049 or 2051)")
    header_len = 4 + 4 * ndim
    if len(head) < header_len:
        raise LenetError(f"{path}: truncated IDX header ({len(head)} of {header_len} bytes)")
    dims = tuple(int.from_bytes(head[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return header_len, dims


def check_size(dims: tuple[int, ...], path: Path) -> int:
    size = math.prod(dims)
    if size > MAX_PAYLOAD_BYTES or max(dims, default=0) > MAX_PAYLOAD_BYTES:  # (0, 2^32-1, 2^32-1) lies too
        raise LenetError(f"{path}: IDX header claims {dims} = {size:,} bytes, more than any MNIST-style file")
    return size


def read_idx_bytes(raw: bytes | bytearray, path: Path) -> np.ndarray:
    """Parse an uncompressed IDX payload (already in memory) into a uint8 array of the header's shape (sharing
    a bytearray's memory; copying bytes, which are read-only)."""
    header_len, dims = parse_header(raw[:16], path)
    size = check_size(dims, path)
    have = len(raw) - header_len
    if have < size:
        raise LenetError(f"{path}: truncated: header {dims} needs {size:,} data bytes, file has {have:,}")
    if have > size:
        raise LenetError(f"{path}: {have - size:,} bytes after the data that header {dims} describes")
    array = np.frombuffer(raw, dtype=np.uint8, offset=header_len).reshape(dims)
    return array if isinstance(raw, bytearray) else array.copy()  # writable either way


def _open_payload(path: Path):
    """A binary stream of the IDX payload: gunzipped when the file starts with the gzip magic."""
    f = open(path, "rb")  # noqa: SIM115 - returned to the caller's `with`
    magic = f.read(2)
    f.seek(0)
    return gzip.GzipFile(fileobj=f, mode="rb") if magic == GZIP_MAGIC else f


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (plain or gzipped) into a uint8 array, checking the header against the data.

    The header is checked before anything is allocated: a file that claims billions of items fails at once,
    and the payload of a gzipped file is read in chunks, so a lying header costs only the bytes really there.
    """
    path = Path(path)
    if not path.is_file():
        raise LenetError(f"{path}: no such file")
    try:
        with _open_payload(path) as f:
            head = f.read(16)
            header_len, dims = parse_header(head, path)
            size = check_size(dims, path)
            if not isinstance(f, gzip.GzipFile):
                have = path.stat().st_size - header_len
                if have < size:
                    raise LenetError(f"{path}: truncated: header {dims} needs {size:,} data bytes, file has {have:,}")
            data = bytearray(head[header_len:])
            while len(data) <= size:  # read one byte past the end to catch trailing garbage
                chunk = f.read(min(1 << 22, size + 1 - len(data)))
                if not chunk:
                    break
                data += chunk
    except (OSError, EOFError, zlib.error) as e:
        raise LenetError(f"{path}: unreadable or corrupt gzip data ({e.__class__.__name__}: {e})") from None
    if len(data) < size:
        raise LenetError(f"{path}: truncated: header {dims} needs {size:,} data bytes, file has {len(data):,}")
    if len(data) > size:
        raise LenetError(f"{path}: more bytes after the data than header {dims} describes")
    return np.frombuffer(data, dtype=np.uint8).reshape(dims)  # a bytearray: writable, no copy


def write_idx(path: str | os.PathLike, array: np.ndarray, compress: bool | None = None) -> Path:
    """Write a uint8 array as an IDX file (gzipped when the name ends in .gz); tests and tools use it."""
    path = Path(path)
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, IDX_UBYTE, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    payload = header + array.tobytes()
    if compress if compress is not None else path.suffix == ".gz":
        payload = gzip.compress(payload, mtime=0)
    path.write_bytes(payload)
    return path
