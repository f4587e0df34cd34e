"""The fast path's engines, one at a time, in samples per second (and against another checkout's, interleaved).

    .venv/bin/python benchmarks/kernels.py                      # this checkout's kernels
    .venv/bin/python benchmarks/kernels.py --against /tmp/old   # and another src tree's, in alternating rounds

Cases (random inputs, PyTorch's thread count, no optimiser unless said):
  <net> step        training_step(model): every gradient and the loss in C (the whole-step engine)
  <net> front end   forward_fn(model) then autograd's backward: the front-end engine with PyTorch's classifier
  d2l inference     forward_fn(model) under inference_mode, batch 2000
  tf1-cnn fit       the tf1-cnn recipe's `fit` (Adam, batch 20, dropout) on random images, with its roof: the
                    machine's SGEMM GFLOP/s over the net's FLOPs per sample (sidebyside.sgemm_gflops)
--against runs the same cases from another tree's src/ (e.g. `git worktree add /tmp/old HEAD~5`) in
alternating child processes, and reports the median of the per-round ratios: with other work on the
machine, only ratios measured side by side mean anything.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASES = ["d2l step", "keras step", "tutorial step", "modern (batch norm) step", "tf1-cnn front end",
         "d2l inference", "tf1-cnn fit"]  # fmt: skip


def _timed(run, seconds: float) -> float:
    """Calls of run() per second: the best of the ~0.1 s slices of `seconds` (after two warm-up calls). On a
    machine shared with other work, the best slice is the one least disturbed."""
    run()
    run()
    best, end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < end or best == 0.0:
        calls, started = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - started) < 0.1 or calls < 2:
            run()
            calls += 1
        best = max(best, calls / elapsed)
    return best


def measure(cases: list[str], seconds: float, threads: int = 0) -> dict[str, float]:
    """Samples per second of each case, in this process (the lenet on sys.path)."""
    import torch
    import torch.nn.functional as F

    if threads:
        torch.set_num_threads(threads)
    from lenet import fast
    from lenet.models import create_model, init_weights

    def model(name: str):
        torch.manual_seed(0)
        return init_weights(create_model(name), "xavier")

    def data(m, n: int):
        g = torch.Generator().manual_seed(0)
        size = getattr(m, "input_size", 28)
        return torch.rand(n, 1, size, size, generator=g), torch.randint(0, 10, (n,), generator=g)

    out = {}
    for case in cases:
        if case.endswith(" step"):
            name = {"d2l": "lenet5-d2l", "keras": "lenet5-keras", "tutorial": "lenet5-tutorial"}.get(
                case.split()[0], "lenet5-modern"
            )
            m = model(name)
            step = fast.training_step(m)
            x, y = data(m, 256)
            out[case] = 256 * _timed(lambda step=step, x=x, y=y: step(x, y, 1 / 256), seconds)
        elif case == "tf1-cnn front end":
            m = model("cnn-tf1")
            forward = fast.forward_fn(m)
            x, y = data(m, 20)

            def run(forward=forward, m=m, x=x, y=y):
                m.zero_grad(set_to_none=True)
                F.cross_entropy(forward(x), y).backward()

            out[case] = 20 * _timed(run, seconds)
        elif case == "d2l inference":
            m = model("lenet5-d2l").eval()
            forward = fast.forward_fn(m)
            x, _ = data(m, 2000)

            def infer(forward=forward, x=x):
                with torch.inference_mode():
                    forward(x)

            out[case] = 2000 * _timed(infer, seconds)
        elif case == "tf1-cnn fit":
            out.update(tf1_fit(seconds))
    return out


def tf1_fit(seconds: float) -> dict[str, float]:
    """The tf1-cnn recipe's `fit` on random images: samples/s, and the fraction of the roof (SGEMM GFLOP/s over
    the net's training FLOPs per sample) it reaches."""
    import torch

    from lenet.bench.sidebyside import flops_per_sample, load_images, sgemm_gflops, to_dataset
    from lenet.config import resolve
    from lenet.data import Dataset, Split
    from lenet.models import create_model
    from lenet.train.loop import fit

    arrays = load_images("no-such-dataset", n_train=8000, n_test=100)  # random pixels: speed only
    d = to_dataset("mnist", arrays, "unit")
    d = Dataset(d.name, d.classes, d.train, Split(d.test.images[:100], d.test.labels[:100]))
    cfg = resolve("tf1-cnn", dataset="mnist", log_every=0)

    quiet = {"progress": False} if "progress" in inspect.signature(fit).parameters else {}

    def rate(steps: int) -> float:
        torch.manual_seed(0)
        history = fit(create_model(cfg.model), d, cfg, max_steps=steps, **quiet)
        last = history.epochs[-1]  # (a partial epoch: max_steps ends it)
        return last["examples"] / last["train_seconds"] if "train_seconds" in last else history.examples_per_sec

    rate(10)
    best = max(rate(max(20, int(150 * seconds))) for _ in range(2))
    flops = flops_per_sample(create_model("cnn-tf1"), batch=20)
    gflops = sgemm_gflops()
    return {"tf1-cnn fit": best, "tf1-cnn roof fraction": best * flops / (gflops * 1e9),
            "tf1-cnn roof samples/s": gflops * 1e9 / flops}  # fmt: skip


def child(tree: Path, cases: list[str], seconds: float, threads: int) -> dict[str, float]:
    env = dict(os.environ, PYTHONPATH=str(tree / "src"))
    code = f"import json, sys; sys.path.insert(0, {str(ROOT / 'benchmarks')!r}); import kernels; " \
           f"print(json.dumps(kernels.measure({cases!r}, {seconds!r}, {threads!r})))"  # fmt: skip
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--against", type=Path, help="another checkout (its src/ is imported) to compare with")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=1.0, help="per case and round")
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, of: {', '.join(CASES)}")
    parser.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (default: PyTorch's own)")
    parser.add_argument("--json", type=Path, help="write the per-round numbers here")
    args = parser.parse_args(argv)
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    trees = {"this": ROOT} | ({"against": args.against} if args.against else {})
    rounds: dict[str, list[dict]] = {k: [] for k in trees}
    for r in range(args.rounds):
        for key in list(trees)[r % len(trees) :] + list(trees)[: r % len(trees)]:  # alternate who goes first
            rounds[key].append(child(trees[key], cases, args.seconds, args.threads))
        print(f"round {r + 1}/{args.rounds}: " + "; ".join(
            f"{k} " + ", ".join(f"{c} {v[-1][c]:,.0f}" for c in cases if c in v[-1]) for k, v in rounds.items()
        ), flush=True)  # fmt: skip
    import torch

    threads = args.threads or torch.get_num_threads()
    print(f"\n{threads} threads; medians of {args.rounds} rounds (samples/s)")
    keys = [k for k in rounds["this"][0] if k in cases] + [k for k in rounds["this"][0] if k not in cases]
    for case in keys:
        this = statistics.median(r[case] for r in rounds["this"])
        line = f"  {case:28s} {this:>12,.3f}" if "fraction" in case else f"  {case:28s} {this:>12,.0f}"
        if args.against:
            other = statistics.median(r[case] for r in rounds["against"])
            ratio = statistics.median(a[case] / b[case] for a, b in zip(rounds["this"], rounds["against"], strict=True))
            line += f"   against {other:>12,.3f}" if "fraction" in case else f"   against {other:>12,.0f}"
            line += f"   ratio {ratio:.3f}"
        print(line)
    if args.json:
        args.json.write_text(json.dumps({"threads": threads, "rounds": rounds}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
