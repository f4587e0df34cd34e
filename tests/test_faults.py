"""The hostile-input catalogue: each case gets one line on stderr (no traceback), exit 2, and changes no file.

Cases run in-process through lenet.cli.main; a subprocess only where a file-size limit is needed.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import http.server
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time
import tracemalloc
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from lenet import data
from lenet.cli import main
from lenet.data import DataFile, read_idx
from lenet.errors import LenetError
from lenet.models import create_model
from lenet.train.checkpoint import CHECKPOINT, CONFIG, WEIGHTS

TRAIN_IMAGES, TRAIN_LABELS = "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"
TINY = ["--dataset", "mnist", "--recipe", "community", "--batch-size", "100"]


def snapshot(*folders: Path) -> dict[str, str]:
    """Every file and folder under `folders`: a file's sha256, or 'folder'."""
    return {
        str(p): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "folder"
        for folder in folders
        for p in sorted(folder.rglob("*"))
    }


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    """main(argv)'s exit status (argparse's too) and what it wrote to stderr."""
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err


def assert_one_line(err: str, expected: str, progress: tuple[str, ...] = ()) -> None:
    """One error line containing `expected`; besides it only progress lines starting with `progress`."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line and not line.lstrip().startswith(progress or "\0")]
    assert len(lines) == 1, err
    assert "error: " in lines[0] and expected in lines[0], err


@pytest.fixture
def root(fake_root, tmp_path) -> Path:
    """A private copy of the generated MNIST, to break."""
    shutil.copytree(fake_root / "mnist", tmp_path / "data" / "mnist")
    return tmp_path / "data"


@pytest.fixture(scope="module")
def trained_run(fake_root, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("trained") / "run"
    argv = ["train", *TINY, "--root", str(fake_root), "--no-verify", "--epochs", "2", "--out", str(out)]
    assert main(argv) == 0
    return out


def gz(raw: bytes) -> bytes:
    return gzip.compress(raw, mtime=0)


def header(*dims: int) -> bytes:
    return bytes([0, 0, 8, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims)


def train(root: Path, *extra: str) -> list[str]:
    return ["train", *TINY, "--root", str(root), "--no-verify", "--epochs", "1", *extra]


# ----------------------------------------------------------------------------------------------------------
# The catalogue: (setup(tmp, root, run) -> argv, the words the error line must contain)


def broken_file(name: str, content: Callable[[bytes], bytes], *extra: str):
    """A case: file `name` of the copy replaced by content(its current bytes), then `lenet train`."""

    def setup(tmp: Path, root: Path, run: Path) -> list[str]:
        path = root / "mnist" / name
        path.write_bytes(content(path.read_bytes()))
        return train(root, *extra)

    return setup


def payload(name: str, change: Callable[[bytes], bytes], compress: bool = True):
    """A case: file `name` of the copy holding change(its IDX payload), gzipped or not, then `lenet train`."""
    return broken_file(name, lambda b: (gz if compress else bytes)(change(gzip.decompress(b))))


def copied_run(change: Callable[[Path], None], *argv: str):
    """A case: a copy of the trained run, changed, then `lenet <argv> RUN` ({run} and {root} filled in)."""

    def setup(tmp: Path, root: Path, run: Path) -> list[str]:
        copy = tmp / "run"
        shutil.copytree(run, copy)
        change(copy)
        return [a.format(run=copy, root=root) for a in argv]

    return setup


def weights_of(model: str) -> Callable[[Path], None]:
    def change(run: Path) -> None:
        metadata = {"model": "lenet-community", "config": (run / CONFIG).read_text()}
        state = {k: v.contiguous() for k, v in create_model(model).state_dict().items()}
        save_file(state, run / WEIGHTS, metadata=metadata)

    return change


def checkpoint_of(model: str) -> Callable[[Path], None]:
    def change(run: Path) -> None:
        ckpt = torch.load(run / CHECKPOINT, weights_only=True)
        ckpt["model"] = create_model(model).state_dict()
        ckpt["epoch"], ckpt["step"] = 1, 6
        torch.save(ckpt, run / CHECKPOINT)

    return change


def cut(n: int) -> Callable[[Path], None]:
    return lambda run: (run / CHECKPOINT).write_bytes((run / CHECKPOINT).read_bytes()[:n])


def plain(argv: list[str]):
    return lambda tmp, root, run: [a.format(tmp=tmp, root=root) for a in argv]


def unfinished(run: Path) -> None:
    (run / "summary.json").unlink()


def config(text: str) -> Callable[[Path], None]:
    """A run that has only its config.json (it stopped before its first checkpoint), holding `text`."""

    def change(run: Path) -> None:
        (run / CHECKPOINT).unlink()
        (run / CONFIG).write_text(text)

    return change


RESUME = ["train", "--resume", "{run}", "--root", "{root}", "--no-verify"]
EVAL = ["eval", "{run}", "--root", "{root}", "--no-verify"]
TRAIN = ["train", *TINY, "--root", "{root}", "--no-verify"]
REGULAR_FILE = "{tmp}/data/mnist/" + TRAIN_LABELS

BILLIONS = "more than any MNIST-style file"
CASES = {
    # IDX files
    "truncated gzip stream": (broken_file(TRAIN_IMAGES, lambda b: b[: len(b) // 2]), "corrupt gzip"),
    "truncated plain file": (payload(TRAIN_IMAGES, lambda p: p[:5000], compress=False), "truncated"),
    "wrong magic": (payload(TRAIN_IMAGES, lambda p: b"\x00\x00\x08\x07" + p[4:]), "magic 0x00000807"),
    "lying header: more than the data": (
        payload(TRAIN_IMAGES, lambda p: header(601, 28, 28) + p[16:]),
        "truncated",
    ),
    "lying header: less than the data": (
        payload(TRAIN_IMAGES, lambda p: header(599, 28, 28) + p[16:]),
        "after the",
    ),
    "empty file": (broken_file(TRAIN_LABELS, lambda b: b""), "empty file"),
    "empty gzip": (payload(TRAIN_LABELS, lambda p: b""), "empty file"),
    "not gzip, not IDX": (
        broken_file(TRAIN_IMAGES, lambda b: b"<html>Not Found</html>"),
        "not an MNIST-style IDX",
    ),
    "gzip magic, then garbage": (broken_file(TRAIN_IMAGES, lambda b: b"\x1f\x8b" + os.urandom(300)), "gzip"),
    "billions of images": (payload(TRAIN_IMAGES, lambda p: header(4_000_000_000, 28, 28) + p[16:]), BILLIONS),
    "2^32-1 in every dimension": (payload(TRAIN_IMAGES, lambda p: header(*[2**32 - 1] * 3), False), BILLIONS),
    "0 images of 2^32-1 x 2^32-1": (
        payload(TRAIN_IMAGES, lambda p: header(0, 2**32 - 1, 2**32 - 1)),
        BILLIONS,
    ),
    "more labels than images": (
        payload(TRAIN_LABELS, lambda p: header(601) + p[8:] + b"\x01"),
        "but 601 labels",
    ),
    "label out of range": (payload(TRAIN_LABELS, lambda p: p[:-1] + b"\xc8"), "label 200 out of range"),
    "labels where images belong": (payload(TRAIN_IMAGES, lambda p: header(600) + bytes(600)), "expected 3-d"),
    "checksum mismatch, no --no-verify": (
        plain(["train", *TINY, "--root", "{root}"]),
        "checksum",
    ),
    "missing file": (plain([*TRAIN, "--dataset", "kmnist"]), "lenet data download kmnist"),
    # The recipe and its flags
    "unknown recipe": (plain(["train", "--recipe", "alexnet"]), "invalid choice: 'alexnet'"),
    "unknown model": (
        plain(["train", "--model", "vgg"]),
        "unknown model 'vgg'; known: lenet5-d2l",
    ),
    "unknown dataset": (plain(["train", "--dataset", "cifar10"]), "invalid choice: 'cifar10'"),
    "unknown device": (plain(["train", "--device", "tpu"]), "unknown device 'tpu'"),
    "negative learning rate": (plain(["train", "--lr", "-0.1"]), "-0.1 must be > 0"),
    "zero batch size": (plain(["train", "--batch-size", "0"]), "0 must be >= 1"),
    "learning rate nan": (plain(["train", "--lr", "nan"]), "not a finite number"),
    "zero epochs": (plain(["train", "--epochs", "0"]), "0 must be >= 1"),
    "label smoothing above 1": (plain(["train", "--label-smoothing", "1.5"]), "1.5 must be <= 1"),
    "zero processes": (plain(["train", "--nproc", "0"]), "0 must be >= 1"),
    "zero download timeout": (plain(["data", "download", "mnist", "--timeout", "0"]), "0 must be > 0"),
    # Run folders and checkpoints
    "output under a regular file": (
        plain([*TRAIN, "--out", REGULAR_FILE + "/run"]),
        "cannot create the run folder",
    ),
    "output is a regular file": (plain([*TRAIN, "--out", REGULAR_FILE]), "cannot create the run folder"),
    "eval: weights of another model": (
        copied_run(weights_of("lenet5-d2l"), *EVAL),
        "weights do not fit model",
    ),
    "eval: not safetensors": (
        copied_run(lambda r: (r / WEIGHTS).write_bytes(bytes(64)), *EVAL),
        "not a readable",
    ),
    "resume: checkpoint of another model": (
        copied_run(checkpoint_of("lenet5-d2l"), *RESUME),
        "does not fit model",
    ),
    "resume: truncated checkpoint": (copied_run(cut(1000), *RESUME), "not a readable checkpoint"),
    "resume: empty checkpoint": (copied_run(cut(0), *RESUME), "not a readable checkpoint"),
    "resume: not a run folder": (plain(["train", "--resume", "{tmp}/data"]), "is it a lenet run folder?"),
    "resume: garbage config.json": (copied_run(config("{oops"), *RESUME), "config.json: unreadable"),
    "resume: config of unknown model": (
        copied_run(config('{"model": "vgg"}'), *RESUME),
        "unknown model 'vgg'",
    ),
    "resume with a recipe flag": (copied_run(unfinished, *RESUME, "--lr", "0.5"), "drop --lr"),
    "out onto an existing run": (copied_run(lambda r: None, *TRAIN, "--out", "{run}"), "already holds a run"),
    "predict: image and run swapped": (
        copied_run(lambda r: Image.new("L", (28, 28)).save(r / "digit.png"), "predict", "{run}/digit.png", "{run}"),
        "the run comes first",
    ),
    "predict: a folder for an image": (copied_run(lambda r: None, "predict", "{run}", "{root}"), "is a folder"),
    "predict: a text file for an image": (
        copied_run(lambda r: (r / "notes.png").write_text("hello"), "predict", "{run}", "{run}/notes.png"),
        "not an image in a format Pillow reads",
    ),
    "root is the dataset's own folder": (
        plain(["train", *TINY, "--root", "{root}/mnist", "--no-verify"]),
        "is the mnist folder itself; the data root is its parent",
    ),
    "data download into the dataset's own folder": (
        plain(["data", "download", "mnist", "--root", "{root}/mnist"]),
        "is the mnist folder itself",
    ),
    "model option without a value": (plain([*TRAIN, "--model-arg", "relu"]), "expected KEY=VALUE"),
}


@pytest.mark.parametrize("case", CASES)
def test_hostile_input(case, root, trained_run, fake_root, tmp_path, capsys, monkeypatch):
    setup, expected = CASES[case]
    argv = setup(tmp_path, root, trained_run)
    monkeypatch.chdir(tmp_path)  # where a default runs/ folder would appear
    before = snapshot(tmp_path, trained_run, fake_root)
    code, err = run_cli(argv, capsys)
    assert code == 2, err
    assert_one_line(err, expected, progress=("warning: ",))
    assert snapshot(tmp_path, trained_run, fake_root) == before


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_requested_without_cuda(fake_root, capsys):
    code, err = run_cli(train(fake_root, "--device", "cuda"), capsys)
    assert code == 2
    assert_one_line(err, "CUDA is not available here; use --device cpu")


# ----------------------------------------------------------------------------------------------------------
# Headers that claim more than is there must fail before anything is allocated


def test_a_header_claiming_billions_allocates_nothing(tmp_path):
    for name, blob in [("plain", header(4_000_000_000, 28, 28)), ("gz", gz(header(4_000_000_000, 28, 28)))]:
        (tmp_path / name).write_bytes(blob)
        tracemalloc.start()
        try:
            with pytest.raises(LenetError, match="more than any MNIST-style file"):
                read_idx(tmp_path / name)
            assert tracemalloc.get_traced_memory()[1] < 1 << 20
        finally:
            tracemalloc.stop()


def test_a_decompression_bomb_is_not_inflated(root, capsys):
    """10 images claimed, 256 MB of zeros behind them (compressed to 250 kB): read no further than claimed."""
    z = zlib.compressobj(9, zlib.DEFLATED, 31)
    bomb = z.compress(header(10, 28, 28)) + b"".join(z.compress(bytes(1 << 20)) for _ in range(256)) + z.flush()
    (root / "mnist" / TRAIN_IMAGES).write_bytes(bomb)
    tracemalloc.start()
    try:
        code, err = run_cli(train(root), capsys)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert code == 2
    assert_one_line(err, "after the data")
    assert peak < 64 << 20, f"{peak / 1e6:.0f} MB allocated"


# ----------------------------------------------------------------------------------------------------------
# Downloads from a local HTTP server: the wrong dataset, a cut-off transfer, 404, a mirror that hangs


class Mirror(http.server.BaseHTTPRequestHandler):
    """/good/<f>: the file; /other/<f>: other data; /cut/<f>: half, then hangs up; /hang/<f>: silence."""

    files: dict[str, bytes] = {}
    other: dict[str, bytes] = {}

    def log_message(self, *args):
        pass

    def do_GET(self):
        mode, _, name = self.path.strip("/").partition("/")
        if mode == "hang":
            time.sleep(3)
            return
        body = (self.other if mode == "other" else self.files).get(name)
        if body is None or mode not in ("good", "other", "cut"):
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2] if mode == "cut" else body)


@pytest.fixture
def server(fake_root, monkeypatch):
    """A mirror of the generated mnist, whose checksums the catalogue is made to publish."""
    info = data.DATASETS["mnist"]
    Mirror.files = {f.name: (fake_root / "mnist" / f.name).read_bytes() for f in info.files}
    other = {"images": np.ones((600, 28, 28), np.uint8), "labels": np.zeros(600, np.uint8)}  # not these files
    arrays = [other[f.name.split("-")[1]] for f in info.files]
    Mirror.other = {f.name: gz(header(*a.shape) + a.tobytes()) for f, a in zip(info.files, arrays, strict=True)}
    published = [DataFile(f.name, hashlib.md5(Mirror.files[f.name]).hexdigest(), None) for f in info.files]
    fields = ("train_images", "train_labels", "test_images", "test_labels")
    monkeypatch.setitem(data.DATASETS, "mnist", dataclasses.replace(info, **dict(zip(fields, published, strict=True))))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Mirror)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()
    httpd.server_close()


def download(root: Path, server: str, *modes: str) -> list[str]:
    mirrors = [arg for mode in modes for arg in ("--mirror", f"{server}/{mode}/")]
    return ["data", "download", "mnist", "--root", str(root), "--timeout", "0.5", *mirrors]


DOWNLOAD_PROGRESS = ("downloading ", "failed: ")


@pytest.mark.parametrize("first", ["cut", "missing", "hang", "other"])
def test_a_bad_mirror_is_skipped_for_the_next(first, server, tmp_path, capsys):
    code, err = run_cli(download(tmp_path, server, first, "good"), capsys)
    assert code == 0, err
    assert "Traceback" not in err and err.count("failed: ") == 4  # each of the four files tried `first` first
    assert main(["data", "verify", "mnist", "--root", str(tmp_path)]) == 0
    assert sorted(p.name for p in (tmp_path / "mnist").iterdir()) == sorted(Mirror.files)  # no .part left


@pytest.mark.parametrize(
    "modes, expected",
    [(("other",), "checksum mismatch"), (("cut", "missing"), "404"), (("hang",), "timed out"),
     (("cut",), "connection closed after"), (("not-a-url",), "could not download")],
)  # fmt: skip
def test_no_good_mirror_is_one_line_and_changes_nothing(modes, expected, server, tmp_path, capsys):
    (tmp_path / "mnist").mkdir()
    (tmp_path / "mnist" / TRAIN_LABELS).write_bytes(b"a previous, broken copy")
    before = snapshot(tmp_path)
    argv = download(tmp_path, server, *modes)
    if modes == ("not-a-url",):
        argv = [*argv[:-1], "not-a-url"]
    code, err = run_cli(argv, capsys)
    assert code == 2
    assert_one_line(err, expected, progress=DOWNLOAD_PROGRESS)
    assert snapshot(tmp_path) == before


def test_download_into_a_folder_under_a_regular_file(tmp_path, capsys):
    (tmp_path / "file").write_text("not a folder")
    code, err = run_cli(["data", "download", "mnist", "--root", str(tmp_path / "file")], capsys)
    assert code == 2
    assert_one_line(err, "cannot create the data folder")


# ----------------------------------------------------------------------------------------------------------
# A full disk while writing a checkpoint: the previous one stays intact


def test_a_full_disk_while_checkpointing_leaves_the_previous_checkpoint(fake_root, tmp_path):
    run = tmp_path / "run"
    args = ["train", *TINY, "--root", str(fake_root), "--no-verify", "--epochs", "3", "--out", str(run)]
    assert main([*args, "--max-steps", "6"]) == 0  # one epoch of 600 / 100, checkpointed
    before = snapshot(tmp_path)
    limit = min((run / CHECKPOINT).stat().st_size, (run / WEIGHTS).stat().st_size) // 2
    script = textwrap.dedent(f"""
        import resource, signal, sys
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail (EFBIG) as on a full disk
        resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))
        from lenet.cli import main
        sys.exit(main({["train", "--resume", str(run), "--root", str(fake_root), "--no-verify"]!r}))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=dict(os.environ))
    assert result.returncode == 2, result.stderr
    expected = "checkpoint.pt: cannot write (File too large); the previous file is intact"
    assert_one_line(result.stderr, expected, progress=("warning: ",))
    assert snapshot(tmp_path) == before  # no temporary file left, nothing replaced
    assert load_file(run / WEIGHTS).keys() and np.isfinite(
        torch.load(run / CHECKPOINT, weights_only=True)["history"]["epochs"][0]["train_loss"]
    )
