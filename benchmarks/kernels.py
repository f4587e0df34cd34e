"""The fast path's engines, one at a time, in samples per second (and against another checkout's, interleaved).

    .venv/bin/python benchmarks/kernels.py                      # this checkout's kernels
    .venv/bin/python benchmarks/kernels.py --against /tmp/old   # and another src tree's, in alternating rounds

Cases (random inputs, PyTorch's thread count, no optimiser unless said):
  <net> step        training_step(model): every gradient and the loss in C (the whole-step engine)
  <net> front end   forward_fn(model) then autograd's backward: the front-end engine with PyTorch's classifier
  d2l inference     forward_fn(model) under inference_mode, batch 2000
  tf1-cnn step      the trainer's step (lenet.train.loop.make_step) of the tf1-cnn recipe (Adam, batch 20,
                    dropout), optimiser included, and its fraction of the roof: SGEMM GFLOP/s (a 2048^2 matmul,
                    timed by the same clock) over the net's training FLOPs per sample
  tf1-cnn step (fused Adam)   the same with torch.optim.Adam(fused=True): one pass over the 3.3 M parameters
  tf1-cnn parts     milliseconds per step of 20 in the front end's kernels (forward, backward), PyTorch's
                    classifier (forward and backward), Adam's update and the fused one
--against runs the same cases from another tree's src/ (e.g. `git worktree add /tmp/old HEAD~5`) in
alternating child processes, and reports the median of the per-round ratios: with other work on the
machine, only ratios measured side by side mean anything.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASES = ["d2l step", "keras step", "tutorial step", "modern (batch norm) step", "tf1-cnn front end",
         "d2l inference", "tf1-cnn step", "tf1-cnn step (fused Adam)", "tf1-cnn parts"]  # fmt: skip


CLOCK = time.perf_counter  # --cpu-time: time.process_time, this process's CPU seconds


def _timed(run, seconds: float) -> float:
    """Calls of run() per second: the best of the ~0.1 s slices of `seconds` (after two warm-up calls). On a
    machine shared with other work, the best slice is the one least disturbed."""
    run()
    run()
    best, end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < end or best == 0.0:
        calls, started = 0, CLOCK()
        while (elapsed := CLOCK() - started) < 0.1 or calls < 2:
            run()
            calls += 1
        best = max(best, calls / elapsed)
    return best


def measure(cases: list[str], seconds: float, threads: int = 0, cpu_time: bool = False) -> dict[str, float]:
    """Samples per second of each case, in this process (the lenet on sys.path)."""
    import torch
    import torch.nn.functional as F

    global CLOCK
    CLOCK = time.process_time if cpu_time else time.perf_counter
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
        if case == "tf1-cnn parts":
            out.update(tf1_parts(seconds))
        elif case.startswith("tf1-cnn step"):
            out.update(tf1_step(seconds, fused="fused" in case))
        elif case.endswith(" step"):
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
    return out


def sgemm_gflops(n: int = 2048) -> float:
    """GFLOP/s of an n x n float32 matmul, the best of four, timed by CLOCK."""
    import torch

    a, b, c = torch.randn(n, n), torch.randn(n, n), torch.empty(n, n)
    return 2 * n**3 / _best_of(lambda: torch.mm(a, b, out=c), 4) / 1e9


def _best_of(run, reps: int) -> float:
    run()
    times = []
    for _ in range(reps):
        started = CLOCK()
        run()
        times.append(CLOCK() - started)
    return min(times)


def tf1_step(seconds: float, fused: bool = False) -> dict[str, float]:
    """Samples per second of the tf1-cnn recipe's training step, and its fraction of the roof."""
    import torch

    from lenet.bench.sidebyside import flops_per_sample
    from lenet.config import resolve
    from lenet.models import create_model
    from lenet.train.loop import make_optimizer, make_step

    cfg = resolve("tf1-cnn", dataset="mnist")
    torch.manual_seed(0)
    model = create_model(cfg.model)
    optimizer = make_optimizer(cfg, model)
    if fused:
        optimizer = torch.optim.Adam(optimizer.param_groups[0]["params"], lr=cfg.lr, fused=True)
    step = make_step(model, optimizer, cfg)
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(20, 1, 28, 28, generator=g), torch.randint(0, 10, (20,), generator=g)
    for _ in range(30):  # past Adam's first steps
        step(x, y, 20)
    rate = 20 * _timed(lambda: step(x, y, 20), seconds)
    flops, gflops = flops_per_sample(create_model(cfg.model), batch=20), sgemm_gflops()
    name = "tf1-cnn step (fused Adam)" if fused else "tf1-cnn step"
    return {name: rate, f"{name}: roof fraction": rate * flops / (gflops * 1e9), "tf1-cnn roof": gflops * 1e9 / flops}


