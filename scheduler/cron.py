"""Scheduled submissions: `sched cron add "0 2 * * *" nightly.yaml` submits the file every night.

Schedules live in APScheduler's SQLAlchemy job store, in the queue's own database; every running
worker's background scheduler watches that store. APScheduler does not coordinate several
schedulers on one store, so a firing is claimed in `sched_cron_fires`, whose primary key is
(cron name, fire time): the first worker to insert the row submits the file, the others see the
row and do nothing. Each firing is therefore submitted once however many workers run.

Misfires: a firing no worker could run on time is still run within MISFIRE_GRACE_S of its time
(several missed firings run once: APScheduler's `coalesce`); later than that it is skipped.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone
from pathlib import Path

from apscheduler.jobstores.base import ConflictingIdError, JobLookupError
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from sqlalchemy.exc import IntegrityError

from .errors import NotFound, SchedError
from .jobqueue import JobQueue
from .store import queries as q
from .store.schema import CRON_TABLE

log = logging.getLogger("sched.cron")

CRON_STORE = "crons"
MISFIRE_GRACE_S = 3600
MAX_EXPRESSION = 200  # characters; a day of every minute listed by hand fits in less


def parse_cron(expression: str) -> CronTrigger:
    """A UTC cron trigger from a crontab line (minute hour day month weekday)."""
    if len(expression) > MAX_EXPRESSION:
        # It is stored, shown by `sched cron list` and parsed by every worker: keep it a line.
        raise SchedError(f"cron expression of {len(expression):,} characters; at most {MAX_EXPRESSION} "
                         "(5 fields: minute hour day month weekday, e.g. '0 2 * * *')")
    try:
        return CronTrigger.from_crontab(expression, timezone=timezone.utc)
    except ValueError as exc:
        raise SchedError(f"bad cron expression '{expression}': {exc} "
                         "(use 5 fields: minute hour day month weekday, e.g. '0 2 * * *')") from None


def make_jobstore(queue: JobQueue) -> SQLAlchemyJobStore:
    return SQLAlchemyJobStore(engine=queue.engine, tablename=CRON_TABLE)


def _paused_scheduler(queue: JobQueue) -> BackgroundScheduler:
    scheduler = BackgroundScheduler(jobstores={CRON_STORE: make_jobstore(queue)}, timezone=timezone.utc)
    scheduler.start(paused=True)
    return scheduler


def add_cron(queue: JobQueue, expression: str, queue_file: str | Path, name: str | None = None) -> dict:
    """Add a schedule after checking the expression and the queue file (nothing is stored if either is bad)."""
    from .plan import load_plan

    trigger = parse_cron(expression)
    if trigger.get_next_fire_time(None, datetime.now(timezone.utc)) is None:
        # e.g. "0 0 31 2 *" (February 31st): valid fields, but no date ever matches them
        raise SchedError(f"cron expression '{expression}' never fires (no date matches it); nothing stored")
    path = Path(queue_file).resolve()
    load_plan(path, _fire_vars(name or path.stem, datetime.now(timezone.utc)))  # raises PlanError
    name = name or path.stem
    scheduler = _paused_scheduler(queue)
    try:
        job = scheduler.add_job(fire, trigger, args=[name, str(path), expression], id=name, name=name,
                                jobstore=CRON_STORE, misfire_grace_time=MISFIRE_GRACE_S, coalesce=True,
                                max_instances=1, replace_existing=False)
    except ConflictingIdError:
        raise SchedError(f"a cron named '{name}' exists already (sched cron rm {name} first)") from None
    finally:
        scheduler.shutdown(wait=False)
    return {"name": name, "expression": expression, "file": str(path), "next_run": job.next_run_time}


def list_crons(queue: JobQueue) -> list[dict]:
    store = make_jobstore(queue)
    store.start(None, CRON_STORE)
    crons = []
    with queue.read() as conn:
        for job in store.get_all_jobs():
            name, path, expression = job.args
            last = q.last_cron_fire(conn, name)
            crons.append({"name": name, "expression": expression, "file": path,
                          "next_run": job.next_run_time.isoformat(timespec="seconds") if job.next_run_time else None,
                          "last_fire": last.fire_time.isoformat(timespec="seconds") if last else None,
                          "last_result": None if last is None else
                          (f"error: {last.error}" if last.error else f"{last.jobs_submitted} job(s) submitted")})
    return crons


def remove_cron(queue: JobQueue, name: str) -> None:
    scheduler = _paused_scheduler(queue)
    try:
        scheduler.remove_job(name, jobstore=CRON_STORE)
    except JobLookupError:
        raise NotFound(f"no cron named '{name}' (sched cron list shows them)") from None
    finally:
        scheduler.shutdown(wait=False)


# ---- firing (runs in every worker's background scheduler) ------------------------------------

_queue: JobQueue | None = None  # the running worker's queue; APScheduler pickles only plain args


def attach(scheduler: BackgroundScheduler, queue: JobQueue) -> None:
    """Let this worker's background scheduler fire the crons stored in the queue's database."""
    global _queue
    _queue = queue
    scheduler.add_jobstore(make_jobstore(queue), alias=CRON_STORE)


def last_fire_time(expression: str, now: datetime) -> datetime | None:
    """The latest time at or before `now` the expression fires (within the misfire grace)."""
    trigger = parse_cron(expression)
    fire_time, latest = trigger.get_next_fire_time(None, now - timedelta(seconds=MISFIRE_GRACE_S + 60)), None
    while fire_time is not None and fire_time <= now:
        latest = fire_time
        fire_time = trigger.get_next_fire_time(fire_time, fire_time)
    return latest


def _fire_vars(name: str, fire_time: datetime) -> dict:
    """Variables a scheduled queue file can use, e.g. `name: "nightly-{date}-tune"`."""
    return {"cron": name, "date": fire_time.strftime("%Y%m%d"), "time": fire_time.strftime("%H%M"),
            "fire_time": fire_time.strftime("%Y%m%dT%H%M")}


def fire(name: str, queue_file: str, expression: str, queue: JobQueue | None = None,
         now: datetime | None = None) -> bool:
    """Submit `queue_file` for the current firing of cron `name`, unless another worker did.

    Returns True when this call submitted (or tried to submit) the firing.
    """
    import socket

    from .plan import load_plan

    queue = queue or _queue
    now = now or datetime.now(timezone.utc)
    # The scheduled time, so every worker names this firing alike. A run moved by hand (no
    # scheduled time within the grace) is named by its minute instead.
    fire_time = last_fire_time(expression, now) or now.replace(second=0, microsecond=0)
    stored_time = fire_time.astimezone(timezone.utc).replace(tzinfo=None)
    try:
        with queue.write() as conn:
            q.claim_cron_fire(conn, name, stored_time, socket.gethostname())
    except IntegrityError:
        return False  # another worker claimed this firing
    submitted, error = None, None
    try:
        submitted = len(queue.submit(load_plan(queue_file, _fire_vars(name, fire_time))))
        log.info("cron %s: submitted %d job(s) from %s", name, submitted, queue_file)
    except Exception as exc:  # noqa: BLE001 - recorded for `sched cron list`; the worker carries on
        error = str(exc)
        log.error("cron %s: %s", name, error)
    with queue.write() as conn:
        q.record_cron_result(conn, name, stored_time, submitted, error)
    return True
