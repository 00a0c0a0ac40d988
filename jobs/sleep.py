"""`sleep`: wait, reporting progress and honouring stop requests: a worker check.

    sched add sleep --name nap -p seconds=30
"""

from __future__ import annotations

import time

from pydantic import BaseModel, ConfigDict, Field

from .context import JobContext, Preempted
from .registry import Kind


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seconds: float = Field(default=1.0, ge=0)  # how long to sleep, in steps of 0.05 s
    marker: str | None = None  # a file to append this job's name to when it starts (tests)


def run(params: Params, ctx: JobContext) -> None:
    if params.marker:
        with open(params.marker, "a") as fh:
            fh.write(ctx.name + "\n")
    deadline = time.monotonic() + params.seconds
    steps = max(1, int(params.seconds / 0.05))
    for step in range(steps):
        if ctx.should_stop():
            raise Preempted(f"stopped after {step} of {steps} steps")
        ctx.progress(step + 1, steps, "steps of 0.05 s")
        time.sleep(max(0.0, min(0.05, deadline - time.monotonic())))
    print(f"slept {params.seconds}s", flush=True)


KIND = Kind("sleep", Params, run, summary="wait with progress; stops when asked (worker checks)")
