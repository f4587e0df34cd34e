"""The `lenet` command line: argparse subcommands; main(argv) returns the exit status.

Exit status: 0 success, 1 a missed --target-acc, 2 bad input (one line on stderr, never a traceback).
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import sys
import unicodedata

from . import __version__
from .errors import LenetError

# ----------------------------------------------------------------------------------------------------------
# Argument types: a bad value is one line from argparse, exit 2


def _number(kind, low=None, low_open=False, high=None):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a valid {kind.__name__}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
        if low is not None and (value <= low if low_open else value < low):
            raise argparse.ArgumentTypeError(f"{text} must be {'>' if low_open else '>='} {low}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"{text} must be <= {high}")
        return value

    parse.__name__ = kind.__name__
    return parse


positive_int = _number(int, 1)
non_negative_int = _number(int, 0)
positive_float = _number(float, 0, low_open=True)
non_negative_float = _number(float, 0)
fraction = _number(float, 0, high=1)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """States every real default; flags off by default and recipe overrides (None: the recipe's) say nothing."""

    def _get_help_string(self, action):
        if action.default in (None, False) or action.default is argparse.SUPPRESS:
            return action.help
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is a single line."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


# ----------------------------------------------------------------------------------------------------------
# lenet train / eval / predict


def _without_option(argv: list[str], option: str) -> list[str]:
    """`argv` less `option VALUE` and `option=VALUE` (torchrun would take --nproc for one of its own)."""
    out = []
    for arg, previous in zip(argv, [None, *argv], strict=False):
        if arg != option and not arg.startswith(option + "=") and previous != option:
            out.append(arg)
    return out


def _model_args(pairs: list[str] | None) -> dict:
    """--model-arg KEY=VALUE ... as model_kwargs: values read as JSON (numbers, lists, true), else as text;
    a comma makes a list (kernel_sizes=5,3)."""
    kwargs = {}
    for pair in pairs or []:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise LenetError(f"--model-arg {pair!r}: expected KEY=VALUE, e.g. activation=relu")
        parts = [_json_or_text(t) for t in text.split(",")] if "," in text and not text.startswith("[") else None
        kwargs[key.replace("-", "_")] = parts if parts is not None else _json_or_text(text)
    return kwargs


def _json_or_text(text: str):
    try:
        return json.loads(text)
    except ValueError:
        return text


def cmd_train(args) -> int:
    from .train import dist
    from .train.run import train

    if args.nproc > 1 and not dist.launched():
        return dist.launch(args.nproc, _without_option(args.argv, "--nproc"))
    overrides = {
        "model": args.model, "dataset": args.dataset, "epochs": args.epochs, "batch_size": args.batch_size,
        "lr": args.lr, "optimizer": args.optimizer, "momentum": args.momentum, "weight_decay": args.weight_decay,
        "seed": args.seed, "scaling": args.scaling, "input_size": args.input_size, "schedule": args.schedule,
        "init": args.init, "label_smoothing": args.label_smoothing, "val_fraction": args.val_fraction,
        "distort": args.distort or None, "model_kwargs": _model_args(args.model_arg) or None,
    }  # fmt: skip
    if args.resume:
        extra = [k for k, v in overrides.items() if v is not None and k != "epochs"] + ["out"] * bool(args.out)
        if extra or args.recipe != "d2l":
            flag = "--" + (extra[0] if extra else "recipe").replace("_", "-").replace("model-kwargs", "model-arg")
            raise LenetError(f"--resume continues a run with its own config; drop {flag} (only --epochs may change)")
        run = train(resume=args.resume, epochs=args.epochs, root=args.root, device=args.device,
                    verify=not args.no_verify, download=args.download, max_steps=args.max_steps,
                    fast=not args.no_fastpath, tensorboard=args.tensorboard, snapshots=args.snapshots,
                    resume_command="lenet train --resume {run}", program=_PROGRAM)  # fmt: skip
    else:
        from .train.run import default_run_dir

        out = None if args.dry_run else (args.out or default_run_dir(args.recipe))
        run = train(args.recipe, out=out, overwrite=args.overwrite, root=args.root, device=args.device,
                    verify=not args.no_verify, download=args.download, max_steps=args.max_steps,
                    fast=not args.no_fastpath, tensorboard=args.tensorboard, snapshots=args.snapshots,
                    dry_run=args.dry_run, resume_command="lenet train --resume {run}", program=_PROGRAM,
                    **overrides)  # fmt: skip
    if run.stopped not in (None, "max-steps"):
        return 128 + signal.Signals["SIG" + run.stopped.removeprefix("SIG")].value
    if not dist.main_process():
        return 0
    if args.json:
        print(json.dumps(run.summary))
    test_acc = run.summary.get("test_acc")
    if args.target_acc is not None and (test_acc or 0.0) < args.target_acc:
        print(f"error: test accuracy {test_acc or 0.0:.4f} is below the target {args.target_acc}", file=sys.stderr)
        return 1
    return 0


def cmd_eval(args) -> int:
    from .infer.evaluation import evaluate_run

    result = evaluate_run(args.run, split=args.split, dataset=args.dataset, root=args.root,
                          verify=not args.no_verify, device=args.device, gallery=args.gallery)  # fmt: skip
    s = args.split
    print(f"{result['model']} on {result['dataset']} {s} ({result['examples']:,} images): "
          f"loss {result[f'{s}_loss']:.4f}, acc {result[f'{s}_acc']:.4f}")  # fmt: skip
    for name, acc in result["per_class_acc"].items():
        print(f"  {name:>12}: {acc:.4f}")
    for kind, path in result["figures"].items():
        print(f"{kind}: {path}")
    if args.json:
        print(json.dumps(result))
    return 0


def cmd_predict(args) -> int:
    from .infer.predict import Predictor

    files, source = [*args.images], args.run
    if args.pretrained:  # `lenet predict --pretrained NAME IMAGE...`: the first image took the run's place
        from .models.pretrained import weights_file

        files, source = [args.run, *args.images], weights_file(args.pretrained)
    elif not files:
        raise LenetError("which images? lenet predict RUN IMAGE... (or lenet predict --pretrained NAME IMAGE...)")
    predictor = Predictor.from_run(source, "cpu")
    status = 0
    for file in files:
        try:
            probs = predictor.probabilities(predictor.prepare(file)[None])[0]
        except LenetError as e:
            print(f"error: {e}", file=sys.stderr)
            status = 2
            continue
        top = predictor.top(probs, args.top)
        if args.json:
            best = top[0]
            print(json.dumps({
                "file": file, "class": best[0], "label": best[1], "probability": best[2],
                "top": [{"class": c, "label": label, "probability": p} for c, label, p in top],
            }))  # fmt: skip
        else:
            print(f"{file}: " + ", ".join(f"{label} ({p:.3f})" for _, label, p in top))
    return status


def cmd_activations(args) -> int:
    from pathlib import Path

    import numpy as np

    from .infer.predict import Predictor
    from .train.plots import activations, layer_outputs

    predictor = Predictor.from_run(args.run, "cpu")
    images = np.stack([predictor.prepare(file) for file in args.images])  # as `lenet predict` reads them
    probs = predictor.probabilities(images)
    titles = [f"{Path(file).name}: {predictor.classes[int(p.argmax())]} ({p.max():.2f})"
              for file, p in zip(args.images, probs, strict=True)]  # fmt: skip
    layers = [int(x) if x.lstrip("-").isdigit() else x for x in args.layers.split(",")] if args.layers else None
    x = predictor.to_input(images)
    figure = activations(predictor.model, x, layers, titles=titles)
    run = Path(args.run)
    out = Path(args.output) if args.output else (run if run.is_dir() else run.parent) / "activations.png"
    try:
        figure.save(out)
    except OSError as e:
        raise LenetError(f"{out}: cannot write the figure ({e.strerror})") from None
    shown = ", ".join(f"{name} {tuple(o.shape[1:])}" for name, _, o in layer_outputs(predictor.model, x[:1], layers))
    print(f"wrote {out}: {shown} for {len(images)} image(s)")
    return 0


# ----------------------------------------------------------------------------------------------------------
# lenet serve / export


def cmd_serve(args) -> int:
    try:
        import python_multipart  # noqa: F401  (form uploads)
        import segno  # noqa: F401  (the QR code of the address)
        import uvicorn

        from .serve import create_app, listen, urls
        from .serve.net import qr_text
    except ModuleNotFoundError as e:
        raise LenetError(f"lenet serve needs the {e.name} package: pip install 'lenet[serve]'") from None
    from pathlib import Path

    import torch

    from .data import load_raw
    from .infer.predict import Predictor
    from .infer.web import check_same_dataset

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
    from .infer.export import export_run

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

        from .infer.web import export_web

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


# ----------------------------------------------------------------------------------------------------------
# lenet models / inspect / recipes / data


def cmd_models(args) -> int:
    from .models import count_parameters, create_model, list_models, model_spec

    if args.pretrained:
        return _pretrained_models(args)
    rows = []
    for name in list_models():
        spec = model_spec(name)
        params = count_parameters(create_model(name))
        rows.append({"name": name, "seed": spec.seed, "input": spec.input_size, "params": params,
                     "description": spec.description})  # fmt: skip
    if args.json:
        print(json.dumps(rows))
        return 0
    print(f"{'name':<16} {'seed':<15} {'input':<6} {'params':>10}  description")
    for r in rows:
        seed = r["seed"] + " " * (15 - _display_width(r["seed"]))  # 民间版 takes two columns a character
        print(f"{r['name']:<16} {seed} {r['input']:<6} {r['params']:>10,}  {r['description']}")
    return 0


def _pretrained_models(args) -> int:
    """The published weights' model cards: what each was trained on and how to rebuild it."""
    from .models.pretrained import cards

    rows = list(cards().values())
    if args.json:
        print(json.dumps(rows))
        return 0
    print(f"{'name':<16} {'test acc':>8}  {'data':<6} how it was made")
    for c in rows:
        print(f"{c['name']:<16} {c['test_acc']:>8.4f}  {c['data']['name']:<6} {c['command']}")
    return 0


def _display_width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def cmd_inspect(args) -> int:
    from .infer.inspect import format_summary, summarize
    from .models import create_model

    summary = summarize(create_model(args.name), args.input_size, name=args.name, fast_path=True)
    print(json.dumps(summary.to_dict()) if args.json else format_summary(summary))
    return 0


def cmd_recipes(args) -> int:
    from .config import RECIPES, resolve

    rows = [{"name": r.name, "seed": r.seed, "description": r.description, "seed_result": r.seed_result,
             "config": resolve(r.name).to_dict()} for r in RECIPES.values()]  # fmt: skip
    if args.json:
        print(json.dumps(rows))
        return 0
    for row in rows:
        c = row["config"]
        print(f"{row['name']} (seed {row['seed']}): {row['description']}")
        print(
            f"    {c['model']} on {c['dataset']} ({c['scaling']}), batch {c['batch_size']}, {c['epochs']} epochs, "
            f"{c['optimizer']} lr {c['lr']} ({c['schedule']}), loss {c['reduction']}, init {c['init']}"
        )
        if row["seed_result"]:
            print(f"    seed printed: {row['seed_result']}")
    return 0


def cmd_data(args) -> int:
    from . import data

    if args.action == "download":
        paths = data.download(args.dataset, args.root, mirrors=args.mirror or None, timeout=args.timeout,
                              progress=sys.stderr.isatty(), force=args.force)  # fmt: skip
        for p in paths:
            print(p)
        return 0
    report = data.verify(args.dataset, args.root)
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"{report['dataset']} in {report['root']}")
    for f in report["files"]:
        print(f"  {f['file']}: shape {tuple(f['shape'])}, checksum {f['checksum']}")
    for split, s in report["splits"].items():
        print(f"  {split}: {s['images']:,} images {tuple(s['image_shape'])}, {s['labels']:,} labels; "
              f"per class {' '.join(map(str, s['class_counts']))}")  # fmt: skip
    verdict = "official checksums" if report["official"] else "NOT the official files (checksum mismatch or unknown)"
    print(f"  {verdict}")
    return 0 if report["official"] else 1


