"""sched's workers as Slurm jobs: the pilot pattern (dask-jobqueue, Parsl) on a cluster Slurm owns.

Each Slurm job is one `sched worker` draining the shared PostgreSQL queue. Slurm keeps what it
owns (nodes, accounts, fair share, time limits); sched keeps what Slurm does not know (priorities,
dependencies, studies, GPU sharing, warm runners, ensembles).

- `WorkerTemplate` is the batch script of one worker job: `#SBATCH` lines for its resources,
  `--signal=B:TERM@<grace + margin>` so the worker hears of the time limit (or `scancel`) in time
  to preempt its jobs (checkpoint, queued again, no attempt spent), and `exec sched worker` so
  the signal reaches the worker itself. The database URL in it has no password (the worker finds
  it in ~/.pgpass or a service file, as jobs do).
- `Slurm` runs the Slurm command line (`sbatch --parsable`, `squeue` with an explicit `-o`,
  `scancel`): the stable interface across Slurm versions.
- `demand` and `plan_scale` decide how many worker jobs the queued work needs; `scale_once` acts.

Only PostgreSQL: SQLite over a network file system loses its locks.
"""

from __future__ import annotations

import math
import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import SchedError

JOB_NAME = "sched-worker"
SIGNAL_MARGIN_S = 30  # besides the grace: the worker's step, the runner's stop, the checkpoint's write
SQUEUE_FORMAT = "%i|%T|%r|%N|%L|%b"  # id, state, reason, node, time left, gres
DRAIN_SIGNAL = "USR2"  # `sched slurm down`: the worker finishes its jobs, claims no more, exits


@dataclass
class WorkerTemplate:
    """The batch script of one sched worker as a Slurm job."""

    db_url: str  # without its password
    runs: Path
    gpus: int = 0  # --gres=gpu:k; 0: a CPU worker
    cpus: int = 2
    mem: str | None = None
    time: str | None = None  # Slurm's time limit: 60, 1:00:00, 1-00:00:00
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    sbatch_args: tuple[str, ...] = ()
    cpu_slots: int = 1
    grace_s: float = 60.0
    lease_s: float = 60.0
    idle_exit: str | None = None

    def directives(self) -> list[str]:
        lines = [f"--job-name={JOB_NAME}", f"--output={self.runs / 'slurm' / 'worker-%j.log'}",
                 "--nodes=1", "--ntasks=1", f"--cpus-per-task={self.cpus}",
                 f"--signal=B:TERM@{int(math.ceil(self.grace_s)) + SIGNAL_MARGIN_S}"]
        if self.gpus:
            lines.append(f"--gres=gpu:{self.gpus}")
        for flag, value in (("mem", self.mem), ("time", self.time), ("partition", self.partition),
                            ("account", self.account), ("qos", self.qos)):
            if value:
                lines.append(f"--{flag}={value}")
        return lines + list(self.sbatch_args)

    def command(self) -> list[str]:
        command = [sys.executable, "-m", "scheduler.cli", "--db", self.db_url, "worker",
                   "--gpus", "auto" if self.gpus else "none", "--cpu-slots", str(self.cpu_slots),
                   "--runs", str(self.runs), "--grace", f"{self.grace_s:g}", "--lease", f"{self.lease_s:g}",
                   "--heartbeat", f"{max(0.5, self.lease_s / 6):g}"]
        if self.idle_exit:
            command += ["--idle-exit", self.idle_exit]
        return command

    def script(self) -> str:
        """The batch script: Slurm's directives, then the worker in the shell's place (exec), so
        Slurm's signal reaches it."""
        head = ["#!/bin/bash", "# a sched worker draining the queue (written by `sched slurm`; see docs/cluster.md)"]
        head += [f"#SBATCH {shlex.quote(line)}" for line in self.directives()]
        body = ["set -e", f"cd {shlex.quote(str(Path.cwd()))}", "exec " + shlex.join(self.command())]
        return "\n".join(head + body) + "\n"

    def write(self) -> Path:
        folder = self.runs / "slurm"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"worker-{self.gpus}gpu.sbatch"
        path.write_text(self.script())
        return path


@dataclass(frozen=True)
class WorkerJob:
    """A sched worker job as squeue shows it."""

    job_id: str
    state: str  # PENDING, RUNNING, COMPLETING, ...
    reason: str
    node: str
    time_left: str
    gpus: int

    @property
    def pending(self) -> bool:
        return self.state == "PENDING"

    def as_json(self) -> dict:
        return {"job_id": self.job_id, "state": self.state, "reason": self.reason, "node": self.node,
                "time_left": self.time_left, "gpus": self.gpus}


