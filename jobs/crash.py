"""`crash`: exit at once without clean-up, as a segfault or an OOM kill would.

    sched add crash --name dies -p exit_code=3
"""

from __future__ import annotations

import os

from pydantic import BaseModel, ConfigDict

from .context import JobContext
from .registry import Kind


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    exit_code: int = 3  # passed to os._exit: no clean-up, no Python exception
    unless_file: str | None = None  # crash only when this file does not exist (creates it first)


def run(params: Params, ctx: JobContext) -> None:
    if params.unless_file:
        if os.path.exists(params.unless_file):
            print("marker present: not crashing", flush=True)
            return
        open(params.unless_file, "w").close()
    os._exit(params.exit_code)


KIND = Kind("crash", Params, run, summary="exit at once without clean-up (crash recovery checks)")
