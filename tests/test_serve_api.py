"""The web app's API through FastAPI's TestClient: good paths, and every kind of bad input answered 4xx."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import urllib.request

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

pytest.importorskip("fastapi", reason="the serve extra is not installed")
from fastapi.testclient import TestClient  # noqa: E402

from lenet.cli import main  # noqa: E402
from lenet.data import load_raw  # noqa: E402
from lenet.infer.predict import Predictor  # noqa: E402
from lenet.serve import create_app  # noqa: E402
from lenet.serve.app import MAX_BODY_BYTES, MAX_UPLOAD_PIXELS, NOT_AN_IMAGE, STATIC  # noqa: E402


@pytest.fixture(scope="module")
def predictor(run_dir):
    return Predictor.from_run(run_dir)


@pytest.fixture(scope="module")
def samples(fake_root):
    return load_raw("mnist", "test", fake_root, verify=False)


@pytest.fixture(scope="module")
def client(predictor, samples):
    with TestClient(create_app(predictor, samples)) as c:
        yield c


def png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def drawing() -> bytes:
    """A 7 drawn dark on white, as the page's canvas sends it."""
    image = Image.new("L", (280, 280), 255)
    ImageDraw.Draw(image).line([(70, 56), (210, 56), (118, 238)], fill=0, width=20, joint="curve")
    return png(image)


