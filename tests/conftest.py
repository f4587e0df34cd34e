"""Shared fixtures: small generated IDX datasets (no network), the real MNIST when CI provides it."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from lenet.data import DATASETS, write_idx


def synthetic_digits(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n 28x28 uint8 images whose class (0-9) is a bright block at a class-specific place, plus noise."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 10
    rng.shuffle(labels)
    images = rng.integers(0, 40, size=(n, 28, 28), dtype=np.uint8)
    for i, k in enumerate(labels):
        top, left = 4 + 10 * (k // 5), 2 + 5 * (k % 5)
        images[i, top : top + 8, left : left + 4] = 255
    return images, labels.astype(np.uint8)


def write_dataset(root: Path, name: str, n_train: int = 600, n_test: int = 200, seed: int = 0) -> Path:
    """Write a generated dataset in the official layout, <root>/<name>/<official file names>."""
    info = DATASETS[name]
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    for (images_file, labels_file), n, s in (
        ((info.train_images, info.train_labels), n_train, seed),
        ((info.test_images, info.test_labels), n_test, seed + 1),
    ):
        images, labels = synthetic_digits(n, s)
        write_idx(folder / images_file.name, images)
        write_idx(folder / labels_file.name, labels)
    return root


@pytest.fixture(scope="session")
def fake_root(tmp_path_factory) -> Path:
    """A data root with small generated mnist, fashion-mnist and kmnist (checksums are not the official ones)."""
    root = tmp_path_factory.mktemp("data")
    for name in DATASETS:
        write_dataset(root, name)
    return root


@pytest.fixture(scope="session")
def run_dir(fake_root, tmp_path_factory) -> Path:
    """A run folder of the `fast` recipe trained for two steps on fake_root: something to load, serve, export."""
    from lenet.cli import main

    out = tmp_path_factory.mktemp("fast-run")
    args = ["train", "--recipe", "fast", "--root", str(fake_root), "--no-verify", "--max-steps", "2"]
    assert main([*args, "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="session")
def real_root() -> Path:
    """The real MNIST from $LENET_DATA. Skips without it, unless LENET_REQUIRE_DATA=1 (as in CI): then fails."""
    root = os.environ.get("LENET_DATA")
    if root and (Path(root) / "mnist" / "train-images-idx3-ubyte.gz").is_file():
        return Path(root)
    if os.environ.get("LENET_REQUIRE_DATA") == "1":
        pytest.fail(f"LENET_REQUIRE_DATA=1 but no MNIST under LENET_DATA={root!r}")
    pytest.skip("real MNIST not available (set LENET_DATA to a root holding mnist/)")


@pytest.fixture(scope="session")
def mnist_run(real_root, tmp_path_factory) -> Path:
    """The `fast` recipe trained for one epoch on the real MNIST, with snapshots: the browser tests' model."""
    from lenet.cli import main

    out = tmp_path_factory.mktemp("mnist-fast")
    args = ["train", "--recipe", "fast", "--epochs", "1", "--snapshots", "--root", str(real_root)]
    assert main([*args, "--out", str(out)]) == 0
    return out


# ----------------------------------------------------------------------------------------------------------
# Debian's Chromium through Playwright: the drawing page (test_browser) and its static export (test_web_export)

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--disable-quic",
]  # fmt: skip
TIMEOUT_MS = 30_000


@pytest.fixture(scope="module")
def chromium() -> Path:
    if CHROMIUM.is_file():
        return CHROMIUM
    if os.environ.get("LENET_REQUIRE_DATA") == "1":
        pytest.fail(f"{CHROMIUM} is missing; .ci/run installs Debian's chromium")
    pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")


@pytest.fixture(scope="module")
def browser(chromium, tmp_path_factory):
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=str(chromium), headless=True,
            args=CHROMIUM_ARGS, viewport={"width": 1280, "height": 900},
        )  # fmt: skip
        yield context
        context.close()


def open_page(browser, url: str):
    """A new tab on `url`, ready (the page set data-ready), and the list its JavaScript errors go to."""
    page = browser.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url)
    page.wait_for_selector("body[data-ready='1']")
    return page, errors
