"""The data layer on hand-built IDX files: parsing, integrity, layout, scaling and batching."""

import gzip
import hashlib
import os

import numpy as np
import pytest
import torch
from conftest import write_dataset

import lenet
from lenet.data import (
    DATASETS,
    DataFile,
    checksum_status,
    load_dataset,
    load_raw,
    read_idx,
    resolve_root,
    to_input,
    write_idx,
)
from lenet.errors import LenetError


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file built by hand, byte by byte, independently of lenet's writer."""
    magic = {1: b"\x00\x00\x08\x01", 3: b"\x00\x00\x08\x03"}[array.ndim]
    dims = b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return magic + dims + array.astype(np.uint8).tobytes()


def test_reads_hand_built_idx_plain_and_gzipped(tmp_path):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "a").write_bytes(idx_bytes(images))
    (tmp_path / "a.gz").write_bytes(gzip.compress(idx_bytes(images)))
    for name in ("a", "a.gz"):
        got = read_idx(tmp_path / name)
        assert got.dtype == np.uint8 and got.shape == (2, 3, 4)
        np.testing.assert_array_equal(got, images)
    labels = np.array([7, 0, 9], dtype=np.uint8)
    (tmp_path / "l").write_bytes(idx_bytes(labels))
    np.testing.assert_array_equal(read_idx(tmp_path / "l"), labels)


