"""The drawing page in a real browser: Debian's chromium driven by Playwright, against `lenet serve`.

A model trained for one epoch on the real MNIST (with snapshots) must read a 1, a 0 and a 7 drawn with the
mouse; beside it the 1998 LeNet-5 (two steps on generated digits: its arithmetic is checked, not its
answers). The tests share one server and one browser and run one after another (the machines have 2 cores).
"""

from __future__ import annotations

import base64
import math
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import TIMEOUT_MS, open_page
from PIL import Image

from lenet.cli import main
from lenet.data import load_raw
from lenet.infer.predict import Predictor
from lenet.infer.preprocess import preprocess
from lenet.infer.web import saliency
from lenet.train.snapshots import list_snapshots, snapshot_path


@pytest.fixture(scope="module")
def lenet98_run(fake_root, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("lenet98")
    args = ["train", "--recipe", "lecun98", "--root", str(fake_root), "--no-verify", "--max-steps", "2"]
    assert main([*args, "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def server(chromium, mnist_run, lenet98_run, real_root, tmp_path_factory):
    """`lenet serve RUN RUN2` in its own process on a free port; yields its URL."""
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    command = [sys.executable, "-m", "lenet", "serve", str(mnist_run), str(lenet98_run), "--port", "0"]
    with open(log, "w") as out:
        process = subprocess.Popen([*command, "--root", str(real_root)], stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while not (found := re.search(r"serving .+ on (http://\S+)", log.read_text())):
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
def page(browser, server):
    page, errors = open_page(browser, server)
    yield page
    assert not errors
    page.close()


@pytest.fixture(scope="module")
def predictors(mnist_run, lenet98_run):
    return Predictor.from_run(mnist_run), Predictor.from_run(lenet98_run)


# Strokes in fractions of the canvas: (x, y) points, each list one stroke.
def circle(cx, cy, rx, ry):
    return [[(cx + rx * math.sin(t / 24 * 2 * math.pi), cy - ry * math.cos(t / 24 * 2 * math.pi)) for t in range(26)]]


DIGITS = {
    1: [[(0.52, 0.15), (0.48, 0.85)]],
    0: circle(0.5, 0.5, 0.22, 0.32),
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


def prediction(page, model: str = "") -> str:
    page.wait_for_selector(f"#prediction{model}[data-state='ready']")
    return page.inner_text(f"#label{model}")


def fresh(page, strokes=None) -> None:
    page.click("#clear")
    if strokes:
        draw(page, strokes)
        prediction(page)
        prediction(page, "-1")


def the_input(page) -> np.ndarray:
    return np.array(page.evaluate("Array.from(lenetPage.input)"), np.uint8).reshape(28, 28)


def test_page_describes_the_models(page):
    assert page.inner_text("#model-info") == "lenet5-modern & lenet5-1998 on mnist"
    first, second = page.inner_text(".card[data-model='0'] .card-title"), page.inner_text(".card[data-model='1'] h2")
    assert "lenet5-modern on mnist" in first and "parameters" in first and "test accuracy" in first
    assert "lenet5-1998 on mnist" in second and "60,000 parameters" in second
    assert page.locator("#bars .bar").count() == 10 and page.locator("#bars-1 .bar").count() == 10
    assert page.is_enabled("#sample") and page.is_hidden("#sample-note") and page.is_hidden("#share")


@pytest.mark.parametrize("digit", list(DIGITS))
def test_drawn_digit_is_read(page, digit, predictors):
    fresh(page)
    draw(page, DIGITS[digit])
    assert prediction(page) == str(digit)
    assert page.locator("#bars .bar.top .name").inner_text() == str(digit)
    assert page.get_attribute("#prediction", "data-verdict") == "ok"
    # Every layer's heat maps: the input, then conv1's 6 maps, ... , the 10 outputs; and the 1998 net's.
    names = page.eval_on_selector_all("#layers .layer", "blocks => blocks.map(b => b.dataset.name)")
    assert names == ["input", "conv1", "pool1", "conv2", "pool2", "fc1", "fc2", "fc3"]
    assert page.locator(".layer[data-name='conv1'] canvas").count() == 6
    assert page.locator(".layer[data-name='conv2'] canvas").count() == 16
    names = page.eval_on_selector_all("#layers-1 .layer", "blocks => blocks.map(b => b.dataset.name)")
    assert names == ["input", "C1", "S2", "C3", "S4", "C5", "F6", "RBF"]
    assert page.is_visible("#saliency") and page.is_visible("#saliency-1")
    # What the page read is what lenet predict makes of the canvas: the same 28x28, the same probabilities.
    png = base64.b64decode(page.evaluate("document.querySelector('#canvas').toDataURL()").split(",")[1])
    image = preprocess(png, "mnist")
    assert np.array_equal(the_input(page), image)
    for i, predictor in enumerate(predictors):
        probs = page.evaluate(f"lenetPage.models[{i}].run.probs")
        np.testing.assert_allclose(probs, predictor.probabilities(image[None])[0], atol=1e-5)


def test_undo_and_clear(page):
    fresh(page, DIGITS[7])
    page.click("#undo")
    page.wait_for_selector("#prediction[data-state='empty']")
    assert page.inner_text("#label") == "–" and page.locator("#layers .layer").count() == 0


def test_sample_button_draws_a_test_image(page):
    page.click("#sample")
    label = prediction(page)
    status = page.inner_text("#status")
    assert re.fullmatch(r"Test image #\d+, labelled \d\.", status), status
    assert label in "0123456789"


def png_file(path: Path, image: Image.Image) -> Path:
    image.save(path, format="PNG")
    return path


def test_uploaded_image_is_read(page, real_root, tmp_path):
    images, labels = load_raw("mnist", "test", real_root)
    picture = Image.fromarray(255 - images[0]).resize((140, 140))  # dark on white, as a scan would be
    page.click("#clear")
    page.set_input_files("#upload", str(png_file(tmp_path / "upload.png", picture)))
    assert prediction(page) == str(labels[0])
    assert page.inner_text("#status") == "Uploaded upload.png."


def test_a_blank_picture_reads_nothing(page, tmp_path):
    page.click("#clear")
    page.set_input_files("#upload", str(png_file(tmp_path / "white.png", Image.new("L", (200, 200), 255))))
    page.wait_for_selector("#prediction[data-verdict='blank']")
    assert (
        page.inner_text("#label") == "–"
        and page.inner_text("#verdict") == "There is no ink in this picture: nothing to read."
    )
    assert page.locator("#bars .bar.top").count() == 0 and page.locator("#layers .layer").count() == 0


def test_a_failed_upload_clears_the_old_answer_and_says_why_in_plain_words(page, tmp_path):
    fresh(page, DIGITS[7])
    (tmp_path / "notes.png").write_text("not a picture")
    page.set_input_files("#upload", str(tmp_path / "notes.png"))
    page.wait_for_selector("#status.error")
    assert page.inner_text("#status") == (
        "“notes.png” is not a picture this page can read. Try a PNG or JPEG photo or scan of one digit."
    )
    assert page.inner_text("#label") == "–" and page.inner_text("#label-1") == "–"
    assert page.locator(".bar.top").count() == 0 and page.locator(".layer").count() == 0
    assert page.is_hidden("#saliency")
    draw(page, DIGITS[1])  # the next drawing takes the error away
    assert prediction(page) == "1" and page.locator("#status.error").count() == 0


@pytest.mark.parametrize("strokes", [[[(0.5, 0.5)]], circle(0.14, 0.16, 0.07, 0.1)], ids=["tap", "small 0 in a corner"])
def test_a_dot_or_a_small_digit_asks_to_draw_bigger(page, strokes):
    fresh(page)
    draw(page, strokes)
    page.wait_for_selector("#prediction[data-verdict='thick']")
    assert "Draw it bigger" in page.inner_text("#verdict")


def point_at(page, selector: str, shape: tuple[int, int], y: int, x: int) -> None:
    """Move the pointer over cell (y, x) of a picture of shape (h, w)."""
    box = page.locator(selector).bounding_box()
    h, w = shape
    page.mouse.move(box["x"] + (x + 0.5) * box["width"] / w, box["y"] + (y + 0.5) * box["height"] / h)


def arithmetic(page) -> dict:
    return page.evaluate("({...document.querySelector('#arithmetic').dataset})")


def outputs(predictor, image) -> dict:
    _, layers = predictor.activations(image)
    return {name: out for name, _, out in layers}


def test_a_clicked_map_shows_its_kernels_receptive_field_and_arithmetic(page, predictors):
    fresh(page, DIGITS[7])
    image = the_input(page)
    page.click("#layers .layer[data-name='conv2'] canvas >> nth=3")
    page.wait_for_selector("#detail[open]")
    assert page.inner_text("#detail-title") == "conv2 · map 4 of 16"
    assert page.locator("#detail .kernel-row").count() == 6  # one kernel per pool1 map
    point_at(page, "#detail .big .stack", (10, 10), 5, 4)
    shown = arithmetic(page)
    assert shown["unit"] == '{"c":3,"y":5,"x":4}'
    out = outputs(predictors[0], image)  # conv2 -> bn2 -> act2, computed by torch
    for key, layer in (("main", "conv2"), ("pre", "bn2"), ("post", "act2")):
        assert float(shown[key]) == pytest.approx(float(out[layer][3, 5, 4]), abs=1e-4), key
    lines = page.inner_text("#arithmetic")
    assert "pool1 map 1: Σ 25 inputs × weights" in lines and "bn2: (" in lines and "ReLU: max(0," in lines
    page.click("#detail-close")

    # 1998's C3: map 8 reads S2 maps 2-5 only (LeCun's table), squashed
    page.click("#layers-1 .layer[data-name='C3'] canvas >> nth=7")
    assert page.locator("#detail .kernel-row").count() == 4
    assert [t.split(" = ")[0] for t in page.locator("#detail .partial").all_inner_texts()] == [
        f"× S2 map {c}" for c in (2, 3, 4, 5)
    ]
    point_at(page, "#detail .big .stack", (10, 10), 2, 6)
    shown, out = arithmetic(page), outputs(predictors[1], image)
    assert float(shown["pre"]) == pytest.approx(float(out["C3"][7, 2, 6]), abs=1e-4)
    assert float(shown["post"]) == pytest.approx(float(out["act3"][7, 2, 6]), abs=1e-4)
    page.click("#detail-close")

    # a fully connected unit: fc1's unit 17 weighs all 400 numbers of pool2
    page.click("#layers .layer[data-name='fc1'] canvas")
    point_at(page, "#detail .big .stack", (6, 20), 0, 17)
    shown, out = arithmetic(page), outputs(predictors[0], image)
    assert shown["unit"] == '{"i":17}' and float(shown["pre"]) == pytest.approx(float(out["fc1"][17]), abs=1e-4)
    assert "the 8 biggest of 400 terms" in page.inner_text("#arithmetic")
    assert page.locator("#detail .below .kernel").count() == 16  # its weights, as 16 maps of 5x5
    page.click("#detail-close")


def test_before_and_after_the_activation(page):
    fresh(page, DIGITS[7])
    read = "Array.from(document.querySelector('.layer[data-name=conv1] canvas').getContext('2d').getImageData(0, 0, 28, 28).data)"  # noqa: E501
    after = page.evaluate(read)
    page.check("input[name='stage'][value='pre']")
    before = page.evaluate(read)
    page.check("input[name='stage'][value='post']")
    assert before != after and page.evaluate(read) == after
    blue = np.array(before).reshape(-1, 4)
    assert (blue[:, 2] > blue[:, 0] + 40).any()  # negative pre-activations, which ReLU then removes
    assert not (np.array(after).reshape(-1, 4)[:, 2] > np.array(after).reshape(-1, 4)[:, 0] + 40).any()


def test_saliency_is_torchs(page, predictors):
    fresh(page, DIGITS[0])
    image = the_input(page)
    for i, predictor in enumerate(predictors):
        got = np.array(page.evaluate(f"Array.from(lenetPage.models[{i}].saliency)")).reshape(28, 28)
        cls = page.evaluate(f"lenetPage.models[{i}].run.best")
        _, expected = saliency(predictor, image, cls)
        np.testing.assert_allclose(got, expected, atol=1e-4 * np.abs(expected).max())
    assert "pushed towards 0" in page.inner_text(".card[data-model='0'] .saliency .hint")
    page.click("#bars .bar >> nth=6")  # another class: what speaks for a 6 here
    assert "pushed towards 6" in page.inner_text(".card[data-model='0'] .saliency .hint")
    got = np.array(page.evaluate("Array.from(lenetPage.models[0].saliency)")).reshape(28, 28)
    np.testing.assert_allclose(got, saliency(predictors[0], image, 6)[1], atol=1e-4 * np.abs(got).max())


def test_the_snapshot_slider_replays_the_training(page, mnist_run):
    snapshots = list_snapshots(mnist_run)
    assert [s["step"] for s in snapshots][:5] == [0, 10, 50, 100, 200] and snapshots[-1]["kind"] == "epoch"
    fresh(page, DIGITS[7])
    image = the_input(page)
    slider = page.locator("#snapshot")
    assert slider.get_attribute("max") == str(len(snapshots))
    for position in (0, 2, len(snapshots) - 1):
        slider.fill(str(position))
        page.wait_for_selector(f"#snapshot[data-loaded='{position}']")
        step = Predictor.from_run(snapshot_path(mnist_run, snapshots[position]["file"]))
        probs = page.evaluate("lenetPage.models[0].run.probs")
        np.testing.assert_allclose(probs, step.probabilities(image[None])[0], atol=1e-5)
    assert page.inner_text(".card[data-model='0'] .snapshot-label").startswith("after epoch 1 · test accuracy")
    slider.fill("0")
    page.wait_for_selector("#snapshot[data-loaded='0']")
    assert page.inner_text(".card[data-model='0'] .snapshot-label") == "step 0 (epoch 0.00)"
    slider.fill(str(len(snapshots)))
    page.wait_for_selector(f"#snapshot[data-loaded='{len(snapshots)}']")
    assert prediction(page) == "7" and page.inner_text(".card[data-model='0'] .snapshot-label").startswith(
        "the trained"
    )


def test_chinese_and_back(page):
    fresh(page, DIGITS[7])
    page.click("#lang")
    assert page.evaluate("document.documentElement.lang") == "zh-CN"
    assert page.inner_text("#clear") == "清除" and page.inner_text("#lang") == "English"
    assert "卷积" in page.inner_text(".layer[data-name='conv1'] .explain")
    assert "看它学习" in page.inner_text(".card[data-model='0']")
    page.click("#lang")
    assert page.inner_text("#clear") == "Clear" and "Convolution" in page.inner_text(
        ".layer[data-name='conv1'] .explain"
    )


def test_large_type_for_a_projector(page):
    page.click("#big")
    assert page.evaluate("document.body.classList.contains('large')")
    assert page.locator("#canvas").bounding_box()["width"] == 420
    page.click("#big")
    assert page.locator("#canvas").bounding_box()["width"] == 280


def test_a_phone_has_no_sideways_scrolling(browser, server):
    phone = browser.new_page()
    phone.set_viewport_size({"width": 390, "height": 844})
    phone.set_default_timeout(TIMEOUT_MS)
    try:
        phone.goto(server)
        phone.wait_for_selector("body[data-ready='1']")
        draw(phone, DIGITS[7])
        assert prediction(phone) == "7"
        width = "document.documentElement.scrollWidth"
        assert phone.evaluate(width) <= 390
        phone.click("#layers .layer[data-name='fc1'] canvas")
        phone.wait_for_selector("#detail[open]")
        assert phone.locator("#detail").bounding_box()["width"] <= 390 and phone.evaluate(width) <= 390
    finally:
        phone.close()
