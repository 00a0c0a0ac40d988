"""The leaderboard behind `sched results`: every model and ensemble with its validation scores.

A row per job of a model kind (kinds that say `Display(model=True)`) and per any other job that
logged one of the leaderboard's score metrics (a custom shell job). The columns are what the kinds
declare (`scheduler.kinds`). Only a succeeded job carries scores: a failed, cancelled or running
job is listed with its status and no score, whatever it logged before it ended. A kind may show
its row's params from metrics (a tune's row is its best trial) and mark the jobs another left out
(an ensemble's dead members: `left_out_by`). Built from three queries whatever the number of jobs
(the last value of the leaderboard's metric keys per job, the left-out marks, then the jobs
themselves), never one query per job. Rows are plain dicts, shared by the rich table, `--json` and
`--csv`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

from .errors import SchedError
from .fmt import number
from .jobqueue import JobQueue
from .kinds import LeaderboardLayout, kind_display, leaderboard_layout
from .store import queries as q
from .store.engine import db_now
from .store.states import SUCCEEDED


def columns() -> tuple[str, ...]:
    return leaderboard_layout().columns


def leaderboard(queue: JobQueue, tag: str | None = None, kind: str | None = None,
                sort: str | None = None, descending: bool | None = None,
                status: str | None = None, limit: int | None = None) -> list[dict]:
    """Rows of the leaderboard, best first.

    `sort` is any column (default: the first score column these rows have); numbers sort high to low and text A to
    Z unless `descending` says otherwise; rows without a value sort last either way. `kind` lists
    every job of that kind (scored or not); `tag` keeps jobs carrying that tag.
    """
    layout = leaderboard_layout()
    if sort is not None and sort not in layout.columns:
        raise SchedError(f"cannot sort by '{sort}'; columns: {', '.join(layout.columns)}")
    with queue.read() as conn:
        now = db_now(conn)
        metrics = q.last_values_of_keys(conn, layout.metric_keys, kind)
        left_out = q.left_out_marks(conn, layout.left_out_keys)
        jobs = q.leaderboard_jobs(conn, model_kinds=layout.model_kinds, score_keys=layout.scores.values(),
                                  kind=kind, status=status)
    rows = [_row(layout, job, metrics.get(job.id, {}), now, left_out.get(job.id, [])) for job in jobs
            if tag is None or tag in (job.tags or [])]
    sort = sort or headline_column(rows)
    present = [r for r in rows if r[sort] is not None]
    if descending is None:
        descending = not any(isinstance(r[sort], str | list) for r in present)
    present.sort(key=lambda r: (_sort_value(r[sort]), -r["id"] if descending else r["id"]), reverse=descending)
    ordered = present + [r for r in rows if r[sort] is None]
    return ordered[:limit] if limit else ordered


def _row(layout: LeaderboardLayout, job, metrics: dict[str, float], now: datetime, left_out_by: list[str]) -> dict:
    display = kind_display(job.kind)
    params = row_params(display, job.kind, job.params or {}, metrics, layout)
    duration = None
    if job.started_at is not None:
        duration = ((job.finished_at or now) - job.started_at).total_seconds()
    model_param = display.model_param if display is not None else "model"
    row = {"job": job.name, "id": job.id, "kind": job.kind, "status": job.status,
           "model": model_name(params.get(model_param)) if model_param else None}
    # A score is what a finished job achieved: what a failed or running job logged is not one.
    scored = job.status == SUCCEEDED
    row.update({column: metrics.get(key) if scored else None for column, key in layout.scores.items()})
    own = display.details if display is not None else {}
    for column, spec in layout.details.items():
        value = metrics.get(spec.metric)
        fallback = own.get(column)
        if value is None and fallback is not None and fallback.param:
            configured = params.get(fallback.param)
            value = configured if isinstance(configured, int | float) else None  # not run yet: as configured
        row[column] = value
    row["duration_s"] = duration
    row.update({key: _scalar(params.get(key)) for key in layout.params})
    row["left_out_by"] = left_out_by
    row["tags"] = list(job.tags or [])
    return {column: row[column] for column in layout.columns}


def row_params(display, kind: str, params: dict, metrics: dict[str, float], layout: LeaderboardLayout) -> dict:
    """The params a job's row shows: its params with defaults filled in, or the entry of them its kind
    names (`params_of`), with params its kind logs as metrics (`param_metrics`) over them."""
    params = effective_params(kind, params)
    if display is not None and display.params_of:
        inner = params.get(display.params_of)
        params = inner if isinstance(inner, dict) else {}
    if display is not None and display.param_metrics:
        logged = {p: metrics[display.param_metrics + p] for p in layout.params if display.param_metrics + p in metrics}
        params = {**params, **{p: int(v) if float(v).is_integer() else v for p, v in logged.items()}}
    return params


@dataclass
class ParamSummary:
    """The key params of a set of rows: those that differ between them (a column worth reading,
    since the differences explain the ranking) and those every row shares (said once)."""

    varying: list[str]
    same: dict[str, str]
    labels: dict[str, str]

    def row(self, row: dict) -> str:
        return " ".join(f"{self.labels[k]}={number(row[k])}" for k in self.varying if row[k] is not None)

    def caption(self) -> str:
        return " ".join(f"{self.labels[k]}={v}" for k, v in self.same.items())


def param_summary(rows: list[dict]) -> ParamSummary:
    labels = leaderboard_layout().params
    values = {k: {number(r[k]) for r in rows if r.get(k) is not None} for k in labels}
    return ParamSummary(varying=[k for k in labels if len(values[k]) > 1],
                        same={k: next(iter(values[k])) for k in labels if len(values[k]) == 1}, labels=labels)


def headline_column(rows: list[dict]) -> str:
    """The first score column any of these rows has a value in (the leaderboard's first, if none)."""
    layout = leaderboard_layout()
    return next((c for c in layout.scores if any(r.get(c) is not None for r in rows)), layout.default_sort)


def shown_scores(rows: list[dict], most: int = 2) -> list[str]:
    """The score columns worth showing for these rows: those with a value, at most `most`."""
    layout = leaderboard_layout()
    return [c for c in layout.scores if any(r.get(c) is not None for r in rows)][:most] or [layout.default_sort]


def model_name(model) -> str | None:
    """A model param as shown: a hub name or folder as is, `{from: job}` as `from:job`."""
    if isinstance(model, dict):
        source = model.get("from")
        return f"from:{source}" if source else str(model)
    return None if model is None else str(model)


def _scalar(value):
    return value if value is None or isinstance(value, int | float | str | bool) else str(value)


def effective_params(kind: str, params: dict) -> dict:
    """The job's params with its kind's defaults filled in (lr of a finetune that left it out);
    the stored params as they are if the kind is unknown here or they no longer parse."""
    model = _params_model(kind)
    if model is None:
        return params
    try:
        return model.model_validate(params).model_dump(by_alias=True)
    except Exception:  # noqa: BLE001 - an old or foreign job still gets a row
        return params


@lru_cache(maxsize=None)
def _params_model(kind: str):
    from jobs.registry import known_kind

    found = known_kind(kind)
    return None if found is None else found.params_model


def _sort_value(value):
    if isinstance(value, list):
        return ",".join(map(str, value))
    return value.lower() if isinstance(value, str) else value
