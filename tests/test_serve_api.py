"""The web app's API through FastAPI's TestClient: good paths, and every kind of bad input answered 4xx."""

from __future__ import annotations

import io
import json
import socket

import numpy as np
import pytest
from PIL import Image, ImageDraw

pytest.importorskip("fastapi", reason="the serve extra is not installed")
from fastapi.testclient import TestClient  # noqa: E402

from lenet.cli import main  # noqa: E402
from lenet.data import load_raw  # noqa: E402
from lenet.infer.predict import Predictor  # noqa: E402
from lenet.serve import create_app  # noqa: E402
from lenet.serve.app import MAX_BODY_BYTES, MAX_UPLOAD_PIXELS, STATIC  # noqa: E402


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
    for name in ("app.js", "style.css"):
        assert client.get(f"/static/{name}").status_code == 200


def test_static_files_need_no_network():
    for path in STATIC.iterdir():
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
