"""The web app of `lenet serve`: a drawing page and a small JSON API over one trained model, or a few.

    GET  /              the drawing page (static files shipped in the package: no CDN, works offline)
    GET  /site.js, /models/<i>/{model,weights}.js, /models/<i>/snapshots/<step>.js
                        what the page loads: the models' layers and weights (lenet.infer.web makes them,
                        the same as `lenet export --format web` writes); the page runs the network itself
    POST /api/predict   an image (multipart file, or a raw image/* body) or JSON {"pixels": 28x28 numbers}
                        -> class, label, probabilities, verdict; ?activations=1 adds every layer's output,
                        ?input=1 the 28x28 input, ?saliency=1 the saliency map, ?model=i another model
    GET  /api/model     name, dataset, classes, parameter count, test accuracy, layer shapes; "models": all
    GET  /api/sample    a random test image of the model's dataset (404 when the server has no data)
    GET  /healthz

An image goes through `lenet predict`'s preprocessing (crop, fit 20x20, centre of mass). JSON pixels are
taken as the 28x28 image the network reads, light ink on black as MNIST stores it (0..255, or all 0..1).
Bad input is a 4xx whose JSON body is {"detail": "<one line>"}; the server keeps serving.
"""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from ..errors import LenetError
from ..infer.predict import Predictor
from ..infer.preprocess import ImageTooLarge
from ..infer.web import model_manifest, saliency, script, site, verdict, weights_bytes
from ..models import count_parameters
from ..train.snapshots import snapshot_path
from .net import listen, url  # noqa: F401  (lenet.serve's API)

STATIC = Path(__file__).parent / "static"
MAX_BODY_BYTES = 4 * 1024 * 1024  # a phone photo of a digit fits; anything bigger is refused unread
MAX_UPLOAD_PIXELS = 12_000_000  # 4000x3000; a decompression bomb is refused before it is decoded
DECIMALS = 3  # activations are rounded: a heat map needs no more, and the JSON stays small
NOT_AN_IMAGE = "this file is not a picture that can be read (PNG, JPEG, GIF, BMP, TIFF or WebP), or it is cut short"
JS = "text/javascript; charset=utf-8"
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


