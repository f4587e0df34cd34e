"""The web app of `lenet serve`: a drawing page and a small JSON API over one trained model.

    GET  /              the drawing page (static files shipped in the package: no CDN, works offline)
    POST /api/predict   an image (multipart file, or a raw image/* body) or JSON {"pixels": 28x28 numbers}
                        -> class, label, probabilities; ?activations=1 adds every layer's output
    GET  /api/model     name, dataset, classes, parameter count, test accuracy, layer shapes
    GET  /api/sample    a random test image of the model's dataset (404 when the server has no data)
    GET  /healthz

An image goes through `lenet predict`'s preprocessing (crop, fit 20x20, centre of mass). JSON pixels are
taken as the 28x28 image the network reads, light ink on black as MNIST stores it (0..255, or all 0..1).
Bad input is a 4xx whose JSON body is {"detail": "<one line>"}; the server keeps serving.
"""

from __future__ import annotations

import json
import random
import socket
import threading
from pathlib import Path

import numpy as np
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from ..errors import LenetError
from ..infer.predict import Predictor
from ..infer.preprocess import ImageTooLarge
from ..models import count_parameters

STATIC = Path(__file__).parent / "static"
MAX_BODY_BYTES = 4 * 1024 * 1024  # a phone photo of a digit fits; anything bigger is refused unread
MAX_UPLOAD_PIXELS = 12_000_000  # 4000x3000; a decompression bomb is refused before it is decoded
DECIMALS = 3  # activations are rounded: a heat map needs no more, and the JSON stays small
SIDE = 28