def test_writer_round_trips_through_reader(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    assert write_idx(tmp_path / "x.gz", images).read_bytes()[:2] == b"\x1f\x8b"
    np.testing.assert_array_equal(read_idx(tmp_path / "x.gz"), images)
    assert (tmp_path / "x").write_bytes(idx_bytes(images)) and read_idx(tmp_path / "x").shape == (5, 28, 28)


CORRUPT = {
    "empty": (b"", "empty file"),
    "too short": (b"\x00\x00", "not an IDX file"),
    "wrong magic": (b"\x12\x34\x56\x78" + b"\x00" * 20, "magic 0x12345678"),
    "float dtype": (b"\x00\x00\x0d\x01" + (2).to_bytes(4, "big") + b"\x00" * 8, "not an MNIST-style IDX"),
    "truncated header": (b"\x00\x00\x08\x03\x00\x00\x00\x02", "truncated IDX header"),
    "truncated data": (b"\x00\x00\x08\x01" + (10).to_bytes(4, "big") + b"\x01" * 4, "truncated"),
    "trailing bytes": (b"\x00\x00\x08\x01" + (2).to_bytes(4, "big") + b"\x01" * 5, "after the data"),
    "billions claimed": (b"\x00\x00\x08\x03" + (4_000_000_000).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2,
                         "more than any MNIST-style file"),
}  # fmt: skip


@pytest.mark.parametrize("case", CORRUPT)
@pytest.mark.parametrize("compress", [False, True])
def test_corrupt_files_give_one_line_naming_the_file(tmp_path, case, compress):
    blob, expected = CORRUPT[case]
    path = tmp_path / ("f.gz" if compress else "f")
    path.write_bytes(gzip.compress(blob) if compress else blob)
    with pytest.raises(LenetError) as e:
        read_idx(path)
    message = str(e.value)
    assert str(path) in message and expected in message and "\n" not in message


def test_corrupt_gzip_stream(tmp_path):
    blob = gzip.compress(idx_bytes(np.zeros((100, 28, 28), np.uint8)))
    path = tmp_path / "cut.gz"
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(LenetError, match="cut.gz"):
        read_idx(path)


def test_checksum_accepts_official_archive_or_recompressed_payload_only():
    payload = idx_bytes(np.arange(10, dtype=np.uint8))
    archive = gzip.compress(payload, mtime=0)
    spec = DataFile("x.gz", hashlib.md5(archive).hexdigest(), hashlib.md5(payload).hexdigest())
    assert checksum_status(archive, payload, spec) == "archive"
    recompressed = gzip.compress(payload, compresslevel=1, mtime=12345)
    assert recompressed != archive
    assert checksum_status(recompressed, payload, spec) == "payload"
    assert checksum_status(payload, payload, spec) == "payload"  # un-gzipped copy
    other = idx_bytes(np.arange(1, 11, dtype=np.uint8))
    assert checksum_status(gzip.compress(other), other, spec) == "mismatch"
    assert checksum_status(other, other, DataFile("x.gz", None, None)) == "unknown"


def test_wrong_dataset_fails_verification(tmp_path):
    """MNIST's labels where Fashion-MNIST's should be (a proxy serving the wrong set) must not pass."""
    labels = np.arange(60000) % 10
    folder = tmp_path / "fashion-mnist"
    folder.mkdir()
    write_idx(folder / "train-labels-idx1-ubyte.gz", labels)
    spec = DATASETS["fashion-mnist"].train_labels
    blob = (folder / "train-labels-idx1-ubyte.gz").read_bytes()
    assert checksum_status(blob, gzip.decompress(blob), spec) == "mismatch"


def test_generated_data_needs_no_verify(fake_root, capsys):
    with pytest.raises(LenetError, match="--no-verify"):
        load_raw("mnist", "train", fake_root)
    images, labels = load_raw("mnist", "train", fake_root, verify=False)
    assert images.shape == (600, 28, 28) and labels.dtype == np.int64
    assert "warning" in capsys.readouterr().err


def test_plain_files_are_accepted(tmp_path):
    folder = tmp_path / "mnist"
    folder.mkdir()
    x = np.full((4, 28, 28), 9, np.uint8)
    y = np.array([1, 2, 3, 4], np.uint8)
    for split_name in ("train", "t10k"):
        (folder / f"{split_name}-images-idx3-ubyte").write_bytes(idx_bytes(x))
        (folder / f"{split_name}-labels-idx1-ubyte").write_bytes(idx_bytes(y))
    images, labels = load_raw("mnist", "test", tmp_path, verify=False)
    assert images.shape == (4, 28, 28) and labels.tolist() == [1, 2, 3, 4]


def test_missing_data_names_the_download_command(tmp_path):
    with pytest.raises(LenetError, match=r"lenet data download kmnist --root"):
        load_raw("kmnist", "train", tmp_path)


def test_mismatched_counts(tmp_path):
    folder = tmp_path / "mnist"
    folder.mkdir()
    write_idx(folder / "t10k-images-idx3-ubyte.gz", np.zeros((5, 28, 28), np.uint8))
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", np.zeros(4, np.uint8))
    with pytest.raises(LenetError, match="5 images but 4 labels"):
        load_raw("mnist", "test", tmp_path, verify=False)


def test_unknown_dataset_lists_known():
    with pytest.raises(LenetError, match="known: mnist, fashion-mnist, kmnist"):
        load_raw("cifar", "train")


def test_root_resolution(monkeypatch, tmp_path):
    monkeypatch.setenv("LENET_DATA", str(tmp_path / "env"))
    assert resolve_root(tmp_path / "flag") == tmp_path / "flag"
    assert resolve_root() == tmp_path / "env"
    monkeypatch.delenv("LENET_DATA")
    assert str(resolve_root()).endswith(".cache/lenet")


def test_scalings_and_padding():
    raw = torch.tensor([[[0, 255], [255, 0]]], dtype=torch.uint8).expand(1, 2, 2)
    assert to_input(raw, 2, "none").max() == 255
    assert to_input(raw, 2, "unit").max() == 1.0
    lecun = to_input(raw, 2, "lecun")
    assert lecun.min().item() == pytest.approx(-0.1) and lecun.max().item() == pytest.approx(1.175)
    std = to_input(raw, 2, "standard", mean=0.5, std=0.5)
    assert std.min().item() == pytest.approx(-1) and std.max().item() == pytest.approx(1)
    padded = to_input(torch.zeros(3, 28, 28, dtype=torch.uint8), 32, "lecun")
    assert padded.shape == (3, 1, 32, 32) and torch.allclose(padded, torch.tensor(-0.1))  # border is background
    assert to_input(torch.zeros(1, 28, 28, dtype=torch.uint8), 32, "unit", resize=True).shape == (
        1,
        1,
        32,
        32,
    )


def test_validation_split_takes_the_last_fraction(fake_root):
    full = load_dataset("mnist", fake_root, verify=False)
    data = load_dataset("mnist", fake_root, val_fraction=0.1, verify=False)
    assert len(data.train) == 540 and len(data.val) == 60
    assert torch.equal(data.val.images, full.train.images[540:])
    assert torch.equal(data.train.labels, full.train.labels[:540])


@pytest.mark.parametrize("drop_last", [False, True])
def test_batches_cover_each_example_once_per_epoch(fake_root, drop_last):
    split = load_dataset("mnist", fake_root, verify=False).train
    split.labels = torch.arange(len(split))  # identify each example by its index
    g = torch.Generator().manual_seed(0)
    for _ in range(2):
        seen = torch.cat([y for _, y in split.batches(64, shuffle=True, generator=g, drop_last=drop_last)])
        if drop_last:
            assert len(seen) == 576 and len(set(seen.tolist())) == 576
        else:
            assert sorted(seen.tolist()) == list(range(600))
    first = torch.cat([y for _, y in split.batches(64, shuffle=True, generator=torch.Generator().manual_seed(1))])
    again = torch.cat([y for _, y in split.batches(64, shuffle=True, generator=torch.Generator().manual_seed(1))])
    assert torch.equal(first, again) and not torch.equal(first, torch.arange(600))


def test_d2l_style_helper(fake_root):
    train_iter, test_iter = lenet.load_data_fashion_mnist(batch_size=256, root=fake_root, verify=False)
    assert len(train_iter) == 3 and len(test_iter) == 1
    X, y = next(iter(train_iter))
    assert X.shape == (256, 1, 28, 28) and X.dtype == torch.float32 and 0 <= X.min() and X.max() <= 1
    assert y.dtype == torch.int64
    ((X32, _),) = list(lenet.load_data_fashion_mnist(batch_size=200, resize=32, root=fake_root, verify=False)[1])
    assert X32.shape == (200, 1, 32, 32)


# ----------------------------------------------------------------------------------------------------------
# The cache of decoded files (lenet.data.decoded)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty decoded-data cache of the test's own, taking files of any size."""
    from lenet.data import decoded

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(decoded, "CACHE_MIN_BYTES", 0)
    return decoded.cache_dir()


def test_a_second_load_reads_the_cache_and_gets_the_same_arrays(tmp_path, cache, monkeypatch):
    from lenet.data import integrity

    write_dataset(tmp_path, "mnist")
    first = load_raw("mnist", "train", tmp_path, verify=False)
    assert len(list(cache.glob("*-mismatch.npy"))) == 2  # generated data: not the official checksums
    monkeypatch.setattr(integrity, "check_file", lambda *a: pytest.fail("read the file, not the cache"))
    second = load_raw("mnist", "train", tmp_path, verify=False)
    assert all(np.array_equal(a, b) and a.dtype == b.dtype for a, b in zip(first, second, strict=True))
    with pytest.raises(LenetError, match="checksum does not match"):  # a cached mismatch is still refused
        load_raw("mnist", "train", tmp_path)


def test_a_changed_file_is_read_and_verified_again(tmp_path, cache):
    write_dataset(tmp_path, "mnist")
    images, _ = load_raw("mnist", "test", tmp_path, verify=False)
    path = tmp_path / "mnist" / "t10k-images-idx3-ubyte.gz"
    stat = path.stat()
    write_idx(path, 255 - images)  # new bytes, then the old modification time put back
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    again, _ = load_raw("mnist", "test", tmp_path, verify=False)
    assert np.array_equal(again, 255 - images)


def test_verify_reads_the_files_not_the_cache(tmp_path, cache):
    write_dataset(tmp_path, "mnist")
    load_raw("mnist", "test", tmp_path, verify=False)
    for entry in cache.glob("*.npy"):  # a cache that lies about the images: verify must not believe it
        if np.load(entry).ndim == 3:
            np.save(entry, np.zeros((3, 28, 28), np.uint8))
    with pytest.raises(LenetError, match="3 images but 200 labels"):  # the loader reads it, and still checks
        load_raw("mnist", "test", tmp_path, verify=False)
    report = lenet.data.verify("mnist", tmp_path)
    assert [f["shape"][0] for f in report["files"]] == [600, 600, 200, 200]


def test_an_unwritable_cache_is_no_cache(tmp_path, cache, monkeypatch):
    write_dataset(tmp_path, "mnist")
    cache.parent.mkdir(parents=True)
    cache.write_text("a file where the cache folder should be")
    images, labels = load_raw("mnist", "train", tmp_path, verify=False)
    assert images.shape == (600, 28, 28) and cache.is_file()


def test_real_mnist_from_the_cache_is_the_verified_data(real_root, cache, monkeypatch):
    from lenet.data import decoded

    monkeypatch.setattr(decoded, "CACHE_MIN_BYTES", 1 << 20)  # as shipped: the image files only
    fresh = load_raw("mnist", "test", real_root)
    assert [p.name.split("-", 1)[1] for p in cache.glob("*.npy")] == ["payload.npy"]
    cached = load_raw("mnist", "test", real_root)
    assert np.array_equal(fresh[0], cached[0]) and np.array_equal(fresh[1], cached[1])
    assert hashlib.md5(cached[0].tobytes()).hexdigest() == hashlib.md5(fresh[0].tobytes()).hexdigest()