def create_app(
    predictors: Predictor | Sequence[Predictor],
    samples: tuple[np.ndarray, np.ndarray] | None = None,
    *,
    runs: Sequence[Path | None] = (),
    addresses: Sequence[str] = (),
    sample_note: str = "no test data on this server; start it with --root pointing at the data",
) -> FastAPI:
    """The app serving `predictors` (side by side on the page); `samples` (test images, labels) enables
    GET /api/sample; `runs` are their run folders (for snapshots); `addresses` the URLs students can open."""
    predictors = [predictors] if isinstance(predictors, Predictor) else list(predictors)
    runs = [*runs, *[None] * (len(predictors) - len(runs))]
    app = FastAPI(title="lenet", docs_url=None, redoc_url=None, openapi_url=None)
    lock = threading.Lock()  # one inference at a time: activations() hooks the shared model's layers
    classes = list(predictors[0].classes)
    dataset = predictors[0].config.dataset
    rng = random.Random()

    def infer(predictor: Predictor, image: np.ndarray, activations: bool, show_input: bool, salient: bool) -> dict:
        with lock:
            if activations:
                probs, layers = predictor.activations(image)
            else:
                probs = predictor.probabilities(image[None])[0]
            salience = saliency(predictor, image) if salient else None
        kind, message = verdict(image, probs, dataset)
        out: dict = {"class": None, "label": None, "probability": None, "probabilities": None}
        if kind != "blank":  # no ink, no prediction
            best = int(probs.argmax())
            out = {"class": best, "label": classes[best], "probability": float(probs[best]),
                   "probabilities": [float(p) for p in probs]}  # fmt: skip
        out.update(verdict=kind, message=message)
        if show_input or activations:
            out["input"] = image.tolist()
        if salience is not None:
            out["saliency_class"] = salience[0]
            out["saliency"] = np.round(salience[1].astype(np.float64), 6).tolist()
        if activations:
            out["activations"] = [
                {"name": name, "type": kind, "shape": list(a.shape),
                 "values": np.round(a.astype(np.float64), DECIMALS).ravel().tolist()}
                for name, kind, a in layers
            ]  # fmt: skip
        return out

    def decode(data: bytes) -> np.ndarray:
        try:
            return predictors[0].prepare(data, max_pixels=MAX_UPLOAD_PIXELS)
        except ImageTooLarge as e:
            raise HTTPException(413, f"the picture is too large: {e}".replace("image: ", "")) from None
        except LenetError:
            raise HTTPException(415, NOT_AN_IMAGE) from None

    def describe(predictor: Predictor) -> dict:
        _, layers = predictor.activations(np.zeros((SIDE, SIDE), np.uint8))
        cfg = predictor.config
        return {
            "model": cfg.model, "recipe": cfg.recipe, "dataset": cfg.dataset, "classes": list(predictor.classes),
            "params": count_parameters(predictor.model), "test_acc": predictor.info.get("test_acc"),
            "layers": [{"name": n, "type": t, "shape": list(a.shape)} for n, t, a in layers],
        }  # fmt: skip

    described = [describe(p) for p in predictors]
    info = {
        **described[0], "models": described, "sample": samples is not None,
        "limits": {"max_body_bytes": MAX_BODY_BYTES, "max_image_pixels": MAX_UPLOAD_PIXELS},
    }  # fmt: skip

    # The page's files: made once (a LeNet's weights are ~250 KB); snapshots are read when first asked for.
    pages: dict[str, bytes] = {}
    for i, (p, run) in enumerate(zip(predictors, runs, strict=True)):
        try:
            manifest = model_manifest(i, p.model, p.config, p.info, run)
        except LenetError as e:  # a layer the page's engine lacks: the API still answers
            pages[f"models/{i}/model.js"] = script(f"models/{i}/model", {"model": p.config.model, "error": str(e)})
            continue
        pages[f"models/{i}/model.js"] = script(f"models/{i}/model", manifest)
        pages[f"models/{i}/weights.js"] = script(f"models/{i}/weights", weights_bytes(p.model))
    qr = None
    if addresses:
        from .net import qr_svg

        qr = qr_svg(addresses[0])
    pages["site.js"] = script("site", site(
        [f"models/{i}/model.js" for i in range(len(predictors))], dataset, "server",
        samples=samples is not None, sampleNote=None if samples is not None else sample_note,
        addresses=list(addresses), qr=qr,
    ))  # fmt: skip

    def page_file(name: str) -> Response:
        return Response(pages[name], media_type=JS, headers={"Cache-Control": "no-cache"})

    @app.exception_handler(RequestValidationError)
    async def one_line(request: Request, exc: RequestValidationError):
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first.get("loc", ()))
        return JSONResponse({"detail": f"{where}: {first.get('msg', 'invalid')}"}, status_code=422)

    @app.get("/", include_in_schema=False)
    async def index():
        return FileResponse(STATIC / "index.html")

    @app.get("/site.js", include_in_schema=False)
    async def site_js():
        return page_file("site.js")

    @app.get("/models/{index}/{name}", include_in_schema=False)
    async def model_file(index: int, name: str):
        key = f"models/{index}/{name}"
        if key not in pages:
            raise HTTPException(404, f"no such file: {key}")
        return page_file(key)

    @app.get("/models/{index}/snapshots/{name}", include_in_schema=False)
    async def snapshot_file(index: int, name: str):
        key = f"models/{index}/snapshots/{name}"
        if key not in pages:
            if not (0 <= index < len(runs)) or runs[index] is None or not name.endswith(".js"):
                raise HTTPException(404, f"no such snapshot: {name}")
            try:
                data = snapshot_path(runs[index], name.removesuffix(".js") + ".safetensors").read_bytes()
            except (LenetError, OSError):
                raise HTTPException(404, f"no such snapshot: {name}") from None
            pages[key] = script(key.removesuffix(".js"), data)
        return page_file(key)

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok"}

    @app.get("/api/model")
    async def model_info():
        return info

    @app.get("/api/sample")
    async def sample():
        if samples is None:
            raise HTTPException(404, sample_note)
        images, labels = samples
        i = rng.randrange(len(labels))
        label = int(labels[i])
        return {"index": i, "class": label, "label": classes[label], "pixels": images[i].tolist()}

    @app.post("/api/predict")
    async def predict(
        request: Request,
        activations: bool = False,
        with_input: bool = Query(False, alias="input"),
        with_saliency: bool = Query(False, alias="saliency"),
        model: int = 0,
    ):
        if not 0 <= model < len(predictors):
            raise HTTPException(422, f"model: no model {model}; this server has {len(predictors)} (0..)")
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
        return JSONResponse(infer(predictors[model], image, activations, with_input, with_saliency))

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
