"""The `lenet` command line: argparse subcommands; main(argv) returns the exit status.

Exit status: 0 success, 1 a missed --target-acc, 2 bad input (one line on stderr, never a traceback).
"""

from __future__ import annotations

import argparse
import io
import json
import math
import platform
import signal
import sys
import time
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

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
# lenet train


def _run_dir(out: str | None, recipe: str) -> Path:
    if out:
        return Path(out)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    path = Path("runs") / f"{recipe}-{stamp}"
    n = 1
    while path.exists():
        n += 1
        path = Path("runs") / f"{recipe}-{stamp}-{n}"
    return path


def _without_option(argv: list[str], option: str) -> list[str]:
    """`argv` less `option VALUE` and `option=VALUE` (torchrun would take --nproc for one of its own)."""
    out = []
    for arg, previous in zip(argv, [None, *argv], strict=False):
        if arg != option and not arg.startswith(option + "=") and previous != option:
            out.append(arg)
    return out


def _versions() -> dict:
    import torch

    return {"lenet": __version__, "torch": torch.__version__, "python": platform.python_version()}


@contextmanager
def stop_signals() -> Iterator[list[int]]:
    """SIGINT and SIGTERM noted in the yielded list (training ends the epoch there, with a checkpoint); a
    second signal stops at once. The previous handlers come back on exit."""
    signals: list[int] = []

    def on_signal(signum, frame):
        if signals:
            raise KeyboardInterrupt
        signals.append(signum)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield signals
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def run_summary(cfg, history, test_examples: int) -> dict:
    """What summary.json says of a finished run's config and history (the caller adds where it ran)."""
    import torch

    last = history.last
    summary = {
        "recipe": cfg.recipe, "model": cfg.model, "dataset": cfg.dataset,
        "epochs": last.get("epoch", 0), "steps": last.get("steps", 0),
        "train_loss": last.get("train_loss"), "train_acc": last.get("train_acc"),
        "test_loss": last.get("test_loss"), "test_acc": last.get("test_acc"), "test_examples": test_examples,
        "examples_per_sec": history.examples_per_sec, "train_seconds": history.train_seconds,
        "seed": cfg.seed, "threads": torch.get_num_threads(), "versions": _versions(),
    }  # fmt: skip
    if "val_acc" in last:
        summary.update(val_loss=last["val_loss"], val_acc=last["val_acc"])
    return summary


