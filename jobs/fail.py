"""`fail`: raise an error on purpose (retries, upstream failures, alerts).

    sched add fail --name broken -p message=boom
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from .context import JobContext
from .registry import Kind


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    message: str = "failing on purpose"  # the error the job raises


def run(params: Params, ctx: JobContext) -> None:
    raise RuntimeError(params.message)


KIND = Kind("fail", Params, run, summary="raise an error on purpose (retry and failure checks)", reusable=True)
