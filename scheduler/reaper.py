"""The periodic reaper: requeues jobs whose lease expired (their worker was killed or lost).
Its scheduler also fires scheduled submissions (`scheduler.cron`).

Runs in an APScheduler background thread beside the worker loop. Every worker runs one; the
conditional UPDATE in `requeue_stale` makes concurrent reapers safe.
"""

from __future__ import annotations

import logging

from apscheduler.schedulers.background import BackgroundScheduler

from .jobqueue import JobQueue

log = logging.getLogger("sched.reaper")


def reap_once(queue: JobQueue) -> None:
    requeued, lost = queue.requeue_stale()
    if requeued:
        log.warning("requeued job(s) %s: their lease expired", ", ".join(map(str, requeued)))
    if lost:
        log.error("job(s) %s lost: lease expired with no attempt left", ", ".join(map(str, lost)))


def start_reaper(queue: JobQueue, interval_s: float) -> BackgroundScheduler:
    """The worker's background scheduler: the reaper, plus the crons stored in the database.

    The reaper's interval also bounds how late a cron added from another process is noticed:
    the scheduler reads the cron store each time it wakes up.
    """
    from .cron import attach

    scheduler = BackgroundScheduler(daemon=True, timezone="UTC")
    scheduler.add_job(reap_once, "interval", args=[queue], seconds=interval_s, id="sched-reaper",
                      max_instances=1, coalesce=True)
    attach(scheduler, queue)
    scheduler.start()
    reap_once(queue)  # a worker that starts after a crash should not wait a whole interval
    return scheduler