# ----------------------------------------------------------------------------------------------------------
# lenet bench


def cmd_bench(args) -> int:
    import torch

    from .bench import format_report, side_by_side

    if args.threads:
        torch.set_num_threads(args.threads)

    def log(line):
        print(line, file=sys.stderr, flush=True)

    result = side_by_side(args.dataset, args.root, rounds=args.rounds, steps=args.steps, keras=args.keras,
                          with_keras=not args.no_keras, log=log)  # fmt: skip
    print(format_report(result))
    if args.json:
        print(json.dumps(result))
    return 0


# ----------------------------------------------------------------------------------------------------------
# lenet sweep / reproduce, and published weights for predict / serve


def cmd_sweep(args) -> int:
    import shlex

    from .config import RECIPES

    if args.recipe == "report":
        from .sweep.report import sweep_report

        if not args.folder:
            raise LenetError("which sweep? lenet sweep report DIR")
        report = sweep_report(args.folder)
        paths = report.save()
        print(report.markdown(), end="")
        print(f"wrote {paths['markdown']}, {paths['csv'].name}, {paths['figure'].name}")
        if args.json:
            print(json.dumps(report.rows()))
        return 0
    if isinstance(args.ray, str) and args.ray in RECIPES and args.recipe is None:  # `lenet sweep --ray fast`
        args.recipe, args.ray = args.ray, True
    if args.folder:
        raise LenetError(f"unexpected {args.folder!r}: lenet sweep RECIPE [--seeds ...] [--set KEY=V1,V2 ...]")
    from .sweep.runner import run_sweep

    result = run_sweep(args.recipe, seeds=args.seeds, settings=args.set, out=args.out, resume=args.resume,
                       max_steps=args.max_steps, command=shlex.join(["lenet", *args.argv]),
                       **_pool_options(args))  # fmt: skip
    return _sweep_status(result.results, result.folder, f"lenet sweep --resume {result.folder}", args.json)


