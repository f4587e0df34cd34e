"""Runs a sweep's runs as tasks on a Ray cluster (`lenet sweep --ray [ADDRESS]`); Ray schedules the machines.

Nothing assumes a shared file system. The driver puts the dataset's files into Ray's object store once; each
task writes them to its node's temporary folder, trains in a temporary run folder there, and ships the run's
files to an `Inbox` actor whenever a checkpoint appears (once an epoch) and when it ends. The driver takes
them from the inbox every half second and writes them into the sweep folder, so the sweep folder always
holds each run's latest checkpoint.

A task killed mid-run (its worker process or its whole node) is retried by Ray (`max_retries`); the retry asks
the inbox for the last checkpoint the killed attempt shipped and resumes from it, bit-identical on the CPU, so
a kill costs at most one epoch of that run. (Restarting from scratch would be simpler, but a 1998 run is 20
passes of over a minute each.) A Ctrl-C cancels the tasks the way Ray does, with a KeyboardInterrupt raised in
each, which lenet.train takes as its first signal: each run checkpoints, ships, and stops.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import signal
import tempfile
import threading
import time
from pathlib import Path

from ..errors import LenetError
from ..train.checkpoint import CHECKPOINT, RUN_FILES, RUN_INFO, read_json, write_bytes_atomic
from .progress import SweepProgress
from .spec import Job
from .worker import run_job

_POLL = 0.5
SHIPPED = tuple(name for name in RUN_FILES if name not in ("model.onnx", "model.torchscript.pt"))


def _import_ray():
    try:
        import ray
    except ModuleNotFoundError:
        raise LenetError("--ray needs the ray package: pip install 'lenet[sweep]'") from None
    return ray


def run_files(folder: Path) -> dict[str, bytes]:
    """A run folder's own files as bytes (what a task ships and a retry resumes from)."""
    return {name: (folder / name).read_bytes() for name in SHIPPED if (folder / name).is_file()}


def dataset_files(datasets: set[str], root) -> dict[str, dict[str, bytes]]:
    """The driver's copy of each dataset, as bytes by file name (MNIST: 11 MB gzipped)."""
    from ..data import get_dataset_info, locate, resolve_root

    root = resolve_root(root)
    shipped = {}
    for name in sorted(datasets):
        info = get_dataset_info(name)
        files = {}
        for spec in info.files:
            path = locate(info, spec, root)
            if path is None:
                raise LenetError(f"{name}: {spec.name} not found in {root / name}; run: lenet data download {name}")
            files[path.name] = path.read_bytes()
        shipped[name] = files
    return shipped


def materialise(datasets: dict[str, dict[str, bytes]]) -> Path:
    """Write the shipped datasets under this node's temporary folder (once per content); the data root."""
    digest = hashlib.sha256()
    for name, files in sorted(datasets.items()):
        for file, blob in sorted(files.items()):
            digest.update(f"{name}/{file}:{len(blob)}".encode())
            digest.update(hashlib.sha256(blob).digest())
    root = Path(tempfile.gettempdir()) / "lenet-ray-data" / digest.hexdigest()[:16]
    for name, files in datasets.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for file, blob in files.items():
            path = root / name / file
            if not path.is_file() or path.stat().st_size != len(blob):
                write_bytes_atomic(path, blob)  # atomic: tasks on one node may write it at once
    return root


class _Shipper(threading.Thread):
    """Ships a run folder's files to the inbox whenever its checkpoint.pt changes."""

    def __init__(self, folder: Path, inbox, key: str):
        super().__init__(daemon=True)
        self.folder, self.inbox, self.key = folder, inbox, key
        self.done = threading.Event()
        self.seen = self._stamp()

    def _stamp(self):
        try:
            return (self.folder / CHECKPOINT).stat().st_mtime_ns
        except OSError:
            return None

    def run(self) -> None:
        while not self.done.wait(_POLL):
            stamp = self._stamp()
            if stamp is not None and stamp != self.seen:
                self.seen = stamp
                try:
                    self.inbox.put.remote(self.key, run_files(self.folder))
                except Exception:  # a file replaced under us, or the inbox gone: the next one, or the end, ships
                    pass


def ray_task(job: Job, files: dict, data: dict | None, inbox, options: dict) -> dict:
    """A Ray task: one run in a temporary folder on whichever node Ray chose, its files shipped back."""
    import ray
    import torch

    started = time.time()
    # A retry resumes from what the killed attempt shipped. Waited for through a future, not ray.get: a task
    # blocked in ray.get hands its CPU back to the scheduler, which then starts another run beside this one.
    latest = inbox.latest_of.remote(job.key).future().result()
    files = latest or files
    threads = int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1))
    torch.set_num_threads(max(1, threads))
    options = dict(options)
    if data:
        options["root"] = materialise(data)
    with tempfile.TemporaryDirectory(prefix="lenet-sweep-") as tmp:
        folder = Path(tmp) / job.folder.name
        folder.mkdir()
        for name, blob in files.items():
            (folder / name).write_bytes(blob)
        shipper = _Shipper(folder, inbox, job.key)
        shipper.start()
        result = run_job(dataclasses.replace(job, folder=folder), **options)
        shipper.done.set()
        shipper.join()
        inbox.put.remote(job.key, run_files(folder)).future().result()
    result.update(folder=str(job.folder), node=ray.get_runtime_context().get_node_id()[:12], pid=os.getpid(),
                  resumed=bool(latest), started=started, ended=time.time())  # fmt: skip
    return result


