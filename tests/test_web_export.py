"""`lenet export RUN --format web DIR`: the drawing page as static files, its network run by the browser.

The page's JavaScript must read an image as `lenet predict` does: the same 28x28 input (Pillow's resampling
redone in JavaScript) and the same probabilities (a forward pass of every kind of layer in the zoo).
"""

from __future__ import annotations

import base64
import functools
import http.server
import io
import json
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import open_page
from PIL import Image, ImageDraw
from safetensors.torch import load
from test_browser import DIGITS, draw

import lenet
from lenet.cli import main
from lenet.data import load_raw
from lenet.errors import LenetError
from lenet.infer.export import export_run
from lenet.infer.predict import Predictor
from lenet.infer.preprocess import preprocess
from lenet.infer.web import saliency
from lenet.models import list_models


def page_value(path: Path):
    text = path.read_text()
    key, _, rest = text.removeprefix("lenetData(").partition(", ")
    return json.loads(key), json.loads(rest.removesuffix(");\n"))


def test_export_writes_a_page_that_needs_nothing_else(run_dir, fake_root, tmp_path, capsys):
    out = tmp_path / "site"
    assert main(["export", str(run_dir), "--format", "web", str(out), "--root", str(fake_root), "--no-verify"]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    names = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()}
    assert {"index.html", "static/style.css", "static/js/engine.js", "static/js/app.js", "site.js", "samples.js",
            "models/0/model.js", "models/0/weights.js"} <= names  # fmt: skip
    for path in out.rglob("*"):
        if path.is_file():
            text = path.read_text()
            assert "http://" not in text and "https://" not in text, f"{path} reaches for the network"
    _, site = page_value(out / "site.js")
    assert site["mode"] == "static" and site["samples"] is True and site["models"] == ["models/0/model.js"]
    _, manifest = page_value(out / "models/0/model.js")
    assert manifest["model"] == "lenet5-modern" and manifest["weights"] == "models/0/weights.js"
    weights = load(base64.b64decode(page_value(out / "models/0/weights.js")[1]))
    for name, tensor in Predictor.from_run(run_dir).model.state_dict().items():
        assert torch.equal(weights[name], tensor), name
    _, samples = page_value(out / "samples.js")
    images, labels = load_raw("mnist", "test", fake_root, verify=False)
    pixels = np.frombuffer(base64.b64decode(samples["pixels"]), np.uint8).reshape(-1, 28, 28)
    assert np.array_equal(pixels, images[samples["index"]]) and samples["labels"] == labels[samples["index"]].tolist()


