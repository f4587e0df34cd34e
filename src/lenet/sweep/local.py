"""Runs a sweep's runs on this machine: worker processes sized to the cores, each with its share of threads.

Workers are fresh interpreters (`python -m lenet.sweep.worker`, talking over a socket pair): no forked torch
thread pools, and no re-import of the user's script, which multiprocessing's spawn needs a __main__ guard for.
They run in sessions of their own, so a Ctrl-C in the terminal reaches only the sweep, which passes it on to
every worker exactly once: each run stops at its next step with a checkpoint (lenet.train's first-signal
rule), and a second Ctrl-C stops them at once with their last checkpoint. Either way every run is left
resumable. A worker that dies (SIGKILL, out of memory) loses only its run's progress since its last
checkpoint; a fresh worker takes over the rest of the queue.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from multiprocessing.connection import Connection, wait

from .progress import SweepProgress
from .spec import Job
from .worker import run_job

_POLL = 0.5  # seconds between looks at the workers and the progress


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def plan_workers(runs: int, workers: int | None = None, threads: int | None = None) -> tuple[int, int]:
    """(worker processes, threads each): by default one worker per core (runs permitting), cores shared out.

    A LeNet step is too small to keep many threads busy, so whole runs side by side use cores better than
    more threads on one run (docs/sweeps.md has the measurement).
    """
    cores = cpu_count()
    workers = workers or max(1, min(runs, cores))
    return workers, threads or max(1, cores // workers)


def run_inline(jobs: list[Job], options: dict, threads: int, progress: SweepProgress) -> list[dict]:
    """One run after another in this process (one worker): the first Ctrl-C stops the run under way with a
    checkpoint, and the sweep there."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)  # the caller's own setting comes back afterwards
    results = []
    try:
        for job in jobs:
            progress.started(job)
            result = run_job(job, **options)
            results.append(result)
            progress.finished(result)
            if result["status"] == "stopped":
                break
    finally:
        torch.set_num_threads(before)
    return results


class _Worker:
    """A worker process and our end of its socket."""

    def __init__(self, threads: int):
        ours, theirs = socket.socketpair()
        cmd = [sys.executable, "-m", "lenet.sweep.worker", str(theirs.fileno()), str(threads)]
        self.proc = subprocess.Popen(cmd, pass_fds=[theirs.fileno()], start_new_session=True)
        theirs.close()
        self.conn = Connection(ours.detach())
        self.job: int | None = None  # the index of the job it runs

    def send(self, message) -> bool:
        try:
            self.conn.send(message)
            return True
        except OSError:  # it died
            return False

    def signal(self, signum: int) -> None:
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signum)
            except ProcessLookupError:
                pass


def run_local(jobs: list[Job], options: dict, workers: int, threads: int, progress: SweepProgress) -> list[dict]:
    """The jobs on `workers` worker processes of `threads` threads; results in the jobs' order."""
    queue = list(range(len(jobs)))
    pool: list[_Worker] = []
    results: dict[int, dict] = {}
    signals: list[int] = []

    def give(worker: _Worker) -> None:
        """The next job to a worker, or its leave when there is none (or the sweep is stopping)."""
        while queue and not signals:
            index = queue.pop(0)
            if worker.send(("job", jobs[index], options)):
                worker.job = index
                progress.started(jobs[index])
                return
            queue.insert(0, index)
            return  # a dead worker: found and replaced below
        worker.send(None)

    def forward(signum, frame):
        signals.append(signum)
        if len(signals) >= 3:  # a third Ctrl-C: no more waiting; every run keeps its last checkpoint
            for w in pool:
                w.proc.kill()
            raise KeyboardInterrupt("sweep stopped; every run keeps its last checkpoint")
        for w in pool:
            w.signal(signal.SIGINT if signum == signal.SIGINT else signal.SIGTERM)

    in_main = threading.current_thread() is threading.main_thread()
    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)} if in_main else {}
    try:
        for _ in range(workers):
            pool.append(_Worker(threads))
            give(pool[-1])
        while any(w.job is not None for w in pool) or (queue and not signals):
            busy = [w for w in pool if w.job is not None]
            for conn in wait([w.conn for w in busy], timeout=_POLL):
                worker = next(w for w in busy if w.conn is conn)
                index, worker.job = worker.job, None
                try:
                    results[index] = conn.recv()[1]
                except (EOFError, OSError):  # died in the middle of a run
                    worker.proc.wait()
                    results[index] = {"name": jobs[index].name, "folder": str(jobs[index].folder), "summary": None,
                                      "status": "stopped" if signals else "crashed", "output": "",
                                      "error": f"its worker died (exit code {worker.proc.returncode})"}  # fmt: skip
                    pool.remove(worker)
                    if queue and not signals:
                        pool.append(_Worker(threads))
                        worker = pool[-1]
                    else:
                        worker = None
                progress.finished(results[index])
                if worker is not None:
                    give(worker)
            idle = [w for w in pool if w.job is None and w.proc.poll() is not None]
            for w in idle:  # a worker that died before taking its job: put a fresh one in its place
                pool.remove(w)
                if queue and not signals:
                    pool.append(_Worker(threads))
                    give(pool[-1])
            progress.tick()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        for w in pool:
            w.send(None)
        deadline = time.monotonic() + 10
        for w in pool:
            try:
                w.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                w.proc.kill()
            w.conn.close()
    return [results[i] for i in sorted(results)]
