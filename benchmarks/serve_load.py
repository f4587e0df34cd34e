"""Load test of `lenet serve`: concurrent clients sending predict requests on loopback.

    python benchmarks/serve_load.py RUN [--requests 5000] [--clients 64] [--payload png|json] [--activations]
    python benchmarks/serve_load.py RUN [RUN2] --page 200

Starts `lenet serve RUN --port 0` in its own process (or targets --url), sends the requests from one asyncio
process, and prints errors, latency percentiles and requests per second. Exits 1 on any error. The clients
and the server share the machine's cores, so the numbers are a floor for the server alone.

--page N: the drawing page reads drawings itself (no request per stroke); this times N reads of a drawn 7 in
Debian's Chromium (Playwright): preprocessing, each model's forward pass and saliency, painting every map,
medians in ms; and the bytes the page loads once.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image, ImageDraw


def drawing_png() -> bytes:
    """A 7 on the page's 280x280 canvas, dark on white: what the browser sends while someone draws."""
    image = Image.new("L", (280, 280), 255)
    ImageDraw.Draw(image).line([(70, 56), (210, 56), (118, 238)], fill=0, width=20, joint="curve")
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def request_kwargs(payload: str) -> dict:
    if payload == "png":
        return {"files": {"image": ("drawing.png", drawing_png(), "image/png")}}
    pixels = np.asarray(Image.open(io.BytesIO(drawing_png())).resize((28, 28)))
    return {"json": {"pixels": (255 - pixels).tolist()}}


