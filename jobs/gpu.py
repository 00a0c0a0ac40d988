"""A job's GPU from inside its runner: the share it may use, the peak it reached, out-of-memory.

The worker never imports torch; the runner does this around each job on a GPU (SCHED_DEVICE=cuda).
A job placed on a shared GPU (SCHED_GPU_SHARE_MIB) has torch's allocator capped at its share less
the CUDA context the process holds outside the allocator (SCHED_GPU_CONTEXT_MIB), so a job that
outgrows its declared size fails with a CUDA out-of-memory error itself instead of taking memory
from its neighbours; the worker then queues it again for a whole GPU.

A job on a GPU slot whose CUDA does not work fails at once (CudaUnusable): training on the CPU
while holding a GPU would take 10-100x longer and keep the GPU from jobs that could use it.
"""

from __future__ import annotations

import os
import sys

from pipeline.errors import InputError

SHARE_ENV = "SCHED_GPU_SHARE_MIB"
CONTEXT_ENV = "SCHED_GPU_CONTEXT_MIB"
MIN_CAP_MIB = 64

class CudaUnusable(InputError):
    """A job on a GPU slot found no working CUDA: it is not run on the CPU in its place."""


def on_gpu() -> bool:
    return os.environ.get("SCHED_DEVICE") == "cuda"


def share_mib() -> int | None:
    value = os.environ.get(SHARE_ENV)
    return int(value) if value else None


def allocator_cap_mib() -> int | None:
    """What torch's allocator may hold on a shared GPU: the share less the CUDA context."""
    share = share_mib()
    if share is None:
        return None
    return max(MIN_CAP_MIB, share - int(os.environ.get(CONTEXT_ENV) or 0))


def require_cuda() -> None:
    """On a GPU slot, CUDA must work; raise CudaUnusable with the reason otherwise."""
    if not on_gpu():
        return
    import torch

    if torch.cuda.is_available():
        return
    try:  # is_available() only says no; initialising says why (driver too old, no device, ...)
        torch.cuda.init()
        reason = "torch.cuda.is_available() is False"
    except Exception as exc:  # noqa: BLE001 - the reason is the message
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    raise CudaUnusable(
        f"CUDA is not usable on GPU slot {os.environ.get('SCHED_SLOT', '?')} "
        f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '')!r}): {reason}. "
        f"torch {torch.__version__} is built for CUDA {torch.version.cuda}; check the driver with nvidia-smi. "
        "The job was not run on the CPU in its place.")


def prepare(in_process: bool) -> None:
    """Before the job: forget earlier peaks; cap the allocator to the job's share of a shared GPU.

    `in_process`: the kind runs torch in this process. Others (a shell job's program) get nothing
    here: starting CUDA in the runner would hold GPU memory outside the share and tie the runner,
    which may take the next job on another GPU, to this one."""
    if not on_gpu() or not in_process:
        return
    import torch

    require_cuda()
    if torch.cuda.is_initialized():  # a fresh runner has no peaks, and resetting them needs CUDA started
        for device in range(torch.cuda.device_count()):
            torch.cuda.reset_peak_memory_stats(device)
    cap = allocator_cap_mib()
    if cap is not None:
        total = torch.cuda.get_device_properties(0).total_memory / 2**20
        torch.cuda.set_per_process_memory_fraction(min(1.0, cap / total), 0)


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
    """A CUDA out-of-memory error: torch's type, or the wording of CUDA, cuBLAS, cuDNN or NCCL,
    also when wrapped in another error's chain."""
    from pipeline.oom import is_out_of_memory as matches

    return matches(exc)
