"""`lenet models`, `inspect`, `recipes`, `data` and `bench`: what lenet has, and how fast it runs here."""

from __future__ import annotations

import json
import sys
import unicodedata

from .common import positive_float, positive_int


def cmd_models(args) -> int:
    from ..models import count_parameters, create_model, list_models, model_spec

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
    from ..models.pretrained import cards

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
    from ..infer.inspect import format_summary, summarize
    from ..models import create_model

    summary = summarize(create_model(args.name), args.input_size, name=args.name, fast_path=True)
    print(json.dumps(summary.to_dict()) if args.json else format_summary(summary))
    return 0


def cmd_recipes(args) -> int:
    from ..config import RECIPES, resolve

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
    from .. import data

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

    from ..bench import format_report, side_by_side

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


def add_parsers(add) -> None:
    """This module's subcommands, on `add(name, help, func)`."""
    from ..data import DATASETS

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

    p = add("data", "download or verify a dataset", cmd_data)
    p.add_argument("action", choices=("download", "verify"))
    p.add_argument("dataset", choices=list(DATASETS))
    p.add_argument("--root", help="data root (default: $LENET_DATA, else ~/.cache/lenet)")
    p.add_argument("--mirror", action="append", help="base URL to try instead of the built-in mirrors (repeatable)")
    p.add_argument("--timeout", type=positive_float, default=30.0, help="seconds before a silent mirror is dropped")
    p.add_argument("--force", action="store_true", help="download even when a verified copy is present")
    p.add_argument("--json", action="store_true", help="verify: print the report as JSON")
