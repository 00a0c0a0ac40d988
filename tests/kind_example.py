"""A job kind defined outside `jobs/` (loaded through $SCHED_KINDS=tests.kind_example): a linear
probe that "trains" a few steps and reports a score. Used by tests/test_kinds.py to show that a
kind described only here appears in `sched kinds`, on the leaderboard and in the report."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from jobs.context import JobContext
from jobs.registry import Column, Curve, Display, Kind


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = "probe-small"  # shown in the leaderboard's model column
    steps: int = Field(default=4, ge=1)  # steps to "train"
    gain: float = 0.1  # how much the score grows per step


def run(params: Params, ctx: JobContext) -> None:
    value = 0.0
    for step in range(1, params.steps + 1):
        value = min(1.0, value + params.gain)
        ctx.log_metric("probe_score", value, step=step, split="val")
        ctx.log_metric("probe_loss", 1.0 - value, step=step, split="train")
    ctx.log_metric("probe_auc", value)
    ctx.log_metric("probe_steps", params.steps)


KIND = Kind(
    "probe", Params, run, summary="a linear probe (test kind from outside jobs/)",
    display=Display(model=True, scores={"probe_auc": "probe_auc"},
                    details={"probe_steps": Column("probe_steps", param="steps")},
                    params={"gain": "gain"},
                    curves=(Curve("probe_score", "val", "score"), Curve("probe_loss", "train")),
                    colour="#aa3377"),
)
