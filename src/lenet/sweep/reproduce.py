"""`lenet reproduce`: every seed recipe and the 1998 paper over several seeds, written up as REPRODUCE.md.

Each row is a sweep folder of its own inside the output folder (`lenet sweep report OUT/ROW` works on it); all
rows' runs go through one pool, longest first, so the workers finish together. `publish` copies one run per
zoo model into a folder as the package's pretrained weights, each with its model card.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import shutil
import statistics
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from .. import __version__
from ..config import RECIPES, resolve
from ..errors import LenetError
from ..train.run import cpu_name
from . import DEFAULT_PAPER_SEEDS, DEFAULT_SEEDS, QUICK_STEPS
from .report import Stats, collect
from .runner import execute, prepare
from .spec import SweepSpec, write_spec

LOG_FILE, FIGURE = "reproduce.json", "reproduce.png"
# Published weights: one run per zoo model, except cnn-tf1 (3.3 M parameters: 13 MB, against ~250 KB for a LeNet).
UNPUBLISHED = ("cnn-tf1",)


@dataclass(frozen=True)
class Row:
    """One line of REPRODUCE.md: a recipe (with overrides) over seeds."""

    name: str
    recipe: str
    overrides: dict = field(default_factory=dict)
    paper: str = ""  # the paper's figure, for the 1998 rows

    @property
    def is_paper(self) -> bool:
        return self.recipe == "lecun98"


ROWS = [
    Row("d2l", "d2l"),
    Row("d2l-mxnet", "d2l-mxnet"),
    Row("keras", "keras"),
    Row("pytorch-tutorial", "pytorch-tutorial"),
    Row("community", "community"),
    Row("tf1-cnn", "tf1-cnn"),
    Row("fast", "fast"),
    Row("lecun98", "lecun98", paper="0.95 % test error"),
    Row("lecun98-distort", "lecun98", {"distort": True}, paper="0.8 % test error"),
]


def available(dataset: str, root) -> bool:
    from ..data import get_dataset_info, locate, resolve_root

    info, where = get_dataset_info(dataset), resolve_root(root)
    return all(locate(info, spec, where) is not None for spec in info.files)


def plan(seeds: int | str = DEFAULT_SEEDS, paper_seeds: int | None = None, quick: bool = False, root=None,
         rows: list[str] | None = None) -> list[tuple[Row, SweepSpec]]:  # fmt: skip
    """Each row's sweep: its seeds, its data (a missing Fashion-MNIST is replaced by MNIST), its cap on steps."""
    from .spec import parse_seeds

    seed_list = parse_seeds(str(seeds))
    paper_list = parse_seeds(str(paper_seeds)) if paper_seeds is not None else seed_list[:DEFAULT_PAPER_SEEDS]
    chosen = ROWS
    if rows:
        unknown = [r for r in rows if r not in {row.name for row in ROWS}]
        if unknown:
            raise LenetError(f"unknown row {unknown[0]!r}; rows: {', '.join(row.name for row in ROWS)}")
        chosen = [row for row in ROWS if row.name in rows]
    out = []
    for row in chosen:
        fixed = dict(row.overrides)
        dataset = resolve(row.recipe).dataset
        if not available(dataset, root) and dataset != "mnist":
            fixed["dataset"] = "mnist"
        spec = SweepSpec(row.recipe, paper_list if row.is_paper else seed_list, {}, fixed,
                         QUICK_STEPS if quick else None)  # fmt: skip
        out.append((row, spec))
    return out


def _cost(row: Row, spec: SweepSpec) -> float:
    """A rough cost of one run, to start the longest first (seconds on one core, measured; docs/sweeps.md)."""
    per_epoch = {"lecun98": 45.0, "tf1-cnn": 150.0, "d2l-mxnet": 1.0}.get(row.recipe, 1.5)
    return per_epoch * resolve(row.recipe, **spec.fixed).epochs * (1.5 if spec.fixed.get("distort") else 1.0)


