"""`lenet bench`: lenet's trainer side by side with the usual PyTorch loop (and Keras, when installed)."""

from .sidebyside import format_report, machine, side_by_side

__all__ = ["format_report", "machine", "side_by_side"]
