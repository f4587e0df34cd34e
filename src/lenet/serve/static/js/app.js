// The drawing page: strokes on a canvas -> the 28x28 input (preprocess.js) -> every model's forward pass
// in the page (engine.js) -> bars, saliency, every layer's maps. `lenet serve` and `lenet export --format
// web` serve this same page; with a server, uploads and samples come from its API.
"use strict";

(function (L) {
  const BRUSH = 20; // stroke width on the 280 px canvas: MNIST's strokes are 2-3 px of 28
  const DELAY_MS = 60; // while drawing, read the drawing at most this often
  const $ = (s) => document.querySelector(s);

  const canvas = $("#canvas");
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  // The page's state, also for the tests and the curious: window.lenetPage.models[0].run.probs
  const state = { site: null, models: [], stage: "post", input: null, verdict: null, status: ["drawHint", {}] };
  window.lenetPage = state;

  let strokes = []; // each stroke: a list of [x, y] points in canvas pixels
  let current = null; // the stroke under the pointer, and which pointer draws it
  let pointer = null;
  let picture = null; // a sample or an upload under the strokes: {image, input, upload}
  let timer = null;

  // -------------------------------------------------------------------------------------------------------
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
    return [((event.clientX - box.left) * canvas.width) / box.width, ((event.clientY - box.top) * canvas.height) / box.height];
  }

  // Pointer events: one code path for the mouse, a finger and a pen.
  canvas.addEventListener("pointerdown", (event) => {
    if (current || (event.pointerType === "mouse" && event.button !== 0)) return;
    event.preventDefault();
    canvas.setPointerCapture(event.pointerId);
    pointer = event.pointerId;
    current = [position(event)];
    strokes.push(current);
    changed(true);
  });
  canvas.addEventListener("pointermove", (event) => {
    if (!current || event.pointerId !== pointer) return;
    const coalesced = event.getCoalescedEvents ? event.getCoalescedEvents() : [];
    for (const e of coalesced.length ? coalesced : [event]) current.push(position(e));
    changed(false);
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
    for (const m of state.models) m.salClass = null;
    setStatus("drawHint");
    changed(true);
  }

  function undo() {
    if (strokes.length) strokes.pop();
    else picture = null;
    current = null;
    changed(true);
  }

  // -------------------------------------------------------------------------------------------------------
  // Reading the drawing: in the page, at most every DELAY_MS while drawing

  function isEmpty() {
    return !strokes.length && !picture;
  }

  function changed(fresh) {
    redraw();
    if (fresh && state.status[0].startsWith("err")) setStatus("drawHint"); // an old error goes with a new drawing
    if (isEmpty()) {
      clearTimeout(timer);
      timer = null;
      showEmpty();
      return;
    }
    for (const m of state.models) m.prediction.dataset.state = "pending";
    if (!timer) timer = setTimeout(read, DELAY_MS);
  }

  function read() {
    timer = null;
    if (isEmpty() || !state.models.length) return;
    const input = strokes.length || !picture.input ? fromCanvas() : picture.input;
    show(input, picture && !strokes.length && picture.upload);
  }

  function fromCanvas() {
    const { data } = ctx.getImageData(0, 0, canvas.width, canvas.height);
    return L.preprocess(data, canvas.width, canvas.height, state.models[0].net.manifest.input.style);
  }

  // The honest answer (lenet.infer.web.verdict): blank, thick, faint, unsure or ok.
  function verdict(input, probs) {
    let max = 0;
    let ink = 0;
    for (const v of input) {
      max = Math.max(max, v);
      if (v >= 128) ink++;
    }
    if (max === 0) return { kind: "blank" };
    const coverage = ink / input.length;
    const range = state.site.honesty.coverage;
    if (range && coverage > range[1]) return { kind: "thick", c: (100 * coverage).toFixed(0) };
    if (range && coverage < range[0]) return { kind: "faint", c: (100 * coverage).toFixed(1) };
    const top = Math.max(...probs);
    if (top < state.site.honesty.unsure) return { kind: "unsure", p: (100 * top).toFixed(0) };
    return { kind: "ok" };
  }

  function show(input, uploaded) {
    state.input = input;
    for (const m of state.models) {
      m.run = m.net.run(input);
      m.verdict = verdict(input, m.run.probs);
      m.verdict.uploaded = uploaded;
      renderModel(m);
    }
    if (L.detailOpen()) L.renderDetail();
  }

  function renderModel(m) {
    const { run, verdict: v } = m;
    if (!run) return;
    m.prediction.dataset.state = "ready";
    m.prediction.dataset.verdict = v.kind;
    const blank = v.kind === "blank";
    m.label.textContent = blank ? "–" : m.classes[run.best];
    m.confidence.textContent = blank ? "" : `${(100 * run.probs[run.best]).toFixed(1)}%`;
    const note = { blank: v.uploaded ? "blankUpload" : "blank", thick: "thick", faint: "faint", unsure: "unsure" }[v.kind];
    m.note.textContent = note ? L.t(note, v) : "";
    m.bars.forEach((bar, i) => {
      bar.fill.style.width = blank ? "0" : `${100 * run.probs[i]}%`;
      bar.value.textContent = blank ? "" : run.probs[i].toFixed(3);
      bar.row.classList.toggle("top", !blank && i === run.best);
      bar.row.classList.toggle("asked", !blank && i === m.salClass);
    });
    m.salBox.hidden = blank;
    if (blank) {
      m.layers.replaceChildren();
      m.layerKey = "";
      return;
    }
    const cls = m.salClass ?? run.best;
    m.saliency = m.net.saliency(run, cls);
    L.paintSaliency(m.salCanvas, run.pixels, m.saliency);
    m.salHint.textContent = L.t("saliencyHint", { label: m.classes[cls] });
    renderLayers(m);
  }

  function showEmpty() {
    state.input = null;
    for (const m of state.models) {
      m.run = null;
      m.prediction.dataset.state = "empty";
      m.prediction.dataset.verdict = "";
      m.label.textContent = "–";
      m.confidence.textContent = "";
      m.note.textContent = "";
      m.salBox.hidden = true;
      for (const bar of m.bars) {
        bar.fill.style.width = "0";
        bar.value.textContent = "";
        bar.row.classList.remove("top", "asked");
      }
      m.layers.replaceChildren();
      m.layerKey = "";
    }
    if (L.detailOpen()) $("#detail").close();
  }

  function setStatus(key, vars = {}) {
    state.status = [key, vars];
    $("#status").textContent = L.t(key, vars);
    $("#status").classList.toggle("error", key.startsWith("err"));
  }

  // -------------------------------------------------------------------------------------------------------
  // Every layer's maps

  function renderLayers(m) {
    const { net, run } = m;
    const key = `${L.lang} ${run.shapes.join(" ")}`;
    if (key !== m.layerKey) buildLayers(m);
    m.layerKey = key;
    const input = net.value(run, -1);
    L.paint(m.blockMaps[0][0], input.data, 0, L.top(input.data));
    net.blocks.forEach((block, b) => {
      const index = state.stage === "pre" ? block.pre : block.post ?? block.pre;
      const values = run.outs[index];
      const top = L.top(values);
      m.blockMaps[b + 1].forEach((map, c) => L.paint(map, values, c * map.width * map.height, top));
    });
  }

  function buildLayers(m) {
    const { net, run } = m;
    m.layers.replaceChildren();
    const blockOf = (name, type, shape, text) => {
      const div = L.element("div", "layer");
      div.dataset.name = name;
      const title = L.element("div", "title");
      title.append(L.element("b", "", name), ` · ${type} · ${shape.join("×")}`);
      div.append(title, L.element("p", "explain", text));
      const maps = L.element("div", "maps");
      div.append(maps);
      m.layers.append(div);
      return maps;
    };
    const inputShape = run.shapes[0];
    const inputMaps = blockOf("input", L.lang === "zh" ? "网络读到的图像" : "what the network reads", inputShape, L.explainInput(net));
    const inputCanvas = L.canvas(inputShape[2], inputShape[1], 3);
    inputMaps.append(inputCanvas);
    m.blockMaps = [[inputCanvas]];
    net.blocks.forEach((block, b) => {
      const shape = run.shapes[(block.post ?? block.pre) + 1];
      const types = block.stages.map((i) => net.layers[i]).filter((s) => !["flatten", "identity"].includes(s.type));
      const maps = blockOf(block.name, types.map((s) => s.type).join(" + "), shape, L.explainBlock(net, block, run.shapes, b));
      const lay = L.layout(shape);
      const canvases = [];
      for (let c = 0; c < lay.maps; c++) {
        const map = L.canvas(lay.w, lay.h, lay.scale, "map");
        map.title = lay.maps > 1 ? `${block.name}, map ${c + 1} of ${lay.maps}` : block.name;
        map.addEventListener("click", (event) => {
          const unit = lay.vector ? L.unitAt(map, event, shape, 0) : { c };
          if (unit) L.openDetail(m.index, b, unit);
        });
        maps.append(map);
        canvases.push(map);
      }
      m.blockMaps.push(canvases);
    });
  }

  // -------------------------------------------------------------------------------------------------------
  // Models: cards with the prediction, the saliency map and the snapshot slider

  function buildCard(m) {
    const s = m.index ? `-${m.index}` : "";
    const card = L.element("div", "card");
    card.dataset.model = String(m.index);
    const info = m.net.manifest;
    m.title = L.element("h2", "card-title");
    m.prediction = L.element("div", "prediction");
    m.prediction.id = `prediction${s}`;
    m.prediction.dataset.state = "empty";
    m.label = L.element("span", "label", "–");
    m.label.id = `label${s}`;
    m.confidence = L.element("span", "confidence");
    m.confidence.id = `confidence${s}`;
    m.prediction.append(m.label, m.confidence);
    m.note = L.element("p", "verdict");
    m.note.id = `verdict${s}`;
    const bars = L.element("div", "bars");
    bars.id = `bars${s}`;
    m.classes = info.classes;
    m.bars = L.buildBars(bars, info.classes, (i) => {
      m.salClass = i === m.salClass ? null : i;
      renderModel(m);
    });
    m.salBox = L.element("div", "saliency");
    m.salBox.hidden = true;
    m.salTitle = L.element("h3");
    m.salCanvas = L.canvas(28, 28, 5, "saliency-map");
    m.salCanvas.id = `saliency${s}`;
    m.salHint = L.element("p", "hint");
    m.salBox.append(m.salTitle, m.salCanvas, m.salHint);
    card.append(m.title, m.prediction, m.note, bars, m.salBox, buildSlider(m));
    $("#results").append(card);
    const net = L.element("div", "net");
    m.netTitle = L.element("h3", "net-title");
    m.layers = L.element("div", "layers");
    m.layers.id = `layers${s}`;
    net.append(m.netTitle, m.layers);
    $("#nets").append(net);
  }

  function buildSlider(m) {
    const snaps = m.net.manifest.snapshots;
    const box = L.element("div", "snapshots");
    box.hidden = !snaps.length;
    m.snapTitle = L.element("h3");
    const slider = L.element("input");
    slider.type = "range";
    slider.min = "0";
    slider.max = String(snaps.length);
    slider.value = String(snaps.length);
    slider.id = `snapshot${m.index ? `-${m.index}` : ""}`;
    m.snapLabel = L.element("span", "snapshot-label");
    m.play = L.element("button", "play");
    m.play.type = "button";
    slider.addEventListener("input", () => pickSnapshot(m, Number(slider.value)));
    m.play.addEventListener("click", () => togglePlay(m, slider));
    box.append(m.snapTitle, slider, m.play, m.snapLabel);
    m.slider = slider;
    m.position = snaps.length;
    return box;
  }

  async function pickSnapshot(m, position) {
    m.position = position;
    const snaps = m.net.manifest.snapshots;
    const file = position < snaps.length ? snaps[position].file : m.net.manifest.weights;
    m.weights[file] = m.weights[file] || (await L.loadWeights(file));
    if (m.position !== position) return; // the slider moved on while this loaded
    m.net.setWeights(m.weights[file]);
    m.slider.dataset.loaded = String(position);
    renderSnapLabel(m);
    if (state.input) show(state.input, picture && !strokes.length && picture.upload);
  }

  function togglePlay(m, slider) {
    if (m.playing) {
      clearInterval(m.playing);
      m.playing = null;
    } else {
      if (Number(slider.value) >= Number(slider.max)) slider.value = "0";
      pickSnapshot(m, Number(slider.value));
      m.playing = setInterval(() => {
        if (Number(slider.value) >= Number(slider.max)) return togglePlay(m, slider);
        slider.value = String(Number(slider.value) + 1);
        pickSnapshot(m, Number(slider.value));
      }, 900);
    }
    m.play.textContent = L.t(m.playing ? "pause" : "play");
  }

  function renderSnapLabel(m) {
    const snaps = m.net.manifest.snapshots;
    const s = snaps[m.position];
    let text = L.t("snapshotFinal");
    if (s && s.kind === "epoch") text = L.t("snapshotEpoch", { epoch: s.epoch });
    else if (s) text = L.t("snapshotStep", { step: s.step, epoch: s.epoch == null ? "?" : Number(s.epoch).toFixed(2) });
    const acc = s ? s.test_acc : m.net.manifest.test_acc;
    m.snapLabel.textContent = acc == null ? text : `${text} · ${L.t("snapshotAcc", { a: (100 * acc).toFixed(1) })}`;
  }

  // -------------------------------------------------------------------------------------------------------
  // Samples, uploads, language, large type, the address to share

  async function drawSample() {
    try {
      let pixels;
      let index;
      let label;
      if (state.site.mode === "server") {
        const response = await fetch("api/sample");
        const data = await response.json();
        if (!response.ok) throw new Error(data.detail);
        [pixels, index, label] = [Uint8Array.from(data.pixels.flat()), data.index, data.label];
      } else {
        const bundle = await L.load("samples.js");
        const k = Math.floor(Math.random() * bundle.labels.length);
        const all = L.base64Bytes(bundle.pixels);
        [pixels, index, label] = [all.slice(k * 784, (k + 1) * 784), bundle.index[k], state.models[0].classes[bundle.labels[k]]];
      }
      const small = document.createElement("canvas");
      small.width = small.height = 28;
      const image = new ImageData(28, 28);
      pixels.forEach((v, i) => image.data.set([255 - v, 255 - v, 255 - v, 255], 4 * i));
      small.getContext("2d").putImageData(image, 0, 0);
      picture = { image: small, input: pixels };
      strokes = [];
      setStatus("sampleStatus", { i: index, label });
      changed(true);
    } catch (error) {
      setStatus("errServer", { why: error.message });
    }
  }

  async function upload(file) {
    for (const m of state.models) m.prediction.dataset.state = "pending";
    setStatus("reading");
    let image = null;
    try {
      image = await createImageBitmap(file, { colorSpaceConversion: "none", premultiplyAlpha: "none" });
    } catch {
      image = null; // the browser cannot show it; a server may still read it
    }
    try {
      const input = state.site.mode === "server" ? await serverRead(file) : localRead(file, image);
      picture = { image, input, upload: true };
      strokes = [];
      setStatus("uploaded", { name: file.name });
      changed(true);
    } catch (error) {
      // a failed upload leaves nothing of the previous picture on screen
      picture = null;
      strokes = [];
      redraw();
      showEmpty();
      setStatus(error.key || "errServer", { name: file.name, why: error.message, mb: 4 });
    }
  }

  async function serverRead(file) {
    const form = new FormData();
    form.append("image", file, file.name);
    let response;
    try {
      response = await fetch("api/predict?input=1", { method: "POST", body: form });
    } catch (error) {
      throw Object.assign(new Error(error.message), { key: "errServer" });
    }
    const data = await response.json().catch(() => ({}));
    if (response.status === 415 || response.status === 422) throw Object.assign(new Error(data.detail), { key: "errNotImage" });
    if (response.status === 413) throw Object.assign(new Error(data.detail), { key: "errTooLarge" });
    if (!response.ok) throw Object.assign(new Error(data.detail || response.statusText), { key: "errServer" });
    return Uint8Array.from(data.input.flat());
  }

  function localRead(file, image) {
    if (!image) throw Object.assign(new Error("not an image"), { key: "errNotImage" });
    if (file.size > 4 * 1024 * 1024 || image.width * image.height > 12e6) throw Object.assign(new Error("too large"), { key: "errTooLarge" });
    const c = document.createElement("canvas");
    c.width = image.width;
    c.height = image.height;
    const g = c.getContext("2d", { willReadFrequently: true });
    g.drawImage(image, 0, 0);
    const { data } = g.getImageData(0, 0, c.width, c.height);
    return L.preprocess(data, c.width, c.height, state.models[0].net.manifest.input.style);
  }

  function applyLanguage() {
    document.documentElement.lang = L.lang === "zh" ? "zh-CN" : "en";
    document.title = L.t("title");
    for (const el of document.querySelectorAll("[data-i18n]")) el.textContent = L.t(el.dataset.i18n);
    $("#lang").textContent = L.t("language");
    setStatus(...state.status);
    if (!state.models.length) return;
    const first = state.models[0].net.manifest;
    const names = state.models.map((m) => m.net.manifest.model).join(" & ");
    $("#model-info").textContent = state.models.length > 1 ? L.t("modelOn", { model: names, dataset: first.dataset }) : describe(first);
    for (const m of state.models) {
      const info = m.net.manifest;
      m.title.textContent = state.models.length > 1 ? describe(info) : "";
      m.netTitle.textContent = state.models.length > 1 ? info.model : "";
      m.salTitle.textContent = L.t("saliencyTitle");
      m.snapTitle.textContent = L.t("snapshots");
      m.play.textContent = L.t(m.playing ? "pause" : "play");
      renderSnapLabel(m);
      m.layerKey = "";
      if (m.run) renderModel(m);
    }
    const sample = $("#sample");
    const note = $("#sample-note");
    note.hidden = sample.disabled === false;
    const why = L.lang === "en" && state.site.sampleNote ? state.site.sampleNote : L.t("sampleNone");
    note.textContent = L.t("sampleOff", { why });
    sample.title = note.hidden ? "" : note.textContent;
    if (L.detailOpen()) L.renderDetail();
  }

  // localStorage, where the browser allows it (not always for pages opened from a file)
  function remembered(key, value) {
    try {
      if (value === undefined) return localStorage.getItem(key);
      localStorage.setItem(key, value);
    } catch {
      return null;
    }
    return value;
  }

  function describe(info) {
    const acc = info.test_acc == null ? L.t("accUnknown") : L.t("acc", { a: (100 * info.test_acc).toFixed(2) });
    const params = L.t("params", { n: info.params.toLocaleString("en-US") });
    return `${L.t("modelOn", { model: info.model, dataset: info.dataset })} · ${params} · ${acc}`;
  }

  function share(site) {
    if (!site.addresses || !site.addresses.length) return;
    $("#share").hidden = false;
    $("#share-url").textContent = site.addresses[0];
    $("#share-more").textContent = site.addresses.slice(1).join("  ");
    if (site.qr) $("#qr").innerHTML = site.qr; // made by the server (segno), not from user input
  }

  async function start() {
    const stored = remembered("lenet-lang");
    const browser = (navigator.language || "").toLowerCase().startsWith("zh") ? "zh" : "en";
    L.lang = stored === "zh" || stored === "en" ? stored : browser;
    if (remembered("lenet-large") === "1") document.body.classList.add("large");
    applyLanguage();
    try {
      state.site = await L.load("site.js");
      const manifests = await Promise.all(state.site.models.map((path) => L.load(path)));
      for (const [index, manifest] of manifests.entries()) {
        const m = { index, net: new L.Net(manifest), weights: {}, salClass: null };
        m.weights[manifest.weights] = await L.loadWeights(manifest.weights);
        m.net.setWeights(m.weights[manifest.weights]);
        state.models.push(m);
        buildCard(m);
      }
    } catch (error) {
      $("#model-info").textContent = L.t("errLoad", { why: error.message });
      return;
    }
    $("#sample").disabled = !state.site.samples;
    share(state.site);
    L.initDetail(state);
    applyLanguage();
    document.body.dataset.ready = "1";
  }

  $("#clear").addEventListener("click", clearAll);
  $("#undo").addEventListener("click", undo);
  $("#sample").addEventListener("click", drawSample);
  $("#upload").addEventListener("change", (event) => {
    const file = event.target.files[0];
    event.target.value = "";
    if (file) upload(file);
  });
  $("#lang").addEventListener("click", () => {
    L.lang = L.lang === "zh" ? "en" : "zh";
    remembered("lenet-lang", L.lang);
    applyLanguage();
  });
  $("#big").addEventListener("click", () => {
    const on = document.body.classList.toggle("large");
    $("#big").setAttribute("aria-pressed", String(on));
    remembered("lenet-large", on ? "1" : "0");
  });
  for (const radio of document.querySelectorAll("input[name='stage']")) {
    radio.addEventListener("change", () => {
      state.stage = radio.value;
      for (const m of state.models) if (m.run) renderLayers(m);
      if (L.detailOpen()) L.renderDetail();
    });
  }
  document.addEventListener("keydown", (event) => {
    if ((event.ctrlKey || event.metaKey) && event.key === "z") {
      event.preventDefault();
      undo();
    }
  });

  redraw();
  start();
})(window.Lenet);
