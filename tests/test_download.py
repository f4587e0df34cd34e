"""Downloads against a real HTTP server on 127.0.0.1: mirrors in order, checksums, no half-written files."""

import gzip
import hashlib
import http.server
import threading
from pathlib import Path

import numpy as np
import pytest

from lenet import data
from lenet.cli import main
from lenet.data import DataFile, DatasetInfo, write_idx
from lenet.errors import LenetError


class Handler(http.server.BaseHTTPRequestHandler):
    """/good/<f> serves the file, /wrong/<f> other bytes, /cut/<f> half of it then hangs up, anything else 404."""

    files: dict[str, bytes] = {}

    def log_message(self, *args):  # keep test output clean
        pass

    def do_GET(self):
        mode, _, name = self.path.strip("/").partition("/")
        body = self.files.get(name)
        if body is None or mode not in ("good", "wrong", "cut"):
            self.send_error(404)
            return
        if mode == "wrong":
            body = gzip.compress(b"\x00\x00\x08\x01" + (3).to_bytes(4, "big") + b"\x01\x02\x03")
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2] if mode == "cut" else body)


@pytest.fixture(scope="module")
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()


@pytest.fixture
def catalogue(monkeypatch, tmp_path):
    """A dataset 'tiny' whose official files are served by the test server."""
    blobs = {}
    specs = []
    for name, array in [
        ("train-images-idx3-ubyte.gz", np.full((6, 28, 28), 7, np.uint8)),
        ("train-labels-idx1-ubyte.gz", np.arange(6, dtype=np.uint8)),
        ("t10k-images-idx3-ubyte.gz", np.full((2, 28, 28), 3, np.uint8)),
        ("t10k-labels-idx1-ubyte.gz", np.array([1, 2], np.uint8)),
    ]:
        path = write_idx(tmp_path / name, array)
        blobs[name] = path.read_bytes()
        payload = gzip.decompress(blobs[name])
        specs.append(DataFile(name, hashlib.md5(blobs[name]).hexdigest(), hashlib.md5(payload).hexdigest()))
        path.unlink()
    Handler.files = blobs
    info = DatasetInfo("tiny", tuple("0123456789"), *specs, mirrors=(), homepage="", mean=0.1, std=0.3)
    monkeypatch.setitem(data.DATASETS, "tiny", info)
    return info


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_download_then_verify(server, catalogue, tmp_path):
    root = tmp_path / "root"
    paths = data.download("tiny", root, mirrors=[f"{server}/good/"], progress=False)
    assert [p.name for p in paths] == [f.name for f in catalogue.files]
    report = data.verify("tiny", root)
    assert report["official"] and report["splits"]["train"]["images"] == 6
    assert all(f["checksum"] == "archive" for f in report["files"])
    # A second download finds the files verified and fetches nothing (the server is not even asked).
    assert data.download("tiny", root, mirrors=["http://127.0.0.1:9/never/"], progress=False) == paths


def test_falls_back_through_mirrors_in_order(server, catalogue, tmp_path, capsys):
    mirrors = [f"{server}/missing/", f"{server}/wrong/", f"{server}/cut/", f"{server}/good/"]
    data.download("tiny", tmp_path, mirrors=mirrors, progress=False)
    err = capsys.readouterr().err
    assert err.index("/missing/") < err.index("/wrong/") < err.index("/cut/") < err.index("/good/")
    assert "404" in err and "checksum mismatch" in err and "connection closed" in err
    assert listing(tmp_path / "tiny") == sorted(f.name for f in catalogue.files)  # no .part files left


def test_no_good_mirror_leaves_nothing_that_looks_complete(server, catalogue, tmp_path):
    with pytest.raises(LenetError, match="could not download train-images-idx3-ubyte.gz from any mirror"):
        data.download("tiny", tmp_path, mirrors=[f"{server}/cut/", f"{server}/wrong/"], progress=False)
    assert listing(tmp_path / "tiny") == []


def test_a_corrupt_local_copy_is_replaced(server, catalogue, tmp_path):
    folder = tmp_path / "tiny"
    folder.mkdir()
    (folder / "train-labels-idx1-ubyte.gz").write_bytes(b"garbage")
    data.download("tiny", tmp_path, mirrors=[f"{server}/good/"], progress=False)
    assert data.verify("tiny", tmp_path)["official"]


def test_cli_download_and_verify(server, catalogue, tmp_path, capsys):
    assert main(["data", "download", "tiny", "--root", str(tmp_path), "--mirror", f"{server}/good/"]) == 0
    assert main(["data", "verify", "tiny", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "train: 6 images (28, 28)" in out and "official checksums" in out