def pixels_from_json(body: bytes) -> np.ndarray:
    """{"pixels": 28 rows of 28 numbers in 0..255, or all in 0..1} -> 28x28 uint8, ink light on black."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise HTTPException(422, "malformed JSON body") from None
    if not isinstance(data, dict) or "pixels" not in data:
        raise HTTPException(422, 'expected a JSON object {"pixels": 28 rows of 28 numbers}')
    try:
        pixels = np.array(data["pixels"])
    except (ValueError, TypeError):  # ragged rows
        raise HTTPException(422, "pixels must be 28 rows of 28 numbers") from None
    if pixels.dtype.kind not in "iuf" or pixels.shape != (SIDE, SIDE):
        raise HTTPException(422, f"pixels must be 28 rows of 28 numbers, got {_describe(pixels)}")
    if not np.isfinite(pixels).all() or pixels.min() < 0 or pixels.max() > 255:
        raise HTTPException(422, "pixels must be numbers in 0..255 (or all in 0..1)")
    if pixels.max() <= 1:
        pixels = pixels * 255.0
    return np.rint(pixels).astype(np.uint8)


def _describe(array: np.ndarray) -> str:
    return f"shape {array.shape}" if array.dtype.kind in "iuf" else f"values of type {array.dtype.kind!r}"


async def read_body(request: Request) -> bytes:
    """The request body, refused with 413 as soon as it passes MAX_BODY_BYTES (declared or streamed)."""
    too_large = HTTPException(413, f"request body over the limit of {MAX_BODY_BYTES:,} bytes")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise too_large
    return bytes(body)


async def file_from_form(request: Request, body: bytes) -> bytes:
    """The first file of a multipart/form-data body (its field name does not matter)."""

    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, receive).form(max_files=1, max_fields=8)
    except HTTPException as e:
        raise HTTPException(422, f"malformed multipart body: {e.detail}") from None
    try:
        for _, value in form.multi_items():
            if isinstance(value, UploadFile):
                return await value.read()
    finally:
        await form.close()
    raise HTTPException(422, "no file in the form; send the image as a file field, e.g. 'image'")


def create_app(predictor: Predictor, samples: tuple[np.ndarray, np.ndarray] | None = None) -> FastAPI:
    """The app serving `predictor`; `samples` (test images, labels) enables GET /api/sample."""
    app = FastAPI(title="lenet", docs_url=None, redoc_url=None, openapi_url=None)
    lock = threading.Lock()  # one inference at a time: activations() hooks the shared model's layers
    classes = list(predictor.classes)
    rng = random.Random()

    def infer(image: np.ndarray, with_activations: bool) -> dict:
        with lock:
            if with_activations:
                probs, layers = predictor.activations(image)
            else:
                probs = predictor.probabilities(image[None])[0]
        best = int(probs.argmax())
        out = {"class": best, "label": classes[best], "probability": float(probs[best]),
               "probabilities": [float(p) for p in probs]}  # fmt: skip
        if with_activations:
            out["input"] = image.tolist()
            out["activations"] = [
                {"name": name, "type": kind, "shape": list(a.shape),
                 "values": np.round(a.astype(np.float64), DECIMALS).ravel().tolist()}
                for name, kind, a in layers
            ]  # fmt: skip
        return out

    def decode(data: bytes) -> np.ndarray:
        try:
            return predictor.prepare(data, max_pixels=MAX_UPLOAD_PIXELS)
        except ImageTooLarge as e:
            raise HTTPException(413, str(e)) from None
        except LenetError as e:
            raise HTTPException(415, str(e)) from None

    _, layers = predictor.activations(np.zeros((SIDE, SIDE), np.uint8))
    cfg = predictor.config
    info = {
        "model": cfg.model, "recipe": cfg.recipe, "dataset": cfg.dataset, "classes": classes,
        "params": count_parameters(predictor.model), "test_acc": predictor.info.get("test_acc"),
        "layers": [{"name": n, "type": t, "shape": list(a.shape)} for n, t, a in layers],
        "sample": samples is not None,
        "limits": {"max_body_bytes": MAX_BODY_BYTES, "max_image_pixels": MAX_UPLOAD_PIXELS},
    }  # fmt: skip

    @app.exception_handler(RequestValidationError)
    async def one_line(request: Request, exc: RequestValidationError):
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first.get("loc", ()))
        return JSONResponse({"detail": f"{where}: {first.get('msg', 'invalid')}"}, status_code=422)

    @app.get("/", include_in_schema=False)
    async def index():
        return FileResponse(STATIC / "index.html")

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok"}

    @app.get("/api/model")
    async def model_info():
        return info

    @app.get("/api/sample")
    async def sample():
        if samples is None:
            raise HTTPException(404, "no test data on this server; start it with --root pointing at the data")
        images, labels = samples
        i = rng.randrange(len(labels))
        label = int(labels[i])
        return {"index": i, "class": label, "label": classes[label], "pixels": images[i].tolist()}

    @app.post("/api/predict")
    async def predict(request: Request, activations: bool = False):
        body = await read_body(request)
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind == "application/json":
            image = pixels_from_json(body)
        elif kind == "multipart/form-data":
            image = await run_in_threadpool(decode, await file_from_form(request, body))
        elif kind.startswith("image/") or kind == "application/octet-stream":
            image = await run_in_threadpool(decode, body)
        else:
            raise HTTPException(415, f"expected an image (a form file or image/*) or JSON, not {kind or '?'}")
        # A LeNet reads one image in about a millisecond: cheaper here than a hop to a worker thread.
        # JSONResponse directly: FastAPI's own encoder walks tens of thousands of activations 5x slower.
        return JSONResponse(infer(image, activations))

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def listen(host: str = "127.0.0.1", port: int = 8000) -> socket.socket:
    """A listening socket on host:port (port 0: any free one), or a one-line error."""
    sock = None
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        # Protocol TCP spelt out: asyncio sets TCP_NODELAY only then, and without it every keep-alive
        # response waits 40 ms for a delayed ACK.
        sock = socket.socket(family, kind, proto or socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
        return sock
    except OSError as e:
        if sock:
            sock.close()
        raise LenetError(f"cannot listen on {host}:{port} ({e.strerror or e})") from None


def url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
