"""`lenet sweep report DIR`: per setting, mean ± std (min, max, n) of the final test accuracy and error, train
loss, time and throughput, as a Markdown table, a CSV and a figure; a SweepReport also shows inline in Jupyter.

The std is the sample standard deviation over seeds (n - 1 in the denominator); with one seed there is none.
"""

from __future__ import annotations

import base64
import csv
import io
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import LenetError
from ..train.checkpoint import METRICS, SUMMARY, read_json
from ..train.figure import Plot, new_figure, png_bytes
from .spec import Job, format_value, read_spec
from .worker import DONE, job_state

REPORT_MD, REPORT_CSV, REPORT_PNG = "report.md", "report.csv", "report.png"
# (key in a run's summary, column title, how a value prints)
MEASURES = [
    ("test_acc", "test acc", "{:.4f}"),
    ("test_error", "test error %", "{:.2f}"),
    ("train_loss", "train loss", "{:.4f}"),
    ("train_seconds", "train time s", "{:.1f}"),
    ("examples_per_sec", "examples/s", "{:,.0f}"),
]


@dataclass
class Stats:
    """mean, std (None for one value), min, max and n of some numbers."""

    values: list[float]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values) if self.values else math.nan

    @property
    def std(self) -> float | None:
        return statistics.stdev(self.values) if self.n > 1 else None

    def format(self, fmt: str, spread: bool = True) -> str:
        if not self.values:
            return "—"
        text = fmt.format(self.mean)
        return text + (f" ± {fmt.format(self.std)}" if spread and self.std is not None else "")


@dataclass
class Group:
    """The runs of one setting (all its seeds)."""

    name: str  # "lr=0.1,batch_size=128" ("" when only seeds are swept)
    setting: dict
    runs: list[dict] = field(default_factory=list)  # {"name", "seed", "summary", "epochs": [records]}

    def stats(self, key: str) -> Stats:
        values = [_measure(r["summary"], key) for r in self.runs]
        return Stats([v for v in values if v is not None])


def _measure(summary: dict, key: str) -> float | None:
    if key == "test_error":
        acc = summary.get("test_acc")
        return None if acc is None else 100.0 * (1.0 - acc)
    value = summary.get(key)
    return float(value) if isinstance(value, int | float) else None


def _curve(folder: Path) -> list[dict]:
    """The complete epochs of a run's metrics.csv, as numbers."""
    try:
        with open(folder / METRICS, newline="") as f:
            rows = [r for r in csv.DictReader(f) if r.get("partial") not in ("True", "1")]
    except (OSError, csv.Error):
        return []
    out = []
    for row in rows:
        record = {}
        for k, v in row.items():
            try:
                record[k] = float(v)
            except (TypeError, ValueError):
                continue
        out.append(record)
    return out


