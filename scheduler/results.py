"""The leaderboard behind `sched results`: every model and ensemble with its validation scores.

A row per job of a model kind (`finetune`, `ensemble`) and per any other job that logged
`val_accuracy` or `val_f1` (a tuning trial, a custom shell job). Built from two queries whatever the
number of jobs (the last value of a few metric keys per job, then the jobs themselves), never one
query per job. Rows are plain dicts, shared by the rich table, `--json` and `--csv`.
"""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache

from sqlalchemy import func, or_, select

from .db import db_now
from .errors import SchedError
from .jobqueue import JobQueue
from .models import Job, Metric

MODEL_KINDS = ("finetune", "ensemble")
# Final metrics a model job logs once (the last value counts if it logged one twice).
METRIC_COLUMNS = {"val_accuracy": "val_accuracy", "val_f1": "val_f1", "epochs_run": "epochs",
                  "best_epoch": "best_epoch", "val_accuracy_cv": "val_accuracy_cv"}
SCORE_KEYS = ("val_accuracy", "val_f1")
# Params worth a column: what people change between runs of a campaign.
KEY_PARAMS = ("lr", "batch_size", "max_length", "focal_gamma", "label_smoothing", "swa_epochs", "seed",
              "weighting", "vote")
COLUMNS = ("job", "id", "kind", "model", "status", "val_accuracy", "val_f1", "val_accuracy_cv", "epochs",
           "best_epoch", "duration_s", *KEY_PARAMS, "tags")
TEXT_COLUMNS = {"job", "kind", "model", "status", "weighting", "vote", "tags"}


def leaderboard(queue: JobQueue, tag: str | None = None, kind: str | None = None,
                sort: str = "val_accuracy", descending: bool | None = None,
                status: str | None = None, limit: int | None = None) -> list[dict]:
    """Rows of the leaderboard, best first.

    `sort` is any column in COLUMNS; numbers sort high to low and names A to Z unless `descending`
    says otherwise; rows without a value sort last either way. `kind` lists every job of that kind
    (scored or not); `tag` keeps jobs carrying that tag.
    """
    if sort not in COLUMNS:
        raise SchedError(f"cannot sort by '{sort}'; columns: {', '.join(COLUMNS)}")
    with queue.read_session() as s:
        now = db_now(s)
        metrics = _last_metrics(s, kind)
        query = select(Job.id, Job.name, Job.kind, Job.status, Job.params, Job.tags, Job.started_at,
                       Job.finished_at).order_by(Job.id)
        if kind:
            query = query.where(Job.kind == kind)
        else:
            scored = select(Metric.job_id).where(Metric.key.in_(SCORE_KEYS))
            query = query.where(or_(Job.kind.in_(MODEL_KINDS), Job.id.in_(scored)))
        if status:
            query = query.where(Job.status == status)
        jobs = s.execute(query).all()
    rows = [_row(job, metrics.get(job.id, {}), now) for job in jobs
            if tag is None or tag in (job.tags or [])]
    descending = sort not in TEXT_COLUMNS if descending is None else descending
    present = [r for r in rows if r[sort] is not None]
    present.sort(key=lambda r: (_sort_value(r[sort]), -r["id"] if descending else r["id"]),
                 reverse=descending)
    ordered = present + [r for r in rows if r[sort] is None]
    return ordered[:limit] if limit else ordered


def _last_metrics(s, kind: str | None) -> dict[int, dict[str, float]]:
    """{job id: {metric key: last value}} for the leaderboard's metric keys, in one query."""
    last = select(func.max(Metric.id).label("id")).where(Metric.key.in_(METRIC_COLUMNS))
    if kind:
        last = last.join(Job, Job.id == Metric.job_id).where(Job.kind == kind)
    last = last.group_by(Metric.job_id, Metric.key).subquery()
    out: dict[int, dict[str, float]] = {}
    for job_id, key, value in s.execute(select(Metric.job_id, Metric.key, Metric.value)
                                        .join(last, Metric.id == last.c.id)):
        out.setdefault(job_id, {})[key] = value
    return out


def _row(job, metrics: dict[str, float], now: datetime) -> dict:
    params = _effective_params(job.kind, job.params or {})
    duration = None
    if job.started_at is not None:
        duration = ((job.finished_at or now) - job.started_at).total_seconds()
    row = {"job": job.name, "id": job.id, "kind": job.kind, "model": _model(params.get("model")),
           "status": job.status}
    row.update({column: metrics.get(key) for key, column in METRIC_COLUMNS.items()})
    if row["epochs"] is None and isinstance(params.get("epochs"), int | float) and job.kind != "ensemble":
        row["epochs"] = params["epochs"]  # not run yet (or logged nothing): the configured number
    row["duration_s"] = duration
    row.update({key: _scalar(params.get(key)) for key in KEY_PARAMS})
    row["tags"] = list(job.tags or [])
    return {column: row[column] for column in COLUMNS}


def _model(model) -> str | None:
    if isinstance(model, dict):
        source = model.get("from")
        return f"from:{source}" if source else str(model)
    return None if model is None else str(model)


def _scalar(value):
    return value if value is None or isinstance(value, int | float | str | bool) else str(value)


def _effective_params(kind: str, params: dict) -> dict:
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
    from jobs import get_kind

    try:
        return get_kind(kind).params_model
    except Exception:  # noqa: BLE001 - unknown kind, or its module fails to import here
        return None


def _sort_value(value):
    if isinstance(value, list):
        return ",".join(map(str, value))
    return value.lower() if isinstance(value, str) else value
