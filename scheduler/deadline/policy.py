"""What to do for campaigns whose deliverables would miss their deadline (pure decisions).

Under plain priorities the queue is replayed (replay.py). A campaign acts (policy `act`, the
default) once that forecast misses its deadline or leaves less than its margin (a share of the
time left, 10% by default), and keeps acting until its deliverables are done:

1. its deliverables and every job upstream of them (the path) are urgent: claimed before any
   other job whatever its priority, so preemptible jobs off the path yield to them;
2. a job off the path that would end after the deadline, while the path still runs, is held
   until the deliverables are done;
3. a job on the path that can end early (a tune) is cut short when the path still ends too late:
   it starts no trial that would end after `finish_by`; one off the path that cannot be asked to
   yield stops starting trials while path jobs wait;

and the queue is replayed again with those decisions, for the forecast shown. Policy `warn`
decides nothing and only reports.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

from .replay import Schedule, SimJob, WorkerShape, replay

ACT, WARN = "act", "warn"
DEFAULT_MARGIN = 0.1


@dataclass
class Campaign:
    name: str
    deadline: float  # seconds from now (negative: passed)
    policy: str = ACT
    margin: float = DEFAULT_MARGIN  # share of the time left kept as margin
    engaged: bool = False  # the policy acts on it already (until its deliverables are done)

    @property
    def margin_s(self) -> float:
        return self.margin * max(self.deadline, 0.0)


@dataclass
class Verdict:
    """A campaign's forecast: when its deliverables are done, and what is in the way."""

    campaign: str
    deadline: float
    done_by: float | None  # None: a deliverable cannot run on the workers up
    deliverables: list[str]
    remaining: int  # deliverables not done yet
    chain: list[tuple[str, float]] = field(default_factory=list)  # the critical path: (job, its end)
    unknown: list[str] = field(default_factory=list)  # path jobs of unknown duration (counted as 0)
    never: list[tuple[str, str]] = field(default_factory=list)  # path jobs that cannot run: (job, why)
    acting: bool = False

    @property
    def done(self) -> bool:
        return self.remaining == 0

    @property
    def misses(self) -> bool:
        return not self.done and (self.done_by is None or self.done_by > self.deadline)

    @property
    def spare(self) -> float | None:
        return None if self.done_by is None else self.deadline - self.done_by


@dataclass
class Decisions:
    urgent: set[int] = field(default_factory=set)
    held: dict[int, str] = field(default_factory=dict)  # job id -> reason
    finish_by: dict[int, float] = field(default_factory=dict)  # job id -> seconds from now
    notes: dict[int, str] = field(default_factory=dict)  # job id -> the policy's word on it
    verdicts: dict[str, Verdict] = field(default_factory=dict)  # with the decisions applied
    plain: dict[str, Verdict] = field(default_factory=dict)  # under plain priorities
    acting: set[str] = field(default_factory=set)  # campaigns the policy acts on
    schedule: Schedule = field(default_factory=Schedule)
    jobs: list[SimJob] = field(default_factory=list)  # as replayed, decisions applied


def path_of(deliverables: list[int], jobs: dict[int, SimJob]) -> set[int]:
    """The deliverables and every unfinished job upstream of them."""
    path, todo = set(), list(deliverables)
    while todo:
        job_id = todo.pop()
        if job_id in path or job_id not in jobs:
            continue
        path.add(job_id)
        todo.extend(jobs[job_id].deps)
    return path


def decide(jobs: list[SimJob], workers: list[WorkerShape], campaigns: list[Campaign], *,
           deliverables: dict[str, list[str]] | None = None,
           when: Callable[[float], str] = lambda s: f"+{s / 3600:.1f}h") -> Decisions:
    """The policy's decisions for `campaigns` over the queue `jobs` (module docstring).

    `deliverables`: every deliverable's name per campaign, done ones included (for the verdict);
    by default the unfinished ones in `jobs`. `when` writes a time for the notes."""
    plain_jobs = [dataclasses.replace(j, urgent=False, held_until=None, finish_by=None) for j in jobs]
    named = deliverables or {}
    plain = replay(plain_jobs, workers)
    out = Decisions(plain=_verdicts(campaigns, plain_jobs, plain, named), schedule=plain, jobs=plain_jobs)
    out.verdicts = out.plain
    acting = [c for c in campaigns if c.policy == ACT and not out.plain[c.name].done
              and (c.engaged or _at_risk(out.plain[c.name], c))]
    if not acting:
        return out
    out.acting = {c.name for c in acting}
    by_id = {j.id: j for j in plain_jobs}
    current = _mark_urgent(plain_jobs, acting, by_id, out, when)
    schedule = replay(current, workers)
    current = _hold_late_jobs(current, acting, schedule, out, when)
    schedule = replay(current, workers)
    current = _cut_short(current, acting, schedule, out, when)
    out.schedule = replay(current, workers)
    out.jobs = current
    out.verdicts = _verdicts(campaigns, current, out.schedule, named)
    for name in out.acting:
        out.verdicts[name].acting = True
    return out


def _at_risk(verdict: Verdict, campaign: Campaign) -> bool:
    return verdict.done_by is None or verdict.done_by > campaign.deadline - campaign.margin_s


def _deliverable_ids(jobs: list[SimJob], campaign: str) -> list[int]:
    return [j.id for j in jobs if j.campaign == campaign and j.deliverable]