@dataclass
class SweepReport:
    """A sweep's results by setting: `.markdown()`, `.csv()`, `.figure()`, `.save()`; shows inline in Jupyter."""

    folder: Path
    recipe: str
    grid: dict
    seeds: list[int]
    groups: list[Group]
    unfinished: list[str]

    def title(self) -> str:
        swept = ", ".join(f"{k} in {{{', '.join(format_value(v) for v in vs)}}}" for k, vs in self.grid.items())
        n = sum(len(g.runs) for g in self.groups)
        return (
            f"sweep of {self.recipe}: {n} finished runs"
            + (f", {swept}" if swept else "")
            + f", seeds {_seed_text(self.seeds)}"
        )

    def rows(self) -> list[dict]:
        """One plain dict per setting: its swept values, n, and mean/std/min/max of every measure."""
        rows = []
        for g in self.groups:
            row = {"setting": g.name or "(recipe)", **{k: g.setting.get(k) for k in self.grid}, "n": len(g.runs)}
            for key, _, _ in MEASURES:
                s = g.stats(key)
                row.update({f"{key}_mean": s.mean, f"{key}_std": s.std, f"{key}_min": min(s.values, default=None),
                            f"{key}_max": max(s.values, default=None)})  # fmt: skip
            rows.append(row)
        return rows

    def markdown(self) -> str:
        header = ["setting", "n", "test acc (mean ± std)", "min", "max", "test error %", "train loss",
                  "train time s", "examples/s"]  # fmt: skip
        lines = [f"**{self.title()}**", "", "| " + " | ".join(header) + " |", "|" + "---|" * 2 + "---:|" * 7]
        for g in self.groups:
            acc = g.stats("test_acc")
            cells = [f"`{g.name}`" if g.name else self.recipe, str(len(g.runs)), acc.format("{:.4f}"),
                     f"{min(acc.values):.4f}" if acc.values else "—", f"{max(acc.values):.4f}" if acc.values else "—",
                     g.stats("test_error").format("{:.2f}"), g.stats("train_loss").format("{:.4f}"),
                     g.stats("train_seconds").format("{:.1f}"),
                     g.stats("examples_per_sec").format("{:,.0f}", False)]  # fmt: skip
            lines.append("| " + " | ".join(cells) + " |")
        if self.unfinished:
            lines += ["", f"{len(self.unfinished)} runs not finished (not in the table): {', '.join(self.unfinished)};"
                      f" continue with `lenet sweep --resume {self.folder}`"]  # fmt: skip
        return "\n".join(lines) + "\n"

    def csv(self) -> str:
        rows = self.rows()
        buf = io.StringIO()
        if rows:
            writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows({k: "" if v is None else v for k, v in r.items()} for r in rows)
        return buf.getvalue()

    def figure(self) -> Plot:
        """Test accuracy against each swept setting (mean ± std over seeds), and every seed's test-accuracy
        curve with their mean per setting."""
        keys = list(self.grid) or ["seed"]
        fig = new_figure((4.2 * (len(keys) + 1), 3.6))
        axes = fig.subplots(1, len(keys) + 1, squeeze=False)[0]
        for ax, key in zip(axes, keys, strict=False):
            self._accuracy_against(ax, key)
        self._curves(axes[-1])
        fig.suptitle(self.title(), fontsize=9)
        fig.tight_layout()
        return Plot(fig)

    def _accuracy_against(self, ax, key: str) -> None:
        if key == "seed":  # seeds only: each seed's accuracy, and the mean ± std as a band
            runs = sorted(self.groups[0].runs, key=lambda r: r["seed"]) if self.groups else []
            xs, ys = [r["seed"] for r in runs], [r["summary"].get("test_acc") for r in runs]
            ax.plot(xs, ys, "o")
            s = Stats([y for y in ys if y is not None])
            if s.values:
                ax.axhline(s.mean, color="C1", label=f"mean {s.mean:.4f}")
                if s.std is not None:
                    ax.axhspan(s.mean - s.std, s.mean + s.std, color="C1", alpha=0.2, label=f"± std {s.std:.4f}")
                ax.legend(fontsize=7)
            ax.set_xlabel("seed")
        else:
            values = self.grid[key]
            others = [k for k in self.grid if k != key]
            lines: dict[str, list[Group]] = {}
            for g in self.groups:
                label = ",".join(f"{k}={format_value(g.setting[k])}" for k in others)
                lines.setdefault(label, []).append(g)
            for i, (label, groups) in enumerate(lines.items()):
                pos = {format_value(v): n for n, v in enumerate(values)}
                pts = sorted((pos[format_value(g.setting[key])], g.stats("test_acc")) for g in groups)
                pts = [(x, s) for x, s in pts if s.values]
                ax.errorbar([x + 0.04 * i for x, _ in pts], [s.mean for _, s in pts],
                            yerr=[s.std or 0.0 for _, s in pts], marker="o", capsize=4,
                            label=label or None)  # fmt: skip
            ax.set_xticks(range(len(values)), [format_value(v) for v in values])
            ax.set_xlabel(key)
            if others:
                ax.legend(fontsize=7)
        ax.set_ylabel("final test accuracy")
        ax.grid(True, alpha=0.3)

    def _curves(self, ax) -> None:
        for i, g in enumerate(self.groups):
            color = f"C{i % 10}"
            curves = [c for c in (r["epochs"] for r in g.runs) if c]
            for c in curves:
                ax.plot([r["epoch"] for r in c], [r.get("test_acc", math.nan) for r in c], color=color, alpha=0.25,
                        linewidth=0.8)  # fmt: skip
            length = min((len(c) for c in curves), default=0)
            if length:
                mean = [statistics.fmean(c[e].get("test_acc", math.nan) for c in curves) for e in range(length)]
                ax.plot([curves[0][e]["epoch"] for e in range(length)], mean, color=color, linewidth=2,
                        marker="o", markersize=3, label=f"{g.name or self.recipe} (mean of {len(curves)})")  # fmt: skip
        ax.set_xlabel("epoch")
        ax.set_ylabel("test accuracy")
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:  # runs stopped inside their first epoch have no curve
            ax.legend(fontsize=7)

    def save(self, folder: Path | None = None) -> dict[str, Path]:
        """report.md, report.csv and report.png in the sweep folder (or `folder`)."""
        from ..train.checkpoint import write_bytes_atomic

        folder = Path(folder or self.folder)
        paths = {"markdown": folder / REPORT_MD, "csv": folder / REPORT_CSV, "figure": folder / REPORT_PNG}
        md = self.markdown() + f"\n![test accuracy by setting, and every seed's curve]({REPORT_PNG})\n"
        write_bytes_atomic(paths["markdown"], md.encode())
        write_bytes_atomic(paths["csv"], self.csv().encode())
        write_bytes_atomic(paths["figure"], png_bytes(self.figure().figure))
        return paths

    def _repr_markdown_(self) -> str:
        return self.markdown()

    def _repr_html_(self) -> str:
        import html

        png = base64.b64encode(png_bytes(self.figure().figure)).decode()
        rows = self.markdown().splitlines()
        table = [r for r in rows if r.startswith("|") and not r.startswith("|---")]
        cells = [[c.strip().strip("`") for c in r.strip("|").split("|")] for r in table]
        head = "".join(f"<th>{html.escape(c)}</th>" for c in cells[0]) if cells else ""
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in cells[1:])
        notes = "".join(f"<p>{html.escape(r)}</p>" for r in rows[len(table) + 3 :] if r)
        return (f"<p><b>{html.escape(self.title())}</b></p><table><tr>{head}</tr>{body}</table>{notes}"
                f'<img src="data:image/png;base64,{png}"/>')  # fmt: skip


