"""Downloads: mirrors in order, a temporary file, the checksum, then an atomic rename."""

from __future__ import annotations

import http.client
import os
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from ..errors import LenetError
from .catalogue import DataFile, DatasetInfo, get_dataset_info, resolve_root
from .integrity import check_file, checksum_status, locate, payload_bytes


def _fetch(url: str, dest: Path, timeout: float, progress: bool) -> None:
    with urllib.request.urlopen(url, timeout=timeout) as response, open(dest, "wb") as out:
        total = int(response.headers.get("Content-Length") or 0)
        done, last = 0, 0.0
        while chunk := response.read(1 << 16):
            out.write(chunk)
            done += len(chunk)
            if progress and time.monotonic() - last > 0.2:
                last = time.monotonic()
                pct = f"{100 * done / total:5.1f}% " if total else ""
                print(f"\r  {pct}{done / 1e6:.1f} MB", end="", file=sys.stderr, flush=True)
        if total and done != total:
            raise OSError(f"connection closed after {done:,} of {total:,} bytes")
        out.flush()
        os.fsync(out.fileno())
    if progress:
        print(file=sys.stderr)


def download_file(
    info: DatasetInfo, spec: DataFile, folder: Path, mirrors: Sequence[str], timeout: float, progress: bool
) -> Path:
    """Fetch one file from the first mirror that serves the right bytes; the file appears only once verified."""
    dest = folder / spec.name
    errors = []
    for base in mirrors:
        url = base.rstrip("/") + "/" + spec.name
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{spec.name}.", suffix=".part")
        os.close(fd)
        tmp = Path(tmp)
        try:
            print(f"downloading {url}", file=sys.stderr)
            _fetch(url, tmp, timeout, progress)
            blob = tmp.read_bytes()
            status = checksum_status(blob, payload_bytes(blob, tmp), spec)
            if status == "mismatch":
                raise OSError("checksum mismatch: the mirror served other data")
            os.replace(tmp, dest)
            return dest
        except (OSError, http.client.HTTPException, LenetError, ValueError) as e:
            if isinstance(e, urllib.error.HTTPError):
                reason = f"HTTP {e.code} {e.reason}"
            else:
                reason = getattr(e, "reason", None) or e
            print(f"  failed: {reason}", file=sys.stderr)
            errors.append(f"{url}: {reason}")
        finally:
            tmp.unlink(missing_ok=True)
    raise LenetError(f"{info.name}: could not download {spec.name} from any mirror ({'; '.join(errors)})")


def download(
    name: str,
    root: str | os.PathLike | None = None,
    mirrors: Sequence[str] | None = None,
    timeout: float = 30.0,
    progress: bool = True,
    force: bool = False,
) -> list[Path]:
    """Download a dataset's four files into <root>/<name>/, skipping files already present and verified."""
    info, root = get_dataset_info(name), resolve_root(root)
    folder = root / info.name
    if not folder.is_dir() and any((root / spec.name).is_file() for spec in info.files):
        raise LenetError(f"{root} is the {info.name} folder itself; the data root is its parent: --root {root.parent}")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise LenetError(f"{folder}: cannot create the data folder ({e.strerror})") from None
    if not os.access(folder, os.W_OK):
        raise LenetError(f"{folder}: data folder is not writable")
    paths = []
    for spec in info.files:
        existing = locate(info, spec, root)
        if existing and not force:
            try:
                if check_file(existing, spec).status != "mismatch":
                    print(f"{existing}: present and verified", file=sys.stderr)
                    paths.append(existing)
                    continue
            except LenetError:
                pass  # corrupt: download it again
        paths.append(download_file(info, spec, folder, mirrors or info.mirrors, timeout, progress))
    return paths