def _mark_urgent(jobs, acting, by_id, out: Decisions, when) -> list[SimJob]:
    for campaign in acting:
        targets = _deliverable_ids(jobs, campaign.name)
        names = ", ".join(by_id[t].name for t in targets[:3]) + (", ..." if len(targets) > 3 else "")
        for job_id in path_of(targets, by_id):
            if job_id not in out.urgent:
                out.urgent.add(job_id)
                out.notes[job_id] = (f"urgent: on the path of {names} (campaign {campaign.name}, deadline "
                                     f"{when(campaign.deadline)}); goes before other jobs")
    return [dataclasses.replace(j, urgent=j.id in out.urgent) for j in jobs]


def _hold_late_jobs(jobs, acting, schedule: Schedule, out: Decisions, when) -> list[SimJob]:
    """Off the path, not started, ending after a deadline while that campaign's path still runs."""
    held_until: dict[int, frozenset[int]] = {}
    for campaign in sorted(acting, key=lambda c: c.deadline):
        targets = _deliverable_ids(jobs, campaign.name)
        path_end = schedule.end(targets)
        for job in jobs:
            slot = schedule.slots.get(job.id)
            if job.running or job.id in out.urgent or job.id in held_until or slot is None:
                continue
            if slot.end > campaign.deadline and (path_end is None or slot.start < path_end):
                held_until[job.id] = frozenset(targets)
                out.held[job.id] = (f"held until campaign {campaign.name}'s deliverables are done: it would end "
                                    f"{when(slot.end)}, after the deadline {when(campaign.deadline)}")
                out.notes[job.id] = out.held[job.id]
        for job in jobs:
            if job.running and job.preemptible and job.id not in out.urgent:
                out.notes.setdefault(job.id, f"yields its slot to jobs on campaign {campaign.name}'s path "
                                             "when they wait for it")
    return [dataclasses.replace(j, held_until=held_until.get(j.id, j.held_until)) for j in jobs]


def _cut_short(jobs, acting, schedule: Schedule, out: Decisions, when) -> list[SimJob]:
    """Jobs that can end early: on the path, by as much as the path is late; off the path and
    not preemptible, at once while path jobs wait."""
    finish_by: dict[int, float] = {}
    for campaign in acting:
        targets = _deliverable_ids(jobs, campaign.name)
        path = path_of(targets, {j.id: j for j in jobs})
        done_by = schedule.end(targets)
        late = None if done_by is None else done_by - (campaign.deadline - campaign.margin_s)
        for job in jobs:
            slot = schedule.slots.get(job.id)
            if not job.ends_early or slot is None:
                continue
            if job.id in path and late is not None and late > 0:
                finish_by[job.id] = max(slot.end - late, max(slot.start, 0.0))
                out.notes[job.id] = (f"starts no trial that would end after {when(finish_by[job.id])}, so campaign "
                                     f"{campaign.name}'s deliverables are done by {when(campaign.deadline)}")
            elif job.id not in path and job.running and not job.preemptible and _path_waits(jobs, path, schedule):
                finish_by[job.id] = 0.0
                out.notes[job.id] = (f"starts no further trial: jobs on campaign {campaign.name}'s path wait "
                                     "for its slot")
    out.finish_by.update(finish_by)
    return [dataclasses.replace(j, finish_by=finish_by.get(j.id, j.finish_by)) for j in jobs]


def _path_waits(jobs: list[SimJob], path: set[int], schedule: Schedule) -> bool:
    return any(j.id in path and not j.running and j.id in schedule.slots and schedule.slots[j.id].start > 0
               and not j.deps for j in jobs)


def _verdicts(campaigns, jobs: list[SimJob], schedule: Schedule, named: dict[str, list[str]]) -> dict[str, Verdict]:
    by_id = {j.id: j for j in jobs}
    out = {}
    for campaign in campaigns:
        targets = _deliverable_ids(jobs, campaign.name)
        path = path_of(targets, by_id)
        out[campaign.name] = Verdict(
            campaign=campaign.name, deadline=campaign.deadline, done_by=schedule.end(targets) if targets else 0.0,
            deliverables=named.get(campaign.name) or [by_id[t].name for t in targets], remaining=len(targets),
            chain=critical_chain(targets, by_id, schedule),
            unknown=[by_id[i].name for i in sorted(path) if i in schedule.unknown],
            never=[(by_id[i].name, schedule.never[i]) for i in sorted(path) if i in schedule.never])
    return out


def critical_chain(targets: list[int], by_id: dict[int, SimJob], schedule: Schedule) -> list[tuple[str, float]]:
    """From the job that holds up the last deliverable to it: each step the dependency that ended
    last, while it is what the next one waited for."""
    ending = [t for t in targets if t in schedule.slots]
    if not ending:
        return []
    current = max(ending, key=lambda t: schedule.slots[t].end)
    chain = [current]
    while True:
        deps = [d for d in by_id[current].deps if d in schedule.slots]
        if not deps:
            break
        latest = max(deps, key=lambda d: schedule.slots[d].end)
        if schedule.slots[latest].end < schedule.slots[current].start - 1.0:
            break
        chain.append(latest)
        current = latest
    return [(by_id[j].name, schedule.slots[j].end) for j in reversed(chain)]
