"""The few lines that make torchrun / DDP work: one process per rank, gloo on the CPU, nccl on CUDA.

torchrun gives each worker RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT in its environment.
Without them this is a single process, and every function here is a no-op.
"""

from __future__ import annotations

import atexit
import os
import signal
from dataclasses import dataclass

import torch
import torch.distributed as tdist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..errors import LenetError


@dataclass(frozen=True)
class Rank:
    """This process's place in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Only the main rank prints and writes files."""
        return self.rank == 0


def launched() -> bool:
    """True in a worker that torchrun started."""
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def main_process() -> bool:
    """True but in torchrun's workers of rank > 0 (which print and write nothing)."""
    return not launched() or os.environ.get("RANK", "0") == "0"


def init(device: torch.device) -> tuple[Rank, torch.device]:
    """Join torchrun's process group (gloo on the CPU, nccl on CUDA): (this process's rank, its device)."""
    if not launched():
        return Rank(), device
    me = Rank(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"]))
    if device.type == "cuda":
        device = torch.device("cuda", me.local_rank)
        torch.cuda.set_device(device)
    elif device.type != "cpu":
        raise LenetError(f"multi-process training runs on cpu (gloo) or cuda (nccl), not {device.type}")
    if not tdist.is_initialized():
        tdist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        atexit.register(finish)
    return me, device


def finish() -> None:
    if tdist.is_initialized():
        tdist.destroy_process_group()


def leave() -> None:
    """A run's normal end under torchrun: wait for every rank, then leave the process group. Left to the
    interpreter's exit, the group's C++ threads were sometimes torn down in the wrong order and a rank aborted
    ("terminate called without an active exception", exit -6: 1 run in 8 of tests/test_dist.py)."""
    if tdist.is_initialized():
        tdist.barrier()
        tdist.destroy_process_group()


def wrap(model: nn.Module) -> nn.Module:
    """DistributedDataParallel around `model`: backward averages the gradients over the ranks."""
    device = next(model.parameters()).device
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside a DDP or torch.compile wrapper, whose state-dict keys carry no prefix."""
    while True:
        if isinstance(model, DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def all_reduce(values: torch.Tensor) -> torch.Tensor:
    """The sum of `values` over all ranks (in place); `values` itself in a single process."""
    if tdist.is_initialized() and tdist.get_world_size() > 1:
        tdist.all_reduce(values)
    return values


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank when `flag` is true on any of them (so that all ranks stop at the same step)."""
    return bool(all_reduce(torch.tensor([int(flag)], device=device)).item())


def launch(nproc: int, argv: list[str]) -> int:
    """Run `lenet <argv>` as `nproc` processes under torchrun's agent (in this process); the exit status.

    The machine's cores are shared out between the processes as threads. A SIGINT or SIGTERM reaches the
    agent, which passes it on to every worker; they checkpoint and stop, and this returns 128 + the signal.
    """
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)}
    try:
        run(parse_args(["--standalone", f"--nproc-per-node={nproc}", "-m", "lenet", *argv]))
        return 0
    except SignalException as e:
        return 128 + e.sigval
    except ChildFailedError as e:  # the workers have said why on stderr
        code = e.get_first_failure()[1].exitcode
        return code if code > 0 else 128 - code  # -N: killed by signal N
    finally:
        for s, handler in handlers.items():  # the agent leaves its own handlers behind
            signal.signal(s, handler)