def test_health_page_and_static_files(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    page = client.get("/")
    assert page.status_code == 200 and "<canvas" in page.text
    scripts = re.findall(r'<script src="([^"]+)"', page.text)
    assert "static/js/engine.js" in scripts and "static/js/app.js" in scripts
    for name in [*scripts, "static/style.css"]:
        assert client.get(f"/{name}").status_code == 200, name


def test_static_files_need_no_network():
    for path in STATIC.rglob("*"):
        if path.is_file():
            text = path.read_text()
            assert "http://" not in text and "https://" not in text, f"{path.name} loads from the network"


def test_model_description(client, run_dir, predictor):
    info = client.get("/api/model").json()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert info["model"] == "lenet5-modern" and info["dataset"] == "mnist"
    assert info["classes"] == [str(d) for d in range(10)]
    assert info["params"] == summary["params"] and info["test_acc"] == summary["test_acc"]
    _, layers = predictor.activations(np.zeros((28, 28), np.uint8))
    assert [(x["name"], x["shape"]) for x in info["layers"]] == [(n, list(a.shape)) for n, _, a in layers]
    assert info["sample"] is True


def test_uploaded_image_reads_as_lenet_predict_reads_it(client, run_dir, tmp_path, capsys):
    data = drawing()
    body = client.post("/api/predict", files={"image": ("seven.png", data, "image/png")}).json()
    (tmp_path / "seven.png").write_bytes(data)
    capsys.readouterr()
    assert main(["predict", str(run_dir), str(tmp_path / "seven.png"), "--json"]) == 0
    cli = json.loads(capsys.readouterr().out)
    assert (body["class"], body["label"]) == (cli["class"], cli["label"])
    assert body["probability"] == pytest.approx(cli["probability"], rel=1e-6)
    assert len(body["probabilities"]) == 10 and sum(body["probabilities"]) == pytest.approx(1, abs=1e-5)
    raw = client.post("/api/predict", content=data, headers={"content-type": "image/png"}).json()
    assert raw["probabilities"] == body["probabilities"]


def test_json_pixels_are_the_network_input(client, predictor, samples):
    image = samples[0][0]
    as_bytes = client.post("/api/predict", json={"pixels": image.tolist()}).json()
    as_unit = client.post("/api/predict", json={"pixels": (image / 255.0).tolist()}).json()
    expected = predictor.probabilities(image[None])[0]
    np.testing.assert_allclose(as_bytes["probabilities"], expected, rtol=1e-6)
    assert as_bytes["class"] == int(expected.argmax()) and as_unit == as_bytes


def test_activations_of_every_layer_rounded(client, predictor, samples):
    image = samples[0][0]
    body = client.post("/api/predict?activations=1", json={"pixels": image.tolist()}).json()
    assert body["input"] == image.tolist()
    _, layers = predictor.activations(image)
    assert [a["name"] for a in body["activations"]] == [name for name, _, _ in layers]
    for got, (_, kind, out) in zip(body["activations"], layers, strict=True):
        assert got["type"] == kind and got["shape"] == list(out.shape)
        values = np.array(got["values"])
        np.testing.assert_allclose(values, out.ravel(), atol=5e-4 + 1e-6)
        assert np.all(np.round(values, 3) == values)
    assert "activations" not in client.post("/api/predict", json={"pixels": image.tolist()}).json()


def test_sample_is_a_test_image(client, samples):
    body = client.get("/api/sample").json()
    images, labels = samples
    assert body["pixels"] == images[body["index"]].tolist()
    assert body["class"] == labels[body["index"]] and body["label"] == str(labels[body["index"]])


def test_no_sample_without_data(predictor):
    with TestClient(create_app(predictor)) as c:
        assert c.get("/api/model").json()["sample"] is False
        r = c.get("/api/sample")
        assert r.status_code == 404 and "--root" in r.json()["detail"]


def pixels_json(cell: str) -> dict:
    row = "[" + ",".join([cell] * 28) + "]"
    return {"content": ('{"pixels": [' + ",".join([row] * 28) + "]}").encode(), "headers": JSON}


def bomb() -> bytes:
    """A small PNG that decodes to 36 million pixels: over the server's limit, under Pillow's own."""
    side = int((3 * MAX_UPLOAD_PIXELS) ** 0.5)
    return png(Image.new("1", (side, side)))


def chunks():
    for _ in range(MAX_BODY_BYTES // 65536 + 2):
        yield b"\0" * 65536


JSON = {"content-type": "application/json"}
PNG = {"content-type": "image/png"}
GOOD = [[0] * 28] * 28
BAD_REQUESTS = {
    "text in a form": (lambda: {"files": {"image": ("a.txt", b"hello", "text/plain")}}, 415),
    "text as image/png": (lambda: {"content": b"hello", "headers": PNG}, 415),
    "truncated png": (lambda: {"files": {"image": ("a.png", drawing()[:200], "image/png")}}, 415),
    "unknown content type": (lambda: {"content": b"hello", "headers": {"content-type": "text/plain"}}, 415),
    "no content type": (lambda: {"content": b"hello"}, 415),
    "malformed JSON": (lambda: {"content": b'{"pixels": [[', "headers": JSON}, 422),
    "deeply nested JSON": (lambda: {"content": b"[" * 200_000 + b"]" * 200_000, "headers": JSON}, 422),
    "JSON without pixels": (lambda: {"json": {"image": GOOD}}, 422),
    "JSON not an object": (lambda: {"json": GOOD}, 422),
    "27 rows": (lambda: {"json": {"pixels": GOOD[:27]}}, 422),
    "ragged rows": (lambda: {"json": {"pixels": GOOD[:27] + [[0] * 27]}}, 422),
    "flat 784": (lambda: {"json": {"pixels": [0] * 784}}, 422),
    "strings": (lambda: {"json": {"pixels": [["0"] * 28] * 28}}, 422),
    "nulls": (lambda: {"json": {"pixels": [[None] * 28] * 28}}, 422),
    "over 255": (lambda: {"json": {"pixels": [[256] * 28] * 28}}, 422),
    "negative": (lambda: {"json": {"pixels": [[-1] * 28] * 28}}, 422),
    "NaN": (lambda: pixels_json("NaN"), 422),
    "form without a file": (lambda: {"files": {"note": (None, "hello")}}, 422),
    "bad query": (lambda: {"params": {"activations": "maybe"}, "json": {"pixels": GOOD}}, 422),
    "body over the limit": (lambda: {"content": b"\0" * (MAX_BODY_BYTES + 1), "headers": PNG}, 413),
    "streamed body over the limit": (lambda: {"content": chunks(), "headers": PNG}, 413),
    "decompression bomb": (lambda: {"files": {"image": ("bomb.png", bomb(), "image/png")}}, 413),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_input_is_a_4xx_with_one_line_and_the_server_keeps_serving(client, case):
    make, status = BAD_REQUESTS[case]
    r = client.post("/api/predict", **make())
    assert r.status_code == status, r.text
    detail = r.json()["detail"]
    assert isinstance(detail, str) and detail and "\n" not in detail
    assert client.get("/healthz").status_code == 200
    assert client.post("/api/predict", json={"pixels": GOOD}).status_code == 200


def test_serve_command_errors(run_dir, tmp_path, capsys):
    assert main(["serve", str(tmp_path / "missing")]) == 2
    assert "no such run folder" in capsys.readouterr().err
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        assert main(["serve", str(run_dir), "--port", str(port), "--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "no sample button" in err and f"cannot listen on 127.0.0.1:{port}" in err


# ----------------------------------------------------------------------------------------------------------
# What the page loads, honest answers, saliency, two models, and reaching the server from another machine


def page_value(text: str):
    """(key, value) of a page file: lenetData("key", value);"""
    found = re.fullmatch(r'lenetData\(("[^"]*"), (.*)\);\n', text, re.DOTALL)
    assert found, text[:200]
    return json.loads(found.group(1)), json.loads(found.group(2))


def decode_weights(text: str) -> dict:
    import base64

    from safetensors.torch import load

    return load(base64.b64decode(page_value(text)[1]))


@pytest.fixture(scope="module")
def d2l_run(fake_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("d2l-run")
    args = ["train", "--recipe", "d2l", "--dataset", "mnist", "--root", str(fake_root), "--no-verify"]
    assert main([*args, "--max-steps", "2", "--out", str(out)]) == 0
    return out


def test_page_files_carry_the_model(client, predictor):
    key, site = page_value(client.get("/site.js").text)
    assert key == "site" and site["mode"] == "server" and site["models"] == ["models/0/model.js"]
    assert site["samples"] is True and site["honesty"] == {"coverage": [0.036, 0.25], "unsure": 0.5}
    key, manifest = page_value(client.get("/models/0/model.js").text)
    assert key == "models/0/model" and manifest["model"] == "lenet5-modern" and manifest["snapshots"] == []
    names = [layer["name"] for layer in manifest["layers"]]
    assert names == [name for name, _ in predictor.model.named_children()]
    assert manifest["input"] == {"size": 28, "scaling": "standard", "mean": 0.1307, "std": 0.3081, "resize": False,
                                 "style": "digit"}  # fmt: skip
    weights = decode_weights(client.get("/models/0/weights.js").text)
    state = predictor.model.state_dict()
    assert weights.keys() == state.keys()
    for name, tensor in state.items():
        assert torch.equal(weights[name], tensor), name
    assert client.get("/models/0/other.js").status_code == 404
    assert client.get("/models/1/model.js").status_code == 404


def test_snapshots_are_listed_and_served(predictor, run_dir, tmp_path):
    from lenet.train.snapshots import SnapshotWriter

    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    writer = SnapshotWriter(run, steps_per_epoch=20, epochs=1)
    writer.after_step(predictor.model, predictor.config, 0)
    writer.after_step(predictor.model, predictor.config, 10)
    writer.after_epoch(predictor.model, predictor.config, {"epoch": 1, "steps": 20, "test_acc": 0.5})
    with TestClient(create_app(predictor, runs=[run])) as c:
        _, manifest = page_value(c.get("/models/0/model.js").text)
        files = [s["file"] for s in manifest["snapshots"]]
        assert files == [f"models/0/snapshots/step-{n:07d}.js" for n in (0, 10, 20)]
        assert manifest["snapshots"][-1]["test_acc"] == 0.5 and manifest["snapshots"][-1]["kind"] == "epoch"
        for name in files:
            assert decode_weights(c.get(f"/{name}").text).keys() == predictor.model.state_dict().keys()
        for bad in ("step-0000005.js", "step-0000010.safetensors", "index.js", "..%2Fmodel.safetensors"):
            assert c.get(f"/models/0/snapshots/{bad}").status_code == 404, bad


def test_honest_answers(client):
    blank = client.post("/api/predict", json={"pixels": GOOD}).json()
    assert blank["verdict"] == "blank" and blank["class"] is None and blank["probabilities"] is None
    assert "draw a digit" in blank["message"]
    yy, xx = np.mgrid[:28, :28]
    dot = np.where((yy - 14) ** 2 + (xx - 14) ** 2 <= 100, 255, 0)  # what a tap on the pad becomes
    thick = client.post("/api/predict", json={"pixels": dot.tolist()}).json()
    assert thick["verdict"] == "thick" and "draw it bigger" in thick["message"] and thick["class"] is not None
    faint = np.zeros((28, 28), int)
    faint[4:24, 14] = 100  # a thin grey line: no pixel at half intensity
    assert client.post("/api/predict", json={"pixels": faint.tolist()}).json()["verdict"] == "faint"


def test_verdict_thresholds():
    from lenet.infer.web import verdict

    image = np.zeros((28, 28), np.uint8)
    image[4:24, 12:16] = 255  # a 1: 80 of 784 pixels
    sure, unsure = np.array([0.9] + [0.1 / 9] * 9), np.array([0.4, 0.3] + [0.3 / 8] * 8)
    assert verdict(image, sure, "mnist") == ("ok", "")
    assert verdict(image, unsure, "mnist")[0] == "unsure"
    image[4:24, 4:24] = 255
    assert verdict(image, sure, "mnist")[0] == "thick"
    assert verdict(image, sure, "fashion-mnist") == ("ok", "")  # clothes fill the frame


def test_saliency_is_gradient_times_input(client, predictor, samples):
    image = samples[0][3]
    body = client.post("/api/predict?saliency=1", json={"pixels": image.tolist()}).json()
    salience, cls = np.array(body["saliency"]), body["saliency_class"]
    assert salience.shape == (28, 28) and cls == body["class"]
    assert np.all(salience[image == 0] == 0)  # gradient x input: no ink, no saliency
    pixels = image.astype(np.float64) / 255

    def score(p: np.ndarray) -> float:
        x = predictor.to_input(np.rint(p * 255).astype(np.uint8)[None])
        with torch.inference_mode():
            return float(predictor.model(x)[0, cls])

    # Central differences on the most salient pixels, one grey level each way (~ the gradient over 2/255).
    for flat in np.argsort(-np.abs(salience).ravel())[:5]:
        i = np.unravel_index(flat, (28, 28))
        if not 0 < image[i] < 255:
            continue
        up, down = pixels.copy(), pixels.copy()
        up[i] += 1 / 255
        down[i] -= 1 / 255
        slope = (score(up) - score(down)) / (2 / 255)
        assert slope * pixels[i] == pytest.approx(salience[i], rel=0.05, abs=1e-3)


def test_two_models_side_by_side(predictor, d2l_run, samples):
    other = Predictor.from_run(d2l_run)
    image = samples[0][0]
    with TestClient(create_app([predictor, other], samples)) as c:
        info = c.get("/api/model").json()
        assert [m["model"] for m in info["models"]] == ["lenet5-modern", "lenet5-d2l"]
        assert info["model"] == "lenet5-modern"
        _, site = page_value(c.get("/site.js").text)
        assert site["models"] == ["models/0/model.js", "models/1/model.js"]
        assert page_value(c.get("/models/1/model.js").text)[1]["model"] == "lenet5-d2l"
        body = c.post("/api/predict?model=1", json={"pixels": image.tolist()}).json()
        np.testing.assert_allclose(body["probabilities"], other.probabilities(image[None])[0], rtol=1e-6)
        r = c.post("/api/predict?model=2", json={"pixels": image.tolist()})
        assert r.status_code == 422 and "this server has 2" in r.json()["detail"]


def test_serve_refuses_three_models_and_mixed_datasets(run_dir, fake_root, tmp_path, capsys):
    assert main(["serve", str(run_dir), str(run_dir), str(run_dir)]) == 2
    assert "one model or two side by side" in capsys.readouterr().err
    fashion = tmp_path / "fashion"
    args = ["train", "--recipe", "fast", "--dataset", "fashion-mnist", "--root", str(fake_root), "--no-verify"]
    assert main([*args, "--max-steps", "1", "--out", str(fashion)]) == 0
    capsys.readouterr()
    assert main(["serve", str(run_dir), str(fashion)]) == 2
    assert "must share a dataset" in capsys.readouterr().err


def test_upload_errors_in_plain_words(client):
    for files in ({"image": ("a.png", b"hello", "image/png")}, {"image": ("a.png", drawing()[:200], "image/png")}):
        detail = client.post("/api/predict", files=files).json()["detail"]
        assert detail == NOT_AN_IMAGE and "Error" not in detail


def test_lan_addresses_are_never_the_wildcard():
    from lenet.serve.net import lan_addresses, urls

    found = lan_addresses()
    assert all(not a.startswith("127.") and a != "0.0.0.0" for a in found)
    with socket.create_server(("0.0.0.0", 0)) as server:
        port = server.getsockname()[1]
        shown = urls(server)
    assert shown == [f"http://{a}:{port}" for a in found] or shown == [f"http://127.0.0.1:{port}"]
    with socket.create_server(("127.0.0.1", 0)) as server:
        assert urls(server) == [f"http://127.0.0.1:{server.getsockname()[1]}"]


def test_serve_on_every_interface_shows_addresses_and_finds_the_runs_data(run_dir, fake_root, tmp_path):
    """--host 0.0.0.0: the LAN addresses and a QR code; no --root: the data the run was trained on."""
    env = {**os.environ, "LENET_DATA": str(tmp_path / "nothing-here")}
    command = [sys.executable, "-m", "lenet", "serve", str(run_dir), "--host", "0.0.0.0", "--port", "0", "--no-verify"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        lines = []
        while not any("█" in line for line in lines):
            line = process.stdout.readline()
            assert line, "".join(lines)
            lines.append(line)
        first = next(line for line in lines if line.startswith("serving"))
        address = re.search(r"on (http://\S+)", first).group(1)
        assert "//0.0.0.0" not in "".join(lines)  # no address that opens nothing
        port = int(address.rsplit(":", 1)[1])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/sample", timeout=30) as response:
            sample = json.loads(response.read())
        images, _ = load_raw("mnist", "test", fake_root, verify=False)
        assert sample["pixels"] == images[sample["index"]].tolist()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/site.js", timeout=30) as response:
            site = page_value(response.read().decode())[1]
        assert site["addresses"][0] == address and site["qr"].startswith("<svg")
    finally:
        process.terminate()
        process.wait(timeout=30)
