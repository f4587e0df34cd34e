"""A training run, the one code path behind `lenet train` and `lenet.train()`.

A run is a config, its data, a model, a run folder (always from the command line; with `out=` from Python),
checkpoints, a history and a summary. `train` starts, resumes or extends one; `load` reads one back. The
command line only parses arguments into `train`'s and prints what it returns.
"""

from __future__ import annotations

import dataclasses
import io
import math
import platform
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import torch
from torch import nn

from .. import __version__
from ..config import Config, input_size
from ..data import Dataset
from ..data import download as download_dataset
from ..errors import LenetError
from ..models import count_parameters, init_weights
from . import dist
from .checkpoint import CHECKPOINT, CONFIG, RUN_INFO, SUMMARY, RunDir, load_resume, load_run, read_json, restore
from .loop import evaluate, fit
from .plots import plot_curves
from .report import Reporter
from .setup import build_model, config_for, data_root_for, load_data, make_optimizer, select_device
from .signals import Interrupted, stop_signals
from .state import History, TrainState

# Schedules whose shape does not depend on the number of epochs: a finished run on one can be extended.
EXTENSIBLE_SCHEDULES = ("constant", "piecewise")


@dataclass
class Run:
    """A run as Python sees it: what `lenet.train` returns and `lenet.load` reads.

    It unpacks as `model, history = lenet.train(...)`, as lenet.train has always returned.
    """

    model: nn.Module
    config: Config
    history: History
    path: Path | None = None
    summary: dict = field(default_factory=dict)
    data_root: Path | None = None
    stopped: str | None = None  # the signal (or "max-steps") a run stopped part-way for; None when it finished

    def __iter__(self) -> Iterator:
        return iter((self.model, self.history))

    def _repr_png_(self) -> bytes:
        """A run shows its training curves inline in Jupyter."""
        return self.history._repr_png_()

    @property
    def finished(self) -> bool:
        return self.stopped is None and len(self.history.complete) >= self.config.epochs


def versions() -> dict:
    return {"lenet": __version__, "torch": torch.__version__, "python": platform.python_version()}


def cpu_name() -> str:
    """The CPU's model name, for the records of measurements (Linux: /proc/cpuinfo)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def default_run_dir(recipe: str) -> Path:
    """runs/<recipe>-<timestamp>, with -2, -3, ... when that exists."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    path = Path("runs") / f"{recipe}-{stamp}"
    n = 1
    while path.exists():
        n += 1
        path = Path("runs") / f"{recipe}-{stamp}-{n}"
    return path


def summarize(cfg: Config, history: History, test_examples: int, **where) -> dict:
    """summary.json: the finished run's config, its last epoch's metrics, the whole run's throughput."""
    last = history.last  # a run stopped by max_steps reports the partial epoch it got to
    examples, seconds = history.totals()
    summary = {
        "recipe": cfg.recipe, "model": cfg.model, "dataset": cfg.dataset,
        "epochs": last.get("epoch", 0), "steps": last.get("steps", 0),
        "train_loss": last.get("train_loss"), "train_acc": last.get("train_acc"),
        "test_loss": last.get("test_loss"), "test_acc": last.get("test_acc"), "test_examples": test_examples,
        "examples_per_sec": examples / seconds if seconds else 0.0, "train_seconds": seconds,
        "seed": cfg.seed, "threads": torch.get_num_threads(), "versions": versions(),
    }  # fmt: skip
    if "val_acc" in last:
        summary.update(val_loss=last["val_loss"], val_acc=last["val_acc"])
    return {**summary, **where}


# ----------------------------------------------------------------------------------------------------------
# Starting, resuming, extending


def _resumed(folder, epochs: int | None, overrides: dict) -> tuple[Config, dict | None]:
    """The config and checkpoint a resumed run continues with (epochs raised when extending a finished one)."""
    given = sorted(k for k, v in overrides.items() if v is not None)
    if given:
        flag = "--" + given[0].replace("_", "-")
        raise LenetError(f"a resumed run continues with its own config; drop {flag} (only --epochs may change)")
    cfg, ckpt = load_resume(folder)
    if epochs is None or epochs == cfg.epochs:
        return cfg, ckpt
    done = ckpt["epoch"] if ckpt else 0
    if epochs < max(done, 1):
        raise LenetError(f"{folder}: the run has trained {done} epochs already; --epochs must be at least that")
    if cfg.schedule not in EXTENSIBLE_SCHEDULES:
        raise LenetError(
            f"{folder}: its {cfg.schedule} schedule was laid out over {cfg.epochs} epochs, and changing that "
            f"would change the steps already taken; start a new run with --epochs {epochs}"
        )
    return dataclasses.replace(cfg, epochs=epochs), ckpt


