"""The queue played forward: each job's expected start and end on the workers that are up.

Claims go as the worker takes them: runnable jobs (dependencies done, `not_before` passed, not
held) in claim order (urgent, then priority, then first submitted); CPU jobs on free CPU slots;
GPU jobs through the worker's own placement (scheduler/execute/placement.py: whole GPUs, gangs,
memory shares, the reservation for the first job that does not fit), and a reserved job that
fits once lower-ranked preemptible jobs yield makes them yield, as the worker asks them to. A
yielded job resumes later with the time it had left (jobs resume from their checkpoints).

Pure: times are seconds from now, durations come from the caller (scheduler/deadline/estimate.py).
A job of unknown duration counts as taking no time; the caller says which those are.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from ..execute.placement import ClaimPass, Gpu, Held
from ..limits import claim_rank
from ..resources import Request

EPSILON = 1e-6


@dataclass
class SimJob:
    """A job not finished yet, as the replay needs it."""

    id: int
    name: str
    priority: int = 0
    gpus: int = 0
    share_mib: int | None = None  # a 1-GPU job sharing its GPU: its share; None: whole GPUs
    preemptible: bool = False
    deps: tuple[int, ...] = ()  # jobs it waits for that have not succeeded yet
    duration: float | None = None  # expected total seconds; None: unknown
    running: bool = False
    elapsed: float = 0.0  # running: seconds since it started
    worker: int | None = None  # running: the index of its worker in the replay's list
    gpu_indices: tuple[int, ...] = ()  # running: the GPUs it holds there (none: a CPU slot)
    urgent: bool = False
    held_until: frozenset[int] | None = None  # held: starts once these jobs are done
    not_before: float = 0.0
    finish_by: float | None = None  # ends by then at the latest (a job that ends early, cut short)
    # Its kind's own limit (a tune's `until:`): ("after", seconds from its start) or ("at", from now)
    time_limit: tuple[str, float] | None = None
    campaign: str | None = None
    deliverable: bool = False
    ends_early: bool = False

    @property
    def rank(self) -> int:
        return claim_rank(self.priority, self.urgent)

    @property
    def unknown(self) -> bool:
        return self.duration is None


@dataclass
class WorkerShape:
    """A worker that is up: its GPUs' memory (MiB; None: unknown, no sharing) and CPU slots."""

    gpus: list[int | None] = field(default_factory=list)
    cpu_slots: int = 1
    name: str = ""


@dataclass
class Slot:
    start: float
    end: float
    worker: int | None
    gpus: tuple[int, ...] = ()
    yielded: int = 0  # times it yielded to a higher-ranked job


@dataclass
class Schedule:
    slots: dict[int, Slot] = field(default_factory=dict)  # job id -> its expected run (the last part)
    never: dict[int, str] = field(default_factory=dict)  # job id -> why it cannot run on these workers
    unknown: set[int] = field(default_factory=set)  # jobs of unknown duration (counted as 0)

    def end(self, job_ids) -> float | None:
        """When the last of `job_ids` ends; None when one of them never runs."""
        ends = []
        for job_id in job_ids:
            if job_id in self.never:
                return None
            if job_id in self.slots:
                ends.append(self.slots[job_id].end)
        return max(ends, default=0.0)


@dataclass
class _Running:
    job: SimJob
    end: float
    worker: int
    gpus: tuple[int, ...]
    share: int | None


