"""`lenet reproduce --seeds 2 --quick` on the real MNIST: every row's sweep, REPRODUCE.md, its figure; resumable."""

from __future__ import annotations

import json

import pytest

from lenet.cli import main
from lenet.config import RECIPES
from lenet.sweep import DEFAULT_PAPER_SEEDS, DEFAULT_SEEDS, QUICK_STEPS
from lenet.sweep.reproduce import ROWS, plan


def table(text: str) -> list[list[str]]:
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    return [[c.strip() for c in line.strip("|").split("|")] for line in lines[1:]]


def test_the_default_plan_runs_every_row_with_its_seeds(real_root):
    planned = plan(root=real_root)
    assert [row.name for row, _ in planned] == [row.name for row in ROWS]
    for row, spec in planned:
        n = DEFAULT_PAPER_SEEDS if row.recipe == "lecun98" else DEFAULT_SEEDS
        assert spec.seeds == list(range(n)) and spec.max_steps is None
        assert spec.recipe in RECIPES
    assert [spec.fixed for row, spec in planned if row.name == "lecun98-distort"][0]["distort"] is True
    quick = plan(2, quick=True, root=real_root)
    assert all(spec.max_steps == QUICK_STEPS and spec.seeds == [0, 1] for _, spec in quick)


def test_reproduce_quick_writes_the_table_the_figure_and_a_sweep_per_row(real_root, tmp_path, capsys):
    out, report = tmp_path / "reproduce", tmp_path / "docs-here" / "REPRODUCE.md"
    report.parent.mkdir()
    args = ["reproduce", "--seeds", "2", "--quick", "--root", str(real_root), "--device", "cpu", "--out", str(out),
            "--report", str(report)]  # fmt: skip
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "18 runs: 0 finished, 0 to resume, 18 to start" in captured.err
    text = (out / "REPRODUCE.md").read_text()
    assert text.startswith("# Reproducing the seed notebooks and the 1998 paper")
    assert f"every run stopped after {QUICK_STEPS} steps" in text and "Machine: " in text
    rows = table(text)
    assert len(rows) == len(ROWS)
    fashion = (real_root / "fashion-mnist").is_dir()
    for cells, row in zip(rows, ROWS, strict=True):
        recipe = RECIPES[row.recipe]
        assert cells[0].startswith(f"`{row.recipe}") and cells[1] == recipe.seed
        wanted = recipe.settings["dataset"]
        assert cells[3] == (wanted if wanted == "mnist" or fashion else "mnist (for fashion-mnist)")
        assert cells[4] == "2" and " ± " in cells[5]  # two seeds: a mean and a spread
    assert "| `lecun98` | paper | 0.95 % test error |" in text
    assert "| `lecun98 --distort` | paper | 0.8 % test error |" in text
    assert (out / "reproduce.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # --report: the same text, its figure in the docs/ folder beside it
    assert report.with_suffix(".png").is_file()
    assert "](REPRODUCE.png)" in report.read_text()
    assert table(report.read_text()) == rows

    for row in ROWS:  # each row a sweep folder, with its report
        assert json.loads((out / row.name / "sweep.json").read_text())["row"] == row.name
    assert main(["sweep", "report", str(out / "fast")]) == 0
    assert "| fast | 2 |" in capsys.readouterr().out

    wall = json.loads((out / "reproduce.json").read_text())["seconds"]
    assert main(args) == 0  # again: nothing left to train, the same report
    assert "18 runs: 18 finished, 0 to resume, 0 to start" in capsys.readouterr().err
    assert json.loads((out / "reproduce.json").read_text())["seconds"] == wall
    assert table((out / "REPRODUCE.md").read_text()) == rows


def test_an_unknown_row_is_one_line(tmp_path, capsys):
    assert main(["reproduce", "--rows", "fast,nope", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "unknown row 'nope'" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("flag", ["--seeds", "--paper-seeds"])
def test_bad_seed_counts_are_one_line(flag, tmp_path, capsys):
    assert main(["reproduce", flag, "x", "--out", str(tmp_path / "r")]) == 2
    assert "expected N" in capsys.readouterr().err
