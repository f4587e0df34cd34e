"""lenet's speed on this machine beside its peers; writes benchmarks/results/<date>-<host>.{json,md}.

    python benchmarks/bench.py --root DATA [--keras PYTHON] [--rounds 7] [--seeds 0 1 2]

Three parts, each skippable:
  train      interleaved rounds of lenet's trainer (d2l recipe), seed 004's d2l loop and, with TensorFlow,
             Keras `fit` vs lenet on seed 002's net: samples/s, ratios, fraction of the SGEMM roof
             (lenet.bench.side_by_side, the same code as `lenet bench`)
  accuracy   time to accuracy: `lenet train --recipe fast --target-acc 0.99` per seed, wall seconds from
             process start to exit (imports, data loading and evaluation included)
  inference  batch inference images/s on the test set (lenet.train.loop.evaluate, and the fast path's forward),
             and one image's latency through `lenet predict`'s preprocessing, in process and as a command
Benchmarks are not tests: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from lenet import fast as fastpath
from lenet.bench import format_report, machine, side_by_side
from lenet.config import resolve
from lenet.data import Split, load_dataset
from lenet.infer.predict import Predictor
from lenet.models import count_parameters, create_model, init_weights
from lenet.train.loop import evaluate

RESULTS = Path(__file__).parent / "results"


def log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def lenet_command() -> list[str]:
    exe = Path(sys.executable).with_name("lenet")
    return [str(exe)] if exe.is_file() else [sys.executable, "-m", "lenet"]


# ----------------------------------------------------------------------------------------------------------
# Time to accuracy


def time_to_accuracy(root: str, seeds: list[int], target: float, work: Path) -> dict:
    """`lenet train --recipe fast --target-acc` once per seed, each a fresh process, timed from outside."""
    cfg = resolve("fast")
    model = create_model(cfg.model, **cfg.model_kwargs)
    front = fastpath.match(model)
    started = time.perf_counter()
    built = front is not None and fastpath.kernels(front.front) is not None  # warm the kernel cache once
    build_seconds = time.perf_counter() - started
    runs = []
    for seed in seeds:
        out = work / f"fast-seed{seed}"
        command = lenet_command() + ["train", "--recipe", "fast", "--root", root, "--seed", str(seed),
                                     "--target-acc", str(target), "--out", str(out), "--json"]  # fmt: skip
        started = time.perf_counter()
        proc = subprocess.run(command, capture_output=True, text=True)
        wall = time.perf_counter() - started
        if proc.returncode not in (0, 1):
            raise SystemExit(f"lenet train failed:\n{proc.stderr.strip()}")
        summary = json.loads(proc.stdout.strip().splitlines()[-1])
        runs.append({"seed": seed, "wall_seconds": wall, "test_acc": summary["test_acc"],
                     "train_seconds": summary["train_seconds"], "epochs": summary["epochs"],
                     "examples_per_sec": summary["examples_per_sec"], "run_dir": str(out)})  # fmt: skip
        log(f"fast recipe, seed {seed}: test acc {summary['test_acc']:.4f} in {wall:.2f} s wall "
            f"({summary['train_seconds']:.2f} s training)")  # fmt: skip
    return {
        "command": " ".join(["lenet", "train", "--recipe", "fast", "--target-acc", str(target), "--seed", "N"]),
        "model": cfg.model,
        "model_kwargs": cfg.model_kwargs,
        "params": count_parameters(model),
        "epochs": cfg.epochs,
        "batch_size": cfg.batch_size,
        "fast_path": built,
        "kernel_build_seconds": build_seconds,
        "runs": runs,
        "mean_test_acc": statistics.mean(r["test_acc"] for r in runs),
        "mean_wall_seconds": statistics.mean(r["wall_seconds"] for r in runs),
        "max_wall_seconds": max(r["wall_seconds"] for r in runs),
    }


# ----------------------------------------------------------------------------------------------------------
# Inference


def images_per_second(fn, images: torch.Tensor, rounds: int) -> float:
    """Median images/s of fn(images) over `rounds` timed calls, after one warm-up call."""
    fn(images)
    rates = []
    for _ in range(rounds):
        started = time.perf_counter()
        fn(images)
        rates.append(len(images) / (time.perf_counter() - started))
    return statistics.median(rates)


def batch_inference(root: str, rounds: int, batch: int = 2000) -> dict:
    """Images/s over the whole test set: lenet.train.loop.evaluate (the fast path on a CPU) and the same model's
    plain PyTorch forward (`model(x)` under inference_mode, batches of `batch`), interleaved."""
    out = {}
    for recipe in ("fast", "d2l"):
        cfg = resolve(recipe, dataset="mnist")
        data = load_dataset("mnist", root, scaling=cfg.scaling)
        torch.manual_seed(0)
        model = init_weights(create_model(cfg.model, **cfg.model_kwargs), cfg.init).eval()

        def lenet(images, model=model, labels=data.test.labels):
            evaluate(model, Split(images, labels), batch)

        def plain(images, model=model):
            with torch.inference_mode():
                for start in range(0, len(images), batch):
                    model(images[start : start + batch]).argmax(1)

        rates = {"evaluate": [], "pytorch_forward": []}
        for _ in range(rounds):
            for key, fn in (("evaluate", lenet), ("pytorch_forward", plain)):
                rates[key].append(images_per_second(fn, data.test.images, 1))
        out[cfg.model] = {k: statistics.median(v) for k, v in rates.items()}
        log(f"inference {cfg.model}: " + ", ".join(f"{k} {v:,.0f} images/s" for k, v in out[cfg.model].items()))
    return out


def digit_png(root: str) -> bytes:
    """A test digit as a PNG, dark ink on white, as a user would draw it."""
    from PIL import Image

    data = load_dataset("mnist", root, scaling="none")
    pixels = data.test.images[0, 0].numpy().astype(np.uint8)
    image = Image.fromarray(255 - pixels).resize((140, 140))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def single_image(root: str, run_dir: str | None, work: Path, repeats: int = 200) -> dict:
    """One image's latency through lenet predict's path: PNG bytes -> preprocess -> model -> probabilities."""
    png = digit_png(root)
    cfg = resolve("fast")
    torch.manual_seed(0)
    model = init_weights(create_model(cfg.model, **cfg.model_kwargs), cfg.init).eval()
    predictor = Predictor(model, cfg, ("0", "1", "2", "3", "4", "5", "6", "7", "8", "9"), {})
    times = {"preprocess": [], "model": [], "total": []}
    for i in range(repeats + 10):
        t0 = time.perf_counter()
        image = predictor.prepare(png)
        t1 = time.perf_counter()
        predictor.probabilities(image[None])
        t2 = time.perf_counter()
        if i >= 10:
            times["preprocess"].append(t1 - t0)
            times["model"].append(t2 - t1)
            times["total"].append(t2 - t0)
    out = {f"{k}_ms": 1e3 * statistics.median(v) for k, v in times.items()}
    if run_dir:
        path = work / "digit.png"
        path.write_bytes(png)
        walls = []
        for _ in range(3):
            started = time.perf_counter()
            subprocess.run(lenet_command() + ["predict", run_dir, str(path)], check=True, capture_output=True)
            walls.append(time.perf_counter() - started)
        out["cli_wall_seconds"] = statistics.median(walls)
    log(
        f"single image: {out['total_ms']:.2f} ms in process ({out['preprocess_ms']:.2f} preprocessing)"
        + (f", `lenet predict` {out['cli_wall_seconds']:.2f} s wall" if "cli_wall_seconds" in out else "")
    )
    return out


# ----------------------------------------------------------------------------------------------------------
# Writing it down


def markdown(result: dict) -> str:
    m = result["machine"]
    lines = [
        f"Measured {result['date']} on {m['cpu']} ({m['cores']} cores, {m['threads']} threads), "
        f"torch {m['torch']}, Python {m['python']}; 1-minute load average "
        f"{' -> '.join(f'{x:.1f}' for x in result.get('load_average', []))}.",
        f"Command: `{result['command']}`",
        "",
        "| measure | lenet | reference | ratio |",
        "|---|---:|---:|---:|",
    ]
    t = result.get("train")
    if t:
        lines.append(
            f"| training, d2l recipe (samples/s, median of {t['rounds']} interleaved rounds) | "
            f"{t['samples_per_s']:,.0f} | {t['d2l_loop_samples_per_s']:,.0f} (seed 004's d2l loop) | "
            f"{t['ratio_vs_d2l_loop']:.2f}x |"
        )
        lines.append(
            f"| fraction of the SGEMM roof ({t['sgemm_gflops']:.0f} GFLOP/s / "
            f"{t['flops_per_sample'] / 1e6:.3f} MFLOP per sample = {t['roof_samples_per_s']:,.0f} "
            f"samples/s) | {100 * t['roof_fraction']:.1f} % | | |"
        )
        if "keras_samples_per_s" in t:
            v = t["keras_versions"]
            lines.append(
                f"| training, seed 002's net (samples/s) | {t['lenet_keras_net_samples_per_s']:,.0f} | "
                f"{t['keras_samples_per_s']:,.0f} (Keras {v['keras']} fit, TF {v['tensorflow']}) | "
                f"{t['ratio_vs_keras']:.2f}x |"
            )
    a = result.get("accuracy")
    if a:
        accs = ", ".join(f"{r['test_acc']:.4f}" for r in a["runs"])
        walls = ", ".join(f"{r['wall_seconds']:.1f}" for r in a["runs"])
        lines.append(
            f"| time to accuracy, `fast` recipe ({a['model']}, {a['params']:,} params, {a['epochs']} "
            f"epochs): mean test acc over seeds ({accs}) | {100 * a['mean_test_acc']:.2f} % in "
            f"{a['mean_wall_seconds']:.1f} s wall (runs: {walls} s) | issue 17: 99.0 % in 3.0 s | |"
        )
    i = result.get("inference")
    if i:
        for model, v in i["batch"].items():
            lines.append(
                f"| batch inference, {model}, 10,000 test images (images/s, `lenet.train.loop.evaluate`) | "
                f"{v['evaluate']:,.0f} | {v['pytorch_forward']:,.0f} (the same model's PyTorch forward) | "
                f"{v['evaluate'] / v['pytorch_forward']:.2f}x |"
            )
        s = i["single"]
        cli = f"; `lenet predict` command {s['cli_wall_seconds']:.2f} s wall" if "cli_wall_seconds" in s else ""
        lines.append(
            f"| one image through `lenet predict`'s preprocessing (ms, median) | {s['total_ms']:.2f} "
            f"({s['preprocess_ms']:.2f} preprocessing){cli} | | |"
        )
    notes = result.get("train", {}).get("notes", [])
    lines += [""] + [f"Note: {n}" for n in notes] if notes else []
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=os.environ.get("LENET_DATA"), help="data root holding mnist/")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds of the side-by-side")
    parser.add_argument("--steps", type=int, default=40, help="batches per contestant per round")
    parser.add_argument("--keras", metavar="PYTHON", help="a Python with tensorflow (default: this one if it has)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="time-to-accuracy seeds")
    parser.add_argument("--target-acc", type=float, default=0.99)
    parser.add_argument("--threads", type=int, help="PyTorch threads, here and in the timed commands")
    parser.add_argument("--skip", nargs="*", default=[], choices=("train", "accuracy", "inference"))
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for the .json and .md results")
    args = parser.parse_args(argv)
    if not args.root or not (Path(args.root) / "mnist").is_dir():
        parser.error("--root must name a data root holding mnist/ (lenet data download mnist --root ROOT)")
    if args.threads:
        torch.set_num_threads(args.threads)
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # for the `lenet` commands it times
    now = datetime.now(timezone.utc)
    result = {
        "date": now.strftime("%Y-%m-%d %H:%M UTC"),
        "command": " ".join(["python", "benchmarks/bench.py", *(argv if argv is not None else sys.argv[1:])]),
        "machine": machine(),
        "load_average": [os.getloadavg()[0]],  # at the start and the end: other processes' share of the cores
    }
    work = Path(tempfile.mkdtemp(prefix="lenet-bench-"))
    try:
        if "train" not in args.skip:
            result["train"] = side_by_side("mnist", args.root, rounds=args.rounds, steps=args.steps,
                                           keras=args.keras, log=log)  # fmt: skip
            print(format_report(result["train"]))
        run_dir = None
        if "accuracy" not in args.skip:
            result["accuracy"] = time_to_accuracy(args.root, args.seeds, args.target_acc, work)
            run_dir = result["accuracy"]["runs"][0]["run_dir"]
        if "inference" not in args.skip:
            result["inference"] = {
                "batch": batch_inference(args.root, args.rounds),
                "single": single_image(args.root, run_dir, work),
            }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result["load_average"].append(os.getloadavg()[0])
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"{now.strftime('%Y-%m-%d')}-{platform.node() or 'host'}-{torch.get_num_threads()}t"
    (args.out / f"{stem}.json").write_text(json.dumps(result, indent=1) + "\n")
    table = markdown(result)
    (args.out / f"{stem}.md").write_text(table)
    print(table)
    print(f"wrote {args.out / stem}.json and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
