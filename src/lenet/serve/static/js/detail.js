// A clicked map, large: the kernels that made it, the receptive field of the unit under the pointer on the
// input and on the layer below, and that unit's arithmetic with the numbers of the current drawing.
"use strict";

(function (L) {
  const $ = (s) => document.querySelector(s);
  let page = null; // the app's state: models (net, run), stage
  let open = null; // {model, block, unit, channel, pinned}
  let parts = null; // the dialog's pieces that change with the unit

  L.initDetail = function (state) {
    page = state;
    $("#detail-close").addEventListener("click", () => $("#detail").close());
    $("#detail").addEventListener("close", () => {
      open = null;
    });
  };

  L.openDetail = function (model, block, unit) {
    open = { model, block, unit, channel: null, pinned: false };
    const dialog = $("#detail");
    if (!dialog.open) dialog.showModal();
    L.renderDetail();
  };

  L.detailOpen = () => open !== null;

  function shownIndex(block) {
    return page.stage === "pre" ? block.pre : block.post ?? block.pre;
  }

  // Re-render for a new drawing, snapshot, language or stage.
  L.renderDetail = function () {
    if (!open) return;
    const m = page.models[open.model];
    const { net, run } = m;
    const body = $("#detail-body");
    body.replaceChildren();
    if (!run) return;
    const block = net.blocks[open.block];
    const index = shownIndex(block);
    const shape = run.shapes[index + 1];
    const values = run.outs[index];
    const lay = L.layout(shape);
    const n = lay.vector ? shape.reduce((a, b) => a * b, 1) : shape[0];
    if (!lay.vector && open.unit.c === undefined) open.unit = { c: 0, y: 0, x: 0 };
    if (!open.pinned && open.unit.y === undefined && !lay.vector) open.unit = strongest(values, shape, open.unit.c);
    $("#detail-title").textContent = lay.vector
      ? L.t("detailUnit", { layer: block.name, i: (open.unit.i ?? open.unit.c) + 1, n })
      : L.t("detailOf", { layer: block.name, c: open.unit.c + 1, n });
    body.append(L.element("p", "explain", L.explainBlock(net, block, run.shapes, open.block)));

    const grid = L.element("div", "detail-grid");
    // the map, large
    const big = L.element("figure", "big");
    const scale = lay.vector ? Math.max(8, Math.floor(288 / lay.w)) : Math.max(4, Math.floor(288 / lay.h));
    const map = L.stacked(lay.w, lay.h, scale);
    L.paint(map.base, values, lay.vector ? 0 : open.unit.c * lay.h * lay.w, L.top(values));
    map.wrap.classList.add("pickable");
    const pick = (event, pin) => {
      if (open.pinned && !pin) return;
      const u = L.unitAt(map.base, event, shape, open.unit.c);
      if (!u) return;
      if (pin) open.pinned = !open.pinned || !same(u, open.unit);
      open.unit = u;
      renderUnit();
    };
    map.wrap.addEventListener("pointermove", (e) => pick(e, false));
    map.wrap.addEventListener("pointerdown", (e) => pick(e, true));
    big.append(map.wrap, L.element("figcaption", "hint", L.t("pointAt")));

    // the receptive field on the input
    const field = L.element("figure", "field");
    const input = net.value(run, -1);
    const side = input.shape[1];
    const onInput = L.stacked(side, side, Math.max(3, Math.floor(140 / side)));
    L.paint(onInput.base, input.data, 0, L.top(input.data));
    field.append(L.element("figcaption", "", `${L.t("field")}: ${L.t("onInput")}`), onInput.wrap);
    const side_ = L.element("div", "detail-side");
    const arith = L.element("div", "arithmetic");
    arith.id = "arithmetic";
    side_.append(field, L.element("h3", "", L.t("arithmetic")), arith);
    grid.append(big, side_);
    body.append(grid);
    const below = L.element("div", "below");
    body.append(below);
    parts = { net, run, block, shape, map, lay, onInput, side, below, arith };
    renderUnit();
  };

  function same(a, b) {
    return a.c === b.c && a.y === b.y && a.x === b.x && a.i === b.i;
  }

  function strongest(values, shape, c) {
    const [, h, w] = shape;
    let best = 0;
    for (let i = 1; i < h * w; i++) if (Math.abs(values[c * h * w + i]) > Math.abs(values[c * h * w + best])) best = i;
    return { c, y: Math.floor(best / w), x: best % w };
  }

  function renderUnit() {
    const { net, run, block, shape, map, lay, onInput, side, below, arith } = parts;
    const u = open.unit;
    if (lay.vector) {
      const i = u.i ?? u.c;
      L.outline(map.overlay, { y0: Math.floor(i / lay.w), y1: Math.floor(i / lay.w), x0: i % lay.w, x1: i % lay.w }, lay.w, lay.h);
    } else {
      L.outline(map.overlay, { y0: u.y, y1: u.y, x0: u.x, x1: u.x }, lay.w, lay.h);
    }
    const unit = shape.length === 1 ? { i: u.i ?? u.c } : { c: u.c, y: u.y ?? 0, x: u.x ?? 0 };
    const box = net.field(block.main, unit, -1);
    L.outline(onInput.overlay, box || { y0: 0, y1: side - 1, x0: 0, x1: side - 1 }, side, side);
    const e = net.explain(run, block, unit);
    renderBelow(below, net, run, block, unit, e);
    renderArithmetic(arith, net, block, e);
  }

  // The layer below: the maps the unit reads (with its window outlined) beside the kernels that weigh them.
  function renderBelow(box, net, run, block, unit, e) {
    box.replaceChildren();
    const { data, shape } = net.value(run, block.main - 1);
    const belowName = open.block > 0 ? net.blocks[open.block - 1].name : "input";
    const main = e.main;
    const window = net.field(block.main, unit, block.main - 1);
    const top = L.top(data);
    const mapOf = (c) => {
      const [, h, w] = shape;
      const s = L.stacked(w, h, Math.max(3, Math.floor(84 / h)));
      L.paint(s.base, data, c * h * w, top);
      L.outline(s.overlay, window, w, h);
      return s.wrap;
    };
    if (main.terms && main.terms[0] && main.terms[0].kernel) {
      box.append(L.element("h3", "", `${L.t("kernels")} (${L.t("onBelow", { layer: belowName })})`));
      const rows = L.element("div", "kernels");
      const chosen = open.channel ?? main.terms[0].channel;
      const ktop = Math.max(...main.terms.map((t) => L.top(t.kernel)));
      for (const term of main.terms) {
        const row = L.element("div", "kernel-row");
        row.classList.toggle("chosen", term.channel === chosen);
        const kc = L.canvas(term.k, term.k, Math.max(8, Math.floor(60 / term.k)), "kernel");
        L.paint(kc, term.kernel, 0, ktop);
        row.append(mapOf(term.channel), kc, L.element("span", "partial", `${L.t("kernelFor", { layer: belowName, c: term.channel + 1 })} = ${L.fmt(term.sum)}`));
        row.addEventListener("click", () => {
          open.channel = term.channel;
          renderUnit();
        });
        rows.append(row);
      }
      box.append(rows);
    } else if (main.window) {
      box.append(L.element("h3", "", `${L.t("field")}: ${L.t("onBelow", { layer: belowName })}`), mapOf(unit.c));
    } else if (main.weights) {
      const proto = main.type === "rbf";
      box.append(L.element("h3", "", proto ? L.t("prototype") : L.t("weightsOf")));
      const wrap = L.element("div", "maps");
      const from = open.block > 0 ? net.value(run, net.blocks[open.block - 1].post ?? net.blocks[open.block - 1].pre).shape : shape;
      const lay = L.layout(from.length === 3 ? from : [main.weights.length]);
      const wtop = L.top(main.weights);
      for (let c = 0; c < lay.maps; c++) {
        const kc = L.canvas(lay.w, lay.h, lay.vector ? lay.scale : Math.max(6, Math.floor(48 / lay.h)), "kernel");
        L.paint(kc, main.weights, c * lay.w * lay.h, wtop);
        wrap.append(kc);
      }
      box.append(wrap);
    }
  }

  function line(parent, text, className = "") {
    parent.append(L.element("div", `line ${className}`, text));
  }

  const ACT_TEXT = {
    relu: (s) => `ReLU: max(0, ${L.fmt(s.input)}) = ${L.fmt(s.value)}`,
    sigmoid: (s) => `sigmoid: 1 / (1 + e^(${L.fmt(-s.input)})) = ${L.fmt(s.value)}`,
    tanh: (s) => `tanh(${L.fmt(s.input)}) = ${L.fmt(s.value)}`,
    squash: (s) => `${s.amplitude} · tanh(${L.fmt(s.slope, 4)} × ${L.fmt(s.input)}) = ${L.fmt(s.value)}`,
    clippedlog: (s) => `log(clip(${L.fmt(s.input, 6)})) = ${L.fmt(s.value)}`,
    batchnorm: (s) =>
      `${s.name}: (${L.fmt(s.input)} − (${L.fmt(s.mean)})) / √(${L.fmt(s.variance)} + ${s.eps}) × ${L.fmt(s.gamma)} + (${L.fmt(s.beta)}) = ${L.fmt(s.value)}`,
  };

  function renderArithmetic(box, net, block, e) {
    box.replaceChildren();
    const m = e.main;
    box.dataset.unit = JSON.stringify(e.unit);
    box.dataset.main = String(m.value);
    box.dataset.pre = String(e.pre);
    box.dataset.post = String(e.post);
    const belowName = open.block > 0 ? net.blocks[open.block - 1].name : "input";
    if ((m.type === "conv" || m.type === "sparseconv") && m.terms) {
      for (const term of m.terms) line(box, `${L.t("sumOfMap", { layer: belowName, c: term.channel + 1, n: term.k * term.k })} = ${L.fmt(term.sum)}`);
      const chosen = m.terms.find((t) => t.channel === (open.channel ?? m.terms[0].channel)) || m.terms[0];
      const table = L.element("table", "products");
      for (let ky = 0; ky < chosen.k; ky++) {
        const tr = L.element("tr");
        for (let kx = 0; kx < chosen.k; kx++) {
          const v = chosen.patch[ky * chosen.k + kx];
          tr.append(L.element("td", v === null ? "pad" : "", `${v === null ? "0" : L.fmt(v, 2)}×${L.fmt(chosen.kernel[ky * chosen.k + kx], 2)}`));
        }
        table.append(tr);
      }
      box.append(L.element("div", "hint", L.t("products", { layer: belowName, c: chosen.channel + 1 })), table);
      if (m.bias !== null) line(box, `${L.t("plusBias")} ${L.fmt(m.bias)}`);
    } else if (m.window) {
      const list = m.window.map((v) => L.fmt(v)).join(", ");
      if (m.type === "maxpool") line(box, `max(${list})`);
      else if (m.type === "avgpool") line(box, `mean(${list})`);
      else line(box, `(${m.window.map((v) => L.fmt(v)).join(" + ")}) ${L.t("coefficient")} ${L.fmt(m.coefficient)} ${L.t("plusBias")} ${L.fmt(m.bias)}`);
    } else if (m.terms) {
      const shown = m.terms.slice(0, 8);
      line(box, `${m.type === "rbf" ? L.t("distance") : ""} ${L.t("biggest", { n: shown.length, total: m.terms.length })}:`);
      for (const t of shown) {
        line(box, m.type === "rbf" ? `(x${t.j + 1} ${L.fmt(t.x)} − w ${L.fmt(t.w)})² = ${L.fmt(t.value)}` : `x${t.j + 1} ${L.fmt(t.x)} × w ${L.fmt(t.w)} = ${L.fmt(t.value)}`, "term");
      }
      const rest = m.terms.slice(8).reduce((a, t) => a + t.value, 0);
      if (m.terms.length > 8) line(box, `${L.t("rest", { n: m.terms.length - 8 })}: ${L.fmt(rest)}`, "term");
      if (m.type === "linear") line(box, `${L.t("plusBias")} ${L.fmt(m.bias)}`);
    }
    if (m.type === "rbf") {
      line(box, `= ${L.fmt(-m.value)}; ${L.t("score")} = ${L.fmt(m.value)}`, "total");
    } else {
      line(box, `= ${L.fmt(m.value)}${block.pre === block.main && e.stages.length ? ` (${L.t("preValue")})` : ""}`, "total");
    }
    for (const s of e.stages) {
      const text = ACT_TEXT[s.type];
      if (text) line(box, text(s) + (s.type === "batchnorm" ? ` (${L.t("preValue")})` : ""), "stage");
    }
  }
})(window.Lenet);
