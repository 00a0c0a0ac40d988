"""Entry point of the child process that runs one job: `python -m scheduler.runner JOB_ID PARENT_PID`.

The worker starts it as a fresh interpreter (never a fork: a forked CUDA context is unusable, and
the worker must never have imported torch). Its exit code tells the worker how the job ended:
0 succeeded, PREEMPTED_EXIT stopped on request, anything else failed. The one-line reason of a
failure goes to the job's row (`error`, so it survives a deleted run folder) and to ERROR_FILE in
the job's folder; the traceback goes to the job's log.

Nothing the job starts outlives it: the runner is a child subreaper, kills every process below it
when the job ends, and does the same when its worker dies (`WORKER_GONE_SIGNAL`, see jobs/proc.py).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import traceback
from pathlib import Path

PREEMPTED_EXIT = 75  # EX_TEMPFAIL: "try again later"
INPUT_ERROR_EXIT = 65  # EX_DATAERR: the job's inputs are wrong; retrying cannot help
WORKER_GONE_EXIT = 70  # the worker died; the runner killed the job's processes and left
ERROR_FILE = ".sched-error.json"
WORKER_GONE_SIGNAL = signal.SIGUSR2  # sent by Linux when the worker dies (PR_SET_PDEATHSIG)


class _StopFlag:
    """Set by SIGTERM/SIGUSR1 from the worker; jobs read it through `ctx.should_stop()`."""

    def __init__(self):
        self.value = False

    def set(self, *_):
        self.value = True

    def __call__(self) -> bool:
        return self.value


def _worker_gone(*_) -> None:
    from jobs.proc import kill_tree

    kill_tree(os.getpid())
    os._exit(WORKER_GONE_EXIT)


def _write_error(output_dir: Path, message: str) -> None:
    try:
        (output_dir / ERROR_FILE).write_text(json.dumps({"message": message}))
    except OSError:  # the run folder was deleted: the database has the reason
        pass


def _database_url() -> str:
    """$SCHED_DB, with the password the worker sent through a pipe (it is kept out of the job's
    environment: see docs/operations.md)."""
    url = os.environ["SCHED_DB"]
    fd = os.environ.pop("SCHED_DB_PASSWORD_FD", None)
    if fd is None:
        return url
    from .store.engine import with_password

    with os.fdopen(int(fd), encoding="utf-8") as pipe:
        return with_password(url, pipe.read())


def main(argv: list[str]) -> int:
    job_id, parent_pid = int(argv[0]), int(argv[1])
    # The handler first: Linux may send the signal as soon as prctl has run.
    signal.signal(WORKER_GONE_SIGNAL, _worker_gone)
    stop = _StopFlag()
    signal.signal(signal.SIGTERM, stop.set)
    signal.signal(signal.SIGUSR1, stop.set)

    from jobs.proc import become_subreaper, die_with_parent, kill_tree

    die_with_parent(WORKER_GONE_SIGNAL)
    if os.getppid() != parent_pid:  # the worker died before prctl took effect
        return WORKER_GONE_EXIT
    become_subreaper()
    try:
        return _run(job_id, stop)
    finally:
        kill_tree(os.getpid())  # whatever the job left running (a server, `cmd &`, a setsid daemon)


def _run(job_id: int, stop: _StopFlag) -> int:
    from functools import partial

    from jobs import get_kind
    from jobs.context import JobContext, Preempted

    from .jobqueue import JobQueue
    from .records import Records
    from .store.studies import open_storage

    db_url = _database_url()
    queue = JobQueue(db_url)
    records = Records(queue)
    try:
        row = queue.get(job_id)
        output_dir = Path(row.output_dir)
        (output_dir / ERROR_FILE).unlink(missing_ok=True)
        ctx = JobContext(job_id=row.id, name=row.name, output_dir=output_dir,
                         device=os.environ.get("SCHED_DEVICE", "cpu"), reporter=records,
                         attempt=row.attempts, stop_requested=stop, group=row.group_name,
                         db_url=db_url, studies=partial(open_storage, db_url))
        try:
            if stop():  # asked to stop while this interpreter was starting: do not start the job
                raise Preempted("stopped before the job started")
            kind = get_kind(row.kind)
            params = kind.parse(row.params)
            _preflight(kind, params, row.name, records)
            kind.run(params, ctx)
        except Preempted as exc:
            print(f"preempted: {exc}", file=sys.stderr, flush=True)
            return PREEMPTED_EXIT
        except BaseException as exc:  # noqa: BLE001 - every failure must reach the worker as a reason
            traceback.print_exc()
            message = f"{type(exc).__name__}: {exc}"
            _write_error(output_dir, message)
            try:
                records.set_error(job_id, message)
            except Exception:  # noqa: BLE001 - the database is unreachable: the file has the reason
                traceback.print_exc()
            return INPUT_ERROR_EXIT if _is_input_error(exc) else 1
        return 0
    finally:
        queue.dispose()


def _preflight(kind, params, name: str, records) -> None:
    """The kind's input checks once more, right before it runs (a file may have changed since submit)."""
    from jobs.preflight import OtherJob, Preflight

    from .errors import NotFound

    def lookup(other: str) -> OtherJob | None:
        try:
            record = records.job(other)
        except NotFound:
            return None
        return OtherJob(record.name, record.kind, record.params or {}, record.status)

    pre = Preflight(lookup)
    kind.check(params, pre)
    pre.raise_problems(name)


def _is_input_error(exc: BaseException) -> bool:
    """Bad data, bad params, an unknown model, a failed preflight: the same on every attempt."""
    from jobs.registry import ParamsError
    from pipeline.errors import InputError

    return isinstance(exc, (InputError, ParamsError))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
