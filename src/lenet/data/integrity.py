"""Is a file on disk the official data? Checksums of the archive or of its payload, and the verified loaders."""

from __future__ import annotations

import hashlib
import os
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import LenetError
from . import decoded
from .catalogue import DataFile, DatasetInfo, get_dataset_info, resolve_root
from .idx import GZIP_MAGIC, check_size, parse_header, read_idx_bytes


@dataclass(frozen=True)
class Checked:
    """What a file on disk is, once verified: its parsed array and how its checksum matched."""

    path: Path
    array: np.ndarray
    status: str  # "archive" (official .gz bytes), "payload" (official data, re-compressed), "mismatch", "unknown"


INFLATE_CHUNK = 1 << 22  # bytes inflated at a time


def payload_bytes(blob: bytes, path: Path) -> bytes | bytearray:
    """The IDX payload of a file's bytes, gunzipped if need be, but never further than its header claims.

    A few kB of gzip can inflate to gigabytes; one byte past the claimed size is enough to tell it lies. The
    payload grows chunk by chunk into one buffer, which the parsed array then shares (no second copy).
    """
    if blob[:2] != GZIP_MAGIC:
        return blob
    inflate = zlib.decompressobj(wbits=31)  # 31: one gzip member
    try:
        payload = bytearray(inflate.decompress(blob, 16))
        header_len, dims = parse_header(bytes(payload), path)
        limit = header_len + check_size(dims, path) + 1
        while len(payload) < limit:
            chunk = inflate.decompress(inflate.unconsumed_tail, min(INFLATE_CHUNK, limit - len(payload)))
            if not chunk:
                break
            payload += chunk
    except zlib.error as e:
        raise LenetError(f"{path}: corrupt gzip data ({e})") from None
    if len(payload) < limit and not inflate.eof:
        raise LenetError(f"{path}: corrupt gzip data (the stream is cut short)")
    return payload


def checksum_status(blob: bytes, payload: bytes, spec: DataFile) -> str:
    """'archive' or 'payload' when the bytes are the official data, 'mismatch' when not, 'unknown' if unpublished."""
    if spec.archive_md5 and hashlib.md5(blob).hexdigest() == spec.archive_md5:
        return "archive"
    if spec.payload_md5 and hashlib.md5(payload).hexdigest() == spec.payload_md5:
        return "payload"
    return "mismatch" if spec.archive_md5 or spec.payload_md5 else "unknown"


def locate(info: DatasetInfo, spec: DataFile, root: Path) -> Path | None:
    """The file for `spec` under <root>/<dataset>/: the official .gz name, else its un-gzipped twin."""
    folder = root / info.name
    for candidate in (folder / spec.name, folder / spec.name.removesuffix(".gz")):
        if candidate.is_file():
            return candidate
    return None


def check_file(path: Path, spec: DataFile) -> Checked:
    """Read, checksum and parse one file in a single pass over its bytes."""
    try:
        blob = path.read_bytes()
    except OSError as e:
        raise LenetError(f"{path}: cannot read ({e.strerror})") from None
    payload = payload_bytes(blob, path)
    status = checksum_status(blob, payload, spec)
    return Checked(path, read_idx_bytes(payload, path), status)


def _missing(info: DatasetInfo, spec: DataFile, root: Path) -> LenetError:
    """Where the file should be and how to get it; or, when `root` is the dataset's own folder, its parent."""
    if any((root / name).is_file() for name in (spec.name, spec.name.removesuffix(".gz"))):
        return LenetError(f"{root} is the {info.name} folder itself; the data root is its parent: --root {root.parent}")
    return LenetError(
        f"{info.name}: {spec.name} not found in {root / info.name}; run: lenet data download {info.name} --root {root}"
    )


def load_raw(
    name: str, split: str, root: str | os.PathLike | None = None, verify: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """One split as (uint8 images (N, H, W), int64 labels (N,)), verified against the official checksums.

    With verify=False a file whose checksum does not match is still used, after a one-line warning.
    """
    return load_splits(name, (split,), root, verify)[0]


def load_splits(
    name: str, splits: tuple[str, ...], root: str | os.PathLike | None = None, verify: bool = True
) -> list[tuple[np.ndarray, np.ndarray]]:
    """load_raw for several splits, with one warning line for all the unofficial files among them."""
    info, root = get_dataset_info(name), resolve_root(root)
    unofficial: list[Path] = []
    loaded = [_load_split(info, split, root, verify, unofficial) for split in splits]
    if unofficial:
        files = "its file" if len(unofficial) == 1 else f"{len(unofficial)} of its files"
        print(f"warning: {root / info.name}: {files} are not the official {info.name} ones (checksums differ); "
              "using them as asked", file=sys.stderr)  # fmt: skip
    return loaded


def _checked_files(info: DatasetInfo, split: str, root: Path, cached: bool) -> list[tuple[Path, DataFile, Checked]]:
    """The split's files (images, then labels), found under `root`, read and checked (or, if `cached`, as they
    were read and checked by an earlier run, when they have not changed since)."""
    found = []
    for spec in info.split_files(split):
        path = locate(info, spec, root)
        if path is None:
            raise _missing(info, spec, root)
        hit = decoded.lookup(path, spec) if cached else None
        if hit is not None:
            checked = Checked(path, *hit)
        else:
            checked = check_file(path, spec)
            if cached:
                decoded.store(path, spec, checked.array, checked.status)
        found.append((path, spec, checked))
    return found


def _load_split(info: DatasetInfo, split: str, root: Path, verify: bool, unofficial: list[Path]):
    arrays = []
    for path, spec, checked in _checked_files(info, split, root, cached=True):
        if checked.status == "mismatch":
            if verify:
                raise LenetError(
                    f"{path}: checksum does not match the official {info.name} {spec.name}; "
                    "re-download it, or pass --no-verify to use it anyway"
                )
            unofficial.append(path)
        arrays.append(checked.array)
    images, labels = arrays
    if images.ndim != 3 or labels.ndim != 1:
        raise LenetError(f"{info.name} {split}: expected 3-d images and 1-d labels, got {images.shape}, {labels.shape}")
    if len(images) != len(labels):
        raise LenetError(f"{info.name} {split}: {len(images):,} images but {len(labels):,} labels")
    if labels.size and labels.max() >= len(info.classes):
        raise LenetError(f"{info.name} {split}: label {labels.max()} out of range for {len(info.classes)} classes")
    return images, labels.astype(np.int64)


def verify(name: str, root: str | os.PathLike | None = None) -> dict:
    """A report on a dataset on disk: per file its path, shape and checksum status; per split counts and balance."""
    info, root = get_dataset_info(name), resolve_root(root)
    files, splits = [], {}
    for split in ("train", "test"):
        found = _checked_files(info, split, root, cached=False)  # verify: always the files themselves
        files += [{"file": str(path), "shape": list(c.array.shape), "checksum": c.status} for path, _, c in found]
        images, labels = (c.array for _, _, c in found)
        splits[split] = {
            "images": len(images),
            "labels": len(labels),
            "image_shape": list(images.shape[1:]),
            "class_counts": np.bincount(labels, minlength=len(info.classes)).tolist(),
        }
    official = all(f["checksum"] in ("archive", "payload") for f in files)
    return {"dataset": name, "root": str(root), "files": files, "splits": splits, "official": official}
