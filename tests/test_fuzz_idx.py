"""Fuzzing the IDX readers: any bytes give a LenetError or exactly the array a reference parser reads.

Both readers are checked: read_idx (streams a file) and check_file (the in-memory path that training and
verification use). Derandomized, so a CI run is repeatable.
"""

from __future__ import annotations

import gzip
import math
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lenet.data import MAX_PAYLOAD_BYTES, DataFile, check_file, read_idx
from lenet.errors import LenetError

FUZZ = settings(max_examples=400, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])


def reference(raw: bytes) -> np.ndarray | None:
    """What an uncompressed IDX payload holds by the format's rules (ubyte, 1 or 3 dims); None if invalid."""
    if len(raw) < 4 or raw[:3] != b"\x00\x00\x08" or raw[3] not in (1, 3):
        return None
    ndim = raw[3]
    if len(raw) < 4 + 4 * ndim:
        return None
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    if max(math.prod(dims), *dims) > MAX_PAYLOAD_BYTES:  # a header claiming more than 2 GiB lies
        return None
    if len(raw) - 4 - 4 * ndim != math.prod(dims):
        return None
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


@st.composite
def idx_like(draw) -> bytes:
    """Mostly well-formed IDX payloads with one thing possibly off: magic, a dimension, the data's length."""
    ndim = draw(st.sampled_from([1, 3]))
    dims = draw(st.lists(st.integers(0, 6) | st.sampled_from([2**31, 2**32 - 1]), min_size=ndim, max_size=ndim))
    magic = draw(st.sampled_from([b"\x00\x00\x08" + bytes([ndim])]) | st.binary(min_size=4, max_size=4))
    size = math.prod(dims) if math.prod(dims) < 1000 else draw(st.integers(0, 50))
    size = max(0, size + draw(st.sampled_from([0, 0, 0, -1, 1, 7])))
    raw = magic + b"".join(d.to_bytes(4, "big") for d in dims) + draw(st.binary(min_size=size, max_size=size))
    return raw[: draw(st.integers(0, len(raw)))] if draw(st.booleans()) and draw(st.booleans()) else raw


@st.composite
def files(draw) -> tuple[bytes, np.ndarray | None]:
    """A file's bytes, plain or gzipped (perhaps cut short), and what a correct reader must return."""
    raw = draw(idx_like() | st.binary(max_size=64))
    expected = reference(raw)
    if draw(st.booleans()) and raw[:2] != b"\x1f\x8b":
        return raw, expected
    blob = gzip.compress(raw, mtime=0)
    cut = draw(st.sampled_from([len(blob), len(blob), len(blob) - 1, len(blob) - 8, len(blob) // 2, 10, 2]))
    return blob[:cut], (expected if cut == len(blob) else None)


@pytest.fixture(scope="module")
def scratch():
    with tempfile.TemporaryDirectory() as folder:
        yield Path(folder) / "f.gz"


def check(read, path: Path, expected: np.ndarray | None) -> None:
    try:
        got = read(path)
    except LenetError as e:
        assert "\n" not in str(e)
        assert expected is None, f"a valid file was refused: {e}"
        return
    assert expected is not None, f"an invalid file was read as {got.shape}"
    assert got.dtype == np.uint8 and got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)


@FUZZ
@given(case=files())
def test_read_idx_gives_the_array_or_a_lenet_error(scratch, case):
    blob, expected = case
    scratch.write_bytes(blob)
    check(read_idx, scratch, expected)


@FUZZ
@given(case=files())
def test_check_file_gives_the_array_or_a_lenet_error(scratch, case):
    blob, expected = case
    scratch.write_bytes(blob)
    check(lambda path: check_file(path, DataFile(path.name, None, None)).array, scratch, expected)