def _pool_options(args) -> dict:
    return {"root": args.root, "verify": not args.no_verify, "device": args.device, "fast": not args.no_fastpath,
            "workers": args.workers, "threads": args.threads, "ray": args.ray, "retries": args.retries}  # fmt: skip


def _sweep_status(results: list[dict], folder, again: str, as_json: bool = False) -> int:
    """Print what did not finish; the exit status: 0 all finished, 130 stopped (a signal), 2 runs failed."""
    from pathlib import Path

    failed = [r for r in results if r["status"] in ("error", "crashed")]
    stopped = [r for r in results if r["status"] in ("stopped", "not started")]
    for r in failed:
        print(f"error: {r['name']}: {(r.get('error') or 'failed').strip()}", file=sys.stderr)
    if not failed and not stopped:
        from .sweep.report import REPORT_MD

        report = Path(folder) / REPORT_MD
        if report.is_file() and not as_json:
            print(report.read_text().split("\n![")[0].rstrip())
        print(f"{len(results)} runs finished in {folder}")
    if as_json:
        print(json.dumps([{k: v for k, v in r.items() if k != "output"} for r in results]))
    if stopped or failed:
        what = f"{len(stopped)} stopped" + (f", {len(failed)} failed" if failed else "")
        print(f"{what} of {len(results)} runs; every run keeps its last checkpoint: {again}", file=sys.stderr)
    return 2 if failed else 130 if stopped else 0


