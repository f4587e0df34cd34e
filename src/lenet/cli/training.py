"""`lenet train`, `eval`, `predict` and `activations`: arguments in, a run or a model's answers out."""

from __future__ import annotations

import json
import signal
import sys

from ..errors import LenetError
from . import common
from .common import data_args, device_arg, fraction, non_negative_float, non_negative_int, positive_float, positive_int


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
    from ..train import dist
    from ..train.run import train

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
                    resume_command="lenet train --resume {run}", program=common.PROGRAM)  # fmt: skip
    else:
        from ..train.run import default_run_dir

        out = None if args.dry_run else (args.out or default_run_dir(args.recipe))
        run = train(args.recipe, out=out, overwrite=args.overwrite, root=args.root, device=args.device,
                    verify=not args.no_verify, download=args.download, max_steps=args.max_steps,
                    fast=not args.no_fastpath, tensorboard=args.tensorboard, snapshots=args.snapshots,
                    dry_run=args.dry_run, resume_command="lenet train --resume {run}", program=common.PROGRAM,
                    **overrides)  # fmt: skip
    if run.stopped not in (None, "max-steps"):
        return 128 + signal.Signals["SIG" + run.stopped.removeprefix("SIG")].value
    if dist.launched():
        dist.leave()
    common.QUICK_EXIT = True  # the run folder is complete, the process group left: nothing to tear down
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
    from ..infer.evaluation import evaluate_run

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
    from ..infer.predict import Predictor

    files, source = [*args.images], args.run
    if args.pretrained:  # `lenet predict --pretrained NAME IMAGE...`: the first image took the run's place
        from ..models.pretrained import weights_file

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

    from ..infer.predict import Predictor
    from ..train.plots import activations, layer_outputs

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


def add_parsers(add) -> None:
    """This module's subcommands, on `add(name, help, func)`."""
    from ..config import CHOICES, OPTIMIZERS, RECIPES, SCHEDULES
    from ..data import DATASETS, SCALINGS

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

    p = add("activations", "a PNG of chosen layers' feature maps for image files (default: the first two)",
            cmd_activations)  # fmt: skip
    p.add_argument("run", help="run folder, model.safetensors or checkpoint.pt")
    p.add_argument("images", nargs="+", help="image files, read as `lenet predict` reads them")
    p.add_argument("--layers", help="comma-separated layer names or indices (default: the first two conv stages)")
    p.add_argument("-o", "--output", help="PNG file to write (default: activations.png beside the weights)")
