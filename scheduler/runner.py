"""Entry point of the child process that runs one job: `python -m scheduler.runner JOB_ID PARENT_PID`.

The worker starts it as a fresh interpreter (never a fork: a forked CUDA context is unusable, and
the worker must never have imported torch). Its exit code tells the worker how the job ended:
0 succeeded, PREEMPTED_EXIT stopped on request, anything else failed. The one-line reason of a
failure goes to ERROR_FILE in the job's folder; the traceback goes to the job's log.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import traceback
from pathlib import Path

PREEMPTED_EXIT = 75  # EX_TEMPFAIL: "try again later"
ERROR_FILE = ".sched-error.json"


class _StopFlag:
    """Set by SIGTERM/SIGUSR1 from the worker; jobs read it through `ctx.should_stop()`."""

    def __init__(self):
        self.value = False

    def set(self, *_):
        self.value = True

    def __call__(self) -> bool:
        return self.value


def _write_error(output_dir: Path, message: str) -> None:
    (output_dir / ERROR_FILE).write_text(json.dumps({"message": message}))


def main(argv: list[str]) -> int:
    from jobs.proc import die_with_parent

    job_id, parent_pid = int(argv[0]), int(argv[1])
    die_with_parent()
    if os.getppid() != parent_pid:  # the worker died before prctl took effect
        return 1
    stop = _StopFlag()
    signal.signal(signal.SIGTERM, stop.set)
    signal.signal(signal.SIGUSR1, stop.set)

    from functools import partial

    from jobs import get_kind
    from jobs.context import JobContext, Preempted

    from .jobqueue import JobQueue
    from .records import Records
    from .store.studies import open_storage

    db_url = os.environ["SCHED_DB"]
    queue = JobQueue(db_url)
    row = queue.get(job_id)
    output_dir = Path(row.output_dir)
    (output_dir / ERROR_FILE).unlink(missing_ok=True)
    ctx = JobContext(job_id=row.id, name=row.name, output_dir=output_dir,
                     device=os.environ.get("SCHED_DEVICE", "cpu"), reporter=Records(queue),
                     attempt=row.attempts, stop_requested=stop, group=row.group_name,
                     db_url=db_url, studies=partial(open_storage, db_url))
    try:
        kind = get_kind(row.kind)
        kind.run(kind.parse(row.params), ctx)
    except Preempted as exc:
        print(f"preempted: {exc}", file=sys.stderr, flush=True)
        return PREEMPTED_EXIT
    except BaseException as exc:  # noqa: BLE001 - every failure must reach the worker as a reason
        traceback.print_exc()
        _write_error(output_dir, f"{type(exc).__name__}: {exc}")
        return 1
    finally:
        queue.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
