// Drawing numbers as pictures: heat maps of the layers, the bars, the saliency map.
"use strict";

(function (L) {
  L.element = function (tag, className, text) {
    const el = document.createElement(tag);
    if (className) el.className = className;
    if (text !== undefined) el.textContent = text;
    return el;
  };

  const WARM = [[0, 0, 0], [217, 115, 13], [255, 236, 170]]; // 0 -> positive
  const COOL = [[0, 0, 0], [30, 110, 220], [190, 225, 255]]; // 0 -> negative

  L.colour = function (t) {
    const stops = t >= 0 ? WARM : COOL;
    const x = Math.min(Math.abs(t), 1) * (stops.length - 1);
    const i = Math.min(Math.floor(x), stops.length - 2);
    const f = x - i;
    return [...stops[i].map((a, k) => Math.round(a + (stops[i + 1][k] - a) * f)), 255];
  };

  L.top = function (values) {
    let top = 0;
    for (const v of values) top = Math.max(top, Math.abs(v));
    return top;
  };

  // Paint values (w*h of them, from `offset`) into a canvas of w x h pixels, on the scale `top`.
  L.paint = function (canvas, values, offset, top, colour = L.colour) {
    const image = new ImageData(canvas.width, canvas.height);
    const scale = top > 0 ? 1 / top : 0;
    const n = canvas.width * canvas.height;
    for (let i = 0; i < n; i++) image.data.set(i + offset < values.length ? colour(values[i + offset] * scale) : [40, 40, 40, 255], 4 * i);
    canvas.getContext("2d").putImageData(image, 0, 0);
  };

  // How a layer's output is laid out: (C, H, W) -> C maps; a vector (or C maps of 1x1) -> one grid of cells.
  L.layout = function (shape) {
    if (shape.length === 3 && shape[1] * shape[2] > 1) {
      const [c, h, w] = shape;
      return { maps: c, h, w, scale: Math.max(2, Math.floor(84 / h)), vector: false };
    }
    const n = shape.reduce((a, b) => a * b, 1);
    // a wide grid, whole rows where a divisor allows (120 -> 20 x 6); F6's 84 as LeCun drew it, 7 x 12
    let cols = n <= 16 ? n : n === 84 ? 7 : Math.min(32, Math.ceil(Math.sqrt(n) * 1.6));
    for (let d = cols; n > 16 && n !== 84 && d <= Math.min(32, cols + 4); d++) {
      if (n % d === 0) {
        cols = d;
        break;
      }
    }
    const rows = Math.ceil(n / cols);
    return { maps: 1, h: rows, w: cols, scale: Math.min(24, Math.max(4, Math.min(Math.floor(240 / cols), Math.floor(144 / rows)))), vector: true };
  };

  L.canvas = function (w, h, scale, className) {
    const c = document.createElement("canvas");
    c.width = w;
    c.height = h;
    c.style.width = `${w * scale}px`;
    c.style.height = `${h * scale}px`;
    if (className) c.className = className;
    return c;
  };

  // The unit of a map under a pointer event: {c, y, x} for a (C, H, W) map, {i} for a vector's grid.
  L.unitAt = function (canvas, event, shape, c) {
    const box = canvas.getBoundingClientRect();
    const x = Math.min(canvas.width - 1, Math.max(0, Math.floor(((event.clientX - box.left) / box.width) * canvas.width)));
    const y = Math.min(canvas.height - 1, Math.max(0, Math.floor(((event.clientY - box.top) / box.height) * canvas.height)));
    const { vector } = L.layout(shape);
    if (!vector) return { c, y, x };
    const i = y * canvas.width + x;
    const n = shape.reduce((a, b) => a * b, 1);
    if (i >= n) return null;
    return shape.length === 3 ? { c: i, y: 0, x: 0, i } : { i };
  };

  // An outline on a canvas drawn over a picture (a second canvas stacked on it, in CSS pixels).
  L.outline = function (overlay, box, w, h, colour = "#00e5ff") {
    const ctx = overlay.getContext("2d");
    ctx.clearRect(0, 0, overlay.width, overlay.height);
    if (!box) return;
    const sx = overlay.width / w;
    const sy = overlay.height / h;
    const x0 = Math.max(box.x0, 0);
    const y0 = Math.max(box.y0, 0);
    const x1 = Math.min(box.x1, w - 1);
    const y1 = Math.min(box.y1, h - 1);
    ctx.strokeStyle = colour;
    ctx.lineWidth = Math.max(2, overlay.width / 120);
    ctx.strokeRect(x0 * sx + 1, y0 * sy + 1, (x1 - x0 + 1) * sx - 2, (y1 - y0 + 1) * sy - 2);
  };

  // A picture with an overlay canvas for outlines: {wrap, base, overlay}.
  L.stacked = function (w, h, scale) {
    const wrap = L.element("div", "stack");
    const base = L.canvas(w, h, scale);
    const overlay = document.createElement("canvas");
    overlay.width = Math.min(w * scale, 480);
    overlay.height = Math.round((overlay.width * h) / w);
    overlay.className = "overlay";
    wrap.append(base, overlay);
    wrap.style.width = `${w * scale}px`;
    return { wrap, base, overlay };
  };

  // Saliency over the input: the ink in grey, red where it pushed towards the class, blue where away.
  L.paintSaliency = function (canvas, pixels, sal) {
    const top = L.top(sal);
    const image = new ImageData(28, 28);
    for (let i = 0; i < 784; i++) {
      const ink = pixels[i] / 255;
      const s = top > 0 ? sal[i] / top : 0;
      const grey = 255 - 90 * ink;
      const a = Math.min(1, Math.abs(s) * 1.5);
      const tint = s >= 0 ? [214, 39, 40] : [31, 119, 180];
      image.data.set([...tint.map((v) => Math.round(grey + (v - grey) * a)), 255], 4 * i);
    }
    canvas.getContext("2d").putImageData(image, 0, 0);
  };

  L.buildBars = function (box, classes, onPick) {
    box.replaceChildren();
    return classes.map((name, i) => {
      const row = L.element("div", "bar");
      const fill = L.element("div", "fill");
      const track = L.element("div", "track");
      const value = L.element("span", "value");
      track.append(fill);
      row.append(L.element("span", "name", name), track, value);
      row.addEventListener("click", () => onPick(i));
      box.append(row);
      return { row, fill, value };
    });
  };

  L.fmt = function (v, digits = 4) {
    if (v === null || v === undefined) return "0";
    if (Math.abs(v) >= 1000) return v.toExponential(3);
    const s = v.toFixed(digits);
    return s.startsWith("-") ? `−${s.slice(1)}` : s;
  };
})(window.Lenet);
