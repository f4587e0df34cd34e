// One model on the page: its card (prediction, bars, saliency, snapshot slider) and its layers' maps.
"use strict";

(function (L) {
  L.renderModel = function (m) {
    const { run, verdict: v } = m;
    if (!run) return;
    m.prediction.dataset.state = "ready";
    m.prediction.dataset.verdict = v.kind;
    const blank = v.kind === "blank";
    m.label.textContent = blank ? "–" : m.classes[run.best];
    m.confidence.textContent = blank ? "" : `${(100 * run.probs[run.best]).toFixed(1)}%`;
    const learning = m.position < m.net.manifest.snapshots.length; // a snapshot, not the trained model
    const unsure = learning ? "unsureLearning" : "unsure";
    const note = { blank: v.uploaded ? "blankUpload" : "blank", thick: "thick", faint: "faint", unsure }[v.kind];
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
    L.renderLayers(m);
  };


  // -------------------------------------------------------------------------------------------------------
  // Every layer's maps

  L.renderLayers = function (m) {
    const { net, run } = m;
    const key = `${L.lang} ${run.shapes.join(" ")}`;
    if (key !== m.layerKey) buildLayers(m);
    m.layerKey = key;
    const input = net.value(run, -1);
    L.paint(m.blockMaps[0][0], input.data, 0, L.top(input.data));
    net.blocks.forEach((block, b) => {
      const index = L.state.stage === "pre" ? block.pre : block.post ?? block.pre;
      const values = run.outs[index];
      const top = L.top(values);
      m.blockMaps[b + 1].forEach((map, c) => L.paint(map, values, c * map.width * map.height, top));
    });
  };

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

  L.buildCard = function (m) {
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
      L.renderModel(m);
    });
    m.salBox = L.element("div", "saliency");
    m.salBox.hidden = true;
    m.salTitle = L.element("h3");
    m.salCanvas = L.canvas(28, 28, 5, "saliency-map");
    m.salCanvas.id = `saliency${s}`;
    m.salHint = L.element("p", "hint");
    m.salBox.append(m.salTitle, m.salCanvas, m.salHint);
    card.append(m.title, m.prediction, m.note, bars, m.salBox, buildSlider(m));
    document.querySelector("#results").append(card);
    const net = L.element("div", "net");
    m.netTitle = L.element("h3", "net-title");
    m.layers = L.element("div", "layers");
    m.layers.id = `layers${s}`;
    net.append(m.netTitle, m.layers);
    document.querySelector("#nets").append(net);
  };

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
    L.renderSnapLabel(m);
    L.state.reread();
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

  L.renderSnapLabel = function (m) {
    const snaps = m.net.manifest.snapshots;
    const s = snaps[m.position];
    let text = L.t("snapshotFinal");
    if (s && s.kind === "epoch") text = L.t("snapshotEpoch", { epoch: s.epoch });
    else if (s) text = L.t("snapshotStep", { step: s.step, epoch: s.epoch == null ? "?" : Number(s.epoch).toFixed(2) });
    const acc = s ? s.test_acc : m.net.manifest.test_acc;
    m.snapLabel.textContent = acc == null ? text : `${text} · ${L.t("snapshotAcc", { a: (100 * acc).toFixed(1) })}`;
  };

  // A model with nothing to show: no drawing, or the drawing was cleared.
  L.clearModel = function (m) {
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
  };

  // The card's words, in the page's language; `many`: models side by side, each card says which it is.
  L.labelModel = function (m, many, describe) {
    const info = m.net.manifest;
    m.title.textContent = many ? describe(info) : "";
    m.netTitle.textContent = many ? info.model : "";
    m.salTitle.textContent = L.t("saliencyTitle");
    m.snapTitle.textContent = L.t("snapshots");
    m.play.textContent = L.t(m.playing ? "pause" : "play");
    L.renderSnapLabel(m);
    m.layerKey = "";
    if (m.run) L.renderModel(m);
  };
})(window.Lenet);
