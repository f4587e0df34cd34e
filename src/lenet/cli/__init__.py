"""The `lenet` command line: argparse subcommands; main(argv) returns the exit status.

Exit status: 0 success, 1 a missed --target-acc, 2 bad input (one line on stderr, never a traceback), 130 Ctrl-C.
Each module of this package parses its subcommands' arguments, calls the library and prints: training (train,
eval, predict, activations), serving (serve, export), info (models, inspect, recipes, bench, data), sweeping
(sweep, reproduce).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

from .. import __version__
from ..errors import LenetError
from . import common, info, serving, sweeping, training
from .common import HelpFormatter, Parser


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="lenet", description="LeNet-family CNNs on MNIST-style data.", formatter_class=HelpFormatter)
    parser.add_argument("--version", action="version", version=f"lenet {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    def add(name, help_text, func):
        p = sub.add_parser(name, help=help_text, description=help_text, formatter_class=HelpFormatter)
        p.set_defaults(func=func)
        return p

    for module in (training, serving, info, sweeping):
        module.add_parsers(add)
    return parser


def entry() -> None:
    """The `lenet` program (lenet.program.run): main() with the exit status."""
    common.PROGRAM = True
    code = main()
    if common.QUICK_EXIT:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except OSError:  # a closed pipe (`lenet train | head`): nothing more can be said
            pass
        os._exit(code)
    sys.exit(code)


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        args.argv = list(sys.argv[1:] if argv is None else argv)  # `train --nproc N` runs them under torchrun
        return args.func(args)
    except LenetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `lenet ... | head`: the reader left; stop quietly, as a command killed by SIGPIPE
        if common.PROGRAM:  # nothing more can reach it, the interpreter's last flush included
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    except KeyboardInterrupt as e:  # Ctrl-C anywhere, start-up included: one line (a run says what it kept)
        if common.PROGRAM:  # another Ctrl-C while the program exits must not become a traceback
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        print(str(e) or "interrupted", file=sys.stderr)
        return 130
