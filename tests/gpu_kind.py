"""A job kind for the GPU placement tests (loaded through $SCHED_KINDS=tests.gpu_kind): it writes
the devices its runner gave it to `<out>/<name>.<attempt>.json`, then sleeps (stopping when asked).
With `oom_when_shared` it fails the way torch does when a shared GPU runs out of memory.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from jobs.context import JobContext, Preempted
from jobs.registry import Kind

ENV_KEYS = ("CUDA_VISIBLE_DEVICES", "SCHED_DEVICE", "SCHED_SLOT", "SCHED_PROCESSES", "SCHED_GPU_SHARE_MIB")


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    out: str
    seconds: float = 0.0
    size: str = "base"  # stands for the model and batch: what decides its memory
    oom_when_shared: bool = False


def run(params: Params, ctx: JobContext) -> None:
    seen = {key: os.environ.get(key) for key in ENV_KEYS}
    Path(params.out, f"{ctx.name}.{ctx.attempt}.json").write_text(json.dumps(seen))
    if params.oom_when_shared and seen["SCHED_GPU_SHARE_MIB"]:
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
    deadline = time.monotonic() + params.seconds
    while time.monotonic() < deadline:
        if ctx.should_stop():
            raise Preempted("asked to stop")
        time.sleep(0.05)


KIND = Kind("gpu_probe", Params, run, summary="report the devices a GPU job was given (tests)",
            gpus=1, multi_gpu=True, memory_params=("size",))