def train(
    config: Config | str = "d2l",
    *,
    model: nn.Module | None = None,
    out=None,
    resume=None,
    overwrite: bool = False,
    root=None,
    device: str = "auto",
    verify: bool = True,
    download: bool = False,
    data: Dataset | None = None,
    max_steps: int | None = None,
    fast: bool = True,
    tensorboard: bool = False,
    snapshots: bool = False,
    progress: bool | None = None,
    plot: bool = False,
    verbose: bool = True,
    dry_run: bool = False,
    resume_command: str | None = None,
    program: bool = False,
    **overrides,
) -> Run:
    """Train a recipe (by name) or a config end to end, as `lenet train` does; returns the Run.

    config, **overrides: a recipe name or a lenet.Config, and fields to change (`epochs=3, lr=0.1`).
    model: a registered model's name, or a model of your own instead of the config's (initialised by the
        recipe's `init` scheme, seeded; init="default" keeps its weights). An nn.Sequential of standard
        layers is written down in config.json, so the command line can evaluate, export and serve it.
    out: the run folder to write (from Python, none unless given); refused if it holds a run, unless
        `overwrite` (which removes that run's files first).
    resume: a run folder to continue (with its own config); `epochs=N` extends a finished run whose
        schedule allows it.
    root: the data root (default: the resumed run's, else $LENET_DATA, else ~/.cache/lenet).
    progress, plot, verbose: a progress bar (None: on terminals and in notebooks), live curves, the
        seed's printout. A first Ctrl-C (SIGINT/SIGTERM) stops at the next step with a checkpoint; the
        returned Run then says `stopped`.
    resume_command, program: for the command line: how to tell the user to continue ("{run}" for the
        folder), and that the process exits after a stop (further Ctrl-C's are then ignored).
    """
    started = time.perf_counter()
    if resume is not None:
        folder = Path(resume)
        cfg, ckpt = _resumed(folder, overrides.pop("epochs", None), overrides)
        if ckpt and ckpt["epoch"] >= cfg.epochs and (folder / SUMMARY).is_file():
            if verbose:
                print(
                    f"{folder}: the run already finished its {cfg.epochs} epochs; nothing to do (--epochs N extends it)"
                )
            return load(folder, model)
        if model is not None and cfg.model != "module":
            raise LenetError("model: a resumed run rebuilds its own model; pass model= only for a module of your own")
    else:
        folder = Path(out) if out is not None else None
        cfg, ckpt = config_for(config, model, overrides), None
        model = model if isinstance(model, nn.Module) else None
        if snapshots and folder is None and not dry_run:
            raise LenetError("snapshots are kept in the run folder: pass out= (a folder) too")
        if folder is not None and RunDir(folder, create=False).holds_run() and not overwrite and not dry_run:
            raise LenetError(
                f"{folder} already holds a run; continue it with --resume {folder}, or replace it with --overwrite"
            )
    rank, where = dist.init(select_device(device))
    if download:
        download_dataset(cfg.dataset, root, progress=sys.stderr.isatty())
    data_root = data_root_for(root, read_json(folder / RUN_INFO).get("data_root") if resume is not None else None)
    data = data if data is not None else load_data(cfg, data_root, where, verify=verify)
    if model is None:
        model = build_model(cfg)
    elif ckpt is None:
        torch.manual_seed(cfg.seed)
        init_weights(model, cfg.init)
    model = model.to(where)
    model.input_size = input_size(cfg)
    optimizer = make_optimizer(cfg, model)
    state = restore(ckpt, model, optimizer, where) if ckpt else TrainState()

    # The folder is made only now, so that bad data or a bad checkpoint leaves none behind.
    run_dir = None
    if folder is not None and rank.main and not dry_run:
        run_dir = RunDir(folder)
        if resume is None and overwrite:
            run_dir.clear()
    created = run_dir is not None and ckpt is None
    shown = str(where) if rank.world_size == 1 else f"{where} x {rank.world_size} processes"
    quiet = not (verbose and rank.main)
    reporter = Reporter(cfg, shown, out=io.StringIO() if quiet else None, model=model)
    try:
        history, state, plan, signum = _fit(
            model, data, cfg, state, optimizer, reporter, run_dir, ckpt, data_root, rank,
            max_steps=1 if dry_run else max_steps, fast=fast, tensorboard=tensorboard, snapshots=snapshots,
            progress=progress and rank.main if progress is not None else (None if rank.main else False), plot=plot,
            program=program,
        )  # fmt: skip
    except KeyboardInterrupt:
        raise Interrupted(_abandon(run_dir, created)) from None
    result = Run(model, cfg, history, run_dir.path if run_dir else None, data_root=data_root)
    if signum is not None:
        result.stopped = signal.Signals(signum).name
        if run_dir is not None and not (run_dir / CHECKPOINT).exists():
            _abandon(run_dir, created)  # stopped before the first step: nothing worth keeping
            result.path, run_dir = None, None
        if rank.main:
            where = f"at epoch {state.epoch + 1}, step {state.step}"
            if run_dir is None:
                saved = "; nothing saved" if folder is not None else ""
            else:
                again = resume_command or f"lenet.train(resume={str(run_dir.path)!r})"
                saved = f"; checkpoint saved; continue with: {again.format(run=run_dir.path)}"
            print(f"interrupted by {result.stopped} {where}{saved}", file=sys.stderr, flush=True)
        return result
    if state.epoch < cfg.epochs:
        result.stopped = "max-steps"
    result.summary = summarize(
        cfg, history, len(data.test) if data.test is not None else 0,
        seconds=time.perf_counter() - started, device=str(where), params=count_parameters(model),
        processes=rank.world_size, fast_path=str(plan), run_dir=str(run_dir.path) if run_dir else None,
    )  # fmt: skip
    if run_dir is not None:
        plot_curves(_positions(history.epochs), run_dir / "curves.png")
        run_dir.write_json(SUMMARY, result.summary)
    reporter.finish(result.summary)
    if run_dir is not None:
        reporter.print(f"run folder: {run_dir.path}")
    return result


