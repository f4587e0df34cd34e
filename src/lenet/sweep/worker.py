"""One run of a sweep, in whatever process it lands in: a local worker process or a Ray task.

`run_job` starts, resumes or skips a run by the state of its folder, through `lenet.train` (the one code path
for a run), quietly, and returns a small picklable dict: its status, summary, and what it printed.
"""

from __future__ import annotations

import contextlib
import io
import json
import time
import traceback
from pathlib import Path

from ..errors import LenetError
from ..train.checkpoint import CHECKPOINT, CONFIG, SUMMARY, read_json
from .spec import Job

NEW, PARTIAL, DONE = "new", "partial", "done"
# What a stopped run's "continue with" line says; the sweep prints its own (lenet sweep --resume DIR).
_QUIET_RESUME = "the sweep"

# The last dataset a worker loaded, by what decides its tensors: runs of one setting share it, so a worker
# reads and normalises MNIST once rather than once a run (about a second each time).
_data_cache: dict = {}


def job_state(folder: Path) -> str:
    """done (summary.json: it finished), partial (a checkpoint or a config: resume it) or new."""
    if (folder / SUMMARY).is_file():
        return DONE
    if (folder / CHECKPOINT).is_file() or (folder / CONFIG).is_file():
        return PARTIAL
    return NEW


def check_config(job: Job) -> None:
    """A run folder of the sweep must hold the run the sweep asks for (not one edited or left by another)."""
    path = job.folder / CONFIG
    if not path.is_file():
        return
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise LenetError(f"{path}: unreadable ({e}); remove the folder to start this run again") from None
    wanted = job.config().to_dict()
    differ = [k for k in wanted if k in found and found[k] != wanted[k]]
    if differ:
        k = differ[0]
        raise LenetError(
            f"{job.folder}: holds a run with {k}={found[k]!r}, but the sweep asks for {wanted[k]!r}; "
            "remove that folder, or sweep into another --out"
        )


def _dataset(cfg, root, verify: bool):
    """The run's data on the CPU, from this process's cache when the last run used the same."""
    from ..data.catalogue import resolve_root
    from ..train.setup import load_data

    path = resolve_root(root).resolve()
    key = (cfg.dataset, cfg.scaling, cfg.input_size, cfg.resize, cfg.val_fraction, cfg.model, str(path), verify)
    if key not in _data_cache:
        _data_cache.clear()  # one at a time: MNIST at 32x32 in float32 is 250 MB
        _data_cache[key] = load_data(cfg, path, "cpu", verify=verify)
    return _data_cache[key]


def run_job(job: Job, root=None, verify: bool = True, device: str = "cpu", fast: bool = True) -> dict:
    """Start, resume or skip one run; never raises for the run's own failure (the result says it)."""
    from ..train.run import train

    started = time.perf_counter()
    state = job_state(job.folder)
    result = {"name": job.name, "folder": str(job.folder), "before": state, "status": DONE, "summary": None,
              "error": None, "output": ""}  # fmt: skip
    if state == DONE:
        result["summary"] = read_json(job.folder / SUMMARY)
        return result
    out = io.StringIO()
    try:
        check_config(job)
        cfg = job.config()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            data = _dataset(cfg, root, verify) if device == "cpu" else None
            options = dict(root=root, device=device, verify=verify, fast=fast, max_steps=job.max_steps, data=data,
                           progress=False, verbose=False, resume_command=_QUIET_RESUME)  # fmt: skip
            if state == PARTIAL:
                run = train(resume=job.folder, **options)
            else:
                run = train(job.recipe, out=job.folder, **job.overrides, **options)
        if run.stopped not in (None, "max-steps"):
            result["status"] = "stopped"
        result["summary"] = run.summary or None
    except KeyboardInterrupt as e:  # a second signal: the run keeps its last checkpoint
        result.update(status="stopped", error=str(e) or "interrupted")
    except LenetError as e:
        result.update(status="error", error=str(e))
    except Exception:  # a bug, not the user's input: the whole traceback, and the sweep goes on
        result.update(status="error", error=traceback.format_exc())
    result["output"] = out.getvalue()
    result["seconds"] = time.perf_counter() - started
    return result


# ----------------------------------------------------------------------------------------------------------
# A local worker process: `python -m lenet.sweep.worker FD THREADS` (see lenet.sweep.local)


def _die_with_parent() -> None:
    """Linux: SIGTERM when the sweep's process dies, so an orphaned worker checkpoints its run and stops."""
    import ctypes
    import signal
    import sys

    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass


def serve(fd: int, threads: int) -> None:
    """Take jobs from the sweep over the socket `fd`, one at a time, until it says None or goes away."""
    import signal
    from multiprocessing.connection import Connection

    _die_with_parent()
    # Between runs a signal has nothing to stop (the sweep just sends no more jobs); during a run,
    # lenet.train's own handlers take over: the first stops the run with a checkpoint, a second at once.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *_: None)
    import torch

    torch.set_num_threads(threads)
    conn = Connection(fd)
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        _, job, options = message
        result = run_job(job, **options)
        try:
            conn.send(("done", result))
        except OSError:  # the sweep is gone (killed): the run folder already holds everything
            return


if __name__ == "__main__":
    import sys

    serve(int(sys.argv[1]), int(sys.argv[2]))
