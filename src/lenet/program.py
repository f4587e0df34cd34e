"""The `lenet` program's first lines: a Ctrl-C while the command line is still being imported is one line too."""

import sys


def run() -> None:
    """The console script and `python -m lenet`."""
    try:
        from .cli import entry
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    entry()
