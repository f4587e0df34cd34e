"""The drawing page in a real browser: Debian's chromium driven by Playwright, against `lenet serve`.

A model trained for one epoch on the real MNIST must read a 1, a 0 and a 7 drawn with the mouse. The tests
share one server and one browser and run one after another (the machines have 2 cores).
"""

from __future__ import annotations

import io
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from lenet.cli import main
from lenet.data import load_raw

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


@pytest.fixture(scope="session")
def mnist_run(real_root, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("mnist-fast")
    assert main(["train", "--recipe", "fast", "--epochs", "1", "--root", str(real_root), "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def server(chromium, mnist_run, real_root, tmp_path_factory):
    """`lenet serve` in its own process on a free port; yields its URL."""
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    command = [
        sys.executable,
        "-m",
        "lenet",
        "serve",
        str(mnist_run),
        "--port",
        "0",
        "--root",
        str(real_root),
    ]
    with open(log, "w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while not (found := re.search(r"serving \S+ on (http://\S+)", log.read_text())):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"lenet serve did not start:\n{log.read_text()}")
            time.sleep(0.1)
        yield found.group(1)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def page(chromium, server, tmp_path_factory):
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=str(chromium), headless=True,
            args=CHROMIUM_ARGS, viewport={"width": 1200, "height": 900},
        )  # fmt: skip
        page = browser.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(server)
        page.wait_for_selector("body[data-ready='1']")
        yield page
        browser.close()


# Strokes in fractions of the canvas: (x, y) points, each list one stroke.
DIGITS = {
    1: [[(0.52, 0.15), (0.48, 0.85)]],
    0: [
        [(0.5 + 0.22 * math.sin(t / 24 * 2 * math.pi), 0.5 - 0.32 * math.cos(t / 24 * 2 * math.pi)) for t in range(26)]
    ],
    7: [[(0.25, 0.2), (0.75, 0.2), (0.42, 0.85)]],
}


def draw(page, strokes) -> None:
    box = page.locator("#canvas").bounding_box()
    for stroke in strokes:
        points = [(box["x"] + x * box["width"], box["y"] + y * box["height"]) for x, y in stroke]
        page.mouse.move(*points[0])
        page.mouse.down()
        for point in points[1:]:
            page.mouse.move(*point, steps=8)
        page.mouse.up()


def prediction(page) -> str:
    page.wait_for_selector("#prediction[data-state='ready']")
    return page.inner_text("#label")


def test_page_describes_the_model(page):
    info = page.inner_text("#model-info")
    assert "lenet5-modern on mnist" in info and "parameters" in info and "test accuracy" in info
    assert page.locator("#bars .bar").count() == 10
    assert page.is_enabled("#sample")


@pytest.mark.parametrize("digit", list(DIGITS))
def test_drawn_digit_is_read(page, digit, tmp_path):
    page.click("#clear")
    draw(page, DIGITS[digit])
    label = prediction(page)
    page.screenshot(path=str(tmp_path / f"drawn-{digit}.png"), full_page=True)
    assert label == str(digit)
    assert page.locator("#bars .bar.top .name").inner_text() == str(digit)
    # Every layer's heat maps: the input, then conv1's 6 maps, ... , the 10 outputs.
    names = page.eval_on_selector_all("#layers .layer", "blocks => blocks.map(b => b.dataset.name)")
    assert names[0] == "input" and names[1] == "conv1" and names[-1] == "fc3"
    assert page.locator(".layer[data-name='conv1'] canvas").count() == 6
    assert page.locator(".layer[data-name='conv2'] canvas").count() == 16


def test_undo_and_clear(page):
    page.click("#clear")
    draw(page, DIGITS[7])
    prediction(page)
    page.click("#undo")
    page.wait_for_selector("#prediction[data-state='empty']")
    assert page.inner_text("#label") == "–" and page.locator("#layers .layer").count() == 0


def test_sample_button_draws_a_test_image(page):
    page.click("#sample")
    label = prediction(page)
    status = page.inner_text("#status")
    assert re.fullmatch(r"Test image #\d+, labelled \d\.", status), status
    assert label in "0123456789"


def test_uploaded_image_is_read(page, real_root, tmp_path):
    images, labels = load_raw("mnist", "test", real_root)
    picture = Image.fromarray(255 - images[0]).resize((140, 140))  # dark on white, as a scan would be
    buf = io.BytesIO()
    picture.save(buf, format="PNG")
    (tmp_path / "upload.png").write_bytes(buf.getvalue())
    page.click("#clear")
    page.set_input_files("#upload", str(tmp_path / "upload.png"))
    assert prediction(page) == str(labels[0])
    assert page.inner_text("#status") == "Uploaded upload.png."
