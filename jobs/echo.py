"""`echo`: print a message (and log it as a metric or write it to a file): a queue check.

    sched add echo --name hello -p message=hi
"""

from __future__ import annotations

from pathlib import PurePath

from pydantic import BaseModel, ConfigDict, field_validator

from .context import JobContext
from .registry import Kind


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    message: str = "hello"  # printed to the job's log
    metric: float | None = None  # logged as metric `value` when given
    write_file: str | None = None  # a file name (no folders) in the run folder to write the message to

    @field_validator("write_file")
    @classmethod
    def _inside_run_folder(cls, name: str | None) -> str | None:
        if name is not None and (PurePath(name).name != name or name in ("", ".", "..")):
            raise ValueError(f"'{name}' is not a plain file name; the file goes in the job's run folder")
        return name


def run(params: Params, ctx: JobContext) -> None:
    print(params.message, flush=True)
    if params.metric is not None:
        ctx.log_metric("value", params.metric)
    if params.write_file:
        path = ctx.output_dir / params.write_file
        path.write_text(params.message)
        ctx.add_artifact(params.write_file, path)


KIND = Kind("echo", Params, run, summary="print a message; check a queue and its workers")
