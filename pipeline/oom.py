"""Telling a CUDA out-of-memory error from other failures, however the library that hit it words it.

torch's caching allocator raises `torch.cuda.OutOfMemoryError`; memory taken outside it fails with
other wordings that mean the same: a raw CUDA call ("CUDA error: out of memory"), cuBLAS and cuDNN
workspaces (`CUBLAS_STATUS_ALLOC_FAILED`, `CUDNN_STATUS_ALLOC_FAILED`, cuDNN 9's
`..._ALLOCATION_FAILED`), NCCL's buffers ("Cuda failure 'out of memory'"). All of them are worth the
same cure: a smaller batch, or a GPU of its own.
"""

from __future__ import annotations

import re
import sys

_OOM_TEXT = re.compile(
    r"CUDA out of memory|CUDA error: out of memory|CUBLAS_STATUS_ALLOC_FAILED|CUDNN_STATUS_ALLOC_FAILED"
    r"|CUDNN_STATUS_\w*ALLOCATION_FAILED|Cuda failure 'out of memory'|cudaErrorMemoryAllocation"
    r"|NCCL[^\n]*out of memory", re.IGNORECASE)


def is_out_of_memory(exc: BaseException | None) -> bool:
    """Whether `exc`, or an error in its chain, is a CUDA out-of-memory error."""
    torch = sys.modules.get("torch")  # never imported here: a process without torch had no CUDA error
    seen = 0
    while exc is not None and seen < 10:
        if torch is not None and isinstance(exc, torch.cuda.OutOfMemoryError):
            return True
        if _OOM_TEXT.search(str(exc)):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False
