"""Many runs from one command: seeds and settings swept here in parallel or on a Ray cluster, their report,
and `lenet reproduce` (every seed recipe and the 1998 paper over seeds, written up as REPRODUCE.md).

    lenet.run_sweep("fast", seeds="0-9", settings=["lr=0.1,0.2"], out="runs/lr")  -> SweepResult
    lenet.sweep_report("runs/lr")                                                -> SweepReport (Jupyter: inline)
    lenet.reproduce(seeds=5, out="runs/reproduce")                               -> REPRODUCE.md

Modules: spec (what is asked, sweep.json), worker (one run in any process), local (worker processes),
cluster (Ray tasks), progress, runner (run_sweep, execute), report, reproduce.
"""

# `lenet reproduce`'s defaults (here, so that the command line's --help can state them without torch).
DEFAULT_SEEDS = 5
# The 1998 rows train 20 passes of per-4-sample SDLM steps with no fast path, ~20 minutes a run on one core:
# two seeds each keep the default under an hour on 2 cores (docs/sweeps.md has the budget).
DEFAULT_PAPER_SEEDS = 2
QUICK_STEPS = 30  # --quick: every run stops after this many steps (a smoke test of the whole pipeline)