def machine() -> dict:
    """What the figures were measured on."""
    cpu = cpu_name()
    import torch

    from .local import cpu_count

    return {"cpu": cpu, "cores": cpu_count(), "system": f"{platform.system()} {platform.machine()}",
            "torch": torch.__version__, "python": platform.python_version(), "lenet": __version__,
            "load": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}  # fmt: skip


def reproduce(
    seeds: int | str = DEFAULT_SEEDS,
    *,
    paper_seeds: int | None = None,
    quick: bool = False,
    out="runs/reproduce",
    report: str | os.PathLike | None = None,
    rows: list[str] | None = None,
    root=None,
    command: str = "",
    **options,
) -> Path:
    """Run every row (see ROWS) over its seeds into `out` (resumable: run it again to continue) and write
    REPRODUCE.md there (and to `report` when given); returns its path. options: as lenet.sweep.execute."""
    started = time.perf_counter()
    out = Path(out)
    planned = plan(seeds, paper_seeds, quick, root, rows)
    jobs, folders = [], {}
    for row, spec in planned:
        folder = out / row.name
        spec.command = command
        spec = prepare(folder, spec)
        folder.mkdir(parents=True, exist_ok=True)
        write_spec(folder, spec, {"lenet": __version__, "row": row.name})
        folders[row.name] = (folder, spec)
        jobs += [((n, -_cost(row, spec)), dataclasses.replace(job, label=f"{row.name}/{job.name}"))
                 for n, job in enumerate(spec.jobs(folder))]  # fmt: skip
    # Every row's first seed, then every row's second, ...; longest first within a round, so that the pool's
    # tail is short runs, and a reproduce stopped early has the same few seeds of every row.
    jobs.sort(key=lambda cj: cj[0])
    # reproduce.json keeps the wall time of the invocations that trained (a run continued after a Ctrl-C adds
    # up), and the machine as the first one found it, so that writing the report again changes neither.
    log = _read_json(out / LOG_FILE)
    before = log.get("machine") or machine()
    results = execute([job for _, job in jobs], root=root, **options)
    trained = any(r.get("before") != "done" for r in results)
    if trained or "finished" not in log:
        log = {"machine": before, "seconds": log.get("seconds", 0.0) + (time.perf_counter() - started) * trained,
               "command": command, "load_end": machine()["load"],
               "finished": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}  # fmt: skip
        (out / LOG_FILE).write_text(json.dumps(log, indent=2) + "\n")
    stopped = [r for r in results if r["status"] != "done"]
    text = write_up(planned, folders, log, quick, stopped)
    path = out / "REPRODUCE.md"
    path.write_text(text)
    plot = figure(planned, folders)
    plot.save(out / FIGURE)
    if report is not None and Path(report).resolve() != path.resolve():
        report = Path(report)
        docs = report.parent / "docs"
        shown = docs / FIGURE if docs.is_dir() else report.with_suffix(".png")
        plot.save(shown)
        report.write_text(text.replace(f"]({FIGURE})", f"]({os.path.relpath(shown, report.parent)})"))
    return path


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _row_report(row: Row, folder: Path, spec: SweepSpec):
    return collect(spec.jobs(folder), spec.recipe, {}, spec.seeds, folder)


