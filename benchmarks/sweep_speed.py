"""How a sweep should use the cores: N worker processes x 1 thread against 1 worker x N threads.

    python benchmarks/sweep_speed.py --root DATA [--runs 4] [--rounds 2] [--recipe fast]

Each round runs the same `--runs` seeds of a recipe both ways, in alternating order (interleaved, as the
machine's load drifts), each into a fresh folder; prints the wall time of every sweep and the median ratio.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def sweep(recipe: str, runs: int, root: str, workers: int, threads: int, out: Path) -> float:
    command = [sys.executable, "-m", "lenet", "sweep", recipe, "--seeds", str(runs), "--root", root, "--device",
               "cpu", "--workers", str(workers), "--threads", str(threads), "--out", str(out)]  # fmt: skip
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True, help="data root holding mnist/")
    parser.add_argument("--recipe", default="fast")
    parser.add_argument("--runs", type=int, default=4, help="seeds per sweep")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--cores", type=int, default=2)
    args = parser.parse_args()
    ways = {"parallel": (args.cores, 1), "threaded": (1, args.cores)}
    times: dict[str, list[float]] = {name: [] for name in ways}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            order = list(ways) if r % 2 == 0 else list(reversed(ways))
            for name in order:
                workers, threads = ways[name]
                seconds = sweep(args.recipe, args.runs, args.root, workers, threads, Path(tmp) / f"{name}-{r}")
                times[name].append(seconds)
                print(f"round {r + 1}: {name} ({workers} workers x {threads} threads): {seconds:.1f} s", flush=True)
    ratio = statistics.median(times["parallel"]) / statistics.median(times["threaded"])
    print(f"median wall: parallel {statistics.median(times['parallel']):.1f} s, threaded "
          f"{statistics.median(times['threaded']):.1f} s; parallel / threaded = {ratio:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
