"""A job's reports through a database outage: the job runs on, nothing it reported is lost.

A running job writes progress, metrics and artifacts (jobs/context.py -> scheduler/records.py).
When the database is briefly unreachable (a restart, a full disk under it, a network cut):

- progress is best effort: a write that fails is skipped (the next one says more anyway);
- metrics and artifacts are kept in order and written once the database answers again, before
  anything newer; the job itself never sees the outage. A write that failed may still have
  committed (the outage cut the reply, not the COMMIT): before a metric is written again the
  reporter asks whether it is there, so none is recorded twice (an artifact's write replaces);
- when the job ends, what is still kept is written with retries for up to OUTAGE_WAIT_S
  (SCHED_OUTAGE_WAIT_S, default 300 s); only an outage that outlasts the job by that long fails
  it, with a message saying so;
- reads of other jobs' records are retried for as long.
"""

from __future__ import annotations

import os
import sys
import time

from sqlalchemy.exc import SQLAlchemyError

from .errors import DatabaseUnreachable

# What an outage looks like from here: a failing statement, or a database that cannot be opened
# (the job's first report opens it: scheduler/runner.py QueueLink).
OUTAGE_ERRORS = (SQLAlchemyError, DatabaseUnreachable)

WAIT_ENV = "SCHED_OUTAGE_WAIT_S"
DEFAULT_WAIT_S = 300.0
RETRY_S = (0.5, 1.0, 2.0, 5.0)  # waits between tries, the last repeated


class OutageOutlasted(RuntimeError):
    """The database stayed unreachable after the job ended: what it reported could not be written."""


class BufferedReporter:
    """A job context's reporter that outlives database outages (see the module docstring)."""

    def __init__(self, records, wait_s: float | None = None, sleep=time.sleep, clock=time.monotonic):
        self.records = records  # scheduler.records.Records, opened lazily (runner.LazyReporter)
        self.wait_s = float(os.environ.get(WAIT_ENV, DEFAULT_WAIT_S)) if wait_s is None else wait_s
        self.pending: list[tuple[str, tuple]] = []
        self.head_tried = False  # the oldest kept write failed once: it may have committed anyway
        self.sleep, self.clock = sleep, clock
        self.down_since: float | None = None

    # ---- writes -----------------------------------------------------------------------------

    def log_metric(self, job_id, key, value, step=None, split=None) -> None:
        self._keep("log_metric", (job_id, key, value, step, split))

    def add_artifact(self, job_id, name, path) -> None:
        self._keep("add_artifact", (job_id, name, path))

    def set_progress(self, job_id, done, total, message) -> None:
        if self.flush():
            try:
                self.records.set_progress(job_id, done, total, message)
            except OUTAGE_ERRORS as exc:
                self._down(exc)

    def _keep(self, call: str, args: tuple) -> None:
        self.pending.append((call, args))
        self.flush()

    def flush(self) -> bool:
        """Write what is kept, oldest first; True when nothing is left."""
        while self.pending:
            call, args = self.pending[0]
            try:
                if not (self.head_tried and self._already_written(call, args)):
                    getattr(self.records, call)(*args)
            except OUTAGE_ERRORS as exc:
                self.head_tried = True
                self._down(exc)
                return False
            self.pending.pop(0)
            self.head_tried = False
        if self.down_since is not None:
            print(f"sched: the database answers again after {self.clock() - self.down_since:.0f}s; "
                  "what the job reported meanwhile is written", file=sys.stderr, flush=True)
            self.down_since = None
        return True

    def finish(self) -> None:
        """At the job's end: write what is kept, retrying up to wait_s; else OutageOutlasted."""
        deadline = self.clock() + self.wait_s
        tries = 0
        while not self.flush():
            if self.clock() >= deadline:
                raise OutageOutlasted(
                    f"the database stayed unreachable for {self.wait_s:.0f}s after the job ended "
                    f"({WAIT_ENV}): {len(self.pending)} metric(s)/artifact(s) it reported could not be recorded")
            self.sleep(min(RETRY_S[min(tries, len(RETRY_S) - 1)], max(0.0, deadline - self.clock())))
            tries += 1

    def _already_written(self, call: str, args: tuple) -> bool:
        """Whether a write that failed went through all the same (metrics only: writing an
        artifact again replaces it)."""
        return call == "log_metric" and self.records.metric_recorded(*args)

    def _down(self, exc: Exception) -> None:
        if self.down_since is None:
            self.down_since = self.clock()
            print(f"sched: the database is unreachable ({str(exc).splitlines()[0]}); the job goes on and "
                  "its metrics are written when it is back", file=sys.stderr, flush=True)

    # ---- reads and the rest -----------------------------------------------------------------

    def job(self, ref):
        return self._retried(lambda: self.records.job(ref))

    def expected_seconds(self, job_id):
        try:
            return self.records.expected_seconds(job_id)
        except OUTAGE_ERRORS as exc:
            self._down(exc)
            return None

    def finish_by(self, job_id):
        """Best effort: during an outage the job goes on as it would without a deadline."""
        try:
            return self.records.finish_by(job_id)
        except OUTAGE_ERRORS as exc:
            self._down(exc)
            return None

    def jobs_where(self, *, kind=None, tag=None, status=None):
        return self._retried(lambda: self.records.jobs_where(kind=kind, tag=tag, status=status))

    def _retried(self, read):
        deadline = self.clock() + self.wait_s
        tries = 0
        while True:
            try:
                return read()
            except OUTAGE_ERRORS as exc:
                if self.clock() >= deadline:
                    raise
                self._down(exc)
                self.sleep(RETRY_S[min(tries, len(RETRY_S) - 1)])
                tries += 1

    def __getattr__(self, name):  # set_error, record_gpu_peak: their callers guard them already
        return getattr(self.records, name)
