// The drawing page: the pad (pad.js) -> the 28x28 input (preprocess.js) -> every model's forward pass in the
// page (engine.js) -> bars, saliency, every layer's maps (model.js). `lenet serve` and `lenet export --format
// web` serve this same page; with a server, uploads and samples come from its API.
"use strict";

(function (L) {
  const DELAY_MS = 60; // while drawing, read the drawing at most this often
  const $ = (s) => document.querySelector(s);

  // The page's state, also for the tests and the curious: window.lenetPage.models[0].run.probs
  const state = { site: null, models: [], stage: "post", input: null, status: ["drawHint", {}] };
  window.lenetPage = L.state = state;
  state.reread = () => state.input && show(state.input, pad.uploaded());
  const pad = L.makePad($("#canvas"), changed);
  let timer = null;

  // -------------------------------------------------------------------------------------------------------
  // Reading the drawing: in the page, at most every DELAY_MS while drawing

  function changed(fresh) {
    pad.redraw();
    if (fresh && state.status[0].startsWith("err")) setStatus("drawHint"); // an old error goes with a new drawing
    if (pad.isEmpty()) {
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
    if (pad.isEmpty() || !state.models.length) return;
    show(pad.input() || fromCanvas(), pad.uploaded());
  }

  function fromCanvas() {
    const canvas = $("#canvas");
    return L.preprocess(pad.rgba(), canvas.width, canvas.height, state.models[0].net.manifest.input.style);
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
      L.renderModel(m);
    }
    if (L.detailOpen()) L.renderDetail();
  }

  function showEmpty() {
    state.input = null;
    for (const m of state.models) L.clearModel(m);
    if (L.detailOpen()) $("#detail").close();
  }

  function setStatus(key, vars = {}) {
    state.status = [key, vars];
    $("#status").textContent = L.t(key, vars);
    $("#status").classList.toggle("error", key.startsWith("err"));
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
      setStatus("sampleStatus", { i: index, label });
      pad.show({ image: small, input: pixels });
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
      setStatus("uploaded", { name: file.name });
      pad.show({ image, input, upload: true });
    } catch (error) {
      // a failed upload leaves nothing of the previous picture on screen
      pad.show(null);
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
    for (const m of state.models) L.labelModel(m, state.models.length > 1, describe);
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
        if (manifest.error) throw new Error(`${manifest.model}: ${manifest.error} (POST api/predict still answers)`);
        const m = { index, net: new L.Net(manifest), weights: {}, salClass: null };
        m.weights[manifest.weights] = await L.loadWeights(manifest.weights);
        m.net.setWeights(m.weights[manifest.weights]);
        state.models.push(m);
        L.buildCard(m);
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

  $("#clear").addEventListener("click", () => {
    for (const m of state.models) m.salClass = null;
    setStatus("drawHint");
    pad.clear();
  });
  $("#undo").addEventListener("click", () => pad.undo());
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
      for (const m of state.models) if (m.run) L.renderLayers(m);
      if (L.detailOpen()) L.renderDetail();
    });
  }
  document.addEventListener("keydown", (event) => {
    if ((event.ctrlKey || event.metaKey) && event.key === "z") {
      event.preventDefault();
      pad.undo();
    }
  });

  pad.redraw();
  start();
})(window.Lenet);
