"""Which process of a data-parallel run this is, and waiting for the others.

A job with `gpus: k` on a data-parallel kind runs as k processes started by torchrun (see
scheduler/dataparallel.py); the HF Trainer turns them into one DDP run. Outside such a run every
helper here answers as the only process does (rank 0 of 1) and waits for nobody, so pipeline code
calls them unconditionally.

torch is imported only when a process group can exist (torchrun's environment says more than one
process): asking `is_main()` costs nothing in a single process.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

# The Trainer's own default `ddp_timeout`: rank 0 may download or build a model for minutes
# while the others wait at a barrier; torch's NCCL default (10 minutes) is too short for that.
GROUP_TIMEOUT = timedelta(seconds=1800)

_cpu_group = None  # a gloo group for flags when the main group is NCCL (see any_rank)


def _group():
    """torch.distributed when a process group is running here, else None."""
    if "torch" not in sys.modules:  # nothing started a group without importing torch
        return None
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() else None


def rank() -> int:
    """This process's rank: 0 in a single process."""
    dist = _group()
    return dist.get_rank() if dist is not None else int(os.environ.get("RANK", "0"))


def world_size() -> int:
    """How many processes train together: 1 in a single process."""
    dist = _group()
    return dist.get_world_size() if dist is not None else int(os.environ.get("WORLD_SIZE", "1"))


def is_main() -> bool:
    """Rank 0: the one process that writes shared files and reports."""
    return rank() == 0


def _start_group():
    """Join the process group torchrun's environment describes (the Trainer reuses it).

    Started here, before any Trainer exists, so the ranks can wait for each other while rank 0
    builds the tiny model or fills the token cache. The backend is the one the Trainer would pick:
    NCCL on GPUs, gloo on CPUs.
    """
    import torch
    import torch.distributed as dist

    if dist.is_initialized():
        return dist
    if torch.cuda.is_available():
        local = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(local)  # before NCCL starts: each rank on its own GPU
        dist.init_process_group("nccl", timeout=GROUP_TIMEOUT, device_id=local)
    else:
        dist.init_process_group("gloo", timeout=GROUP_TIMEOUT)
    return dist


def barrier() -> None:
    """Wait until every process gets here (no-op in a single process)."""
    if world_size() > 1:
        _start_group().barrier()


@contextmanager
def main_first() -> Iterator[None]:
    """Rank 0 runs the block first; the others wait, then run it (finding its files in place).

    For work whose result the others can reuse from disk: building the tiny model, tokenizing into
    the cache, downloading a model. If rank 0 fails inside the block it never releases the others:
    it exits, torchrun stops them, and the job fails with rank 0's reason.
    """
    if world_size() == 1:
        yield
        return
    # Every rank joins the group first: one that joined can tell when a peer dies, one still
    # waiting for a peer to join waits until the group's timeout.
    dist = _start_group()
    main = is_main()
    if not main:
        dist.barrier()
    yield
    if main:
        dist.barrier()


def any_rank(flag: bool) -> bool:
    """True on every process when `flag` is true on any (e.g. a stop request that reached one rank
    first): all must stop at the same step, or the others hang in their next gradient exchange.

    The flag travels over gloo on the CPU even when training uses NCCL: reading a GPU result
    every step would wait for the GPU each time.
    """
    if world_size() == 1:
        return flag
    import torch

    dist = _start_group()
    value = torch.tensor([1 if flag else 0], dtype=torch.int32)
    dist.all_reduce(value, op=dist.ReduceOp.MAX, group=_flag_group(dist))
    return bool(value.item())


def _flag_group(dist):
    global _cpu_group
    if dist.get_backend() == "gloo":
        return None  # the default group already runs on the CPU
    if _cpu_group is None:  # every rank creates it at the same step: new_group is collective
        _cpu_group = dist.new_group(backend="gloo")
    return _cpu_group
