"""Training: the loop, the run (folder, checkpoints, resume, summary), data-parallel processes, reports, plots."""

from .loop import (
    History,
    TrainState,
    build_model,
    evaluate,
    fit,
    load_data,
    make_optimizer,
    make_step,
    predict_split,
    select_device,
    train,
)  # fmt: skip

__all__ = [
    "History", "TrainState", "build_model", "evaluate", "fit", "load_data", "make_optimizer", "make_step",
    "predict_split", "select_device", "train",
]  # fmt: skip
