// The drawing page of `lenet serve`: strokes on a canvas -> POST /api/predict -> bars and heat maps.
"use strict";

const BRUSH = 20; // stroke width on the 280 px canvas: MNIST's strokes are 2-3 px of 28
const DELAY_MS = 100; // while drawing, ask for a new prediction at most this often
const $ = (selector) => document.querySelector(selector);

const canvas = $("#canvas");
const ctx = canvas.getContext("2d");
const prediction = $("#prediction");

let strokes = []; // each stroke: a list of [x, y] points in canvas pixels
let current = null; // the stroke under the pointer, and which pointer draws it
let pointer = null;
let picture = null; // a sample or an upload under the strokes: {image, request}
let version = 0; // bumped by every change of the drawing
let timer = null;
let busy = false;
let bars = [];
let layerKey = "";
let layerMaps = [];

// ---------------------------------------------------------------------------------------------------------
// Drawing

function redraw() {
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  if (picture && picture.image) drawFitted(picture.image);
  ctx.strokeStyle = ctx.fillStyle = "#000";
  ctx.lineWidth = BRUSH;
  ctx.lineCap = ctx.lineJoin = "round";
  for (const stroke of strokes) {
    ctx.beginPath();
    if (stroke.length === 1) {
      ctx.arc(stroke[0][0], stroke[0][1], BRUSH / 2, 0, 2 * Math.PI); // a tap is a dot
      ctx.fill();
      continue;
    }
    ctx.moveTo(...stroke[0]);
    for (const point of stroke.slice(1)) ctx.lineTo(...point);
    ctx.stroke();
  }
}

function drawFitted(image) {
  const scale = Math.min(canvas.width / image.width, canvas.height / image.height);
  const w = image.width * scale;
  const h = image.height * scale;
  ctx.imageSmoothingEnabled = true;
  ctx.drawImage(image, (canvas.width - w) / 2, (canvas.height - h) / 2, w, h);
}

function position(event) {
  const box = canvas.getBoundingClientRect();
  return [
    ((event.clientX - box.left) * canvas.width) / box.width,
    ((event.clientY - box.top) * canvas.height) / box.height,
  ];
}

// Pointer events: one code path for the mouse, a finger and a pen.
canvas.addEventListener("pointerdown", (event) => {
  if (current || (event.pointerType === "mouse" && event.button !== 0)) return;
  event.preventDefault();
  canvas.setPointerCapture(event.pointerId);
  pointer = event.pointerId;
  current = [position(event)];
  strokes.push(current);
  changed();
});

canvas.addEventListener("pointermove", (event) => {
  if (!current || event.pointerId !== pointer) return;
  const coalesced = event.getCoalescedEvents ? event.getCoalescedEvents() : [];
  for (const e of coalesced.length ? coalesced : [event]) current.push(position(e));
  changed();
});

for (const type of ["pointerup", "pointercancel", "lostpointercapture"]) {
  canvas.addEventListener(type, (event) => {
    if (event.pointerId === pointer) current = null;
  });
}

function clearAll() {
  strokes = [];
  picture = null;
  current = null;
  setStatus("Draw a digit with the mouse, a finger or a pen.");
  changed();
}

function undo() {
  if (strokes.length) strokes.pop();
  else picture = null;
  current = null;
  changed();
}

// ---------------------------------------------------------------------------------------------------------
// Predictions: live while drawing, never more than one request in flight

function isEmpty() {
  return !strokes.length && !picture;
}

function changed() {
  version += 1;
  redraw();
  if (isEmpty()) {
    showEmpty();
    return;
  }
  prediction.dataset.state = "pending";
  if (!timer && !busy) timer = setTimeout(predict, DELAY_MS);
}

async function request() {
  if (!strokes.length) return picture.request; // the sample's exact pixels, or the uploaded file
  const blob = await new Promise((resolve) => canvas.toBlob(resolve, "image/png"));
  const form = new FormData();
  form.append("image", blob, "drawing.png");
  return { method: "POST", body: form };
}