class Slurm:
    """Slurm's command line; `run` is replaceable in tests."""

    def __init__(self, run=None):
        self._run = run or self._subprocess

    @staticmethod
    def _subprocess(argv: list[str]) -> str:
        if shutil.which(argv[0]) is None:
            raise SchedError(f"sched slurm needs Slurm's `{argv[0]}` on PATH, and it is not there: run it on "
                             "a node of the cluster (a login node), or install the Slurm client")
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise SchedError(f"{' '.join(argv[:2])}: {done.stderr.strip() or done.stdout.strip() or done.returncode}")
        return done.stdout

    def submit(self, script: Path) -> str:
        return self._run(["sbatch", "--parsable", str(script)]).strip().split(";")[0]

    def workers(self) -> list[WorkerJob]:
        out = self._run(["squeue", "-h", "--me", "--name", JOB_NAME, "-o", SQUEUE_FORMAT])
        return [_worker_job(line) for line in out.splitlines() if line.strip()]

    def cancel(self, job_ids: list[str], *, signal: str | None = None) -> None:
        if not job_ids:
            return
        argv = ["scancel"] + ([f"--signal={signal}", "--batch"] if signal else []) + job_ids
        self._run(argv)


def _worker_job(line: str) -> WorkerJob:
    job_id, state, reason, node, left, gres = (line.split("|") + [""] * 6)[:6]
    return WorkerJob(job_id, state, reason if reason not in ("None", "(null)") else "", node, left, _gres_gpus(gres))


def _gres_gpus(gres: str) -> int:
    """`gres:gpu:2`, `gpu:2`, `gpu:a100:2(IDX:0-1)` -> 2; anything else 0."""
    for part in gres.split(","):
        fields = part.split("(")[0].split(":")
        if "gpu" in fields and fields[-1].isdigit():
            return int(fields[-1])
    return 0


def require_postgresql(url: str) -> None:
    from ..store.engine import parse_url

    if parse_url(url).get_backend_name() != "postgresql":
        raise SchedError("sched slurm needs a PostgreSQL queue (--db postgresql://USER@HOST/DB): the workers run "
                         "on other nodes, and SQLite over a network file system loses its locks")


def bare_url(url: str) -> str:
    """The URL a batch script may hold: no password (the workers read ~/.pgpass or a service file)."""
    from ..store.engine import normalize_url, without_password

    return without_password(normalize_url(url))[0]


# ---- scaling --------------------------------------------------------------------------------

@dataclass
class Demand:
    """Queued work by what it needs: GPUs asked per job (gang size), and CPU jobs."""

    gpu_jobs: list[int] = field(default_factory=list)  # the `gpus:` of each queued GPU job
    cpu_jobs: int = 0


def demand(queue) -> Demand:
    """What the queue holds that workers could run (queued jobs, dependencies met or not)."""
    from ..store import queries as q

    with queue.read() as conn:
        rows = q.queued_gpu_asks(conn)
    found = Demand()
    for gpus in rows:
        if gpus:
            found.gpu_jobs.append(gpus)
        else:
            found.cpu_jobs += 1
    return found


def workers_needed(work: Demand, gpus_per_worker: int, cpu_slots: int) -> int:
    """Worker jobs the queued work keeps busy: GPU jobs packed by GPUs onto workers of
    `gpus_per_worker`, CPU jobs onto CPU slots (a GPU worker has its CPU slots too)."""
    if gpus_per_worker:
        fitting = [g for g in work.gpu_jobs if g <= gpus_per_worker]
        for_gpus = math.ceil(sum(fitting) / gpus_per_worker)
        for_cpus = math.ceil(work.cpu_jobs / cpu_slots)
        return max(for_gpus, for_cpus)
    return math.ceil(work.cpu_jobs / cpu_slots)


@dataclass(frozen=True)
class ScalePlan:
    submit: int
    cancel: tuple[str, ...]
    needed: int
    have: int


def plan_scale(needed: int, jobs: list[WorkerJob], minimum: int, maximum: int) -> ScalePlan:
    """Submit up to `maximum` worker jobs (pending plus running) while work waits; cancel pending
    ones no longer needed (newest first). Running workers leave by themselves (--idle-exit)."""
    target = max(minimum, min(maximum, needed))
    live = [j for j in jobs if j.state in ("PENDING", "RUNNING", "CONFIGURING")]
    if target > len(live):
        return ScalePlan(target - len(live), (), needed, len(live))
    pending = sorted((j for j in live if j.pending), key=lambda j: int(j.job_id.split("_")[0]), reverse=True)
    surplus = len(live) - target
    return ScalePlan(0, tuple(j.job_id for j in pending[:surplus]), needed, len(live))


def scale_once(queue, slurm: Slurm, template: WorkerTemplate, minimum: int, maximum: int) -> ScalePlan:
    jobs = [j for j in slurm.workers() if j.gpus == template.gpus]
    plan = plan_scale(workers_needed(demand(queue), template.gpus, template.cpu_slots), jobs, minimum, maximum)
    if plan.submit:
        script = template.write()
        for _ in range(plan.submit):
            slurm.submit(script)
    slurm.cancel(list(plan.cancel))
    return plan


def slurm_job_here() -> str | None:
    """The Slurm job this process runs in, if any."""
    return os.environ.get("SLURM_JOB_ID")


def slurm_job_end(job_id: str) -> str | None:
    """When the Slurm job ends (its time limit), as squeue says (ISO time), or None."""
    try:
        done = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%e"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    end = done.stdout.strip()
    return end if done.returncode == 0 and end[:1].isdigit() else None