def cmd_train(args) -> int:
    from .config import resolve
    from .models import count_parameters
    from .train import dist
    from .train.checkpoint import CONFIG, SUMMARY, RunDir, load_resume, restore
    from .train.loop import TrainState, build_model, evaluate, fit, load_data, make_optimizer, select_device
    from .train.plots import plot_curves
    from .train.report import Reporter

    if args.nproc > 1 and not dist.launched():
        return dist.launch(args.nproc, _without_option(args.argv, "--nproc"))
    started = time.perf_counter()
    overrides = {
        "model": args.model, "dataset": args.dataset, "epochs": args.epochs, "batch_size": args.batch_size,
        "lr": args.lr, "optimizer": args.optimizer, "momentum": args.momentum, "weight_decay": args.weight_decay,
        "seed": args.seed, "scaling": args.scaling, "input_size": args.input_size, "schedule": args.schedule,
        "init": args.init, "label_smoothing": args.label_smoothing, "val_fraction": args.val_fraction,
    }  # fmt: skip
    if args.distort:
        overrides["distort"] = True
    ckpt = None
    if args.resume:
        given = [k for k, v in overrides.items() if v is not None] + ["out"] * bool(args.out)
        if given or args.recipe != "d2l":
            flag = "--" + (given[0] if given else "recipe").replace("_", "-")
            raise LenetError(f"--resume continues a run with its own config; drop {flag}")
        cfg, ckpt = load_resume(args.resume)
        if ckpt and ckpt["epoch"] >= cfg.epochs and (Path(args.resume) / SUMMARY).is_file():
            print(f"{args.resume}: the run already finished its {cfg.epochs} epochs; nothing to do")
            return 0
    else:
        cfg = resolve(args.recipe, **overrides)
    device = select_device(args.device)
    rank, device = dist.init(device)
    if dist.launched() and args.nproc not in (1, rank.world_size):
        raise LenetError(f"--nproc {args.nproc} but torchrun started {rank.world_size} processes")
    max_steps = 1 if args.dry_run else args.max_steps
    if args.download:
        from .data import download

        download(cfg.dataset, args.root, progress=sys.stderr.isatty())
    data = load_data(cfg, args.root, device, verify=not args.no_verify)
    model = build_model(cfg).to(device)
    optimizer = make_optimizer(cfg, model)
    state = restore(ckpt, model, optimizer, device) if ckpt else TrainState()
    # Created only now, so that bad data or a bad checkpoint leaves no empty run folder behind.
    run = None if args.dry_run or not rank.main else RunDir(args.resume or _run_dir(args.out, cfg.recipe))

    where = str(device) if rank.world_size == 1 else f"{device} x {rank.world_size} processes"
    reporter = Reporter(cfg, where) if rank.main else Reporter(cfg, where, out=io.StringIO(), progress=False)
    reporter.start(len(data.train), count_parameters(model))
    if run and ckpt:
        run.catch_up(ckpt, model, cfg)
        reporter.print(f"resuming {run.path} at epoch {state.epoch + 1}, step {state.step}")
    elif run:
        run.write_json(CONFIG, cfg.to_dict())

    writer = None
    if args.tensorboard and run:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise LenetError("--tensorboard needs the tensorboard package: pip install 'lenet[tensorboard]'") from None
        writer = SummaryWriter(str(run / "tensorboard"))

    def on_step(step, epoch, index, batches):
        reporter.step(step, epoch, index, batches)
        if cfg.log_every and step % cfg.log_every == 0 and rank.main:
            reporter.step_eval(step, evaluate(model, data.test, cfg.eval_batch_size)["acc"])

    def on_epoch(record):
        reporter.epoch(record)
        if writer:
            for key, value in record.items():
                if key != "epoch":
                    writer.add_scalar(key, value, record["epoch"])

    with stop_signals() as signals:
        history = fit(
            model, data, cfg, max_steps=max_steps, state=state, optimizer=optimizer, on_step=on_step,
            on_epoch=on_epoch, on_checkpoint=run.save_checkpoint if run else None, stop=lambda: bool(signals),
            rank=rank.rank, world_size=rank.world_size,
        )  # fmt: skip
    if writer:
        writer.close()
    if state.stopped:
        signum = signals[0] if signals else signal.SIGTERM  # a rank that did not get the signal itself
        saved = f"; checkpoint saved; continue with: lenet train --resume {run.path}" if run else ""
        if rank.main:
            where = f"epoch {state.epoch + 1}, step {state.step}"
            print(f"interrupted by {signal.Signals(signum).name} at {where}{saved}", file=sys.stderr)
        return 128 + signum
    summary = {
        **run_summary(cfg, history, len(data.test)), "seconds": time.perf_counter() - started,
        "device": str(device), "params": count_parameters(model), "processes": rank.world_size,
        "run_dir": str(run.path) if run else None,
    }  # fmt: skip
    if run:
        plot_curves(history.epochs, run / "curves.png")
        run.write_json(SUMMARY, summary)
    reporter.finish(summary)
    if run:
        reporter.print(f"run folder: {run.path}")
    if args.json and rank.main:
        print(json.dumps(summary))
    if args.target_acc is not None and (summary["test_acc"] or 0.0) < args.target_acc:
        print(
            f"error: test accuracy {summary['test_acc']:.4f} is below the target {args.target_acc}",
            file=sys.stderr,
        )
        return 1
    return 0


# ----------------------------------------------------------------------------------------------------------
# lenet eval / predict