async function predict() {
  timer = null;
  if (isEmpty()) return;
  busy = true;
  const asked = version;
  try {
    const response = await fetch("/api/predict?activations=1", await request());
    const data = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(data.detail || `${response.status} ${response.statusText}`);
    if (!isEmpty()) show(data);
    if (asked === version) prediction.dataset.state = "ready";
  } catch (error) {
    if (asked === version) {
      prediction.dataset.state = "error";
      $("#label").textContent = "?";
      $("#confidence").textContent = "";
      setStatus(error.message);
    }
  } finally {
    busy = false;
    if (asked !== version && !isEmpty()) timer = setTimeout(predict, DELAY_MS);
  }
}

function show(data) {
  $("#label").textContent = data.label;
  $("#confidence").textContent = `${(100 * data.probability).toFixed(1)}%`;
  data.probabilities.forEach((p, i) => {
    const bar = bars[i];
    if (!bar) return; // the model's description has not arrived yet
    bar.fill.style.width = `${100 * p}%`;
    bar.value.textContent = p.toFixed(3);
    bar.row.classList.toggle("top", i === data.class);
  });
  const input = { name: "input", type: "what the network reads", shape: [1, 28, 28], values: data.input.flat() };
  showLayers([input, ...data.activations]);
}

function showEmpty() {
  prediction.dataset.state = "empty";
  $("#label").textContent = "–";
  $("#confidence").textContent = "";
  for (const bar of bars) {
    bar.fill.style.width = "0";
    bar.value.textContent = "";
    bar.row.classList.remove("top");
  }
  $("#layers").replaceChildren();
  layerKey = "";
}

function setStatus(text) {
  $("#status").textContent = text;
}

// ---------------------------------------------------------------------------------------------------------
// The bar chart and the heat maps

function buildBars(classes) {
  const box = $("#bars");
  box.replaceChildren();
  bars = classes.map((name) => {
    const row = element("div", "bar");
    const fill = element("div", "fill");
    const track = element("div", "track");
    const value = element("span", "value");
    track.append(fill);
    row.append(element("span", "name", name), track, value);
    box.append(row);
    return { row, fill, value };
  });
}

function element(tag, className, text) {
  const el = document.createElement(tag);
  el.className = className;
  if (text !== undefined) el.textContent = text;
  return el;
}

// (C, H, W) outputs are C small images; anything else is a vector drawn as a strip of cells.
function layout(shape) {
  if (shape.length === 3) {
    const [c, h, w] = shape;
    return { count: c, h, w, scale: Math.max(2, Math.floor(48 / h)) };
  }
  const n = shape.reduce((a, b) => a * b, 1);
  const cols = n <= 200 ? n : 100;
  return { count: 1, h: Math.ceil(n / cols), w: cols, scale: n <= 16 ? 18 : n <= 200 ? 6 : 3 };
}

function showLayers(layers) {
  const key = layers.map((layer) => `${layer.name}:${layer.shape}`).join(" ");
  if (key !== layerKey) buildLayers(layers);
  layerKey = key;
  layers.forEach((layer, i) => paint(layerMaps[i], layer.values));
}

function buildLayers(layers) {
  const box = $("#layers");
  box.replaceChildren();
  layerMaps = layers.map((layer) => {
    const block = element("div", "layer");
    block.dataset.name = layer.name;
    const title = element("div", "title");
    title.append(element("b", "", layer.name), ` · ${layer.type} · ${layer.shape.join("×")}`);
    const maps = element("div", "maps");
    const { count, h, w, scale } = layout(layer.shape);
    const canvases = [];
    for (let c = 0; c < count; c++) {
      const map = document.createElement("canvas");
      map.width = w;
      map.height = h;
      map.style.width = `${w * scale}px`;
      map.style.height = `${h * scale}px`;
      map.title = count > 1 ? `${layer.name}, map ${c + 1} of ${count}` : layer.name;
      maps.append(map);
      canvases.push(map);
    }
    block.append(title, maps);
    box.append(block);
    return canvases;
  });
}

