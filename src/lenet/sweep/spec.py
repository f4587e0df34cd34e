"""What a sweep asks for: seeds and settings parsed from the command line, the runs they make, sweep.json.

A sweep is a recipe, some fixed overrides, a grid of swept settings and a list of seeds; its runs are the
product of the grid times the seeds, each a normal run folder inside the sweep folder, named after what it
changes (`lr=0.1,batch_size=128,seed=3`). sweep.json records what was asked, so that running the sweep again
(or `lenet sweep --resume DIR`) keeps the finished runs, resumes the interrupted ones and starts the rest.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path

from ..config import Config, resolve
from ..errors import LenetError

SWEEP_FILE = "sweep.json"
# Settings that a sweep sets itself, or that are not one value: not for --set.
NOT_SETTABLE = {"recipe": "give the recipe as the first argument", "seed": "use --seeds",
                "lr_factors": "it is a list", "model_kwargs": "it is a dict"}  # fmt: skip
_TRUE, _FALSE = ("true", "yes", "1", "on"), ("false", "no", "0", "off")


def parse_seeds(text: str) -> list[int]:
    """'10' -> the first 10 seeds (0-9); '0-9', '3-3' -> inclusive ranges; '0,2,5-7' -> a list of those."""
    text = str(text).strip()
    if text.isdigit():
        count = int(text)
        if count < 1:
            raise LenetError("--seeds 0: at least one seed is needed")
        return list(range(count))
    seeds: list[int] = []
    for part in text.split(","):
        low, dash, high = part.strip().partition("-")
        try:
            first, last = int(low), int(high if dash else low)
        except ValueError:
            raise LenetError(f"--seeds {text!r}: expected N (the first N seeds), A-B or a list like 0,2,5-7") from None
        if first < 0 or last < first:
            raise LenetError(f"--seeds {text!r}: {part.strip()!r} is not a range of seeds >= 0")
        seeds += [s for s in range(first, last + 1) if s not in seeds]
    return seeds


def _field_types() -> dict[str, str]:
    return {f.name: f.type for f in dataclasses.fields(Config)}


def _value(key: str, kind: str, text: str):
    """One --set value as the type of its Config field."""
    text = text.strip()
    try:
        if kind == "int":
            return int(text)
        if kind == "float":
            return float(text)
    except ValueError:
        raise LenetError(f"--set {key}: {text!r} is not a {'whole number' if kind == 'int' else 'number'}") from None
    if kind == "bool":
        if text.lower() in _TRUE + _FALSE:
            return text.lower() in _TRUE
        raise LenetError(f"--set {key}: {text!r} is not true or false")
    return text


def parse_settings(pairs: list[str] | None) -> tuple[dict, dict]:
    """--set KEY=V1,V2 ... -> (fixed: settings with one value, grid: settings with several), typed."""
    fixed, grid = {}, {}
    types = _field_types()
    for pair in pairs or []:
        key, sep, text = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key or not text.strip():
            raise LenetError(f"--set {pair!r}: expected KEY=VALUE or KEY=V1,V2,... e.g. lr=0.05,0.1")
        if key in NOT_SETTABLE:
            raise LenetError(f"--set {key}: not a setting to sweep ({NOT_SETTABLE[key]})")
        if key not in types:
            raise LenetError(
                f"--set {key}: unknown setting; known: {', '.join(k for k in types if k not in NOT_SETTABLE)}"
            )
        if key in fixed or key in grid:
            raise LenetError(f"--set {key} is given twice; list its values once: {key}=A,B")
        values = [_value(key, types[key], t) for t in text.split(",")]
        if len(set(map(repr, values))) < len(values):
            raise LenetError(f"--set {pair!r}: a value is listed twice")
        if len(values) == 1:
            fixed[key] = values[0]
        else:
            grid[key] = values
    return fixed, grid


def format_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else str(value)


def run_name(setting: dict, seed: int) -> str:
    """The run folder's name: what it changes, then its seed (`lr=0.1,batch_size=128,seed=3`)."""
    return ",".join([*(f"{k}={format_value(v)}" for k, v in setting.items()), f"seed={seed}"])


