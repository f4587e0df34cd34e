// Loading the page's data: every file is a script calling lenetData(key, value) (lenet.infer.web writes
// them). Scripts, not fetch(): a page opened from a file may run scripts beside it but not fetch them.
"use strict";

window.Lenet = window.Lenet || {};

(function (L) {
  const waiting = new Map(); // key -> {resolve, reject}
  const loaded = new Map(); // key -> value, for files that arrive before anyone asks

  window.lenetData = function (key, value) {
    const w = waiting.get(key);
    if (w) {
      waiting.delete(key);
      w.resolve(value);
    } else {
      loaded.set(key, value);
    }
  };

  // load("models/0/model.js") -> the value that file passes to lenetData (key: the path without ".js").
  L.load = function (path) {
    const key = path.replace(/\.js$/, "");
    if (loaded.has(key)) return Promise.resolve(loaded.get(key));
    return new Promise((resolve, reject) => {
      waiting.set(key, { resolve, reject });
      const tag = document.createElement("script");
      tag.src = path;
      tag.onerror = () => {
        waiting.delete(key);
        reject(new Error(`cannot load ${path}`));
      };
      tag.onload = () => tag.remove();
      document.head.append(tag);
    });
  };

  L.base64Bytes = function (text) {
    const binary = atob(text);
    const bytes = new Uint8Array(binary.length);
    for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
    return bytes;
  };

  // safetensors: 8 bytes of header length (little-endian), a JSON header, then the raw tensors.
  // Only float32 tensors are kept (batch norm's int64 step counter is not needed).
  L.parseSafetensors = function (bytes) {
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const length = Number(view.getBigUint64(0, true));
    const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + length)));
    const start = 8 + length;
    const tensors = {};
    for (const [name, t] of Object.entries(header)) {
      if (name === "__metadata__" || t.dtype !== "F32") continue;
      const [a, b] = t.data_offsets;
      const copy = bytes.slice(start + a, start + b); // aligned copy
      tensors[name] = { shape: t.shape, data: new Float32Array(copy.buffer) };
    }
    return { tensors, metadata: header.__metadata__ || {} };
  };

  L.loadWeights = async function (path) {
    return L.parseSafetensors(L.base64Bytes(await L.load(path))).tensors;
  };
})(window.Lenet);
