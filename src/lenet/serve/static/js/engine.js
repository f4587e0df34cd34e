// The network in the page: a forward pass of LeNet's kinds of layer (every layer's output kept), the
// gradient for the saliency map, and one unit's arithmetic written out. lenet.infer.web describes the
// layers (layer_spec); the weights are the run's safetensors. Sums run in float64 over float32 weights:
// the tests hold the probabilities to torch's within 1e-4.
"use strict";

(function (L) {
  const WINDOWED = new Set(["conv", "sparseconv", "maxpool", "avgpool", "subsample"]);
  const MAIN = new Set(["conv", "sparseconv", "subsample", "linear", "rbf", "maxpool", "avgpool"]);
  const ACTIVATION = new Set(["relu", "sigmoid", "tanh", "squash", "clippedlog"]);
  const count = (shape) => shape.reduce((a, b) => a * b, 1);

  function window(spec) {
    if (spec.type === "subsample") return { k: 2, s: 2, p: 0 };
    return { k: spec.kernel, s: spec.stride, p: spec.padding || 0 };
  }

  function outShape(spec, shape) {
    if (WINDOWED.has(spec.type)) {
      const { k, s, p } = window(spec);
      const side = (n) => Math.floor((n + 2 * p - k) / s) + 1;
      const channels = spec.type === "conv" || spec.type === "sparseconv" ? spec.out : shape[0];
      return [channels, side(shape[1]), side(shape[2])];
    }
    if (spec.type === "flatten") return [count(shape)];
    if (spec.type === "linear") return [spec.out];
    if (spec.type === "rbf") return [spec.classes];
    return shape;
  }

  // Weights of one layer, in the forms the loops want.
  function params(spec, t) {
    const get = (name) => t[`${spec.name}.${name}`];
    const p = { spec };
    if (spec.type === "conv") {
      p.W = get("weight").data;
      p.B = spec.bias ? get("bias").data : null;
    } else if (spec.type === "sparseconv") {
      // one kernel per connection of the table -> a dense (out, in, k, k) weight with zeros elsewhere
      const { in: cin, out, kernel: k, table } = spec;
      const w = get("weight").data;
      p.W = new Float32Array(out * cin * k * k);
      let n = 0;
      table.forEach((row, o) => row.forEach((j) => p.W.set(w.subarray(n * k * k, ++n * k * k), (o * cin + j) * k * k)));
      p.B = get("bias").data;
    } else if (spec.type === "subsample" || spec.type === "linear") {
      p.W = get("weight").data;
      p.B = get("bias").data;
    } else if (spec.type === "batchnorm") {
      const [g, b, m, v] = ["weight", "bias", "running_mean", "running_var"].map((n) => get(n).data);
      p.g = g; p.b = b; p.m = m; p.v = v; // prettier-ignore
      p.scale = Float64Array.from(g, (gi, c) => gi / Math.sqrt(v[c] + spec.eps));
    } else if (spec.type === "rbf") {
      p.W = get("prototypes").data;
      spec.classes = get("prototypes").shape[0];
    }
    return p;
  }

  function each3(shape, fn) {
    const [C, H, W] = shape;
    for (let c = 0; c < C; c++) for (let y = 0; y < H; y++) for (let x = 0; x < W; x++) fn(c, y, x);
  }

  // Forward of one layer: x (Float64Array of shape `shape`) -> y.
  function forward(p, x, shape) {
    const spec = p.spec;
    const out = outShape(spec, shape);
    const y = new Float64Array(count(out));
    switch (spec.type) {
      case "conv":
      case "sparseconv": {
        const [C, H, W] = shape;
        const { k, s, p: pad } = window(spec);
        each3(out, (o, oy, ox) => {
          let acc = p.B ? p.B[o] : 0;
          for (let c = 0; c < C; c++) {
            for (let ky = 0; ky < k; ky++) {
              const iy = oy * s - pad + ky;
              if (iy < 0 || iy >= H) continue;
              const w = ((o * C + c) * k + ky) * k;
              const row = (c * H + iy) * W;
              for (let kx = 0; kx < k; kx++) {
                const ix = ox * s - pad + kx;
                if (ix >= 0 && ix < W) acc += p.W[w + kx] * x[row + ix];
              }
            }
          }
          y[(o * out[1] + oy) * out[2] + ox] = acc;
        });
        return y;
      }
      case "maxpool":
      case "avgpool":
      case "subsample": {
        const [, H, W] = shape;
        const { k, s } = window(spec);
        each3(out, (c, oy, ox) => {
          let best = -Infinity;
          let sum = 0;
          for (let ky = 0; ky < k; ky++) {
            for (let kx = 0; kx < k; kx++) {
              const v = x[(c * H + oy * s + ky) * W + ox * s + kx];
              best = Math.max(best, v);
              sum += v;
            }
          }
          const i = (c * out[1] + oy) * out[2] + ox;
          y[i] = spec.type === "maxpool" ? best : spec.type === "avgpool" ? sum / (k * k) : p.W[c] * sum + p.B[c];
        });
        return y;
      }
      case "batchnorm": {
        const per = shape[1] * shape[2];
        for (let i = 0; i < x.length; i++) {
          const c = Math.floor(i / per);
          y[i] = (x[i] - p.m[c]) * p.scale[c] + p.b[c];
        }
        return y;
      }
      case "linear": {
        const n = shape[0];
        for (let o = 0; o < spec.out; o++) {
          let acc = p.B[o];
          for (let j = 0; j < n; j++) acc += p.W[o * n + j] * x[j];
          y[o] = acc;
        }
        return y;
      }
      case "rbf": {
        const n = shape[0];
        for (let o = 0; o < y.length; o++) {
          let d = 0;
          for (let j = 0; j < n; j++) d += (x[j] - p.W[o * n + j]) ** 2;
          y[o] = -d; // the paper's argmin distance as an argmax score
        }
        return y;
      }
      default:
        for (let i = 0; i < x.length; i++) y[i] = activate(spec, x[i]);
        return y;
    }
  }

  // torch clamps in float32: 1 - 1e-7 becomes 0.99999988
  const clipHigh = (spec) => Math.fround(1 - spec.eps);

  function activate(spec, v) {
    switch (spec.type) {
      case "relu":
        return v > 0 ? v : 0;
      case "sigmoid":
        return 1 / (1 + Math.exp(-v));
      case "tanh":
        return Math.tanh(v);
      case "squash":
        return spec.amplitude * Math.tanh(spec.slope * v);
      case "clippedlog":
        return Math.log(Math.min(Math.max(v, Math.fround(spec.eps)), clipHigh(spec)));
      default: // flatten, identity (dropout at inference)
        return v;
    }
  }

  // d(output)/d(input) of an elementwise layer, from its input v and output u.
  function slope(spec, v, u) {
    switch (spec.type) {
      case "relu":
        return v > 0 ? 1 : 0;
      case "sigmoid":
        return u * (1 - u);
      case "tanh":
        return 1 - u * u;
      case "squash":
        return spec.amplitude * spec.slope * (1 - (u / spec.amplitude) ** 2);
      case "clippedlog":
        return v > Math.fround(spec.eps) && v < clipHigh(spec) ? 1 / v : 0;
      default:
        return 1;
    }
  }

  // Backward of one layer: the gradient at its input, given the gradient g at its output.
  function backward(p, x, shape, y, g) {
    const spec = p.spec;
    const out = outShape(spec, shape);
    const gx = new Float64Array(x.length);
    switch (spec.type) {
      case "conv":
      case "sparseconv": {
        const [C, H, W] = shape;
        const { k, s, p: pad } = window(spec);
        each3(out, (o, oy, ox) => {
          const go = g[(o * out[1] + oy) * out[2] + ox];
          if (go === 0) return;
          for (let c = 0; c < C; c++) {
            for (let ky = 0; ky < k; ky++) {
              const iy = oy * s - pad + ky;
              if (iy < 0 || iy >= H) continue;
              for (let kx = 0; kx < k; kx++) {
                const ix = ox * s - pad + kx;
                if (ix >= 0 && ix < W) gx[(c * H + iy) * W + ix] += p.W[((o * C + c) * k + ky) * k + kx] * go;
              }
            }
          }
        });
        return gx;
      }
      case "maxpool":
      case "avgpool":
      case "subsample": {
        const [, H, W] = shape;
        const { k, s } = window(spec);
        each3(out, (c, oy, ox) => {
          const i = (c * out[1] + oy) * out[2] + ox;
          let arg = -1;
          for (let ky = 0; ky < k; ky++) {
            for (let kx = 0; kx < k; kx++) {
              const j = (c * H + oy * s + ky) * W + ox * s + kx;
              if (spec.type === "maxpool") {
                if (arg < 0 || x[j] > x[arg]) arg = j; // the first maximum, as torch
              } else {
                gx[j] += spec.type === "avgpool" ? g[i] / (k * k) : p.W[c] * g[i];
              }
            }
          }
          if (arg >= 0) gx[arg] += g[i];
        });
        return gx;
      }
      case "batchnorm": {
        const per = shape[1] * shape[2];
        for (let i = 0; i < x.length; i++) gx[i] = g[i] * p.scale[Math.floor(i / per)];
        return gx;
      }
      case "linear":
      case "rbf": {
        const n = shape[0];
        for (let o = 0; o < y.length; o++) {
          for (let j = 0; j < n; j++) {
            const w = p.W[o * n + j];
            gx[j] += spec.type === "linear" ? w * g[o] : -2 * (x[j] - w) * g[o];
          }
        }
        return gx;
      }
      default:
        for (let i = 0; i < x.length; i++) gx[i] = g[i] * slope(spec, x[i], y[i]);
        return gx;
    }
  }

  // Displayed blocks: a weighted layer or a pool, with the batch norm and activation after it as its stages.
  L.blocks = function (layers) {
    const blocks = [];
    let current = null;
    layers.forEach((spec, i) => {
      if (MAIN.has(spec.type) || !current) {
        current = { name: spec.name, main: i, pre: i, post: null, stages: [i], type: spec.type };
        blocks.push(current);
      } else if (spec.type === "batchnorm") {
        current.stages.push(i);
        current.pre = i;
      } else {
        current.stages.push(i);
        if (ACTIVATION.has(spec.type)) current.post = i;
      }
    });
    return blocks;
  };

  class Net {
    constructor(manifest) {
      this.manifest = manifest;
      this.layers = manifest.layers;
      this.blocks = L.blocks(this.layers);
    }

    setWeights(tensors) {
      this.params = this.layers.map((spec) => params(spec, tensors));
    }

    // 28x28 pixels (0..255, ink light) -> the network's input (1, S, S), as lenet.data.to_input does.
    inputShape() {
      const s = this.manifest.input.size;
      return [1, s, s];
    }

    toInput(pixels) {
      const { size, scaling, mean, std, resize } = this.manifest.input;
      const placed = resize ? L.bilinear(pixels, 28, size).forward : L.pad(pixels, 28, size);
      const a = this.slope();
      const b = scaling === "standard" ? -mean / std : scaling === "lecun" ? -0.1 : 0;
      return Float64Array.from(placed, (v) => a * v + b);
    }

    // d(network input)/d(pixel): every scaling is a * pixel + b
    slope() {
      const { scaling, std } = this.manifest.input;
      return { none: 1, unit: 1 / 255, standard: 1 / (255 * std), lecun: 1.275 / 255 }[scaling];
    }

    run(pixels) {
      const input = this.toInput(pixels);
      const shapes = [this.inputShape()];
      const outs = [];
      let x = input;
      this.params.forEach((p, i) => {
        x = forward(p, x, shapes[i]);
        shapes.push(outShape(p.spec, shapes[i]));
        outs.push(x);
      });
      const logits = x;
      const top = Math.max(...logits);
      const e = logits.map((v) => Math.exp(v - top));
      const total = e.reduce((a, b) => a + b, 0);
      const probs = Array.from(e, (v) => v / total);
      return { pixels, input, outs, shapes, logits, probs, best: probs.indexOf(Math.max(...probs)) };
    }

    // The output of layer i (-1: the input) and its shape.
    value(run, i) {
      return i < 0 ? { data: run.input, shape: run.shapes[0] } : { data: run.outs[i], shape: run.shapes[i + 1] };
    }

    // Saliency: d(score of class)/d(pixel) x pixel, pixels in [0, 1] (lenet.infer.web.saliency in torch).
    saliency(run, cls) {
      let g = new Float64Array(run.logits.length);
      g[cls] = 1;
      for (let i = this.params.length - 1; i >= 0; i--) {
        const x = i ? run.outs[i - 1] : run.input;
        g = backward(this.params[i], x, run.shapes[i], run.outs[i], g);
      }
      const { size, resize } = this.manifest.input;
      const back = resize ? L.bilinear(run.pixels, 28, size).backward(g) : L.crop(g, size, 28);
      const a = this.slope();
      return Float64Array.from(back, (v, i) => run.pixels[i] * a * v);
    }

    // Where unit `u` ({c, y, x} or {i}) of layer `index`'s output reads from, in layer `below`'s output
    // (-1: the network input): {y0, y1, x0, x1}, or null when it reads everything (a fully connected unit).
    field(index, u, below) {
      if (u.y === undefined) return null;
      let box = { y0: u.y, y1: u.y, x0: u.x, x1: u.x };
      for (let j = index; j > below; j--) {
        const spec = this.layers[j];
        if (!WINDOWED.has(spec.type)) continue;
        const { k, s, p } = window(spec);
        box = { y0: box.y0 * s - p, y1: box.y1 * s - p + k - 1, x0: box.x0 * s - p, x1: box.x1 * s - p + k - 1 };
      }
      return box;
    }

    // One unit's arithmetic, every number from this run: what the main layer summed, then each stage.
    explain(run, block, u) {
      const m = block.main;
      const spec = this.layers[m];
      const p = this.params[m];
      const { data: x, shape } = this.value(run, m - 1);
      const out = run.shapes[m + 1];
      const idx = u.y === undefined ? u.i : (u.c * out[1] + u.y) * out[2] + u.x;
      const main = { type: spec.type, name: spec.name, value: run.outs[m][idx] };
      if (spec.type === "conv" || spec.type === "sparseconv") {
        const [C, H, W] = shape;
        const { k, s, p: pad } = window(spec);
        const used = spec.type === "sparseconv" ? spec.table[u.c] : [...Array(C).keys()];
        main.terms = used.map((c) => {
          const patch = [];
          const kernel = [];
          let sum = 0;
          for (let ky = 0; ky < k; ky++) {
            for (let kx = 0; kx < k; kx++) {
              const iy = u.y * s - pad + ky;
              const ix = u.x * s - pad + kx;
              const inside = iy >= 0 && iy < H && ix >= 0 && ix < W;
              const v = inside ? x[(c * H + iy) * W + ix] : 0; // padding reads 0
              const w = p.W[((u.c * C + c) * k + ky) * k + kx];
              patch.push(inside ? v : null);
              kernel.push(w);
              sum += v * w;
            }
          }
          return { channel: c, patch, kernel, sum, k };
        });
        main.bias = p.B ? p.B[u.c] : null;
      } else if (WINDOWED.has(spec.type)) {
        const [, H, W] = shape;
        const { k, s } = window(spec);
        main.window = [];
        for (let ky = 0; ky < k; ky++) {
          for (let kx = 0; kx < k; kx++) main.window.push(x[(u.c * H + u.y * s + ky) * W + u.x * s + kx]);
        }
        if (spec.type === "subsample") {
          main.coefficient = p.W[u.c];
          main.bias = p.B[u.c];
        }
      } else {
        // linear, rbf: every input; terms sorted by how much they move the result
        const n = shape[0];
        const row = p.W.subarray(u.i * n, (u.i + 1) * n);
        main.inputs = x;
        main.weights = row;
        main.terms = Array.from(x, (v, j) => ({
          j,
          x: v,
          w: row[j],
          value: spec.type === "linear" ? v * row[j] : (v - row[j]) ** 2,
        }));
        main.terms.sort((a, b) => Math.abs(b.value) - Math.abs(a.value));
        if (spec.type === "linear") main.bias = p.B[u.i];
      }
      const stages = block.stages.slice(1).map((i) => {
        const st = this.layers[i];
        const stage = { type: st.type, name: st.name, input: run.outs[i - 1][idx], value: run.outs[i][idx] };
        if (st.type === "batchnorm") {
          const c = u.c === undefined ? 0 : u.c;
          Object.assign(stage, { mean: this.params[i].m[c], variance: this.params[i].v[c], eps: st.eps });
          Object.assign(stage, { gamma: this.params[i].g[c], beta: this.params[i].b[c] });
        }
        if (st.type === "squash") Object.assign(stage, { amplitude: st.amplitude, slope: st.slope });
        return stage;
      });
      const pre = run.outs[block.pre][idx];
      const post = run.outs[block.stages[block.stages.length - 1]][idx];
      return { unit: u, index: idx, main, stages, pre, post };
    }
  }
  L.Net = Net;

  // 28x28 -> size x size: background (0) around, as lenet.data.to_input pads
  L.pad = function (pixels, from, to) {
    const out = new Float64Array(to * to);
    const o = (to - from) / 2;
    for (let y = 0; y < from; y++) for (let x = 0; x < from; x++) out[(y + o) * to + x + o] = pixels[y * from + x];
    return out;
  };

  L.crop = function (g, from, to) {
    const out = new Float64Array(to * to);
    const o = (from - to) / 2;
    for (let y = 0; y < to; y++) for (let x = 0; x < to; x++) out[y * to + x] = g[(y + o) * from + x + o];
    return out;
  };

  // torch's bilinear interpolation (align_corners=False, no antialias: only ever 28 -> 32, upwards), with
  // its adjoint for the saliency map's gradient.
  L.bilinear = function (pixels, from, to) {
    const taps = [];
    const scale = from / to;
    for (let d = 0; d < to; d++) {
      const src = Math.max(scale * (d + 0.5) - 0.5, 0);
      const i0 = Math.floor(src);
      const step = i0 < from - 1 ? 1 : 0;
      taps.push([i0, i0 + step, src - i0]);
    }
    const forward = new Float64Array(to * to);
    const each = (fn) => {
      for (let y = 0; y < to; y++) {
        const [y0, y1, ly] = taps[y];
        for (let x = 0; x < to; x++) {
          const [x0, x1, lx] = taps[x];
          fn(y * to + x, [
            [y0 * from + x0, (1 - ly) * (1 - lx)],
            [y0 * from + x1, (1 - ly) * lx],
            [y1 * from + x0, ly * (1 - lx)],
            [y1 * from + x1, ly * lx],
          ]);
        }
      }
    };
    each((o, ws) => {
      for (const [i, w] of ws) forward[o] += w * pixels[i];
    });
    const backward = (g) => {
      const out = new Float64Array(from * from);
      each((o, ws) => {
        for (const [i, w] of ws) out[i] += w * g[o];
      });
      return out;
    };
    return { forward, backward };
  };
})(window.Lenet);
