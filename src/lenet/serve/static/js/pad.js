// The drawing pad: strokes of the mouse, a finger or a pen on a 280x280 canvas, over an optional picture
// (a sample or an upload). onChange(fresh) after every change; fresh: a new stroke, a clear or an undo.
"use strict";

(function (L) {
  const BRUSH = 20; // stroke width on the 280 px canvas: MNIST's strokes are 2-3 px of 28

  L.makePad = function (canvas, onChange) {
    const ctx = canvas.getContext("2d", { willReadFrequently: true });
    const pad = { strokes: [], picture: null }; // picture: {image, input, upload}
    let current = null; // the stroke under the pointer, and which pointer draws it
    let pointer = null;

    pad.redraw = function () {
      ctx.fillStyle = "#fff";
      ctx.fillRect(0, 0, canvas.width, canvas.height);
      if (pad.picture && pad.picture.image) drawFitted(pad.picture.image);
      ctx.strokeStyle = ctx.fillStyle = "#000";
      ctx.lineWidth = BRUSH;
      ctx.lineCap = ctx.lineJoin = "round";
      for (const stroke of pad.strokes) {
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
    };

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
      pad.strokes.push(current);
      onChange(true);
    });
    canvas.addEventListener("pointermove", (event) => {
      if (!current || event.pointerId !== pointer) return;
      const coalesced = event.getCoalescedEvents ? event.getCoalescedEvents() : [];
      for (const e of coalesced.length ? coalesced : [event]) current.push(position(e));
      onChange(false);
    });
    for (const type of ["pointerup", "pointercancel", "lostpointercapture"]) {
      canvas.addEventListener(type, (event) => {
        if (event.pointerId === pointer) current = null;
      });
    }

    pad.clear = function () {
      pad.strokes = [];
      pad.picture = null;
      current = null;
      onChange(true);
    };

    pad.undo = function () {
      if (pad.strokes.length) pad.strokes.pop();
      else pad.picture = null;
      current = null;
      onChange(true);
    };

    pad.show = function (picture) {
      pad.picture = picture;
      pad.strokes = [];
      current = null;
      onChange(true);
    };

    pad.isEmpty = () => !pad.strokes.length && !pad.picture;
    // What to read: the picture's own 28x28 input when nothing is drawn over it, else the canvas
    pad.input = () => (!pad.strokes.length && pad.picture && pad.picture.input ? pad.picture.input : null);
    pad.uploaded = () => Boolean(pad.picture && !pad.strokes.length && pad.picture.upload);
    pad.rgba = () => ctx.getImageData(0, 0, canvas.width, canvas.height).data;
    return pad;
  };
})(window.Lenet);
