"""What every subcommand shares: argument types whose errors are one line, the parser classes, common flags."""

from __future__ import annotations

import argparse
import math

PROGRAM = False  # running as the `lenet` program (not main() from Python): a stopped run ignores further Ctrl-C's
# Set by a command that leaves nothing to clean up (its files written, closed and fsynced; no threads, children
# or servers): the program then exits without Python's teardown, whose unloading of torch and matplotlib is a
# tenth of the `fast` recipe's run (README, Speed).
QUICK_EXIT = False

# ----------------------------------------------------------------------------------------------------------
# Argument types: a bad value is one line from argparse, exit 2


def _number(kind, low=None, low_open=False, high=None):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a valid {kind.__name__}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
        if low is not None and (value <= low if low_open else value < low):
            raise argparse.ArgumentTypeError(f"{text} must be {'>' if low_open else '>='} {low}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"{text} must be <= {high}")
        return value

    parse.__name__ = kind.__name__
    return parse


positive_int = _number(int, 1)
non_negative_int = _number(int, 0)
positive_float = _number(float, 0, low_open=True)
non_negative_float = _number(float, 0)
fraction = _number(float, 0, high=1)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """States every real default; flags off by default and recipe overrides (None: the recipe's) say nothing."""

    def _get_help_string(self, action):
        if action.default in (None, False) or action.default is argparse.SUPPRESS:
            return action.help
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is a single line."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def data_args(p) -> None:
    p.add_argument("--root", help="data root (default: $LENET_DATA, else ~/.cache/lenet)")
    p.add_argument("--no-verify", action="store_true", help="use data files whose checksums do not match")


def device_arg(p) -> None:
    p.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda[:N] or mps")