def start_server(runs: list[str], log: Path) -> tuple[subprocess.Popen, str]:
    command = [sys.executable, "-m", "lenet", "serve", *runs, "--port", "0"]
    with open(log, "w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while not (found := re.search(r"serving .+ on (http://\S+)", log.read_text())):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            sys.exit(f"lenet serve did not start:\n{log.read_text()}")
        time.sleep(0.1)
    return process, found.group(1)


def http_message(url: str, params: dict, kwargs: dict) -> bytes:
    """The whole POST /api/predict request as bytes, built once and sent as is on every request."""
    request = httpx.Request("POST", f"{url}/api/predict", params=params, **kwargs)
    body = request.read()
    head = f"POST {request.url.raw_path.decode()} HTTP/1.1\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in request.headers.items()) + "\r\n"
    return head.encode() + body


async def load(url: str, requests: int, clients: int, message: bytes) -> tuple[list[float], list[str]]:
    """Send `requests` predictions over `clients` keep-alive connections; (latencies in s, errors).

    A bare asyncio HTTP/1.1 client: a general one (httpx) spends more CPU per request than the server does.
    """
    host, port = httpx.URL(url).host, httpx.URL(url).port
    latencies: list[float] = []
    errors: list[str] = []
    remaining = requests

    async def worker():
        nonlocal remaining
        reader, writer = await asyncio.open_connection(host, port)
        while remaining > 0:
            remaining -= 1
            start = time.perf_counter()
            try:
                writer.write(message)
                head = await reader.readuntil(b"\r\n\r\n")
                length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
                body = await reader.readexactly(int(length.group(1))) if length else b""
                if not head.startswith(b"HTTP/1.1 200") or b'"class"' not in body:
                    errors.append(f"{head.splitlines()[0].decode()}: {body[:200].decode(errors='replace')}")
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as e:
                errors.append(repr(e))
                writer.close()
                reader, writer = await asyncio.open_connection(host, port)
            latencies.append(time.perf_counter() - start)
        writer.close()

    await asyncio.gather(*(worker() for _ in range(clients)))
    return latencies, errors


PAGE_TIMING = """(n) => {
    const L = window.Lenet, state = window.lenetPage, canvas = document.querySelector("#canvas");
    const rgba = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
    const median = (xs) => xs.sort((a, b) => a - b)[xs.length >> 1];
    const time = (fn) => {
        const times = [];
        for (let i = 0; i < n; i++) { const t = performance.now(); fn(); times.push(performance.now() - t); }
        return median(times);
    };
    const input = L.preprocess(rgba, canvas.width, canvas.height, "digit");
    const out = {preprocess: time(() => L.preprocess(rgba, canvas.width, canvas.height, "digit")), models: []};
    for (const m of state.models) {
        const run = m.net.run(input);
        out.models.push({model: m.net.manifest.model, forward: time(() => m.net.run(input)),
                         saliency: time(() => m.net.saliency(run, run.best)), paint: time(() => L.renderModel(m))});
    }
    return out;
}"""


def page_timing(url: str, reads: int) -> None:
    """Time the page's own reading of a drawn 7 in Chromium, and count the bytes it loads."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        loaded = []
        page.on("response", lambda r: loaded.append((r.url, len(r.body()))))
        page.goto(url)
        page.wait_for_selector("body[data-ready='1']")
        box = page.locator("#canvas").bounding_box()
        points = [(0.25, 0.2), (0.75, 0.2), (0.42, 0.85)]
        page.mouse.move(box["x"] + points[0][0] * box["width"], box["y"] + points[0][1] * box["height"])
        page.mouse.down()
        for x, y in points[1:]:
            page.mouse.move(box["x"] + x * box["width"], box["y"] + y * box["height"], steps=8)
        page.mouse.up()
        page.wait_for_selector("#prediction[data-state='ready']")
        result = page.evaluate(PAGE_TIMING, reads)
        browser.close()
    print(f"page read of a drawn 7 in Chromium, median of {reads}: preprocess 280x280 -> 28x28 "
          f"{result['preprocess']:.2f} ms")  # fmt: skip
    for m in result["models"]:
        print(f"  {m['model']}: forward {m['forward']:.2f} ms, saliency {m['saliency']:.2f} ms, "
              f"bars + saliency + every map painted {m['paint']:.2f} ms")  # fmt: skip
    print(f"loaded once: {sum(n for _, n in loaded):,} bytes in {len(loaded)} files")
    for address, n in sorted(loaded, key=lambda x: -x[1])[:4]:
        print(f"  {n:>9,}  {address.removeprefix(url)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", nargs="*", help="run folder to serve (not needed with --url); two with --page")
    parser.add_argument("--url", help="an already running server instead of starting one")
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--payload", choices=("png", "json"), default="png", help="a drawn PNG or 28x28 JSON")
    parser.add_argument("--activations", action="store_true", help="ask for every layer's activations too")
    parser.add_argument("--page", type=int, metavar="N", help="time N reads of a drawing in the page instead")
    args = parser.parse_args()
    if not args.url and not args.run:
        parser.error("give a RUN folder to serve, or --url of a running server")

    process = None
    url = args.url
    if not url:
        process, url = start_server(args.run, Path(tempfile.mkdtemp()) / "serve.log")
    if args.page:
        try:
            page_timing(url.rstrip("/") + "/", args.page)
        finally:
            if process:
                process.terminate()
                process.wait(timeout=10)
        return 0
    params = {"activations": "1"} if args.activations else {}
    message = http_message(url, params, request_kwargs(args.payload))
    try:
        asyncio.run(load(url, 20, 4, message))  # warm up
        start = time.perf_counter()
        latencies, errors = asyncio.run(load(url, args.requests, args.clients, message))
        seconds = time.perf_counter() - start
    finally:
        if process:
            process.terminate()
            process.wait(timeout=10)

    ms = np.asarray(latencies) * 1000
    what = f"{args.payload}{' + activations' if args.activations else ''}"
    print(f"{len(latencies):,} requests ({what}), {args.clients} clients, {url}, {os.cpu_count()} CPU cores")
    print(f"errors: {len(errors)}")
    print(f"latency: p50 {np.percentile(ms, 50):.1f} ms, p99 {np.percentile(ms, 99):.1f} ms, "
          f"max {ms.max():.1f} ms")  # fmt: skip
    print(f"throughput: {len(latencies) / seconds:.0f} requests/s ({seconds:.1f} s)")
    for error in errors[:5]:
        print(f"  {error}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