def cmd_eval(args) -> int:
    import numpy as np

    from .train.checkpoint import load_run
    from .train.loop import evaluate, load_data, predict_split, select_device
    from .train.plots import plot_confusion, plot_gallery

    device = select_device(args.device)
    model, cfg, _ = load_run(args.run, device)
    if args.dataset:
        cfg.dataset = args.dataset
    data = load_data(cfg, args.root, device, verify=not args.no_verify)
    split = data.test if args.split == "test" else data.train
    metrics = evaluate(model, split, cfg.eval_batch_size, len(data.classes))
    confusion = np.asarray(metrics["confusion"])
    per_class = {
        name: (float(confusion[i, i] / confusion[i].sum()) if confusion[i].sum() else 0.0)
        for i, name in enumerate(data.classes)
    }
    folder = Path(args.run) if Path(args.run).is_dir() else Path(args.run).parent
    figures = {}
    try:
        figures["confusion"] = str(plot_confusion(
            metrics["confusion"], list(data.classes), folder / f"confusion-{args.split}.png",
            f"{cfg.model} on {cfg.dataset} {args.split}: acc {metrics['acc']:.4f}",
        ))  # fmt: skip
        probs = predict_split(model, split, cfg.eval_batch_size)
        pred = probs.argmax(1)
        wrong = (pred != split.labels).nonzero().flatten()[: args.gallery].tolist()
        images = split.images[wrong, 0].float().cpu().numpy()
        titles = [
            f"{data.classes[int(split.labels[i])]} -> {data.classes[int(pred[i])]} ({float(probs[i, pred[i]]):.2f})"
            for i in wrong
        ]
        figures["misclassified"] = str(plot_gallery(images, titles, folder / f"misclassified-{args.split}.png"))
    except OSError as e:
        print(f"warning: could not write figures to {folder} ({e.strerror})", file=sys.stderr)

    s = args.split
    result = {
        "model": cfg.model, "dataset": cfg.dataset, "split": s, "examples": metrics["n"],
        f"{s}_acc": metrics["acc"], f"{s}_loss": metrics["loss"], "per_class_acc": per_class,
        "confusion": metrics["confusion"], "figures": figures, "device": str(device),
    }  # fmt: skip
    print(f"{cfg.model} on {cfg.dataset} {s} ({metrics['n']:,} images): "
          f"loss {metrics['loss']:.4f}, acc {metrics['acc']:.4f}")  # fmt: skip
    for name, acc in per_class.items():
        print(f"  {name:>12}: {acc:.4f}")
    for kind, path in figures.items():
        print(f"{kind}: {path}")
    if args.json:
        print(json.dumps(result))
    return 0


def cmd_predict(args) -> int:
    from .infer.predict import Predictor

    predictor = Predictor.from_run(args.run, "cpu")
    status = 0
    for file in args.images:
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


# ----------------------------------------------------------------------------------------------------------
# lenet serve / export


def cmd_serve(args) -> int:
    try:
        import python_multipart  # noqa: F401  (form uploads)
        import uvicorn

        from .serve import create_app, listen, url
    except ModuleNotFoundError as e:
        raise LenetError(f"lenet serve needs the {e.name} package: pip install 'lenet[serve]'") from None
    import torch

    from .data import load_raw
    from .infer.predict import Predictor

    # One image at a time through a LeNet is far too small to split across threads: on a busy machine the
    # threads' hand-offs cost ~100x the arithmetic. Concurrent requests are the parallelism.
    torch.set_num_threads(1)
    predictor = Predictor.from_run(args.run, "cpu")
    try:
        samples = load_raw(predictor.config.dataset, "test", args.root, verify=not args.no_verify)
    except LenetError as e:
        samples = None
        print(f"note: no sample button ({e})", file=sys.stderr)
    sock = listen(args.host, args.port)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: listening on {args.host}: other machines can reach this server", file=sys.stderr)
    print(f"serving {predictor.config.model} on {url(sock)} (Ctrl-C to stop)", flush=True)
    config = uvicorn.Config(create_app(predictor, samples), log_level="warning", access_log=False)
    uvicorn.Server(config).run(sockets=[sock])
    return 0


