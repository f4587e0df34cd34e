"""One progress line for a whole sweep: runs done (with the epochs of those under way), mean test accuracy so far.

On a terminal or in Jupyter it is one tqdm bar; in a log each finished run gets a line. Progress is read from
the run folders' metrics.csv, so it is the same for local workers and for Ray (whose files come back there).
"""

from __future__ import annotations

import csv
import statistics
import sys
import warnings
from pathlib import Path

from ..train.checkpoint import METRICS
from ..train.progress import interactive
from .spec import Job


def epochs_done(folder: Path) -> int:
    """Complete epochs in a run folder's metrics.csv (0 when there is none yet)."""
    try:
        with open(folder / METRICS, newline="") as f:
            return sum(1 for row in csv.DictReader(f) if row.get("partial") not in ("True", "1"))
    except (OSError, csv.Error):
        return 0


class SweepProgress:
    """Tracks a sweep's runs; `tick()` refreshes the bar from the folders, `finished(result)` counts a run."""

    def __init__(self, jobs: list[Job], done: list[dict], enabled: bool | None = None, log=None):
        self.jobs = {job.key: job for job in jobs}
        self.epochs = {job.key: job.config().epochs for job in jobs}
        self.total = len(jobs) + len(done)
        self.finished_runs = list(done)
        self.running: set[str] = set()
        self.log = log or (lambda line: print(line, file=sys.stderr, flush=True))
        self.bar = None
        if interactive() if enabled is None else enabled:
            with warnings.catch_warnings():  # tqdm.auto warns when a notebook lacks ipywidgets, then draws text
                warnings.simplefilter("ignore")
                from tqdm.auto import tqdm

            fmt = "{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total} runs [{elapsed}<{remaining}{postfix}]"
            self.bar = tqdm(total=self.total, desc="sweep", bar_format=fmt, leave=False, file=sys.stderr,
                            dynamic_ncols=True)  # fmt: skip
        self.tick()

    def started(self, job: Job) -> None:
        self.running.add(job.key)

    def finished(self, result: dict) -> None:
        self.running.discard(result["folder"])
        if result["status"] == "done":
            self.finished_runs.append(result)
        if self.bar is None:
            self.log(self._line(result))
        else:
            self.tick()

    def _accs(self) -> list[float]:
        return [r["summary"]["test_acc"] for r in self.finished_runs
                if r.get("summary") and r["summary"].get("test_acc") is not None]  # fmt: skip

    def _line(self, result: dict) -> str:
        n = len(self.finished_runs)
        summary = result.get("summary") or {}
        if result["status"] == "done":
            what = f"test acc {summary.get('test_acc', float('nan')):.4f} ({result.get('seconds', 0):.1f} s)"
        else:
            what = result["status"] + (f": {result['error'].splitlines()[-1]}" if result.get("error") else "")
        return f"[{n}/{self.total}] {result['name']}: {what}"

    def tick(self) -> None:
        if self.bar is None:
            return
        partial = sum(min(epochs_done(self.jobs[key].folder) / max(self.epochs[key], 1), 0.99)
                      for key in self.running if key in self.jobs)  # fmt: skip
        self.bar.n = len(self.finished_runs) + partial
        accs = self._accs()
        postfix = f"{len(self.running)} running"
        if accs:
            spread = f" ± {statistics.stdev(accs):.4f}" if len(accs) > 1 else ""
            postfix += f", test acc {statistics.mean(accs):.4f}{spread}"
        self.bar.set_postfix_str(postfix, refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
