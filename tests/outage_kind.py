"""A job kind for the outage tests (loaded through $SCHED_KINDS=tests.outage_kind): every `every`
seconds for `steps` steps it logs a metric, reports progress, and appends "<pid> <time>" to
`trace` (so a test can tell whether two copies of the job ever ran at once)."""

from __future__ import annotations

import os
import time

from pydantic import BaseModel, ConfigDict

from jobs.context import JobContext, Preempted
from jobs.registry import Kind


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    steps: int = 40
    every: float = 0.1
    trace: str | None = None


def run(params: Params, ctx: JobContext) -> None:
    for step in range(params.steps):
        if ctx.should_stop():
            raise Preempted("asked to stop")
        if params.trace:
            with open(params.trace, "a") as fh:
                fh.write(f"{os.getpid()} {time.time():.3f}\n")
        ctx.log_metric("step", step, step=step)
        ctx.progress(step + 1, params.steps, f"step {step + 1}")
        time.sleep(params.every)


KIND = Kind("ticker", Params, run, summary="log a metric every tick (outage tests)")