def _positions(records: list[dict]) -> list[dict]:
    """Records with a partial epoch placed where it stopped (epoch 3 stopped half-way: at 2.5)."""
    return [{**r, "epoch": r["epoch"] - 1 + r["fraction"]} if r.get("partial") else r for r in records]


def _abandon(run_dir: RunDir | None, created: bool) -> str:
    """After a hard stop: remove a run folder this call made that holds no checkpoint; say what is left."""
    if run_dir is None:
        return "interrupted"
    if (run_dir / CHECKPOINT).exists():
        return f"interrupted; {run_dir.path} keeps its last checkpoint: lenet train --resume {run_dir.path}"
    if created:
        run_dir.clear()
        try:
            run_dir.path.rmdir()  # only when nothing else was in it
        except OSError:
            pass
    return "interrupted before the first checkpoint; no run folder kept"


def _fit(model, data, cfg, state, optimizer, reporter, run_dir, ckpt, data_root, rank, *, max_steps, fast,
         tensorboard, snapshots, progress, plot, program):  # fmt: skip
    """fit() with the run's hooks: printing, checkpoints, TensorBoard, snapshots, signals."""
    if run_dir is not None:
        if ckpt:
            run_dir.catch_up(ckpt, model, cfg)
        run_dir.write_json(CONFIG, cfg.to_dict())
        run_dir.write_json(RUN_INFO, {"data_root": str(data_root), "lenet": __version__})
    from .loop import fast_path_plan

    plan = fast_path_plan(model, cfg, rank.world_size, fast)
    reporter.start(len(data.train), count_parameters(model), plan)
    if ckpt:
        reporter.print(
            f"resuming {run_dir.path if run_dir else 'the run'} at epoch {state.epoch + 1}, step {state.step}"
        )

    writer = None
    if tensorboard and run_dir is not None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise LenetError("--tensorboard needs the tensorboard package: pip install 'lenet[tensorboard]'") from None
        writer = SummaryWriter(str(run_dir / "tensorboard"))

    keeper = None
    if snapshots and run_dir is not None:
        from .snapshots import SnapshotWriter

        keeper = SnapshotWriter(run_dir.path, math.ceil(len(data.train) / cfg.batch_size), cfg.epochs)
        if state.step == 0:
            keeper.after_step(model, cfg, 0)

    def on_step(step, epoch, index, batches):
        if cfg.log_every and step % cfg.log_every == 0 and rank.main:
            reporter.step_eval(step, evaluate(model, data.test, cfg.eval_batch_size)["acc"])
        if keeper is not None:
            keeper.after_step(model, cfg, step)

    curves = None
    if plot and rank.main:
        from .live import TrainingCurves

        curves = TrainingCurves(cfg.epochs, path=run_dir / "curves.png" if run_dir else None)
        for record in state.history.epochs:  # a resumed run's curves start where it left off
            curves.on_epoch(record)

    def on_epoch(record):
        reporter.epoch(record)
        if keeper is not None:
            keeper.after_epoch(model, cfg, record)
        if curves is not None:
            curves.on_epoch(record)
        if writer and not record.get("partial"):
            for key, value in record.items():
                if key != "epoch":
                    writer.add_scalar(key, value, record["epoch"])

    with stop_signals(ignore_after_stop=program) as signals:
        history = fit(
            model, data, cfg, max_steps=max_steps, state=state, optimizer=optimizer, on_step=on_step,
            on_epoch=on_epoch, on_progress=curves.on_progress if curves is not None else None,
            on_checkpoint=run_dir.save_checkpoint if run_dir else None,
            stop=lambda: bool(signals), progress=progress, fast=fast, rank=rank.rank, world_size=rank.world_size,
        )  # fmt: skip
    if writer:
        writer.close()
    if curves is not None:
        curves.close()
    signum = None
    if state.stopped:
        signum = signals[0] if signals else signal.SIGTERM  # a rank that did not get the signal itself
    return history, state, plan, signum


def load(path, model: nn.Module | None = None, device: str | torch.device = "cpu") -> Run:
    """A run folder read back: its model (into `model` when given), config, history and summary."""
    model, cfg, info = load_run(path, device, model)
    folder = Path(path) if Path(path).is_dir() else Path(path).parent
    history = History()
    if (folder / CHECKPOINT).is_file():
        from .checkpoint import load_checkpoint

        history = History.from_state_dict(load_checkpoint(folder / CHECKPOINT)["history"])
    summary = {k: v for k, v in info.items() if k != "data_root"}
    root = Path(info["data_root"]) if info.get("data_root") else None
    return Run(model, cfg, history, folder, summary, root)
