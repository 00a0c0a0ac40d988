"""Small kinds for checking a queue and its workers: echo, sleep, fail, crash.

    sched add echo --name hello -p message=hi
    sched add sleep --name nap -p seconds=30
"""

from __future__ import annotations

import os
import time

from pydantic import BaseModel, ConfigDict, Field

from .context import JobContext, Preempted


class EchoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    message: str = "hello"  # printed to the job's log
    metric: float | None = None  # logged as metric `value` when given
    write_file: str | None = None  # a file name under the output folder to write the message to


class SleepParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seconds: float = Field(default=1.0, ge=0)  # how long to sleep, in steps of 0.05 s
    marker: str | None = None  # a file to append this job's name to when it starts (tests)


class FailParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    message: str = "failing on purpose"  # the error the job raises


class CrashParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    exit_code: int = 3  # passed to os._exit: no clean-up, no Python exception
    unless_file: str | None = None  # crash only when this file does not exist (creates it first)


def echo(params: EchoParams, ctx: JobContext) -> None:
    print(params.message, flush=True)
    if params.metric is not None:
        ctx.log_metric("value", params.metric)
    if params.write_file:
        path = ctx.output_dir / params.write_file
        path.write_text(params.message)
        ctx.add_artifact(params.write_file, path)


def sleep(params: SleepParams, ctx: JobContext) -> None:
    if params.marker:
        with open(params.marker, "a") as fh:
            fh.write(ctx.name + "\n")
    deadline = time.monotonic() + params.seconds
    steps = max(1, int(params.seconds / 0.05))
    for step in range(steps):
        if ctx.should_stop():
            raise Preempted(f"stopped after {step} of {steps} steps")
        ctx.progress(step + 1, steps, "sleeping")
        time.sleep(max(0.0, min(0.05, deadline - time.monotonic())))
    print(f"slept {params.seconds}s", flush=True)


def fail(params: FailParams, ctx: JobContext) -> None:
    raise RuntimeError(params.message)


def crash(params: CrashParams, ctx: JobContext) -> None:
    if params.unless_file:
        if os.path.exists(params.unless_file):
            print("marker present: not crashing", flush=True)
            return
        open(params.unless_file, "w").close()
    os._exit(params.exit_code)


PARAMS = {"echo": EchoParams, "sleep": SleepParams, "fail": FailParams, "crash": CrashParams}
RUNNERS = {"echo": echo, "sleep": sleep, "fail": fail, "crash": crash}
