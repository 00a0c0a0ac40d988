"""A data-parallel job seen from its runner: torchrun starts one rank per GPU, the runner waits.

A kind with `data_parallel` (finetune, tapt) given k > 1 GPUs (SCHED_PROCESSES=k from the worker)
does not run in the runner: the runner writes the job to SPEC_FILE in its folder and starts

    python -m torch.distributed.run --standalone --nproc-per-node k -m scheduler.execute.ranks SPEC_FILE

torchrun is the standard launcher: it sets RANK, LOCAL_RANK, WORLD_SIZE and the rendezvous the
HF Trainer's DDP reads, and stops every rank when one fails. A stop request (SIGTERM or SIGUSR1
from the worker) becomes SIGTERM to each rank, not to torchrun: torchrun passes a SIGTERM of its
own on and kills the ranks 30 s later (TORCH_ELASTIC_SHUTDOWN_TIMEOUT), whatever the worker's
`--grace` gives the job to checkpoint. The ranks stop together at one step, checkpoint, and end
as preempted (scheduler/ranks.py); torchrun then exits on its own. The worker's grace bounds it
all: past it the worker kills every process of the job by its run token. torchrun's own timeout
is set to that grace too, for a torchrun that is signalled by someone else.

How the job ended is read from the endings the ranks write: the first failure (in time) is the
cause of the others (a rank that fails breaks its peers' next gradient exchange), and its exit
code keeps its meaning (INPUT_ERROR_EXIT: retrying cannot help). A rank that wrote none was
killed.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from .ranks import ENDINGS, PASSWORD_ENV, SPEC_FILE, Ending, read_endings
from .runner import PREEMPTED_EXIT

POLL_S = 0.2  # how often the runner looks at its stop flag while torchrun runs
GRACE_ENV = "SCHED_STOP_GRACE_S"  # the worker's --grace, in the job's environment
SHUTDOWN_TIMEOUT_ENV = "TORCH_ELASTIC_SHUTDOWN_TIMEOUT"  # torchrun's wait between SIGTERM and SIGKILL


class RanksFailed(Exception):
    """A rank failed: its exit code (1, or INPUT_ERROR_EXIT) and its one-line reason."""

    def __init__(self, code: int, reason: str):
        super().__init__(reason)
        self.code = code
        self.reason = reason


def run_ranks(job: dict, processes: int, stop, url: str) -> None:
    """Run `job` as `processes` ranks under torchrun; return when all succeeded, else raise
    Preempted (stopped on request) or RanksFailed."""
    from ..store.engine import without_password

    output_dir = Path(job["output_dir"])
    bare_url, password = without_password(url)
    spec = output_dir / SPEC_FILE
    spec.write_text(json.dumps({"job": job, "db_url": bare_url}))
    shutil.rmtree(output_dir / ENDINGS, ignore_errors=True)  # an earlier attempt's
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
               str(processes), "-m", "scheduler.execute.ranks", str(spec)]
    print(f"data-parallel: {processes} processes through torchrun", flush=True)
    secret = _password_file(password)
    try:
        proc = subprocess.Popen(command, env=_env(processes, secret), start_new_session=True)
        code = _wait(proc, stop)
    finally:
        if secret is not None:
            Path(secret).unlink(missing_ok=True)
    _outcome(read_endings(output_dir), processes, code, stop())


def _password_file(password: str | None) -> str | None:
    """The password in a file only this user reads, outside the run folder, for the ranks to read:
    a value in their environment would stay in /proc/PID/environ (and `ps e`) for their lifetime,
    however early they pop it."""
    if password is None:
        return None
    import tempfile

    fd, path = tempfile.mkstemp(prefix="sched-ranks-")  # mode 0600
    with os.fdopen(fd, "w") as fh:
        fh.write(password)
    return path


def _env(processes: int, password_file: str | None) -> dict[str, str]:
    """The ranks' environment: the runner's, where to read the password (not the password), and each
    rank's share of the slot's CPU threads (k ranks with the slot's count each would oversubscribe)."""
    env = dict(os.environ)
    if password_file is not None:
        env[PASSWORD_ENV] = password_file
    if "OMP_NUM_THREADS" in env:
        threads = str(max(1, int(env["OMP_NUM_THREADS"]) // processes))
        env.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
    if env.get(GRACE_ENV):
        env[SHUTDOWN_TIMEOUT_ENV] = str(max(1, math.ceil(float(env[GRACE_ENV]))))
    return env


def _wait(proc: subprocess.Popen, stop) -> int:
    """torchrun's exit code; a stop request that comes meanwhile is passed on to the ranks (each
    rank once, also one that torchrun starts after the request)."""
    signalled: set[int] = set()
    while True:
        try:
            return proc.wait(timeout=POLL_S)
        except subprocess.TimeoutExpired:
            if stop():
                signalled |= _stop_ranks(proc.pid, signalled)


def _stop_ranks(torchrun_pid: int, done: set[int]) -> set[int]:
    """SIGTERM to torchrun's children (the ranks) not yet told; the pids told now."""
    from jobs.proc import children

    told = set()
    for pid in children(torchrun_pid):
        if pid in done:
            continue
        try:
            os.kill(pid, signal.SIGTERM)
            told.add(pid)
        except ProcessLookupError:  # it ended meanwhile
            pass
    return told


def _outcome(endings: dict[int, Ending], processes: int, torchrun_code: int, stopped: bool) -> None:
    """Raise unless every rank succeeded."""
    from jobs.context import Preempted

    if len(endings) == processes and all(e.code == 0 for e in endings.values()):
        return  # done, even if a stop request came as it finished
    failures = sorted((e for e in endings.values() if e.code not in (0, PREEMPTED_EXIT)),
                      key=lambda e: (e.at, e.rank))
    preempted = sorted((e for e in endings.values() if e.code == PREEMPTED_EXIT), key=lambda e: e.rank)
    if _stopped(bool(preempted), bool(failures), stopped):
        raise Preempted(preempted[0].reason if preempted else "stopped on request")
    if failures:
        first = failures[0]
        where = "" if first.rank == 0 else f"rank {first.rank} (log: rank-{first.rank}.log): "
        raise RanksFailed(first.code, f"{where}{first.reason}")
    missing = [rank for rank in range(processes) if rank not in endings]
    raise RanksFailed(1, f"rank(s) {', '.join(map(str, missing)) or 'none'} ended without a reason "
                         f"(killed?); torchrun exited with {torchrun_code}")


def _stopped(preempted: bool, failed: bool, stop_requested: bool) -> bool:
    """Whether the ranks ended because they were asked to stop. After a request a rank may fail
    because its peer stopped first, or die of the signal before it could say so."""
    if failed:
        return preempted and stop_requested
    return preempted or stop_requested