def cmd_reproduce(args) -> int:
    import shlex
    from pathlib import Path

    from .sweep.reproduce import publish, reproduce

    rows = [r.strip() for r in args.rows.split(",")] if args.rows else None
    path = reproduce(args.seeds, paper_seeds=args.paper_seeds, quick=args.quick, out=args.out, report=args.report,
                     rows=rows, command=shlex.join(["lenet", *args.argv]), **_pool_options(args))  # fmt: skip
    text = path.read_text()
    print("\n".join(line for line in text.splitlines() if line.startswith("|")))
    print(f"wrote {path}" + (f" and {args.report}" if args.report else ""))
    if args.publish:
        for card in publish(args.out, args.publish, args.root):
            print(f"published {card['name']}: {card['recipe']} seed {card['seed']} on {card['data']['name']}, "
                  f"test acc {card['test_acc']:.4f} -> {Path(args.publish) / card['weights']['file']}")  # fmt: skip
    return 0 if "did not finish" not in text else 130


def _serve_pretrained(args) -> int:
    """lenet serve [RUN] --pretrained NAME: the published weights as one of the runs served."""
    if args.pretrained:
        from .models.pretrained import weights_file

        args.run = [str(weights_file(args.pretrained)), *args.run]
    if not args.run:
        raise LenetError("which model? lenet serve RUN (or lenet serve --pretrained NAME)")
    return cmd_serve(args)


