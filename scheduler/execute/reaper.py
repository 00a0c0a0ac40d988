"""The periodic reaper: requeues jobs whose lease expired (their worker was killed or lost).
Its scheduler also fires scheduled submissions (`scheduler.cron`).

Runs in an APScheduler background thread beside the worker loop. Every worker runs one; the
conditional UPDATE in `requeue_stale` makes concurrent reapers safe.
"""

from __future__ import annotations

import logging
import time

from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy.exc import SQLAlchemyError

from ..jobqueue import JobQueue

log = logging.getLogger("sched.reaper")


class Reaper:
    """Requeues jobs whose lease expired, with two exceptions that keep live jobs with live workers:

    - never the jobs of its own worker (`worker_id`): that worker is alive, it is running this;
    - after the database was unreachable, not until it has been reachable again for a whole lease:
      every live worker renews its leases within that time (its first step after an outage does
      it first), while a dead worker's jobs are reaped one lease later than otherwise.
    """

    def __init__(self, queue: JobQueue, worker_id: int | None = None, lease_s: float = 60.0,
                 clock=time.monotonic):
        self.queue, self.worker_id, self.lease_s, self.clock = queue, worker_id, lease_s, clock
        self.back_since: float | None = None  # when the database answered again after an outage
        self.outage = False

    def __call__(self) -> tuple[list[int], list[int]]:
        if self.outage:
            now = self.clock()
            self.back_since = self.back_since or now
            if now - self.back_since < self.lease_s:
                try:
                    self.queue.status_counts()  # still reachable?
                except SQLAlchemyError:
                    self.back_since = None
                return [], []
            self.outage, self.back_since = False, None
        try:
            requeued, lost = self.queue.requeue_stale(exclude_worker=self.worker_id)
        except SQLAlchemyError as exc:
            self.outage, self.back_since = True, None
            log.warning("reaper: database error (%s); reaping waits until it is back for %.0fs",
                        str(exc).splitlines()[0], self.lease_s)
            return [], []
        if requeued:
            log.warning("requeued job(s) %s: their lease expired", ", ".join(map(str, requeued)))
        if lost:
            log.error("job(s) %s lost: lease expired with no attempt left", ", ".join(map(str, lost)))
            from .hooks import run_hooks
            from ..store.states import LOST

            for job_id in lost:
                run_hooks(self.queue, job_id, LOST)
        return requeued, lost


def reap_once(queue: JobQueue) -> tuple[list[int], list[int]]:
    """One pass of a reaper that belongs to no worker (tests, scripts)."""
    return Reaper(queue)()


def start_reaper(queue: JobQueue, interval_s: float, *, worker_id: int | None = None,
                 lease_s: float = 60.0) -> BackgroundScheduler:
    """The worker's background scheduler: the reaper, plus the crons stored in the database.

    The reaper's interval also bounds how late a cron added from another process is noticed:
    the scheduler reads the cron store each time it wakes up.
    """
    from ..cron import attach

    reaper = Reaper(queue, worker_id, lease_s)
    scheduler = BackgroundScheduler(daemon=True, timezone="UTC")
    scheduler.add_job(reaper, "interval", seconds=interval_s, id="sched-reaper", max_instances=1, coalesce=True)
    attach(scheduler, queue)
    scheduler.start()
    reaper()  # a worker that starts after a crash should not wait a whole interval
    return scheduler