def cmd_export(args) -> int:
    from .infer.export import export_run

    path, difference = export_run(args.run, args.format, args.output)
    if difference > 1e-3:
        raise LenetError(f"{path}: the exported model disagrees with torch (max difference {difference:.2g})")
    print(f"wrote {path} ({path.stat().st_size:,} bytes); outputs match torch within {difference:.1e} "
          "at batch 1 and 7")  # fmt: skip
    return 0


# ----------------------------------------------------------------------------------------------------------
# lenet models / inspect / recipes / data


def cmd_models(args) -> int:
    from .models import count_parameters, create_model, list_models, model_spec

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


def _display_width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def cmd_inspect(args) -> int:
    from .infer.inspect import format_summary, summarize
    from .models import create_model

    summary = summarize(create_model(args.name), args.input_size, name=args.name)
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
# The parser


def build_parser() -> argparse.ArgumentParser:
    from .config import OPTIMIZERS, RECIPES, SCHEDULES
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
    g.add_argument("--init", choices=("default", "xavier", "glorot"))
    g.add_argument("--label-smoothing", type=fraction)
    g.add_argument("--val-fraction", type=fraction, help="hold out the last fraction of the training set")
    g.add_argument("--distort", action="store_true", help="random affine distortions of training images")
    g.add_argument("--seed", type=non_negative_int)
    data_args(p)
    device_arg(p)
    p.add_argument("--download", action="store_true", help="download the dataset first if it is not there")
    p.add_argument("--out", help="run folder (default: runs/<recipe>-<timestamp>)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a stopped run (with its own config)")
    p.add_argument("--nproc", type=positive_int, default=1, help="processes here (DDP, via torchrun)")
    p.add_argument("--max-steps", type=positive_int, help="stop after this many optimiser steps (in all)")
    p.add_argument("--dry-run", action="store_true", help="one training step, no run folder: a smoke test")
    p.add_argument("--target-acc", type=fraction, help="exit 1 if the final test accuracy is below this")
    p.add_argument("--tensorboard", action="store_true", help="also write TensorBoard event files")
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
    p.add_argument("run", help="run folder, model.safetensors or checkpoint.pt")
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--top", type=positive_int, default=1, help="how many classes to show per image")
    p.add_argument("--json", action="store_true", help="one JSON object per image per line")

    p = add("serve", "the drawing web app: live prediction and every layer's activations", cmd_serve)
    p.add_argument("run", help="run folder, model.safetensors or checkpoint.pt")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    p.add_argument("--port", type=_number(int, 0, high=65535), default=8000, help="port (0: any free one)")
    data_args(p)

    p = add("export", "export a trained run to ONNX or TorchScript, checked against torch", cmd_export)
    p.add_argument("run", help="run folder, model.safetensors or checkpoint.pt")
    formats = "onnx: one file for onnxruntime; torchscript: for torch.jit.load and libtorch"
    p.add_argument("--format", choices=("onnx", "torchscript"), default="onnx", help=formats)
    p.add_argument("-o", "--output", help="file to write (default: model.onnx / .torchscript.pt beside it)")

    p = add("models", "list the registered models", cmd_models)
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

    p = add("data", "download or verify a dataset", cmd_data)
    p.add_argument("action", choices=("download", "verify"))
    p.add_argument("dataset", choices=list(DATASETS))
    p.add_argument("--root", help="data root (default: $LENET_DATA, else ~/.cache/lenet)")
    p.add_argument("--mirror", action="append", help="base URL to try instead of the built-in mirrors (repeatable)")
    p.add_argument("--timeout", type=positive_float, default=30.0, help="seconds before a silent mirror is dropped")
    p.add_argument("--force", action="store_true", help="download even when a verified copy is present")
    p.add_argument("--json", action="store_true", help="verify: print the report as JSON")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # `train --nproc N` runs them under torchrun
    try:
        return args.func(args)
    except LenetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