@dataclass(frozen=True)
class Job:
    """One run of a sweep: its folder, recipe and overrides (the seed among them)."""

    folder: Path
    recipe: str
    overrides: dict
    max_steps: int | None = None
    group: str = ""  # the setting it belongs to (the name less the seed); a report's row
    label: str = ""  # how progress lines name it (default: its folder's name)

    @property
    def name(self) -> str:
        return self.label or self.folder.name

    @property
    def key(self) -> str:
        """What identifies it among a sweep's jobs, and its result among theirs."""
        return str(self.folder)

    def config(self) -> Config:
        return resolve(self.recipe, **self.overrides)


@dataclass
class SweepSpec:
    """sweep.json: what a sweep asked for."""

    recipe: str
    seeds: list[int]
    grid: dict = field(default_factory=dict)
    fixed: dict = field(default_factory=dict)
    max_steps: int | None = None
    command: str = ""

    def settings(self) -> list[dict]:
        """Every combination of the grid's values, in the order given (one empty setting without a grid)."""
        keys = list(self.grid)
        return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*self.grid.values())]

    def jobs(self, folder: Path) -> list[Job]:
        jobs = []
        for setting in self.settings():
            group = ",".join(f"{k}={format_value(v)}" for k, v in setting.items())
            for seed in self.seeds:
                overrides = {**self.fixed, **setting, "seed": seed}
                jobs.append(Job(folder / run_name(setting, seed), self.recipe, overrides, self.max_steps, group))
        return jobs

    def check(self) -> None:
        """Every run's config resolves (a bad value is one line before anything starts)."""
        for setting in self.settings():
            resolve(self.recipe, **self.fixed, **setting, seed=self.seeds[0])

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict, source: Path) -> SweepSpec:
        try:
            known = {f.name for f in dataclasses.fields(cls)}
            spec = cls(**{k: v for k, v in d.items() if k in known})
            spec.seeds = [int(s) for s in spec.seeds]
        except (TypeError, ValueError) as e:
            raise LenetError(f"{source}: not a lenet sweep file ({e})") from None
        return spec

    def same_sweep(self, other: SweepSpec) -> str | None:
        """Why `other` (asked now) cannot continue this one (recorded), or None when it can."""
        for name in ("recipe", "fixed", "max_steps"):
            mine, theirs = getattr(self, name), getattr(other, name)
            if mine != theirs:
                return f"it holds a sweep with {name} {mine!r}, not {theirs!r}"
        if list(self.grid) != list(other.grid):
            return f"it sweeps {', '.join(self.grid) or 'seeds only'}, not {', '.join(other.grid) or 'seeds only'}"
        return None

    def merged(self, other: SweepSpec) -> SweepSpec:
        """This sweep grown by what `other` asks for more (more seeds, more values of a swept setting)."""
        grid = {k: v + [x for x in other.grid[k] if x not in v] for k, v in self.grid.items()}
        seeds = self.seeds + [s for s in other.seeds if s not in self.seeds]
        return dataclasses.replace(self, grid=grid, seeds=seeds, command=other.command or self.command)


def read_spec(folder: Path) -> SweepSpec:
    path = Path(folder) / SWEEP_FILE
    if not path.is_file():
        raise LenetError(f"{folder}: no {SWEEP_FILE} here; is it a lenet sweep folder?")
    try:
        d = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise LenetError(f"{path}: unreadable ({e})") from None
    if not isinstance(d, dict):
        raise LenetError(f"{path}: not a lenet sweep file")
    return SweepSpec.from_dict(d, path)


def write_spec(folder: Path, spec: SweepSpec, extra: dict | None = None) -> None:
    from ..train.checkpoint import write_bytes_atomic

    data = {**spec.to_dict(), **(extra or {})}
    write_bytes_atomic(Path(folder) / SWEEP_FILE, (json.dumps(data, indent=2) + "\n").encode())
