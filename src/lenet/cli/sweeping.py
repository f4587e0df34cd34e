"""`lenet sweep` and `lenet reproduce`: many runs, and the figures a baseline is quoted with."""

from __future__ import annotations

import json
import sys

from ..errors import LenetError
from .common import data_args, device_arg, non_negative_int, positive_int


def cmd_sweep(args) -> int:
    import shlex

    from ..config import RECIPES

    if args.recipe == "report":
        from ..sweep.report import sweep_report

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
    from ..sweep.runner import run_sweep

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
        from ..sweep.report import REPORT_MD

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

    from ..sweep.reproduce import publish, reproduce

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


def add_parsers(add) -> None:
    """This module's subcommands, on `add(name, help, func)`."""
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

    from ..sweep import DEFAULT_PAPER_SEEDS, DEFAULT_SEEDS, QUICK_STEPS

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
