"""A data-parallel test kind without torch (loaded through $SCHED_KINDS=tests.dp_kind): each rank
records a metric, an artifact and progress, reads its own job's record, and can fail or wait for
a stop. tests/test_data_parallel.py drives it through a worker to check how the ranks of a job are
run, what they record, and how their endings reach the queue, in seconds rather than a minute."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict

from jobs.context import JobContext, Preempted
from jobs.registry import Kind


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    fail_rank: int | None = None  # this rank raises ValueError
    input_error_rank: int | None = None  # this rank raises an InputError (bad inputs: no retry)
    wait_for_stop: bool = False  # every rank waits until asked to stop, then ends as preempted


def run(params: Params, ctx: JobContext) -> None:
    rank = int(os.environ["RANK"])
    # What this rank saw: its reads work whichever rank it is (the marker is not a record).
    # The database password (this rank's URL has it) and the variables whose value holds it: what
    # anything the job starts would inherit.
    password = urlsplit(ctx.db_url).password if ctx.db_url else None
    seen = {"rank": rank, "world": int(os.environ["WORLD_SIZE"]), "own_record": ctx.job(ctx.name).name,
            "password": password, "db_url": ctx.db_url,
            "env_with_password": sorted(key for key, value in os.environ.items() if password and password in value),
            # the environment the rank started with, as /proc keeps it (popping a variable does not change it)
            "started_with_password": bool(password) and password.encode() in Path("/proc/self/environ").read_bytes()}
    (Path(ctx.output_dir) / f"seen-{rank}.json").write_text(json.dumps(seen))
    ctx.log_metric("rank_says", rank, step=1, split="val")
    ctx.add_artifact(f"from_rank_{rank}", Path(ctx.output_dir) / f"seen-{rank}.json")
    ctx.progress(1, 2, f"rank {rank}")
    if params.fail_rank == rank:
        raise ValueError(f"rank {rank} was told to fail")
    if params.input_error_rank == rank:
        from pipeline.errors import InputError

        raise InputError(f"rank {rank} found its inputs wrong")
    deadline = time.monotonic() + 60
    while params.wait_for_stop and time.monotonic() < deadline:
        if ctx.should_stop():
            raise Preempted(f"rank {rank} stopped on request")
        time.sleep(0.05)


KIND = Kind("dpcheck", Params, run, summary="data-parallel protocol check (tests)", multi_gpu=True,
            data_parallel=True)