// One scale per layer (its largest |value|), so that maps of a layer compare with each other.
function paint(canvases, values) {
  let top = 0;
  for (const v of values) top = Math.max(top, Math.abs(v));
  const scale = top > 0 ? 1 / top : 0;
  const per = values.length / canvases.length;
  canvases.forEach((map, c) => {
    const image = new ImageData(map.width, map.height);
    for (let i = 0; i < per; i++) {
      image.data.set(colour(values[c * per + i] * scale), 4 * i);
    }
    map.getContext("2d").putImageData(image, 0, 0);
  });
}

const WARM = [[0, 0, 0], [217, 115, 13], [255, 236, 170]]; // 0 -> positive
const COOL = [[0, 0, 0], [30, 110, 220], [190, 225, 255]]; // 0 -> negative

function colour(t) {
  const stops = t >= 0 ? WARM : COOL;
  const x = Math.min(Math.abs(t), 1) * (stops.length - 1);
  const i = Math.min(Math.floor(x), stops.length - 2);
  const f = x - i;
  const rgb = stops[i].map((a, k) => Math.round(a + (stops[i + 1][k] - a) * f));
  return [...rgb, 255];
}

// ---------------------------------------------------------------------------------------------------------
// Samples, uploads, buttons, the model's description

async function drawSample() {
  prediction.dataset.state = "pending";
  try {
    const response = await fetch("/api/sample");
    const data = await response.json();
    if (!response.ok) throw new Error(data.detail);
    const small = document.createElement("canvas");
    small.width = small.height = 28;
    const image = new ImageData(28, 28);
    data.pixels.flat().forEach((v, i) => image.data.set([255 - v, 255 - v, 255 - v, 255], 4 * i));
    small.getContext("2d").putImageData(image, 0, 0);
    const body = JSON.stringify({ pixels: data.pixels });
    const headers = { "Content-Type": "application/json" };
    picture = { image: small, request: { method: "POST", headers, body } };
    strokes = [];
    setStatus(`Test image #${data.index}, labelled ${data.label}.`);
    changed();
  } catch (error) {
    prediction.dataset.state = "error";
    setStatus(`No sample: ${error.message}`);
  }
}

async function upload(file) {
  prediction.dataset.state = "pending";
  let image = null;
  try {
    image = await createImageBitmap(file);
  } catch {
    image = null; // the browser cannot show it; the server still says what it makes of it
  }
  const form = new FormData();
  form.append("image", file, file.name);
  picture = { image, request: { method: "POST", body: form } };
  strokes = [];
  setStatus(`Uploaded ${file.name}.`);
  changed();
}

async function loadModel() {
  try {
    const response = await fetch("/api/model");
    const model = await response.json();
    buildBars(model.classes);
    const acc = model.test_acc == null ? "test accuracy unknown" : `test accuracy ${(100 * model.test_acc).toFixed(2)}%`;
    const params = model.params.toLocaleString("en-US");
    $("#model-info").textContent = `${model.model} on ${model.dataset} · ${params} parameters · ${acc}`;
    const sample = $("#sample");
    sample.disabled = !model.sample;
    sample.title = model.sample ? "draw a random test image" : "no test data on the server (start it with --root)";
    document.body.dataset.ready = "1";
  } catch (error) {
    $("#model-info").textContent = `cannot reach the server: ${error.message}`;
  }
}

$("#clear").addEventListener("click", clearAll);
$("#undo").addEventListener("click", undo);
$("#sample").addEventListener("click", drawSample);
$("#upload").addEventListener("change", (event) => {
  const file = event.target.files[0];
  event.target.value = "";
  if (file) upload(file);
});
document.addEventListener("keydown", (event) => {
  if ((event.ctrlKey || event.metaKey) && event.key === "z") {
    event.preventDefault();
    undo();
  }
});

redraw();
loadModel();
