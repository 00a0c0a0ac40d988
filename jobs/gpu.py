"""A job's GPU from inside its runner: the share it may use, the peak it reached, out-of-memory.

The worker never imports torch; the runner does this around each job on a GPU (SCHED_DEVICE=cuda).
A job placed on a shared GPU (SCHED_GPU_SHARE_MIB) has torch's allocator capped at its share, so
a job that outgrows its declared size fails with a CUDA out-of-memory error itself instead of
taking memory from its neighbours; the worker then queues it again for a whole GPU.
"""

from __future__ import annotations

import os
import sys

SHARE_ENV = "SCHED_GPU_SHARE_MIB"


def on_gpu() -> bool:
    return os.environ.get("SCHED_DEVICE") == "cuda"


def share_mib() -> int | None:
    value = os.environ.get(SHARE_ENV)
    return int(value) if value else None


def prepare(in_process: bool) -> None:
    """Before the job: forget earlier peaks; cap the allocator to the job's share of a shared GPU.

    `in_process`: the kind runs torch in this process. Others (a shell job's program) get nothing
    here: starting CUDA in the runner would hold GPU memory outside the share and tie the runner,
    which may take the next job on another GPU, to this one."""
    if not on_gpu() or not in_process:
        return
    import torch

    if not torch.cuda.is_available():
        return
    if torch.cuda.is_initialized():  # a fresh runner has no peaks, and resetting them needs CUDA started
        for device in range(torch.cuda.device_count()):
            torch.cuda.reset_peak_memory_stats(device)
    share = share_mib()
    if share is not None:
        total = torch.cuda.get_device_properties(0).total_memory / 2**20
        torch.cuda.set_per_process_memory_fraction(min(1.0, share / total), 0)


def cuda_started() -> bool:
    """CUDA is initialised in this process: it is tied to its devices and must not take another job."""
    torch = sys.modules.get("torch")
    return torch is not None and torch.cuda.is_initialized()


def peak_mib() -> int | None:
    """The most memory torch reserved on any of the job's GPUs (MiB), if the job used CUDA."""
    torch = sys.modules.get("torch")
    if torch is None or not on_gpu() or not torch.cuda.is_initialized():
        return None
    peaks = [torch.cuda.max_memory_reserved(d) for d in range(torch.cuda.device_count())]
    return int(max(peaks, default=0) // 2**20) or None


def is_out_of_memory(exc: BaseException) -> bool:
    """A CUDA out-of-memory error (torch's type, or one wrapped in another error's chain)."""
    torch = sys.modules.get("torch")
    seen = 0
    while exc is not None and seen < 10:
        if torch is not None and isinstance(exc, torch.cuda.OutOfMemoryError):
            return True
        if "CUDA out of memory" in str(exc):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False
