"""`lenet serve` and `lenet export`: a trained model for others to use."""

from __future__ import annotations

import argparse
import sys

from ..errors import LenetError
from .common import _number, data_args


def cmd_serve(args) -> int:
    try:
        import python_multipart  # noqa: F401  (form uploads)
        import segno  # noqa: F401  (the QR code of the address)
        import uvicorn

        from ..serve import create_app, listen, urls
        from ..serve.net import qr_text
    except ModuleNotFoundError as e:
        raise LenetError(f"lenet serve needs the {e.name} package: pip install 'lenet[serve]'") from None
    from pathlib import Path

    import torch

    from ..data import load_raw
    from ..infer.predict import Predictor
    from ..infer.web import check_same_dataset

    if len(args.run) > 2:
        raise LenetError(f"lenet serve shows one model or two side by side, not {len(args.run)}")
    # One image at a time through a LeNet is far too small to split across threads: on a busy machine the
    # threads' hand-offs cost ~100x the arithmetic. Concurrent requests are the parallelism.
    torch.set_num_threads(1)
    predictors = [Predictor.from_run(run, "cpu") for run in args.run]
    check_same_dataset([p.config for p in predictors], args.run)
    # --root, else the data the run was trained on, else $LENET_DATA / ~/.cache/lenet
    root = args.root if args.root is not None else predictors[0].info.get("data_root")
    note = None
    try:
        samples = load_raw(predictors[0].config.dataset, "test", root, verify=not args.no_verify)
    except LenetError as e:
        samples = None
        note = f"no test images for the Sample button ({e}); start lenet serve with --root DATA"
        print(f"note: no sample button: {e}; give --root DATA", file=sys.stderr)
    sock = listen(args.host, args.port)
    addresses = urls(sock)
    loopback = args.host in ("127.0.0.1", "localhost", "::1")
    names = " and ".join(p.config.model for p in predictors)
    print(f"serving {names} on {addresses[0]} (Ctrl-C to stop)", flush=True)
    if not loopback:
        print(f"warning: listening on {args.host}: other machines can reach this server", file=sys.stderr)
        for address in addresses[1:]:
            print(f"  also on {address}")
        print(f"students open {addresses[0]}, or scan:\n{qr_text(addresses[0])}", flush=True)
    app = create_app(predictors, samples, runs=[Path(r) for r in args.run], addresses=[] if loopback else addresses,
                     **({"sample_note": note} if note else {}))  # fmt: skip
    config = uvicorn.Config(app, log_level="warning", access_log=False)
    uvicorn.Server(config).run(sockets=[sock])
    return 0


def cmd_export(args) -> int:
    from ..infer.export import export_run

    if args.run is None:  # lenet export --format onnx RUN: --format took the run
        if not getattr(args, "format_dest", None):
            raise LenetError("which run? lenet export RUN [--format onnx|torchscript|web] [DEST]")
        args.run, args.format_dest = args.format_dest, None
    given = [d for d in (args.dest, getattr(args, "format_dest", None), args.output) if d]
    if len(given) > 1:
        raise LenetError("give the destination once: as DEST or as -o/--output")
    dest = given[0] if given else None
    if args.format == "web":
        from pathlib import Path

        from ..infer.web import export_web

        run = Path(args.run)
        folder = dest or (run if run.is_dir() else run.parent) / "web"
        folder, count = export_web(run, folder, root=args.root, verify=not args.no_verify)
        print(f"wrote {folder} ({count} files): open {folder / 'index.html'} in a browser, or serve the folder "
              f"from any static host (python -m http.server -d {folder})")  # fmt: skip
        return 0
    path, difference = export_run(args.run, args.format, dest)
    if difference > 1e-3:
        raise LenetError(f"{path}: the exported model disagrees with torch (max difference {difference:.2g})")
    print(f"wrote {path} ({path.stat().st_size:,} bytes); outputs match torch within {difference:.1e} "
          "at batch 1 and 7")  # fmt: skip
    return 0


def _serve_pretrained(args) -> int:
    """lenet serve [RUN] --pretrained NAME: the published weights as one of the runs served."""
    if args.pretrained:
        from ..models.pretrained import weights_file

        args.run = [str(weights_file(args.pretrained)), *args.run]
    if not args.run:
        raise LenetError("which model? lenet serve RUN (or lenet serve --pretrained NAME)")
    return cmd_serve(args)


def add_parsers(add) -> None:
    """This module's subcommands, on `add(name, help, func)`."""
    p = add("serve", "the drawing web app: live prediction and every layer's activations", cmd_serve)
    p.add_argument("run", nargs="*", help="run folder, model.safetensors or checkpoint.pt; two: side by side")
    p.add_argument("--pretrained", metavar="NAME", help="serve the published weights of model NAME (with a RUN: "
                   "side by side)")  # fmt: skip
    p.set_defaults(func=_serve_pretrained)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    p.add_argument("--port", type=_number(int, 0, high=65535), default=8000, help="port (0: any free one)")
    data_args(p)

    p = add("export", "export a trained run: ONNX or TorchScript (checked against torch), or the web page", cmd_export)
    p.add_argument("run", nargs="?", help="run folder, model.safetensors or checkpoint.pt")
    p.add_argument("dest", nargs="?", help="file (onnx, torchscript) or folder (web) to write; as -o")
    formats = ("onnx: one file for onnxruntime; torchscript: for torch.jit.load and libtorch; web: the drawing "
               "page as static files, no server needed; DEST may follow, as in --format web DIR")  # fmt: skip

    class FormatAndDest(argparse.Action):
        """--format FORMAT [DEST]: `lenet export RUN --format web DIR` reads as written (argparse would not
        match a positional after an option)."""

        def __call__(self, parser, namespace, values, option_string=None):
            if values[0] not in ("onnx", "torchscript", "web") or len(values) > 2:
                parser.error(f"argument --format: expected onnx, torchscript or web, then a DEST at most; "
                             f"got {' '.join(values)}")  # fmt: skip
            namespace.format, namespace.format_dest = values[0], values[1] if len(values) > 1 else None

    p.add_argument("--format", nargs="+", action=FormatAndDest, default="onnx", metavar=("FORMAT", "DEST"),
                   help=formats)  # fmt: skip
    p.add_argument("-o", "--output", help="default: model.onnx / model.torchscript.pt / web/ beside the weights")
    p.add_argument("--root", help="web: data root for the Sample button's test images (default: the run's)")
    p.add_argument("--no-verify", action="store_true", help="web: use data files whose checksums do not match")