def _seed_text(seeds: list[int]) -> str:
    if seeds and seeds == list(range(seeds[0], seeds[-1] + 1)) and len(seeds) > 2:
        return f"{seeds[0]}-{seeds[-1]}"
    return ",".join(map(str, seeds))


def collect(jobs: list[Job], recipe: str, grid: dict, seeds: list[int], folder: Path) -> SweepReport:
    """A report of the jobs' finished runs, grouped by setting."""
    groups: dict[str, Group] = {}
    unfinished = []
    for job in jobs:
        group = groups.setdefault(job.group, Group(job.group, {k: job.overrides[k] for k in grid}))
        if job_state(job.folder) != DONE:
            unfinished.append(job.name)
            continue
        summary = read_json(job.folder / SUMMARY)
        group.runs.append({"name": job.name, "folder": job.folder, "seed": job.overrides.get("seed"),
                           "summary": summary, "epochs": _curve(job.folder)})  # fmt: skip
    return SweepReport(folder, recipe, grid, seeds, [g for g in groups.values() if g.runs] or [], unfinished)


def sweep_report(folder) -> SweepReport:
    """The report of a sweep folder (what `lenet sweep report DIR` prints and saves)."""
    folder = Path(folder)
    spec = read_spec(folder)
    report = collect(spec.jobs(folder), spec.recipe, spec.grid, spec.seeds, folder)
    if not report.groups:
        raise LenetError(f"{folder}: no finished run yet; run the sweep (lenet sweep --resume {folder})")
    return report
