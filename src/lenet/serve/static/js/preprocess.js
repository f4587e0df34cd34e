// A picture -> the 28x28 input, exactly as lenet.infer.preprocess does it with Pillow and NumPy (the tests
// compare the two pixel for pixel): grayscale, ink made light on black, then MNIST's recipe (crop to the
// ink, fit into 20x20 with Pillow's Lanczos filter, centre by mass in 28x28) or, for clothes, the whole
// picture fitted into 28x28. Float32 steps are rounded as NumPy rounds them; Python's round() is to even.
"use strict";

(function (L) {
  const f32 = Math.fround;
  const INK_THRESHOLD = f32(0.2);

  function roundEven(v) {
    const f = Math.floor(v);
    const d = v - f;
    if (d < 0.5) return f;
    if (d > 0.5) return f + 1;
    return f % 2 === 0 ? f : f + 1;
  }

  // RGBA (as a canvas gives it) -> gray 0..255: transparency composited onto white (Pillow's
  // alpha_composite), then Pillow's convert("L"): L = (19595 R + 38470 G + 7471 B + 0x8000) >> 16.
  L.grayFromRGBA = function (rgba, width, height) {
    const gray = new Float32Array(width * height);
    for (let i = 0; i < gray.length; i++) {
      let [r, g, b] = [rgba[4 * i], rgba[4 * i + 1], rgba[4 * i + 2]];
      const a = rgba[4 * i + 3];
      if (a < 255) {
        const over = (v) => {
          const coef1 = Math.floor((a * 255 * 255 * 128) / (a * 255 + 255 * (255 - a)));
          const t = v * coef1 + 255 * (255 * 128 - coef1) + (0x80 << 7);
          return ((t >>> 8) + t) >>> 8 >>> 7;
        };
        [r, g, b] = a === 0 ? [255, 255, 255] : [over(r), over(g), over(b)];
      }
      gray[i] = (r * 19595 + g * 38470 + b * 7471 + 0x8000) >>> 16;
    }
    return gray;
  };

  // Light ink on black: invert when the border's median is light (lenet.infer.preprocess.ink_on_black).
  function inkOnBlack(gray, w, h) {
    const border = [];
    for (let x = 0; x < w; x++) border.push(gray[x], gray[(h - 1) * w + x]);
    for (let y = 0; y < h; y++) border.push(gray[y * w], gray[y * w + w - 1]);
    border.sort((a, b) => a - b);
    const n = border.length;
    const median = n % 2 ? border[(n - 1) / 2] : (border[n / 2 - 1] + border[n / 2]) / 2;
    return median > 127 ? Float32Array.from(gray, (v) => f32(255 - v)) : Float32Array.from(gray);
  }

  // Pillow's Lanczos resampling of an 8-bit image (Resample.c): coefficients in double, normalised, then
  // fixed point with 22 fractional bits; a horizontal pass, clipped to 8 bits, then a vertical pass.
  const PRECISION = 22;
  const sinc = (x) => (x === 0 ? 1 : Math.sin(Math.PI * x) / (Math.PI * x));
  const lanczos = (x) => (x >= -3 && x < 3 ? sinc(x) * sinc(x / 3) : 0);

  function coefficients(inSize, outSize) {
    const scale = inSize / outSize;
    const filterscale = Math.max(scale, 1);
    const support = 3 * filterscale;
    const taps = [];
    for (let o = 0; o < outSize; o++) {
      const center = (o + 0.5) * scale;
      const ss = 1 / filterscale;
      const xmin = Math.max(Math.trunc(center - support + 0.5), 0);
      const xmax = Math.min(Math.trunc(center + support + 0.5), inSize) - xmin;
      const k = [];
      let ww = 0;
      for (let x = 0; x < xmax; x++) {
        const w = lanczos((x + xmin - center + 0.5) * ss);
        k.push(w);
        ww += w;
      }
      const fixed = k.map((w) => {
        const v = ww !== 0 ? w / ww : w;
        return Math.trunc(v < 0 ? -0.5 + v * (1 << PRECISION) : 0.5 + v * (1 << PRECISION));
      });
      taps.push({ xmin, k: fixed });
    }
    return taps;
  }

  function clip8(v) {
    if (v >= 255 * 2 ** PRECISION + 2 ** PRECISION) return 255;
    if (v <= 0) return 0;
    return Math.floor(v / 2 ** PRECISION);
  }

  function horizontal(src, w, h, nw) {
    const taps = coefficients(w, nw);
    const out = new Uint8Array(nw * h);
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < nw; x++) {
        const { xmin, k } = taps[x];
        let ss = 1 << (PRECISION - 1);
        for (let i = 0; i < k.length; i++) ss += src[y * w + xmin + i] * k[i];
        out[y * nw + x] = clip8(ss);
      }
    }
    return out;
  }

  function vertical(src, w, h, nh) {
    const taps = coefficients(h, nh);
    const out = new Uint8Array(w * nh);
    for (let y = 0; y < nh; y++) {
      const { xmin, k } = taps[y];
      for (let x = 0; x < w; x++) {
        let ss = 1 << (PRECISION - 1);
        for (let i = 0; i < k.length; i++) ss += src[(xmin + i) * w + x] * k[i];
        out[y * w + x] = clip8(ss);
      }
    }
    return out;
  }

  // Pillow 13 runs the vertical pass first when the height shrinks by more than twice the pixels the width
  // does (found by comparing with Image.resize over 17,000 size pairs); earlier Pillows always go
  // horizontal first. Each pass rounds to 8 bits, so the order shows in the last bit.
  L.resizeLanczos = function (src, w, h, nw, nh) {
    if (nw === w && nh === h) return Uint8Array.from(src);
    if (nw === w) return vertical(src, w, h, nh);
    if (nh === h) return horizontal(src, w, h, nw);
    if (nh < h && h - nh > 2 * (w - nw)) return horizontal(vertical(src, w, h, nh), w, nh, nw);
    return vertical(horizontal(src, w, h, nw), nw, h, nh);
  };

  function centreOfMassShift(img, h, w, size) {
    let total = 0;
    let cy = 0;
    let cx = 0;
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        total += img[y * w + x];
        cy += img[y * w + x] * y;
        cx += img[y * w + x] * x;
      }
    }
    if (total <= 0) return [Math.floor((size - h) / 2), Math.floor((size - w) / 2)];
    const top = roundEven(size / 2 - 0.5 - cy / total);
    const left = roundEven(size / 2 - 0.5 - cx / total);
    return [Math.min(Math.max(top, 0), size - h), Math.min(Math.max(left, 0), size - w)];
  }

  // MNIST's recipe: lenet.infer.preprocess.mnist_style
  L.mnistStyle = function (gray, w, h, box = 20, size = 28) {
    const ink = inkOnBlack(gray, w, h);
    let low = Infinity;
    for (const v of ink) low = Math.min(low, v);
    let high = 0;
    for (let i = 0; i < ink.length; i++) {
      ink[i] = f32(ink[i] - low);
      high = Math.max(high, ink[i]);
    }
    const out = new Uint8Array(size * size);
    if (high <= 0) return out; // a blank canvas stays blank
    const threshold = f32(INK_THRESHOLD * high);
    let [y0, y1, x0, x1] = [h, -1, w, -1];
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        if (ink[y * w + x] > threshold) [y0, y1, x0, x1] = [Math.min(y0, y), Math.max(y1, y), Math.min(x0, x), Math.max(x1, x)];
      }
    }
    const ch = y1 - y0 + 1;
    const cw = x1 - x0 + 1;
    let cropMax = 0;
    for (let y = y0; y <= y1; y++) for (let x = x0; x <= x1; x++) cropMax = Math.max(cropMax, ink[y * w + x]);
    const stretch = f32(255 / cropMax);
    const crop = new Uint8Array(ch * cw);
    for (let y = 0; y < ch; y++) {
      for (let x = 0; x < cw; x++) crop[y * cw + x] = Math.trunc(f32(ink[(y + y0) * w + x + x0] * stretch));
    }
    const scale = box / Math.max(ch, cw);
    const nh = Math.max(1, roundEven(ch * scale));
    const nw = Math.max(1, roundEven(cw * scale));
    const fitted = L.resizeLanczos(crop, cw, ch, nw, nh);
    const [top, left] = centreOfMassShift(fitted, nh, nw, size);
    for (let y = 0; y < nh; y++) for (let x = 0; x < nw; x++) out[(top + y) * size + left + x] = fitted[y * nw + x];
    return out;
  };

  // Fashion-MNIST's: the whole picture fitted into 28x28 (lenet.infer.preprocess.fit_whole, ImageOps.pad)
  L.fitWhole = function (gray, w, h, size = 28) {
    const ink = inkOnBlack(gray, w, h);
    const bytes = Uint8Array.from(ink, (v) => Math.trunc(Math.min(Math.max(v, 0), 255)));
    let [nw, nh] = [size, size];
    if (w / h !== 1) {
      if (w / h > 1) nh = roundEven((h / w) * size);
      else nw = roundEven((w / h) * size);
    }
    const resized = nw === w && nh === h ? bytes : L.resizeLanczos(bytes, w, h, nw, nh);
    const out = new Uint8Array(size * size);
    const left = nw !== size ? roundEven((size - nw) * 0.5) : 0;
    const top = nw !== size ? 0 : roundEven((size - nh) * 0.5);
    for (let y = 0; y < nh; y++) for (let x = 0; x < nw; x++) out[(top + y) * size + left + x] = resized[y * nw + x];
    return out;
  };

  L.preprocess = function (rgba, w, h, style) {
    const gray = L.grayFromRGBA(rgba, w, h);
    return style === "whole" ? L.fitWhole(gray, w, h) : L.mnistStyle(gray, w, h);
  };
})(window.Lenet);