def _pool_args(p) -> None:
    """Where a sweep's runs go: worker processes here, or Ray."""
    p.add_argument("--workers", type=positive_int, help="worker processes here (default: one per core, runs "
                   "permitting)")  # fmt: skip
    p.add_argument("--threads", type=positive_int, help="threads per worker (default: cores / workers); "
                   "with --ray: CPUs per run (default 1)")  # fmt: skip
    p.add_argument("--ray", nargs="?", const=True, metavar="ADDRESS", help="run the runs as Ray tasks: on the "
                   "cluster at ADDRESS (auto: the one this machine is in), else on a new local one")  # fmt: skip
    p.add_argument("--retries", type=non_negative_int, default=3, help="--ray: times a run whose worker or node "
                   "died is retried (from its last checkpoint)")  # fmt: skip
    p.add_argument("--no-fastpath", action="store_true", help="train with plain PyTorch (the C kernels off)")


# ----------------------------------------------------------------------------------------------------------
# The parser


def build_parser() -> argparse.ArgumentParser:
    from .config import CHOICES, OPTIMIZERS, RECIPES, SCHEDULES
    from .data import DATASETS, SCALINGS

    fmt = HelpFormatter
    parser = Parser(prog="lenet", description="LeNet-family CNNs on MNIST-style data.", formatter_class=fmt)
    parser.add_argument("--version", action="version", version=f"lenet {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    def add(name, help_text, func):
        p = sub.add_parser(name, help=help_text, description=help_text, formatter_class=fmt)
        p.set_defaults(func=func)
        return p

    def data_args(p):
        p.add_argument("--root", help="data root (default: $LENET_DATA, else ~/.cache/lenet)")
        p.add_argument("--no-verify", action="store_true", help="use data files whose checksums do not match")

    def device_arg(p):
        p.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda[:N] or mps")

    p = add("train", "train a recipe (default: d2l's LeNet on Fashion-MNIST)", cmd_train)
    p.add_argument("--recipe", default="d2l", choices=list(RECIPES), help="named recipe; flags below override it")
    g = p.add_argument_group("recipe overrides (default: the recipe's value)")
    g.add_argument("--model", help="model name (see `lenet models`)")
    g.add_argument("--dataset", choices=list(DATASETS))
    g.add_argument("--epochs", type=positive_int)
    g.add_argument("--batch-size", type=positive_int)
    g.add_argument("--lr", type=positive_float, help="learning rate")
    g.add_argument("--optimizer", choices=OPTIMIZERS)
    g.add_argument("--momentum", type=non_negative_float)
    g.add_argument("--weight-decay", type=non_negative_float)
    g.add_argument("--schedule", choices=SCHEDULES)
    g.add_argument("--scaling", choices=SCALINGS, help="input scaling: none=0..255, unit=[0,1], standard, lecun")
    g.add_argument("--input-size", type=int, choices=(28, 32), help="pad 28x28 images to 32x32")
    g.add_argument("--init", choices=CHOICES["init"])
    g.add_argument("--label-smoothing", type=fraction)
    g.add_argument("--val-fraction", type=fraction, help="hold out the last fraction of the training set")
    g.add_argument("--distort", action="store_true", help="random affine distortions of training images")
    g.add_argument("--seed", type=non_negative_int)
    option = "a model option (repeatable), e.g. activation=relu, pooling=max (see docs/notebooks.md)"
    g.add_argument("--model-arg", action="append", metavar="KEY=VALUE", help=option)
    data_args(p)
    device_arg(p)
    p.add_argument("--download", action="store_true", help="download the dataset first if it is not there")
    p.add_argument("--out", help="run folder (default: runs/<recipe>-<timestamp>)")
    p.add_argument("--overwrite", action="store_true", help="replace the run that --out holds (its files only)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a stopped run (with its own config); with "
                   "--epochs N, extend a finished one")  # fmt: skip
    p.add_argument("--nproc", type=positive_int, default=1, help="processes here (DDP, via torchrun)")
    p.add_argument("--max-steps", type=positive_int, help="stop after this many optimiser steps (in all)")
    p.add_argument("--dry-run", action="store_true", help="one training step, no run folder: a smoke test")
    p.add_argument("--target-acc", type=fraction, help="exit 1 if the final test accuracy is below this")
    p.add_argument("--tensorboard", action="store_true", help="also write TensorBoard event files")
    p.add_argument("--snapshots", action="store_true", help="keep the weights after early steps and every epoch "
                   "(for lenet serve's slider)")  # fmt: skip
    p.add_argument("--no-fastpath", action="store_true", help="train with plain PyTorch (the C kernels off)")
    p.add_argument("--json", action="store_true", help="print summary.json as the last line")

    p = add("eval", "evaluate a trained run: accuracy, per-class accuracy, confusion matrix", cmd_eval)
    p.add_argument("run", help="run folder, model.safetensors or checkpoint.pt")
    p.add_argument("--dataset", choices=list(DATASETS), help="evaluate on another dataset than the run's")
    p.add_argument("--split", choices=("test", "train"), default="test")
    p.add_argument("--gallery", type=non_negative_int, default=32, help="misclassified examples to draw")
    data_args(p)
    device_arg(p)
    p.add_argument("--json", action="store_true", help="print the metrics as JSON on the last line")

    p = add("predict", "classify image files (PNG, JPEG, ...) with a trained run", cmd_predict)
    p.add_argument("run", help="run folder, model.safetensors or checkpoint.pt (with --pretrained: an image)")
    p.add_argument("images", nargs="*", help="image files")
    p.add_argument("--pretrained", metavar="NAME", help="the published weights of model NAME instead of a run")
    p.add_argument("--top", type=positive_int, default=1, help="how many classes to show per image")
    p.add_argument("--json", action="store_true", help="one JSON object per image per line")

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

    p = add("activations", "a PNG of chosen layers' feature maps for image files (default: the first two)",
            cmd_activations)  # fmt: skip
    p.add_argument("run", help="run folder, model.safetensors or checkpoint.pt")
    p.add_argument("images", nargs="+", help="image files, read as `lenet predict` reads them")
    p.add_argument("--layers", help="comma-separated layer names or indices (default: the first two conv stages)")
    p.add_argument("-o", "--output", help="PNG file to write (default: activations.png beside the weights)")

    p = add("models", "list the registered models", cmd_models)
    p.add_argument("--pretrained", action="store_true", help="the published weights and their model cards")
    p.add_argument("--json", action="store_true")

    p = add("inspect", "layer-by-layer output shapes, parameters and FLOPs of a model", cmd_inspect)
    p.add_argument("name", help="model name (see `lenet models`)")
    p.add_argument("--input-size", type=int, choices=(28, 32), help="input side (default: the model's own)")
    p.add_argument("--json", action="store_true")

    p = add("recipes", "list the training recipes and their settings", cmd_recipes)
    p.add_argument("--json", action="store_true")

    p = add("bench", "lenet's trainer beside the d2l loop and Keras: samples/s, ratio, roof", cmd_bench)
    p.add_argument("--dataset", choices=list(DATASETS), default="mnist", help="random pixels if not on disk")
    p.add_argument("--root", help="data root (default: $LENET_DATA, else ~/.cache/lenet)")
    p.add_argument("--rounds", type=positive_int, default=5, help="interleaved rounds; medians are reported")
    p.add_argument("--steps", type=positive_int, default=40, help="batches of 256 per contestant per round")
    p.add_argument("--threads", type=positive_int, help="PyTorch and TensorFlow threads (default: PyTorch's)")
    p.add_argument("--keras", metavar="PYTHON", help="a Python with tensorflow (default: this one, if any)")
    p.add_argument("--no-keras", action="store_true", help="leave Keras out even if it is installed")
    p.add_argument("--json", action="store_true", help="print the results as one JSON object, last line")

    p = add("sweep", "many runs: a recipe over seeds and settings, in parallel here or on a Ray cluster; "
            "`lenet sweep report DIR`: mean ± std per setting", cmd_sweep)  # fmt: skip
    p.add_argument("recipe", nargs="?", help="the recipe to sweep (see lenet recipes); or `report`, then a "
                   "sweep folder")  # fmt: skip
    p.add_argument("folder", nargs="?", help="with `report`: the sweep folder")
    p.add_argument("--seeds", default="5", help="N (the first N seeds, 0..N-1), A-B, or a list like 0,2,5-7")
    p.add_argument("--set", action="append", metavar="KEY=V1,V2", help="a config setting (repeatable): one value "
                   "fixes it, several are swept, e.g. --set lr=0.05,0.1 --set dataset=mnist")  # fmt: skip
    p.add_argument("--out", help="sweep folder (default: runs/sweep-<recipe>-<time>); the same again continues it")
    p.add_argument("--resume", metavar="SWEEP_DIR", help="continue a sweep as its sweep.json says: finished runs "
                   "are kept, stopped ones resumed, missing ones started")  # fmt: skip
    p.add_argument("--max-steps", type=positive_int, help="stop every run after this many steps (a smoke test)")
    _pool_args(p)
    data_args(p)
    device_arg(p)
    p.add_argument("--json", action="store_true", help="print every run's status and summary (report: every "
                   "setting's statistics) as JSON, last line")  # fmt: skip

    from .sweep import DEFAULT_PAPER_SEEDS, DEFAULT_SEEDS, QUICK_STEPS

    p = add("reproduce", "every seed recipe and the 1998 paper over several seeds: REPRODUCE.md, with spreads",
            cmd_reproduce)  # fmt: skip
    p.add_argument("--seeds", default=str(DEFAULT_SEEDS), help="seeds per row: N (the first N) or A-B or a list")
    p.add_argument("--paper-seeds", help="seeds of the two 1998 rows, ~20 core-minutes a run (default: the first "
                   f"{DEFAULT_PAPER_SEEDS} of --seeds)")  # fmt: skip
    p.add_argument("--quick", action="store_true", help=f"stop every run after {QUICK_STEPS} steps: a smoke test "
                   "of the whole pipeline (CI), not results")  # fmt: skip
    p.add_argument("--rows", help="comma-separated rows (default: all): d2l, d2l-mxnet, keras, pytorch-tutorial, "
                   "community, tf1-cnn, fast, lecun98, lecun98-distort")  # fmt: skip
    p.add_argument("--out", default="runs/reproduce", help="output folder (one sweep folder per row); the same "
                   "again continues it")  # fmt: skip
    p.add_argument("--report", help="also write REPRODUCE.md to this path (default: only OUT/REPRODUCE.md)")
    p.add_argument("--publish", metavar="DIR", help="then copy each zoo model's lowest-seed run into DIR as "
                   "published weights, each with its model card")  # fmt: skip
    _pool_args(p)
    data_args(p)
    device_arg(p)

    p = add("data", "download or verify a dataset", cmd_data)
    p.add_argument("action", choices=("download", "verify"))
    p.add_argument("dataset", choices=list(DATASETS))
    p.add_argument("--root", help="data root (default: $LENET_DATA, else ~/.cache/lenet)")
    p.add_argument("--mirror", action="append", help="base URL to try instead of the built-in mirrors (repeatable)")
    p.add_argument("--timeout", type=positive_float, default=30.0, help="seconds before a silent mirror is dropped")
    p.add_argument("--force", action="store_true", help="download even when a verified copy is present")
    p.add_argument("--json", action="store_true", help="verify: print the report as JSON")
    return parser


def entry() -> None:
    """The `lenet` program (lenet.program.run): main() with the exit status."""
    global _PROGRAM
    _PROGRAM = True
    sys.exit(main())


_PROGRAM = False  # running as the program: a Ctrl-C after the first one changes nothing any more


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        args.argv = list(sys.argv[1:] if argv is None else argv)  # `train --nproc N` runs them under torchrun
        return args.func(args)
    except LenetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:  # Ctrl-C anywhere, start-up included: one line (a run says what it kept)
        if _PROGRAM:  # another Ctrl-C while the program exits must not become a traceback
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        print(str(e) or "interrupted", file=sys.stderr)
        return 130