def write_up(planned, folders, log: dict, quick: bool, stopped) -> str:
    """REPRODUCE.md: per row, what the seed (or paper) printed beside lenet's mean ± std over seeds; `log` is
    reproduce.json (the machine, wall time, command and end of the invocations that trained)."""
    m = log["machine"]
    lines = [
        "# Reproducing the seed notebooks and the 1998 paper, with spreads",
        "",
        f"Made by `{log['command'] or 'lenet reproduce'}` (lenet {__version__}), finished {log['finished']}: "
        f"{log['seconds'] / 60:.1f} minutes wall for every run of every row.",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['system']}; torch {m['torch']}, Python {m['python']}; "
        f"1-minute load average {m['load']:.1f} at the start, {log['load_end']:.1f} at the end (other jobs shared it).",
        "",
    ]
    if quick:
        lines += [f"**--quick**: every run stopped after {QUICK_STEPS} steps; a smoke test, not results.", ""]
    substituted = sorted({r.recipe for r, s in planned if s.fixed.get("dataset")})
    if substituted:
        lines += ["Fashion-MNIST is not available here, so the Fashion-MNIST recipes "
                  f"({', '.join(substituted)}) ran on MNIST (the data column says which each row used); their seed "
                  "notebooks' figures are Fashion-MNIST's and are not comparable.", ""]  # fmt: skip
    header = ["row", "seed notebook", "the seed (or paper) printed", "data", "seeds", "test acc (mean ± std)",
              "test error %", "min – max acc", "train loss", "time per run", "examples/s"]  # fmt: skip
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * 5 + "---:|" * 6]
    for row, spec in planned:
        folder, spec = folders[row.name]
        rep = _row_report(row, folder, spec)
        runs = rep.groups[0].runs if rep.groups else []
        acc = Stats([r["summary"]["test_acc"] for r in runs if r["summary"].get("test_acc") is not None])
        err = Stats([100 * (1 - a) for a in acc.values])
        loss = Stats([r["summary"]["train_loss"] for r in runs if r["summary"].get("train_loss") is not None])
        secs = Stats([r["summary"].get("seconds", 0.0) for r in runs])
        eps = Stats([r["summary"].get("examples_per_sec", 0.0) for r in runs])
        recipe = RECIPES[row.recipe]
        cfg = resolve(row.recipe, **spec.fixed)
        data = cfg.dataset + (" (for fashion-mnist)" if "dataset" in spec.fixed else "")
        seed_says = row.paper or recipe.seed_result or "—"
        flags = " ".join(f"--{k.replace('_', '-')}" if v is True else f"--{k.replace('_', '-')} {v}"
                         for k, v in spec.fixed.items())  # fmt: skip
        name = f"`{row.recipe}{' ' + flags if flags else ''}`"
        minmax = f"{min(acc.values):.4f} – {max(acc.values):.4f}" if acc.values else "—"
        n = f"{acc.n}" + (f" of {len(spec.seeds)}" if acc.n < len(spec.seeds) else "")
        lines.append("| " + " | ".join([name, recipe.seed, seed_says.replace("|", "/"), data, n, acc.format("{:.4f}"),
                                         err.format("{:.2f}"), minmax, loss.format("{:.4f}"),
                                         secs.format("{:.0f}", False) + " s",
                                         eps.format("{:,.0f}", False)]) + " |")  # fmt: skip
    lines += [
        "",
        "Mean ± sample standard deviation over the seeds of each run's final test accuracy (n - 1 in the "
        "denominator); time per run is wall time from start to summary, examples/s the training throughput.",
        "The seed notebooks printed one run each; where a seed trained on Fashion-MNIST its figure is not "
        "comparable with an MNIST row.",
    ]
    paper = [(r, s) for r, s in planned if r.is_paper]
    if paper:
        lines.append(f"The 1998 rows run {len(paper[0][1].seeds)} seeds: each is 20 passes of the paper's SDLM with "
                     "no fast path (about 40x a seed notebook's run); `--paper-seeds N` runs more.")  # fmt: skip
    if stopped:
        lines.append(f"{len(stopped)} runs did not finish (stopped or failed); run the same command again to "
                     "continue them.")  # fmt: skip
    lines += ["", "Every row is a sweep folder: `lenet sweep report OUT/ROW` gives its table per seed and curves.",
              "", "![final test error of every seed, by row: dots, mean and std](reproduce.png)", ""]  # fmt: skip
    return "\n".join(lines)