class _Replay:
    def __init__(self, jobs: list[SimJob], workers: list[WorkerShape]):
        self.jobs = {j.id: j for j in jobs}
        self.workers = workers
        self.schedule = Schedule(unknown={j.id for j in jobs if j.unknown})
        self.left = {j.id: max((j.duration or 0.0) - (j.elapsed if j.running else 0.0), 0.0) for j in jobs}
        self.done: set[int] = set()
        self.running: dict[int, _Running] = {}
        self.pending = sorted((j for j in jobs if not j.running), key=lambda j: (-j.rank, j.id))
        self.yields: dict[int, int] = {}

    # ---- the loop -----------------------------------------------------------------------------

    def run(self) -> Schedule:
        for job in self.jobs.values():
            if job.running:
                self._place_running(job)
        now = 0.0
        while True:
            self._start_what_fits(now)
            upcoming = [r.end for r in self.running.values()]
            upcoming += [j.not_before for j in self.pending if j.not_before > now]
            if not upcoming:
                break
            now = max(min(upcoming), now)
            for job_id in [i for i, r in self.running.items() if r.end <= now + EPSILON]:
                del self.running[job_id]
                self.done.add(job_id)
        for job in self.pending:
            self.schedule.never[job.id] = self._why_never(job)
        return self.schedule

    def _place_running(self, job: SimJob) -> None:
        end = self._end(job, 0.0, self.left[job.id])
        worker = job.worker if job.worker is not None and job.worker < len(self.workers) else -1
        self.running[job.id] = _Running(job, end, worker, job.gpu_indices, job.share_mib)
        self.schedule.slots[job.id] = Slot(-job.elapsed, end, None if worker < 0 else worker, job.gpu_indices)

    def _end(self, job: SimJob, start: float, left: float) -> float:
        end = start + left
        if job.finish_by is not None:
            end = min(end, max(job.finish_by, start))
        if job.time_limit is not None:
            how, value = job.time_limit
            began = start - job.elapsed if job.running else start
            end = min(end, max(value if how == "at" else began + value, start))
        return end

    # ---- claims -------------------------------------------------------------------------------

    def _ready(self, job: SimJob, now: float) -> bool:
        if job.not_before > now + EPSILON:
            return False
        if any(d in self.jobs and d not in self.done for d in job.deps):
            return False
        return job.held_until is None or all(d not in self.jobs or d in self.done for d in job.held_until)

    def _start_what_fits(self, now: float) -> None:
        while True:
            ready = [j for j in self.pending if self._ready(j, now)]
            started = self._start_cpu_jobs([j for j in ready if j.gpus == 0], now)
            started |= self._start_gpu_jobs([j for j in ready if j.gpus > 0], now)
            if not started:
                return

    def _start(self, job: SimJob, now: float, worker: int, gpus: tuple[int, ...], share: int | None) -> None:
        self.pending.remove(job)
        end = self._end(job, now, self.left[job.id])
        self.running[job.id] = _Running(job, end, worker, gpus, share)
        self.schedule.slots[job.id] = Slot(now, end, worker, gpus, self.yields.get(job.id, 0))

    def _start_cpu_jobs(self, ready: list[SimJob], now: float) -> bool:
        started = False
        for job in ready:
            free = [w for w, shape in enumerate(self.workers)
                    if sum(1 for r in self.running.values() if r.worker == w and not r.gpus) < shape.cpu_slots]
            if free:
                self._start(job, now, free[0], (), None)
                started = True
            elif self._yield_cpu_for(job, now):
                return True
        return started

    def _yield_cpu_for(self, job: SimJob, now: float) -> bool:
        """A CPU job waits and every CPU slot is taken: the lowest-ranked preemptible one below it yields."""
        victims = [r for r in self.running.values() if not r.gpus and r.worker >= 0
                   and r.job.preemptible and r.job.rank < job.rank]
        if not victims:
            return False
        self._yield(min(victims, key=lambda r: r.job.rank), now)
        return True

    def _start_gpu_jobs(self, ready: list[SimJob], now: float) -> bool:
        started = False
        for w, shape in enumerate(self.workers):
            if not shape.gpus:
                continue
            claim_pass = ClaimPass(self._gpus(w))
            for job in [j for j in ready if j.id not in self.running]:
                share = job.share_mib if claim_pass.can_share and job.gpus == 1 else None
                placement = claim_pass.place(Request(job.id, job.name, job.rank, job.gpus, share, job.preemptible))
                if placement is not None:
                    self._start(job, now, w, placement.gpus, placement.share_mib)
                    started = True
            if not started and self._yield_gpus_for(claim_pass, w, now):
                return True
        return started

    def _gpus(self, w: int) -> list[Gpu]:
        gpus = [Gpu(i, total) for i, total in enumerate(self.workers[w].gpus)]
        for r in self.running.values():
            if r.worker == w:
                for i in r.gpus:
                    gpus[i].held.append(Held(r.share, r.job.rank, r.job.preemptible))
        return gpus

    def _yield_gpus_for(self, claim_pass: ClaimPass, w: int, now: float) -> bool:
        """The worker's rule (worker._gpu_victim): the reserved job fits once lower-ranked preemptible
        jobs yield, so the lowest-ranked of them on its GPUs yields."""
        held = claim_pass.reservation
        if held is None or not held.by_preemption or held.by_leaving:
            return False
        victims = [r for r in self.running.values() if r.worker == w and r.gpus
                   and r.job.preemptible and r.job.rank < held.priority]
        on_kept = [r for r in victims if set(r.gpus) & set(held.gpus)]
        victims = on_kept or victims
        if not victims:
            return False
        self._yield(min(victims, key=lambda r: r.job.rank), now)
        return True

    def _yield(self, running: _Running, now: float) -> None:
        job = running.job
        del self.running[job.id]
        self.left[job.id] = max(running.end - now, 0.0)
        self.yields[job.id] = self.yields.get(job.id, 0) + 1
        self.schedule.slots.pop(job.id, None)
        self.pending.append(job)
        self.pending.sort(key=lambda j: (-j.rank, j.id))

    def _why_never(self, job: SimJob) -> str:
        if job.gpus and not any(len(w.gpus) >= job.gpus for w in self.workers):
            most = max((len(w.gpus) for w in self.workers), default=0)
            return f"needs {job.gpus} GPU(s); the workers up have at most {most}"
        if not job.gpus and not any(w.cpu_slots for w in self.workers):
            return "needs a CPU slot; no worker up has one"
        waits = [self.jobs[d].name for d in job.deps if d in self.jobs and d not in self.done]
        if waits:
            return f"waits for {', '.join(waits[:3])}, which cannot run"
        return "cannot be placed on the workers up"


def replay(jobs: list[SimJob], workers: list[WorkerShape]) -> Schedule:
    """Each job's expected run on `workers`, from now (0.0); see the module docstring."""
    return _Replay([dataclasses.replace(j) for j in jobs], workers).run()