def tf1_parts(seconds: float) -> dict[str, float]:
    """Milliseconds per step of 20 samples: the front end's kernels and PyTorch's classifier on their own, and
    the optimiser's share of whole trainer steps (timed inside them: alone, Adam's update runs on warm caches
    and reused buffers, and looks cheaper than it is), with the recipe's Adam and with the fused one."""
    import torch
    import torch.nn.functional as F

    from lenet import fast
    from lenet.config import resolve
    from lenet.fast.step import _params
    from lenet.models import create_model
    from lenet.train.loop import make_optimizer, make_step

    cfg = resolve("tf1-cnn", dataset="mnist")
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(20, 1, 28, 28, generator=g), torch.randint(0, 10, (20,), generator=g)
    out = {}
    for fused in (False, True):
        torch.manual_seed(0)
        model = create_model(cfg.model)
        optimizer = make_optimizer(cfg, model)
        if fused:
            optimizer = torch.optim.Adam(optimizer.param_groups[0]["params"], lr=cfg.lr, fused=True)
        step, spent, update = make_step(model, optimizer, cfg), [0.0], optimizer.step

        def timed_update(update=update, spent=spent):
            started = CLOCK()
            update()
            spent[0] += CLOCK() - started

        optimizer.step = timed_update
        for _ in range(30):  # Adam's moments as training makes them
            step(x, y, 20)
        spent[0], started, n = 0.0, CLOCK(), max(10, int(40 * seconds))
        for _ in range(n):
            step(x, y, 20)
        name = "fused Adam" if fused else "Adam"
        out[f"tf1-cnn parts: whole step, {name} (ms)"] = (CLOCK() - started) / n * 1e3
        out[f"tf1-cnn parts: {name}'s update in it (ms)"] = spent[0] / n * 1e3
    found = fast.match(model)
    k = fast.kernels(found.front)
    prm, _alive = _params(found)
    f, gf, grads = torch.empty(20, k.features), torch.randn(20, k.features, generator=g), torch.empty(k.grad_floats)
    tail = torch.nn.Sequential(*found.tail)
    features = torch.rand(20, k.features, generator=g).requires_grad_()
    parts = {
        "front end forward": lambda: k.forward(prm, x, False, True, None, f),
        "front end backward": lambda: k.backward(prm, x, None, gf, grads, False),
        "classifier forward and backward": lambda: F.cross_entropy(tail(features), y).backward(),
    }
    return out | {f"tf1-cnn parts: {name} (ms)": 1e3 / _timed(run, seconds / 3) for name, run in parts.items()}


def child(tree: Path, cases: list[str], seconds: float, threads: int, cpu_time: bool) -> dict[str, float]:
    env = dict(os.environ, PYTHONPATH=str(tree / "src"))
    code = f"import json, sys; sys.path.insert(0, {str(ROOT / 'benchmarks')!r}); import kernels; " \
           f"print(json.dumps(kernels.measure({cases!r}, {seconds!r}, {threads!r}, {cpu_time!r})))"  # fmt: skip
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--against", type=Path, help="another checkout (its src/ is imported) to compare with")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=1.0, help="per case and round")
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, of: {', '.join(CASES)}")
    parser.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (default: PyTorch's own)")
    parser.add_argument("--cpu-time", action="store_true", help="time by this process's CPU seconds, not the "
                        "wall clock: with --threads 1 on a busy machine, other work then counts less")  # fmt: skip
    parser.add_argument("--json", type=Path, help="write the per-round numbers here")
    args = parser.parse_args(argv)
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    trees = {"this": ROOT} | ({"against": args.against} if args.against else {})
    rounds: dict[str, list[dict]] = {k: [] for k in trees}
    for r in range(args.rounds):
        for key in list(trees)[r % len(trees) :] + list(trees)[: r % len(trees)]:  # alternate who goes first
            rounds[key].append(child(trees[key], cases, args.seconds, args.threads, args.cpu_time))
        print(f"round {r + 1}/{args.rounds}: " + "; ".join(
            f"{k} " + ", ".join(f"{c} {v[-1][c]:,.0f}" for c in cases if c in v[-1]) for k, v in rounds.items()
        ), flush=True)  # fmt: skip
    import torch

    threads = args.threads or torch.get_num_threads()
    clock = "CPU" if args.cpu_time else "wall-clock"
    print(f"\n{threads} threads; medians of {args.rounds} rounds (samples per {clock} second)")
    keys = [k for k in rounds["this"][0] if k in cases] + [k for k in rounds["this"][0] if k not in cases]
    for case in keys:
        this = statistics.median(r[case] for r in rounds["this"])
        number = "{:>12,.3f}" if "fraction" in case or "(ms)" in case else "{:>12,.0f}"
        line = f"  {case:28s} " + number.format(this)
        if args.against:
            other = statistics.median(r[case] for r in rounds["against"])
            ratio = statistics.median(a[case] / b[case] for a, b in zip(rounds["this"], rounds["against"], strict=True))
            line += "   against " + number.format(other) + f"   ratio {ratio:.3f}"
        print(line)
    if args.json:
        args.json.write_text(json.dumps({"threads": threads, "rounds": rounds}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