def test_export_destinations(run_dir, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    for name in ("model.safetensors", "summary.json"):
        (run / name).write_bytes((run_dir / name).read_bytes())
    path, difference = export_run(run, "web")
    assert path == run / "web" and (path / "index.html").is_file() and difference == 0.0
    _, site = page_value(path / "site.js")
    assert site["samples"] is False and "--root" in site["sampleNote"]
    export_run(run, "web", path)  # an export folder may be written again
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(LenetError, match="not empty"):
        export_run(run, "web", tmp_path / "busy")
    assert main(["export", str(run), "--format", "web", str(tmp_path / "a"), "-o", str(tmp_path / "b")]) == 2
    assert "give the destination once" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------------------
# In the browser


def static_host(folder: Path):
    """The folder on a plain static file server, as GitHub Pages or `python -m http.server` would serve it."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


# Each model of the zoo with its seed's recipe, trained for two steps on generated digits: the page must run
# every kind of layer as torch does (the weights need not be good for that). Plus a run whose input is
# resized, not padded, to 32x32.
ZOO_RECIPES = {
    "lenet5-d2l": "d2l", "lenet5-mxnet": "d2l-mxnet", "lenet5-keras": "keras", "lenet5-tutorial": "pytorch-tutorial",
    "lenet-community": "community", "cnn-tf1": "tf1-cnn", "lenet5-modern": "fast", "lenet5-1998": "lecun98",
}  # fmt: skip


@pytest.fixture(scope="module")
def zoo(fake_root, tmp_path_factory):
    assert set(ZOO_RECIPES) == set(list_models())
    runs = []
    for model, recipe in ZOO_RECIPES.items():
        out = tmp_path_factory.mktemp(model)
        args = ["train", "--recipe", recipe, "--dataset", "mnist", "--root", str(fake_root), "--no-verify"]
        assert main([*args, "--max-steps", "2", "--out", str(out)]) == 0
        runs.append(out)
    resized = tmp_path_factory.mktemp("resized")
    lenet.train("pytorch-tutorial", out=resized, root=fake_root, verify=False, max_steps=2, resize=True, verbose=False)
    runs.append(resized)
    folder = tmp_path_factory.mktemp("zoo-site")
    lenet.infer.web.export_web(runs, folder)
    return runs, folder


def test_every_model_of_the_zoo_runs_in_the_page_as_in_torch(browser, zoo, fake_root):
    runs, folder = zoo
    server, url = static_host(folder)
    page, errors = open_page(browser, url)
    images, _ = load_raw("mnist", "test", fake_root, verify=False)
    try:
        # exported without --root from runs trained on data it cannot verify: the page says why Sample is off
        assert page.is_disabled("#sample") and "checksum does not match" in page.inner_text("#sample-note")
        for i, run in enumerate(runs):
            predictor = Predictor.from_run(run)
            for image in images[:3]:
                got = page.evaluate(
                    """([i, px]) => {
                        const m = lenetPage.models[i];
                        const run = m.net.run(Uint8Array.from(px));
                        const units = m.net.blocks.map((block) => {
                            const shape = run.shapes[block.main + 1];
                            const unit = shape.length === 3 ? {c: shape[0] - 1, y: shape[1] >> 1, x: shape[2] >> 1}
                                                            : {i: shape[0] - 1};
                            const e = m.net.explain(run, block, unit);
                            return {main: m.net.layers[block.main].name, pre: m.net.layers[block.pre].name,
                                    post: m.net.layers[block.stages.at(-1)].name, index: e.index,
                                    values: [e.main.value, e.pre, e.post]};
                        });
                        return {probs: run.probs, saliency: Array.from(m.net.saliency(run, run.best)), units};
                    }""",
                    [i, image.ravel().tolist()],
                )  # fmt: skip
                name = predictor.config.model
                probs = predictor.probabilities(image[None])[0]
                np.testing.assert_allclose(got["probs"], probs, atol=1e-5, err_msg=name)
                _, expected = saliency(predictor, image, int(np.argmax(got["probs"])))
                scale = max(np.abs(expected).max(), 1e-6)
                np.testing.assert_allclose(np.array(got["saliency"]) / scale, expected.ravel() / scale, atol=1e-4)
                _, layers = predictor.activations(image)
                outputs = {layer: out.ravel() for layer, _, out in layers}
                for unit in got["units"]:  # the arithmetic shown for a unit of every block: torch's numbers
                    want = [outputs[unit[k]][unit["index"]] for k in ("main", "pre", "post")]
                    np.testing.assert_allclose(unit["values"], want, rtol=1e-4, atol=1e-4, err_msg=f"{name} {unit}")
        assert not errors
    finally:
        page.close()
        server.shutdown()


@pytest.fixture(scope="module")
def exported(mnist_run, real_root, tmp_path_factory):
    folder = tmp_path_factory.mktemp("mnist-site")
    assert main(["export", str(mnist_run), "--format", "web", str(folder), "--root", str(real_root)]) == 0
    server, url = static_host(folder)
    yield folder, url
    server.shutdown()


def test_the_page_reads_100_test_digits_as_lenet_predict(browser, exported, mnist_run, real_root, tmp_path, capsys):
    """Parity: uploads of the first 100 MNIST test digits read in Chromium as `lenet predict` reads the files."""
    folder, url = exported
    images, _ = load_raw("mnist", "test", real_root)
    files = []
    for k, image in enumerate(images[:100]):
        path = tmp_path / f"digit-{k:03d}.png"
        Image.fromarray(255 - image).resize((56 + k % 5 * 30,) * 2, Image.Resampling.BILINEAR).save(path)
        files.append(path)  # dark on white at sizes 56..176, as a scan: the page and predict both re-centre them
    capsys.readouterr()
    assert main(["predict", str(mnist_run), *map(str, files), "--json", "--top", "10"]) == 0
    expected = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    page, errors = open_page(browser, url)
    try:
        worst = 0.0
        for path, want in zip(files, expected, strict=True):
            page.set_input_files("#upload", str(path))
            page.wait_for_function("n => document.querySelector('#status').textContent.includes(n)", arg=path.name)
            page.wait_for_selector("#prediction[data-state='ready']")
            got = page.evaluate("() => ({input: Array.from(lenetPage.input), probs: lenetPage.models[0].run.probs})")
            assert got["input"] == preprocess(path, "mnist").ravel().tolist(), path.name
            probs = np.zeros(10)
            for entry in want["top"]:
                probs[entry["class"]] = entry["probability"]
            assert int(np.argmax(got["probs"])) == want["class"], path.name
            worst = max(worst, float(np.abs(np.array(got["probs"]) - probs).max()))
        assert worst < 1e-4 and not errors
    finally:
        page.close()


def test_the_page_works_from_a_file_too(browser, exported):
    """No server at all: index.html opened from the disk (a USB stick in a classroom)."""
    folder, _ = exported
    page, errors = open_page(browser, (folder / "index.html").as_uri())
    try:
        page.click("#sample")
        page.wait_for_selector("#prediction[data-state='ready']")
        assert page.inner_text("#label") in "0123456789" and page.locator("#layers .layer").count() > 5
        assert not errors
    finally:
        page.close()


def test_the_exported_page_reads_drawings_explains_and_replays_the_training(browser, exported, mnist_run):
    _, url = exported
    page, errors = open_page(browser, url)
    try:
        draw(page, DIGITS[7])
        page.wait_for_selector("#prediction[data-state='ready']")
        assert page.inner_text("#label") == "7" and page.is_visible("#saliency")
        image = np.array(page.evaluate("Array.from(lenetPage.input)"), np.uint8).reshape(28, 28)
        page.click("#layers .layer[data-name='conv1'] canvas >> nth=2")
        box = page.locator("#detail .big .stack").bounding_box()
        page.mouse.move(box["x"] + 9.5 * box["width"] / 28, box["y"] + 6.5 * box["height"] / 28)
        _, layers = Predictor.from_run(mnist_run).activations(image)
        conv1 = next(out for name, _, out in layers if name == "conv1")
        pre = float(page.get_attribute("#arithmetic", "data-main"))
        assert pre == pytest.approx(float(conv1[2, 6, 9]), abs=1e-4)
        page.click("#detail-close")
        page.locator("#snapshot").fill("0")  # the snapshots travel with the export
        page.wait_for_selector("#snapshot[data-loaded='0']")
        assert page.inner_text(".snapshot-label") == "step 0 (epoch 0.00)"
        assert not errors
    finally:
        page.close()


def test_drawings_of_every_shape_preprocess_as_in_python(browser, exported):
    """Pillow's Lanczos filter and NumPy's float32 steps, redone in JavaScript, pixel for pixel."""
    _, url = exported
    page, _ = open_page(browser, url)
    rng = np.random.default_rng(0)
    try:
        for seed in range(40):
            w, h = (int(v) for v in rng.integers(8, 300, 2))
            picture = Image.new("RGB", (w, h), "white")
            draw = ImageDraw.Draw(picture)
            for _ in range(int(rng.integers(1, 4))):
                points = [tuple(int(v) for v in rng.integers(0, (w, h))) for _ in range(int(rng.integers(2, 6)))]
                draw.line(points, fill=tuple(int(v) for v in rng.integers(0, 160, 3)), width=int(rng.integers(1, 30)))
            rgba = base64.b64encode(np.asarray(picture.convert("RGBA")).tobytes()).decode()
            for style, dataset in (("digit", "mnist"), ("whole", "fashion-mnist")):
                got = page.evaluate(
                    "([d, w, h, s]) => Array.from(Lenet.preprocess(Lenet.base64Bytes(d), w, h, s))", [rgba, w, h, style]
                )
                buf = io.BytesIO()
                picture.save(buf, format="PNG")
                assert got == preprocess(buf.getvalue(), dataset).ravel().tolist(), (seed, w, h, style)
    finally:
        page.close()
