"""`lenet sweep`: a recipe times a grid of settings times seeds, run here in parallel or on a Ray cluster.

`run_sweep` makes (or continues) a sweep folder and runs what is left of it; `execute` runs any list of jobs,
which `lenet reproduce` uses for its many recipes at once.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from .. import __version__
from ..errors import LenetError
from .spec import SWEEP_FILE, Job, SweepSpec, parse_seeds, parse_settings, read_spec, write_spec
from .worker import DONE, PARTIAL, job_state


@dataclass
class SweepResult:
    """What a sweep did: its folder, every run's result, and whether it stopped early (a signal)."""

    folder: Path
    results: list[dict] = field(default_factory=list)
    stopped: bool = False
    seconds: float = 0.0

    @property
    def failed(self) -> list[dict]:
        return [r for r in self.results if r["status"] in ("error", "crashed")]

    @property
    def complete(self) -> bool:
        return not self.stopped and all(r["status"] == DONE for r in self.results)


def default_sweep_dir(name: str) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    path, n = Path("runs") / f"sweep-{name}-{stamp}", 1
    while path.exists():
        n += 1
        path = Path("runs") / f"sweep-{name}-{stamp}-{n}"
    return path


def _seconds(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def check_data(jobs: list[Job], root) -> None:
    """Every dataset the jobs read is under the root: one line now rather than one per run later."""
    from ..data import get_dataset_info, locate, resolve_root

    where = resolve_root(root)
    for name in sorted({job.config().dataset for job in jobs}):
        info = get_dataset_info(name)
        for spec in info.files:
            if locate(info, spec, where) is None:
                raise LenetError(f"{name}: {spec.name} not found in {where / name}; run: lenet data download {name}"
                                 + (f" --root {root}" if root else ""))  # fmt: skip


def execute(
    jobs: list[Job],
    *,
    root=None,
    verify: bool = True,
    device: str = "cpu",
    fast: bool = True,
    workers: int | None = None,
    threads: int | None = None,
    ray: str | bool | None = None,
    retries: int = 3,
    progress: bool | None = None,
    log=None,
) -> list[dict]:
    """Run every job not finished yet (resuming the interrupted ones); each job's result, in order."""
    from .local import plan_workers, run_inline, run_local
    from .progress import SweepProgress

    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    done = [{"name": j.name, "folder": str(j.folder), "status": DONE, "summary": _summary(j), "before": DONE}
            for j in jobs if job_state(j.folder) == DONE]  # fmt: skip
    todo = [j for j in jobs if job_state(j.folder) != DONE]
    if todo:
        check_data(todo, root)
    resumed = sum(job_state(j.folder) == PARTIAL for j in todo)
    options = {"root": str(root) if root is not None else None, "verify": verify, "device": device, "fast": fast}
    if ray:
        workers, threads = 0, threads or 1
        where = f"Ray ({ray if isinstance(ray, str) else 'a local cluster'}), {threads} CPU a run"
    else:
        workers, threads = plan_workers(len(todo), workers, threads)
        where = f"{workers} worker{'s' * (workers > 1)} x {threads} thread{'s' * (threads > 1)}"
    log(f"{len(jobs)} runs: {len(done)} finished, {resumed} to resume, {len(todo) - resumed} to start; {where}")
    if not todo:
        return done
    progress_line = SweepProgress(todo, done, progress, log)
    try:
        if ray:
            from .cluster import run_ray

            address = ray if isinstance(ray, str) else None
            results = run_ray(todo, options, address, threads, retries, progress_line)
        elif workers == 1:
            results = run_inline(todo, options, threads, progress_line)
        else:
            results = run_local(todo, options, workers, threads, progress_line)
    finally:
        progress_line.close()
    by_key = {r["folder"]: r for r in [*done, *results]}
    return [by_key.get(j.key) or _not_started(j) for j in jobs]


def _summary(job: Job) -> dict:
    from ..train.checkpoint import SUMMARY, read_json

    return read_json(job.folder / SUMMARY)


def _not_started(job: Job) -> dict:
    return {"name": job.name, "folder": str(job.folder), "status": "not started", "summary": None, "error": None}


def prepare(folder: Path, asked: SweepSpec) -> SweepSpec:
    """The sweep the folder will hold: a new one, or the one it holds grown by what is asked now."""
    if (folder / SWEEP_FILE).is_file():
        recorded = read_spec(folder)
        why = recorded.same_sweep(asked)
        if why:
            raise LenetError(f"{folder}: {why}; sweep into another --out, or continue it with lenet sweep --resume")
        return recorded.merged(asked)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise LenetError(f"{folder} exists and is not a sweep folder; give another --out")
    return asked


def run_sweep(
    recipe: str | None = None,
    *,
    seeds: str | list[int] = "5",
    settings: list[str] | dict | None = None,
    out=None,
    resume=None,
    max_steps: int | None = None,
    command: str = "",
    report: bool = True,
    **options,
) -> SweepResult:
    """Run `recipe` for every combination of `settings` times every seed; resumable. Returns a SweepResult.

    seeds: '10' (the first 10), '0-9', '0,2,5-7', or a list. settings: ['lr=0.05,0.1', 'dataset=mnist'] (one
    value: fixed; several: swept) or a dict {'lr': [0.05, 0.1]}. out: the sweep folder (default
    runs/sweep-<recipe>-<time>); the same folder again continues the sweep (as `resume=` does). options:
    root, verify, device, fast, workers, threads, ray (True or an address), retries, progress (see execute).
    """
    started = time.perf_counter()
    if resume is not None:
        if recipe is not None or settings:
            raise LenetError("--resume continues a sweep as sweep.json says; drop the recipe and --set")
        folder = Path(resume)
        spec = read_spec(folder)
    else:
        if recipe is None:
            raise LenetError("name a recipe to sweep (see lenet recipes), or --resume a sweep folder")
        if isinstance(settings, dict):
            settings = [
                f"{k}={','.join(map(str, v if isinstance(v, list | tuple) else [v]))}" for k, v in settings.items()
            ]
        fixed, grid = parse_settings(settings)
        seed_list = parse_seeds(seeds) if isinstance(seeds, str | int) else [int(s) for s in seeds]
        asked = SweepSpec(recipe, seed_list, grid, fixed, max_steps, command)
        asked.check()
        folder = Path(out) if out is not None else default_sweep_dir(recipe)
        spec = prepare(folder, asked)
    folder.mkdir(parents=True, exist_ok=True)
    write_spec(folder, spec, {"lenet": __version__})
    results = execute(spec.jobs(folder), **options)
    result = SweepResult(folder, results, seconds=time.perf_counter() - started)
    result.stopped = any(r["status"] in ("stopped", "not started") for r in results)
    if report and any(r["status"] == DONE for r in results):
        from .report import sweep_report

        sweep_report(folder).save()
    return result
