"""`shell`: run a program (no shell involved) on the slot, so sched is also a general GPU queue.

    - name: nvidia-check
      kind: shell
      params: {argv: [nvidia-smi], env: {FOO: "1"}, cwd: /tmp}
"""

from __future__ import annotations

import os
import re
import subprocess

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .context import JobContext, Preempted
from .registry import Kind


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    argv: list[str] = Field(min_length=1)  # the program and its arguments, run without a shell
    env: dict[str, str] = Field(default_factory=dict)  # added to the worker's environment
    cwd: str | None = None  # working folder; default: the job's output folder

    @field_validator("env")
    @classmethod
    def _check_env(cls, env: dict[str, str]) -> dict[str, str]:
        for key, value in env.items():
            _check_env_entry(key, value)
        return env


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _check_env_entry(key: str, value: str) -> None:
    """Refused at submit rather than when the job starts: the runner sets SCHED_* itself (the run
    token, the database) and a job must not replace them; `A=B`, an empty name or a NUL cannot be
    passed to a program (execve takes NAME=VALUE strings ending at a NUL)."""
    shown = repr(key) if len(key) <= 60 else repr(key[:60]) + "..."
    if key.startswith("SCHED_"):
        raise ValueError(f"{shown}: SCHED_* variables are sched's own (the job's id, run token, database); "
                         "use another name")
    if not _ENV_NAME.fullmatch(key):
        raise ValueError(f"{shown} is not a variable name (letters, digits and _, not starting with a digit)")
    if "\0" in value:
        raise ValueError(f"{shown}: the value holds a NUL character, which no program can be given")


class CommandFailed(RuntimeError):
    pass


def run(params: Params, ctx: JobContext) -> None:
    env = {**os.environ, **params.env, "SCHED_OUTPUT_DIR": str(ctx.output_dir),
           "SCHED_JOB_ID": str(ctx.job_id), "SCHED_JOB_NAME": ctx.name}
    cwd = params.cwd or str(ctx.output_dir)
    if ctx.should_stop():  # asked to stop before the program started: do not start it
        raise Preempted("stopped before the program started")
    try:
        # Output goes straight to the job's log (inherited stdout/stderr). No preexec_fn: it would
        # force a slow fork of the runner; the runner kills whatever a job leaves, also when its
        # worker dies (scheduler/runner.py).
        result = subprocess.run(params.argv, env=env, cwd=cwd)
    except FileNotFoundError:
        raise CommandFailed(f"program not found: {params.argv[0]}") from None
    if result.returncode != 0:
        raise CommandFailed(f"{params.argv[0]} exited with code {result.returncode}")


# The program runs in its own process: the runner keeps nothing of it and can take the next job.
KIND = Kind("shell", Params, run, summary="run a program (no shell) on the slot's GPU or CPU", reusable=True,
            multi_gpu=True)  # a program may use every GPU it is given (its own torchrun, say)