class Inbox:
    """A Ray actor holding each run's latest files: tasks put, retries read, the driver takes."""

    def __init__(self):
        self.latest: dict[str, dict] = {}
        self.new: dict[str, dict] = {}

    def put(self, key: str, files: dict) -> None:
        self.latest[key] = files
        self.new[key] = files

    def latest_of(self, key: str) -> dict | None:
        return self.latest.get(key)

    def take(self) -> dict:
        new, self.new = self.new, {}
        return new


def _write_back(job: Job, files: dict, root: str) -> None:
    """A run's shipped files into the sweep folder; run.json names the driver's data, not the node's."""
    job.folder.mkdir(parents=True, exist_ok=True)
    for name, blob in files.items():
        if name != RUN_INFO:
            write_bytes_atomic(job.folder / name, blob)
    if RUN_INFO in files:
        import json

        info = read_json(job.folder / RUN_INFO) | json.loads(files[RUN_INFO])
        info["data_root"] = root
        write_bytes_atomic(job.folder / RUN_INFO, (json.dumps(info, indent=2) + "\n").encode())


def connect(address: str | None):
    """(ray, whether this call connected): ray.init on the cluster at `address` ("auto": the one this machine
    belongs to), else on a new local one; nothing when the caller's Python is connected already."""
    ray = _import_ray()
    if ray.is_initialized():
        return ray, False
    try:
        ray.init(address=address or None, logging_level=logging.ERROR, log_to_driver=False,
                 include_dashboard=False if not address else None, configure_logging=True)  # fmt: skip
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise LenetError(f"--ray {address or ''}: cannot reach a Ray cluster ({str(e).splitlines()[0]})") from None
    return ray, True


def run_ray(jobs: list[Job], options: dict, address: str | None, threads: int, retries: int,
            progress: SweepProgress) -> list[dict]:  # fmt: skip
    """The jobs as Ray tasks of `threads` CPUs each; results in the jobs' order."""
    from ..data.catalogue import resolve_root

    datasets = {job.config().dataset for job in jobs}
    root = resolve_root(options.get("root")).resolve()
    data = dataset_files(datasets, root) if jobs else {}
    ray, connected = connect(address)
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    # The inbox lives on the driver's own node, pinned (soft=True lets Ray place it elsewhere): it must not die
    # with a worker node, and the driver dies with its own node anyway.
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    inbox = ray.remote(Inbox).options(num_cpus=0, scheduling_strategy=here).remote()
    task = ray.remote(ray_task).options(num_cpus=threads, max_retries=retries, retry_exceptions=False)
    data_ref = ray.put(data)
    task_options = {k: v for k, v in options.items() if k != "root"}
    pending = {}
    for index, job in enumerate(jobs):
        pending[task.remote(job, run_files(job.folder) if job.folder.is_dir() else {}, data_ref, inbox,
                            task_options)] = index  # fmt: skip
        progress.started(job)
    results: dict[int, dict] = {}
    signals: list[int] = []
    by_key = {job.key: job for job in jobs}

    def on_signal(signum, frame):
        signals.append(signum)
        if len(signals) >= 3:
            raise KeyboardInterrupt("sweep stopped; every run keeps its last checkpoint in the sweep folder")
        for ref in pending:  # a KeyboardInterrupt in each task: lenet.train's first (then second) signal
            ray.cancel(ref, force=False, recursive=False)

    def drain() -> None:
        for key, files in ray.get(inbox.take.remote()).items():
            _write_back(by_key[key], files, str(root))

    in_main = threading.current_thread() is threading.main_thread()
    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)} if in_main else {}
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=_POLL)
            drain()
            for ref in ready:
                index = pending.pop(ref)
                try:
                    result = ray.get(ref)
                except (ray.exceptions.TaskCancelledError, ray.exceptions.RayError) as e:
                    stopped = bool(signals)
                    result = {"name": jobs[index].name, "folder": str(jobs[index].folder), "summary": None,
                              "status": "stopped" if stopped else "crashed", "output": "",
                              "error": None if stopped else str(e).strip().splitlines()[0]}  # fmt: skip
                results[index] = result
                progress.finished(result)
            progress.tick()
        drain()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        ray.kill(inbox)
        if connected:  # now, not at exit: Ray's own shutdown lines must come before what the sweep prints
            ray.shutdown()
    return [results[i] for i in sorted(results)]