def figure(planned, folders):
    """Each row's final test error: every seed a dot, the mean ± std a bar."""
    from ..train.figure import Plot, new_figure

    fig = new_figure((7.5, 0.45 * len(planned) + 1.2))
    ax = fig.subplots()
    labels = []
    for y, (row, _) in enumerate(planned):
        folder, spec = folders[row.name]
        rep = _row_report(row, folder, spec)
        errs = [100 * (1 - r["summary"]["test_acc"]) for g in rep.groups for r in g.runs
                if r["summary"].get("test_acc") is not None]  # fmt: skip
        labels.append(row.name)
        if errs:
            ax.plot(errs, [y] * len(errs), "o", color="C0", alpha=0.6, markersize=4)
            std = statistics.stdev(errs) if len(errs) > 1 else 0.0
            ax.errorbar([statistics.fmean(errs)], [y], xerr=[std], fmt="|", color="C3", capsize=5, markersize=12)
    ax.set_yticks(range(len(labels)), labels)
    ax.invert_yaxis()
    ax.set_xscale("log")
    from matplotlib.ticker import FormatStrFormatter

    for axis in (ax.xaxis.set_major_formatter, ax.xaxis.set_minor_formatter):  # 0.8, 1, 2 rather than 2x10^0
        axis(FormatStrFormatter("%g"))
    ax.set_xlabel("final test error % (log scale); dots: seeds; red: mean ± std")
    ax.grid(True, alpha=0.3, which="both")
    fig.tight_layout()
    return Plot(fig)


# ----------------------------------------------------------------------------------------------------------
# Publishing one run per zoo model as the package's pretrained weights


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _data_card(dataset: str, root) -> dict:
    from ..data import get_dataset_info, locate, resolve_root, verify

    info, where = get_dataset_info(dataset), resolve_root(root)
    files = {}
    for spec in info.files:
        path = locate(info, spec, where)
        files[spec.name] = sha256(path) if path else None
    try:
        official = verify(dataset, where)["official"]
    except LenetError:
        official = False
    return {"name": dataset, "official_checksums": official, "sha256": files}


def publish(out, dest, root=None) -> list[dict]:
    """Copy the lowest finished seed of each zoo model's row in a reproduce folder into `dest` as
    <model>.safetensors with <model>.json, its card (recipe, seed, data and checksums, accuracy, command)."""
    out, dest = Path(out), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    cards, seen = [], set()
    for row in ROWS:
        folder = out / row.name
        if not (folder / "sweep.json").is_file():
            continue
        from .spec import read_spec

        spec = read_spec(folder)
        rep = collect(spec.jobs(folder), spec.recipe, {}, spec.seeds, folder)
        runs = sorted((r for g in rep.groups for r in g.runs), key=lambda r: r["seed"])
        if not runs or spec.max_steps:
            continue
        run = runs[0]
        cfg = resolve(spec.recipe, **spec.fixed, seed=run["seed"])
        if cfg.model in seen or cfg.model in UNPUBLISHED:
            continue
        seen.add(cfg.model)
        source = run["folder"] / "model.safetensors"
        target = dest / f"{cfg.model}.safetensors"
        shutil.copyfile(source, target)
        summary = run["summary"]
        flags = "".join(f" --{k.replace('_', '-')}" + ("" if v is True else f" {v}") for k, v in spec.fixed.items())
        card = {
            "name": cfg.model,
            "recipe": spec.recipe,
            "overrides": {**spec.fixed, "seed": run["seed"]},
            "seed": run["seed"],
            "epochs": summary.get("epochs"),
            "data": _data_card(cfg.dataset, root),
            "test_acc": summary.get("test_acc"),
            "test_examples": summary.get("test_examples"),
            "train_loss": summary.get("train_loss"),
            "config": cfg.to_dict(),
            "weights": {"file": target.name, "sha256": sha256(target), "bytes": target.stat().st_size},
            "versions": summary.get("versions"),
            "fast_path": summary.get("fast_path"),
            "trained_by": f"lenet reproduce (row {row.name}, seed {run['seed']}); {rep.folder}",
            "command": f"lenet train --recipe {spec.recipe}{flags} --seed {run['seed']} --root DATA",
        }
        (dest / f"{cfg.model}.json").write_text(json.dumps(card, indent=2) + "\n")
        cards.append(card)
    if not cards:
        raise LenetError(f"{out}: no finished full (not --quick) run of a zoo model to publish")
    return cards
