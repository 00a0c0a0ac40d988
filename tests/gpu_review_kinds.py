"""Job kinds for tests/test_gpu_review.py (loaded through $SCHED_KINDS=tests.gpu_review_kinds).

- `cuda_probe` runs torch in its runner (it preloads torch, as the training kinds do): on a GPU
  slot of this CPU-only machine its runner must find CUDA unusable and refuse to run it on the CPU.
  With `gpus: k` it runs as k torchrun ranks, each of which must refuse the same way.
- `dp_checkpoint` is data-parallel without torch: each rank waits for a stop request, then takes
  `checkpoint_s` seconds to "checkpoint" before it ends as preempted, and says so in a file.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from jobs.context import JobContext, Preempted
from jobs.registry import Kind


class ProbeParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


def probe(params: ProbeParams, ctx: JobContext) -> None:
    rank = os.environ.get("RANK", "0")
    Path(ctx.output_dir, f"ran-{rank}.json").write_text(json.dumps({"device": ctx.device}))


class CheckpointParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    checkpoint_s: float = 3.0


def checkpoint(params: CheckpointParams, ctx: JobContext) -> None:
    rank = os.environ["RANK"]
    Path(ctx.output_dir, f"started-{rank}").write_text("")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not ctx.should_stop():
        time.sleep(0.05)
    time.sleep(params.checkpoint_s)  # writing a checkpoint after the stop request
    Path(ctx.output_dir, f"checkpointed-{rank}").write_text("")
    raise Preempted(f"rank {rank} checkpointed and stopped")


KINDS = [
    Kind("cuda_probe", ProbeParams, probe, summary="runs torch in its runner (tests)", preload=("torch",),
         gpus=1, multi_gpu=True, data_parallel=True),
    Kind("dp_checkpoint", CheckpointParams, checkpoint, summary="slow checkpoint after a stop (tests)",
         multi_gpu=True, data_parallel=True),
]
