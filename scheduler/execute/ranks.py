"""One rank of a data-parallel job: `python -m scheduler.execute.ranks SPEC_FILE`, started by torchrun.

The runner (scheduler/dataparallel.py) writes SPEC_FILE (the job, the database URL without its
password) and starts torchrun, which starts one of these per GPU with RANK, LOCAL_RANK and
WORLD_SIZE set. Each rank runs the job's kind as a runner would; the HF Trainer inside makes
them one DDP run. Rank 0 records metrics, artifacts and progress in the queue's database; the
other ranks get a `Follower` reporter that reads (other jobs' records, for `from:` params) and
records nothing, so every row is written once.

The database password arrives in a file only this user can read, named by PASSWORD_ENV (popped
before anything else runs); the runner deletes the file when torchrun ends. Neither the spec file
nor a command line (both readable by others) nor any environment (which /proc keeps for a
process's lifetime) holds it. A stop request reaches each rank
as SIGTERM from torchrun (the runner signals torchrun) and sets the rank's stop flag: the job
checkpoints and raises Preempted as it would in a runner. Each rank writes how it ended (exit
code, one-line reason, when) to ENDINGS/rank-R.json in the job's folder, which the runner reads:
torchrun's own exit status only says that some rank failed. The job's log is rank 0's output;
rank R > 0 writes to rank-R.log beside it.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from .runner import (
    PREEMPTED_EXIT,
    LazyReporter,
    QueueLink,
    StopFlag,
    attach_log,
    failure_of,
    job_context,
    record_peak,
    url_with_password,
)

PASSWORD_ENV = "SCHED_RANKS_DB_PASSWORD_FILE"
SPEC_FILE = ".sched-ranks.json"
ENDINGS = ".sched-ranks"


@dataclass(frozen=True)
class Ending:
    rank: int
    code: int  # the exit code a runner would give: 0, PREEMPTED_EXIT, INPUT_ERROR_EXIT, 1
    reason: str | None  # one line, for a failure or a stop
    at: float  # time.time() when it ended: the first failure is usually the cause of the others


def write_ending(output_dir: Path, ending: Ending) -> None:
    folder = output_dir / ENDINGS
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"rank-{ending.rank}.json").write_text(json.dumps(asdict(ending)))


def read_endings(output_dir: Path) -> dict[int, Ending]:
    """{rank: how it ended} of the ranks that said so (a killed rank says nothing)."""
    folder = output_dir / ENDINGS
    endings = [Ending(**json.loads(path.read_text())) for path in sorted(folder.glob("rank-*.json"))]
    return {ending.rank: ending for ending in endings}


class Follower:
    """The reporter of ranks other than 0: reads as rank 0's does, records nothing (rank 0 does).

    Only the methods a reporter has are here, so a recording method added to jobs/context.py's
    Reporter later fails loudly on these ranks instead of recording k times."""

    def __init__(self, reads):
        self.reads = reads

    def log_metric(self, job_id, key, value, step=None, split=None) -> None:
        pass

    def add_artifact(self, job_id, name, path) -> None:
        pass

    def set_progress(self, job_id, done, total, message) -> None:
        pass

    def job(self, ref):
        return self.reads.job(ref)

    def jobs_where(self, *, kind=None, tag=None, status=None):
        return self.reads.jobs_where(kind=kind, tag=tag, status=status)


def _read_password(path: str | None) -> str | None:
    if not path:
        return None
    try:
        return Path(path).read_text()
    except OSError:  # gone: the runner ended meanwhile; the rank fails on its first database call
        return None


def main(argv: list[str]) -> int:
    password = _read_password(os.environ.pop(PASSWORD_ENV, None))  # first: nothing it starts inherits it
    stop = StopFlag()
    signal.signal(signal.SIGTERM, stop.set)
    signal.signal(signal.SIGUSR1, stop.set)
    if len(argv) != 1:
        sys.exit("usage: python -m scheduler.execute.ranks SPEC_FILE (started by torchrun; see scheduler/dataparallel.py)")
    spec = json.loads(Path(argv[0]).read_text())
    job, rank = spec["job"], int(os.environ.get("RANK", "0"))
    output_dir = Path(job["output_dir"])
    if rank:
        attach_log(str(output_dir / f"rank-{rank}.log"))
    queue = QueueLink()
    queue.set_url(url_with_password(spec["db_url"], password))
    from ..outage import BufferedReporter

    reporter = BufferedReporter(LazyReporter(queue) if rank == 0 else Follower(LazyReporter(queue)))
    try:
        code, reason = _run_rank(job, stop, reporter, queue.url)
        if rank == 0:  # the ranks are alike: rank 0's peak stands for the job's
            record_peak(job["id"], reporter)
    finally:
        queue.close()
    write_ending(output_dir, Ending(rank, code, reason, time.time()))
    return code


def _run_rank(job: dict, stop: StopFlag, reporter, url: str) -> tuple[int, str | None]:
    """Run the job's kind on this rank: (exit code, one-line reason). The runner checked its
    params and inputs before it started torchrun."""
    from jobs import get_kind, gpu
    from jobs.context import Preempted

    try:
        if stop():
            raise Preempted("stopped before the job started")
        kind = get_kind(job["kind"])
        gpu.require_cuda()  # each rank: a rank without CUDA would train on the CPU over gloo
        kind.run(kind.parse(job["params"]), job_context(job, stop, reporter, url))
        reporter.finish()  # what it reported during a database outage, before it counts as done
    except Preempted as exc:
        print(f"preempted: {exc}", file=sys.stderr, flush=True)
        return PREEMPTED_EXIT, str(exc)
    except BaseException as exc:  # noqa: BLE001 - every failure must reach the runner as a reason
        return failure_of(exc)
    return 0, None


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
