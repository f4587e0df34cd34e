"""lenet before and after, on this machine, in one run: start-up, memory, time to 99 %, training throughput.

    python benchmarks/before_after.py --root DATA [--base f9007ce] [--seeds 0 1 2] [--avx2]

Both versions run from their own source trees (git worktrees of --base and of HEAD) with this Python and its
packages, as separate processes, interleaved seed by seed, so that a machine that slows down slows both:
  fast       `lenet train --recipe fast --seed N`: wall seconds from process start (as a user waits for
             it), peak resident memory (/usr/bin/time -v), final test accuracy
  startup    `lenet train --recipe fast --dry-run`: the process up to its first step, and whether it imported
             torch._dynamo
  d2l, tf1   training throughput of the d2l recipe and of seed 003's TF1 CNN (its batch of 20), samples/s
             as the run reports it (--max-steps, so each takes seconds)
With --avx2 each version also runs with LENET_FASTPATH_CFLAGS=-mno-avx512f (the AVX2+FMA kernels on an
AVX-512 machine, in a cache of their own). Writes benchmarks/results/<date>-before-after.{json,md}.
Not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
REPO = Path(__file__).resolve().parent.parent
BASE = "f9007ce"  # the last landing before the layout, the run API and the lighter process


def log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def worktree(rev: str, work: Path) -> Path:
    folder = work / rev
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "-f", str(folder), rev],
                   check=True, capture_output=True)  # fmt: skip
    return folder


def lenet(tree: Path, args: list[str], env: dict, work: Path) -> dict:
    """One `python -m lenet ...` from `tree`'s sources: wall seconds, peak RSS (MB), its stdout."""
    timing = work / "time.txt"
    command = ["/usr/bin/time", "-v", "-o", str(timing), sys.executable, "-m", "lenet", *args]
    started = time.perf_counter()
    done = subprocess.run(command, env={**env, "PYTHONPATH": str(tree / "src")}, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed in {tree}:\n{done.stderr[-2000:]}")
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", timing.read_text())[1]) / 1024
    return {"wall": wall, "rss_mb": rss, "stdout": done.stdout}


def summary(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def measure(trees: dict[str, Path], root: str, seeds: list[int], env: dict, work: Path) -> dict:
    results = {name: {"fast": [], "startup": [], "d2l": [], "tf1": []} for name in trees}
    work.mkdir(exist_ok=True)  # a folder per build: a second build's runs must not land on the first's
    for tree in trees.values():  # warm the kernel caches: compiling is not what is measured
        lenet(tree, ["train", "--recipe", "fast", "--root", root, "--dry-run"], env, work)
        lenet(tree, ["train", "--recipe", "tf1-cnn", "--root", root, "--dry-run"], env, work)
    for seed in seeds:
        for name, tree in trees.items():
            out = work / f"{name}-{seed}"
            run = lenet(tree, ["train", "--recipe", "fast", "--root", root, "--seed", str(seed), "--out", str(out),
                               "--json"], env, work)  # fmt: skip
            results[name]["fast"].append({"wall": run["wall"], "rss_mb": run["rss_mb"],
                                          "test_acc": summary(run["stdout"])["test_acc"]})  # fmt: skip
            dry = ["train", "--recipe", "fast", "--root", root, "--dry-run"]
            wall = lenet(tree, dry, env, work)["wall"]
            imports = subprocess.run([sys.executable, "-X", "importtime", "-m", "lenet", *dry], capture_output=True,
                                     env={**env, "PYTHONPATH": str(tree / "src")}, text=True).stderr  # fmt: skip
            results[name]["startup"].append({"wall": wall, "dynamo": "| torch._dynamo\n" in imports})
            for key, recipe, steps in (("d2l", "d2l", "120"), ("tf1", "tf1-cnn", "600")):
                run = lenet(tree, ["train", "--recipe", recipe, "--dataset", "mnist", "--root", root,
                                   "--max-steps", steps, "--json", "--out",
                                   str(work / f"{name}-{key}-{seed}")], env, work)  # fmt: skip
                results[name][key].append(summary(run["stdout"])["examples_per_sec"])
            log(f"seed {seed} {name}: fast {results[name]['fast'][-1]}, d2l {results[name]['d2l'][-1]:,.0f}, "
                f"tf1 {results[name]['tf1'][-1]:,.0f} samples/s")  # fmt: skip
    return results


def table(results: dict, title: str) -> list[str]:
    def med(values):
        return statistics.median(values)

    rows = [f"### {title}", "", "| measure | before | after | after / before |", "|---|---:|---:|---:|"]
    before, after = results["before"], results["after"]
    pairs = [
        ("`fast` recipe, wall s from process start (median)", [r["wall"] for r in before["fast"]],
         [r["wall"] for r in after["fast"]], "{:.2f}"),
        ("`fast` recipe, peak resident MB (max)", [r["rss_mb"] for r in before["fast"]],
         [r["rss_mb"] for r in after["fast"]], "{:.0f}"),
        ("`fast` recipe, test accuracy (mean)", [r["test_acc"] for r in before["fast"]],
         [r["test_acc"] for r in after["fast"]], "{:.4f}"),
        ("start-up to the first step (`--dry-run`), s (median)", [r["wall"] for r in before["startup"]],
         [r["wall"] for r in after["startup"]], "{:.2f}"),
        ("d2l recipe, samples/s (median)", before["d2l"], after["d2l"], "{:,.0f}"),
        ("tf1-cnn recipe (batch 20), samples/s (median)", before["tf1"], after["tf1"], "{:,.0f}"),
    ]  # fmt: skip
    for label, b, a, fmt in pairs:
        pick = max if "max" in label else (statistics.mean if "mean" in label else med)
        rows.append(f"| {label} | {fmt.format(pick(b))} | {fmt.format(pick(a))} | {pick(a) / pick(b):.2f}x |")
    dynamo = {k: any(r["dynamo"] for r in v["startup"]) for k, v in results.items()}
    rows.append(f"| imports torch._dynamo | {'yes' if dynamo['before'] else 'no'} | "
                f"{'yes' if dynamo['after'] else 'no'} | |")  # fmt: skip
    return rows + [""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=os.environ.get("LENET_DATA"), help="data root holding mnist/")
    parser.add_argument("--base", default=BASE, help="the 'before' revision")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--avx2", action="store_true", help="also measure the AVX2+FMA build")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    import torch  # only for the machine's description

    started = datetime.now(timezone.utc)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        trees = {"before": worktree(args.base, work), "after": worktree("HEAD", work)}
        try:
            builds = {"native": dict(os.environ)}
            if args.avx2:
                builds["AVX2"] = {**os.environ, "LENET_FASTPATH_CFLAGS": "-mno-avx512f",
                                  "XDG_CACHE_HOME": str(work / "avx2-cache")}  # fmt: skip
            results = {name: measure(trees, args.root, args.seeds, env, work / name) for name, env in builds.items()}
        finally:
            for tree in trees.values():
                subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)], check=False)
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "?")  # fmt: skip
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    lines = [f"# lenet before ({args.base}) and after ({head.stdout.strip()})", "",
             f"Measured {started:%Y-%m-%d %H:%M} UTC on {cpu} ({os.cpu_count()} cores), torch {torch.__version__}, "
             f"seeds {args.seeds}, load average at the start {os.getloadavg()[0]:.1f}.",
             f"Command: `python benchmarks/before_after.py --root DATA --seeds {' '.join(map(str, args.seeds))}"
             f"{' --avx2' if args.avx2 else ''}`", ""]  # fmt: skip
    for build, result in results.items():
        lines += table(result, f"{build} kernels")
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"{started:%Y-%m-%d}-before-after"
    stem.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
    stem.with_suffix(".md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
