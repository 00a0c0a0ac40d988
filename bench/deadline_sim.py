"""What the deadline policy buys on the seed campaign: a simulation on one GPU, not a measurement.

    python bench/deadline_sim.py [--seeds 5] [--quick] [--per-seed] [--samples-per-s 1000] [--sigma 0.2]
                                 [--margin 0.1]

About 5 s for 5 seeds (under 3 s with --quick); it needs no GPU and machine load does not matter.

The campaign of queue.yaml (5 TAPTs, 5 fine-tunes, the baseline, the ensemble, the roberta tune as
preemptible backfill, 5 full-data retrains, the final ensemble) runs on one GPU and one CPU slot in
a discrete-event simulation whose brain is the scheduler's own code: at every start, end, tune trial
and every few simulated minutes a planner pass calls `scheduler.deadline.policy.decide` on the queue as the
planner would see it (estimates from `scheduler.deadline.estimate`: the job's own progress, like
jobs that finished scaled by rows x epochs, else the modelled duration), and the claims are the
first step of the replay it returns (`scheduler.deadline.replay`, which places through the worker's
`ClaimPass`): what the replay starts now starts (once its dependencies have really ended and its
slot is really free), a running preemptible job the replay makes yield now yields. The tune reads
the pass's `finish_by` as jobs/tune/tuner.py does: before each trial it stops when now + a typical
trial would end after it.

Reality differs from the estimates: each job really takes its modelled duration times a lognormal
factor (seeded), which the scheduler learns only from progress and from jobs that finished. Each
seed runs twice on the same reality: `plain` (the campaign's policy `warn`: priorities only) and
`policy` (`act`), against deadlines set as multiples of the plain forecast made at the start.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.benchlib import ROOT, table  # noqa: E402
from scheduler.deadline.estimate import (  # noqa: E402
    Finished,
    RowCounter,
    from_history,
    from_progress,
    model_key,
    work_units,
)
from scheduler.deadline.policy import ACT, DEFAULT_MARGIN, WARN, Campaign, Decisions, decide  # noqa: E402
from scheduler.deadline.replay import SimJob, WorkerShape  # noqa: E402

# Multiples of the plain forecast at the start; at 0.3x the rest of the path leaves the tune less
# than one trial's time, so the tuner's rule for its first trial decides the outcome.
DEADLINES = (1.5, 1.2, 1.0, 0.85, 0.7, 0.3)
FULL_DATA_SCALE = 9  # ../shared/data (108,000 train / 12,000 test rows) is 9x the data/ sample
SAMPLES_PER_S = 1000.0
SIGMA = 0.2
TICK_S = 300.0  # a planner pass every 5 simulated minutes (the worker's is 15 s; coarser keeps it fast)
QUICK_TICK_S = 600.0
WORKER = WorkerShape(gpus=[None], cpu_slots=1, name="one GPU")  # memory unknown: every GPU job whole
EPS = 1e-6
# The tuner reads finish_by a moment after the pass wrote it (from the database, in a child that had
# to start), so on a tie with a pass at the same simulated instant it stops.
TUNER_LAG_S = 1.0
MAX_SIM_S = 30 * 24 * 3600.0  # a run that goes on this long is a bug in the simulation


# ---- the campaign, as modelled ---------------------------------------------------------------------

@dataclass(frozen=True)
class Task:
    """A job of the campaign: what the scheduler knows of it before it runs."""

    id: int
    name: str
    kind: str
    priority: int
    gpus: int
    preemptible: bool
    deps: tuple[int, ...]
    deliverable: bool
    ends_early: bool
    model: str | None
    units: float | None  # rows x epochs (x trials), as jobs/work.py counts them
    modelled: float  # seconds: the duration the forecast starts from
    trials: int = 0  # a tune: n_trials; its modelled duration is trials x one trial
    work: str = ""  # where `units` comes from, for the header
    until: float | None = None  # a tune: its `until:` duration, from its first start


def scaled_rows(scale: int):
    """Rows of the queue file's data files, times `scale` (the sample in data/ stands for the full data)."""
    count = RowCounter()

    def rows_of(path: str) -> int | None:
        found = count(str(ROOT / path))
        return None if found is None else found * scale
    return rows_of


def campaign(queue_file: Path, scale: int, samples_per_s: float) -> list[Task]:
    """The queue file's jobs with modelled durations; a tune group becomes one job (module notes)."""
    from jobs import get_kind
    from scheduler.plan import load_plan

    specs = load_plan(queue_file)
    rows_of = scaled_rows(scale)
    # A `workers: k` tune is k jobs sharing one study; on one GPU the first does every trial and the
    # others find the budget taken, so the group is one job here, named by the group.
    names = {s.name: (s.group_name or s.name) for s in specs}
    ids: dict[str, int] = {}
    tasks = []
    for spec in specs:
        name = names[spec.name]
        if name in ids:
            continue
        ids[name] = len(ids) + 1
        units = work_units(spec.kind, spec.params, rows_of)
        gpu_job = spec.gpus > 0
        modelled = units / samples_per_s if gpu_job and units else (spec.expected_s or 0.0)
        deps = tuple(dict.fromkeys(ids[names[a]] for a in spec.after))
        tasks.append(Task(ids[name], name, spec.kind, spec.priority, spec.gpus, spec.preemptible, deps,
                          spec.deliverable, get_kind(spec.kind).ends_early, model_key(spec.kind, spec.params),
                          units, modelled, int(spec.params.get("n_trials", 0)) if spec.kind == "tune" else 0,
                          work_text(spec.kind, spec.params, units, rows_of), until_s(spec.kind, spec.params)))
    return tasks


def until_s(kind: str, params: dict) -> float | None:
    """A tune's `until:` as a duration (an ISO time has no place on a simulated clock)."""
    from jobs.tune import parse_until

    until = parse_until(params.get("until")) if kind == "tune" else None
    return until[1] if until and until[0] == "after" else None


def work_text(kind: str, params: dict, units: float | None, rows_of) -> str:
    """How jobs/work.py arrives at the job's units, in words."""
    if units is None:
        return ""
    if kind == "tapt":
        return f"{sum(rows_of(t) for t in params['texts']):,} train+test texts x {params['epochs']} epochs"
    if kind == "tune":
        epochs = params["space"]["epochs"]
        return (f"{params['n_trials']} trials x {units / params['n_trials']:,.0f} row-epochs: 90% of the train "
                f"rows x {(epochs['low'] + epochs['high']) / 2:g} epochs, the middle of its space")
    rows = "all the train rows" if params.get("full_data") else f"{1 - params['val_fraction']:.0%} of the train rows"
    return f"{units / params['epochs']:,.0f} rows, {rows}, x {params['epochs']} epochs"


def describe(tasks: list[Task], scale: int, samples_per_s: float, sigma: float, tick_s: float) -> list[str]:
    """The assumptions, printed above the figures."""
    def first(kind, full=False):
        return next(t for t in tasks if t.kind == kind and (t.name.startswith("retrain") == full))

    tapt, ft, retrain, tune = first("tapt"), first("finetune"), first("finetune", True), first("tune")
    cpu = ", ".join(f"{t.name} {t.modelled / 60:.0f} min" for t in tasks if not t.gpus)
    return [
        "durations are MODELLED ASSUMPTIONS, not measurements: work = rows x epochs (x trials) as jobs/work.py "
        f"counts it, over queue.yaml's data files x {scale} (the full demo data in ../shared/data: 108,000 "
        "train / 12,000 test rows; data/ holds a 1/9 sample)",
        f"speed: {samples_per_s:,.0f} training samples/s for every GPU job (assumed: a base-size encoder, "
        "110-125M parameters, at max_length 128, batch 32, mixed precision on one data-centre GPU; all five "
        "models are base-size, so one speed; an MLM step costs a fine-tune step; --samples-per-s changes it)",
        f"  tapt {tapt.modelled / 60:.1f} min ({tapt.work}); finetune {ft.modelled / 60:.1f} min ({ft.work}); "
        f"retrain {retrain.modelled / 60:.1f} min ({retrain.work})",
        f"  tune {tune.modelled / tune.trials / 60:.1f} min a trial, {tune.modelled / 3600:.2f} h in all ({tune.work}; "
        f"no pruning); CPU jobs from queue.yaml's expected: hints: {cpu}",
        f"reality: each job takes its modelled duration x lognormal(0, {sigma:g}) (one draw per job and seed; "
        "the tune's trials all take the same time); the forecast sees the modelled duration until a like "
        "job finished (estimate.from_history: same kind and model, scaled by rows x epochs), and a running "
        "job's own rate (estimate.from_progress) once past 2%",
        f"a planner pass at every start, end and trial boundary and every {tick_s / 60:.0f} simulated minutes "
        "runs decide(); the claims are what its replay starts now, once their dependencies have really ended "
        "and their slot is really free (the replay lets a tune whose finish_by has come end at once); the "
        "campaign stays engaged once it acted, as the planner keeps it",
        "the tune (its `workers: 2` group as one job: on one GPU the first job runs every trial) stops "
        "before a trial that would end after finish_by (a typical trial: the median of its trials so far, "
        "before the first the forecast's estimate over its trials, as jobs/tune/tuner.py), or once its `until:` "
        f"({'none' if tune.until is None else f'{tune.until / 3600:g} h'}) has passed since its first start",
        "simplifications: no start-up gaps, failures or retries; a yielded job resumes with no loss; "
        "running time counts over all attempts; passes every few minutes instead of 15 s",
    ]


# ---- one simulated run ---------------------------------------------------------------------------

@dataclass
class Live:
    """A job's real state in one run."""

    task: Task
    actual: float  # seconds of work it really needs (a tune: one trial)
    worked: float = 0.0  # seconds done (a tune: into its current trial)
    ran: float = 0.0  # seconds it has run, all attempts
    running: bool = False
    ended: float | None = None
    trials: list[float] = field(default_factory=list)  # a tune: its trials' durations
    started: float | None = None  # when it first started
    trial_end_by: float | None = None  # a tune: the finish_by in force when its current trial started

    @property
    def is_tune(self) -> bool:
        return self.task.trials > 0

    def progress(self) -> tuple[float, float]:
        """(done, total) as the job reports it: steps, or trials for a tune."""
        if self.is_tune:
            return len(self.trials) + self.worked / self.actual, float(self.task.trials)
        return self.worked, self.actual

    def to_boundary(self) -> float:
        return max(self.actual - self.worked, 0.0)


@dataclass
class Acts:
    """What the policy did over a run, to say which of its levers this campaign used."""

    engaged: bool = False
    urgent: set[str] = field(default_factory=set)
    held: set[str] = field(default_factory=set)
    cut: bool = False  # the tune had a finish_by at some pass
    yields: int = 0  # running jobs the replay made yield
    overran: int = 0  # tune trials that ended after the finish_by in force when they started


@dataclass
class Outcome:
    ends: dict[str, float]  # deliverable -> when it ended
    trials: int
    forecasts: list[tuple[float, float]]  # (when the pass ran, when it said the deliverables are done)
    acts: Acts
    names: list[str]  # every job of the run

    @property
    def last(self) -> float:
        return max(self.ends.values())

    def in_time(self, deadline: float) -> int:
        return sum(end <= deadline + EPS for end in self.ends.values())

    def forecast_error(self, share: float) -> float | None:
        """The forecast made at `share` of the way to the last deliverable, against its real end."""
        made = [f for t, f in self.forecasts if t <= share * self.last + EPS]
        return (made[-1] - self.last) / self.last if made else None


class Run:
    def __init__(self, tasks: list[Task], factors: dict[int, float], deadline: float, policy: str, tick_s: float,
                 margin: float = DEFAULT_MARGIN):
        self.live = {t.id: Live(t, (t.modelled / t.trials if t.trials else t.modelled) * factors[t.id])
                     for t in tasks}
        self.campaign = Campaign("sim", deadline, policy, margin)
        self.deadline = deadline
        self.tick_s = tick_s
        self.now = 0.0
        self.history: list[Finished] = []
        self.finish_by: dict[int, float] = {}  # absolute, from the last pass
        self.forecasts: list[tuple[float, float]] = []
        self.acts = Acts()

    # ---- what the planner sees

    def expected(self, job: Live) -> float:
        """estimate.estimate's order: own progress, like jobs' history, else the modelled duration."""
        task = job.task
        if job.running:
            own = from_progress(job.ran, *job.progress())
            if own is not None:
                return own.seconds
        learned = from_history(task.kind, task.model, task.units, self.history)
        return learned.seconds if learned is not None else task.modelled

    def sim_jobs(self) -> list[SimJob]:
        open_ids = {i for i, j in self.live.items() if j.ended is None}
        return [SimJob(id=i, name=j.task.name, priority=j.task.priority, gpus=j.task.gpus,
                       preemptible=j.task.preemptible, deps=tuple(d for d in j.task.deps if d in open_ids),
                       duration=self.expected(j), running=j.running, elapsed=j.ran if j.running else 0.0,
                       worker=0 if j.running else None, gpu_indices=(0,) if j.running and j.task.gpus else (),
                       campaign="sim", deliverable=j.task.deliverable, ends_early=j.task.ends_early)
                for i, j in self.live.items() if i in open_ids]

    def planner_pass(self) -> Decisions:
        self.campaign.deadline = self.deadline - self.now
        decisions = decide(self.sim_jobs(), [WORKER], [self.campaign])
        verdict = decisions.verdicts["sim"]
        # The planner's engagement: acting once, it keeps acting until the deliverables are done.
        self.campaign.engaged = "sim" in decisions.acting or (self.campaign.engaged and not verdict.done)
        self.finish_by = {i: self.now + s for i, s in decisions.finish_by.items()}
        self.acts.engaged |= bool(decisions.acting)
        self.acts.urgent |= {self.live[i].task.name for i in decisions.urgent}
        self.acts.held |= {self.live[i].task.name for i in decisions.held}
        self.acts.cut |= bool(decisions.finish_by)
        if verdict.done_by is not None and not verdict.done:
            self.forecasts.append((self.now, self.now + verdict.done_by))
        return decisions

    # ---- claims: the first step of the replay

    def claim(self, decisions: Decisions) -> bool:
        """Start and stop what the replay does now; True when a job ended here (a tune stopping at once)."""
        slots = decisions.schedule.slots
        rank = {j.id: j.rank for j in decisions.jobs}
        for job in self.running():
            slot = slots.get(job.task.id)
            if job.task.preemptible and (slot is None or slot.start > -job.ran + EPS):
                job.running = False  # the replay made it yield now; it resumes from its checkpoint
                self.acts.yields += 1
        starting = sorted((i for i, s in slots.items() if s.start <= EPS and not self.live[i].running
                           and self.live[i].ended is None),
                          key=lambda i: (-rank[i], i))
        ended = False
        for job_id in starting:
            job = self.live[job_id]
            # The replay lets a job end at once (a tune whose finish_by has come, a job past its
            # estimate) and starts what waited for it; really it still runs, so check what the worker checks.
            if not self.slot_free(job.task.gpus > 0) or any(self.live[d].ended is None for d in job.task.deps):
                continue
            job.running = True
            job.started = self.now if job.started is None else job.started
            if job.is_tune and job.worked == 0.0:
                self.tune_boundary(job)
                ended |= job.ended is not None
        return ended

    def slot_free(self, gpu: bool) -> bool:
        held = sum(1 for j in self.running() if (j.task.gpus > 0) == gpu)
        return held < (len(WORKER.gpus) if gpu else WORKER.cpu_slots)

    def running(self) -> list[Live]:
        return [j for j in self.live.values() if j.running]

    # ---- reality

    def tune_boundary(self, job: Live) -> None:
        """Before a trial, as the tuner: stop when the budget is spent, `until:` has passed, or a trial would
        end after finish_by."""
        end_by = self.finish_by.get(job.task.id)
        # Before its first trial the tuner takes the forecast's estimate of the job over its trials.
        typical = statistics.median(job.trials) if job.trials else job.task.modelled / max(job.task.trials, 1)
        over = job.task.until is not None and self.now >= job.started + job.task.until
        if job.trial_end_by is not None and self.now > job.trial_end_by + EPS:
            self.acts.overran += 1
        cut = end_by is not None and self.now + TUNER_LAG_S + typical > end_by
        if len(job.trials) >= job.task.trials or over or cut:
            self.end(job)
        else:
            job.trial_end_by = end_by

    def end(self, job: Live) -> None:
        job.running, job.ended = False, self.now
        # As the planner records it: the work its params describe (a tune cut short counts all its trials).
        self.history.append(Finished(job.task.kind, job.task.model, job.task.units, job.ran))

    def advance(self) -> None:
        """To the next job boundary or pass, whichever is first; jobs that reach a boundary end."""
        step = min([self.tick_s] + [j.to_boundary() for j in self.running()])
        self.now += step
        for job in self.running():
            job.worked += step
            job.ran += step
        for job in self.running():
            if job.to_boundary() > EPS:
                continue
            if job.is_tune:
                job.trials.append(job.actual)
                job.worked = 0.0
                self.planner_pass()  # the tuner reads finish_by as the last pass wrote it, seconds ago
                self.tune_boundary(job)
            else:
                self.end(job)

    def go(self) -> Outcome:
        deliverables = [j for j in self.live.values() if j.task.deliverable]
        while any(j.ended is None for j in deliverables):
            if self.now > MAX_SIM_S:
                raise RuntimeError(f"simulation ran past {MAX_SIM_S / 3600:.0f} h: jobs left "
                                   f"{[j.task.name for j in self.live.values() if j.ended is None]}")
            while self.claim(self.planner_pass()):
                pass  # the tune stopped before its first trial: the next job claims its GPU at once
            if not self.running():
                raise RuntimeError("nothing runs and deliverables are left: " +
                                   ", ".join(j.task.name for j in deliverables if j.ended is None))
            self.advance()
        tune = [j for j in self.live.values() if j.is_tune]
        return Outcome({j.task.name: j.ended for j in deliverables}, sum(len(j.trials) for j in tune),
                       self.forecasts, self.acts, [j.task.name for j in self.live.values()])


def plain_forecast(tasks: list[Task]) -> float:
    """When the deliverables are done under plain priorities, as forecast at the start (modelled durations)."""
    run = Run(tasks, {t.id: 1.0 for t in tasks}, 0.0, WARN, TICK_S)
    done_by = decide(run.sim_jobs(), [WORKER], [Campaign("sim", 0.0, WARN)]).verdicts["sim"].done_by
    if done_by is None:
        raise RuntimeError("a deliverable cannot run on one GPU and one CPU slot")
    return done_by


def factors(tasks: list[Task], seed: int, sigma: float) -> dict[int, float]:
    rng = random.Random(seed)
    return {t.id: math.exp(rng.gauss(0.0, sigma)) for t in tasks}


# ---- output --------------------------------------------------------------------------------------

def hours(seconds: float) -> str:
    return f"{seconds / 3600:.2f}"


def pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:+.1f}%"


def median_min(values: list[int]) -> str:
    return f"{statistics.median(values):g} ({min(values)})"


def summary_row(mult: float, deadline: float, plain: list[Outcome], act: list[Outcome]) -> list[str]:
    n = len(plain)
    row = [f"{mult:g}x", hours(deadline)]
    for runs in (plain, act):
        row += [f"{sum(r.in_time(deadline) == len(r.ends) for r in runs)}/{n}",
                median_min([r.in_time(deadline) for r in runs]),
                hours(statistics.median(r.last for r in runs)), hours(max(r.last for r in runs))]
    row += [median_min([r.trials for r in plain]), median_min([r.trials for r in act])]
    for share in (0.25, 0.5, 0.75):
        errors = [e for e in (r.forecast_error(share) for r in act) if e is not None]
        row.append(pct(statistics.median(errors)) if errors else "n/a")
    return row


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--queue", type=Path, default=ROOT / "queue.yaml")
    p.add_argument("--seeds", type=int, default=5, help="realities drawn (seeds 1..N)")
    p.add_argument("--quick", action="store_true", help="2 seeds, a pass every 10 simulated minutes")
    p.add_argument("--per-seed", action="store_true", help="also print every seed's run")
    p.add_argument("--samples-per-s", type=float, default=SAMPLES_PER_S, help="assumed GPU training speed")
    p.add_argument("--sigma", type=float, default=SIGMA, help="lognormal spread of actual / modelled duration")
    p.add_argument("--margin", type=float, default=DEFAULT_MARGIN,
                   help="the campaign's margin: a share of the time left (queue.yaml's `margin:`)")
    p.add_argument("--scale", type=int, default=FULL_DATA_SCALE, help="rows of the full data / rows of data/")
    return p.parse_args()


def main() -> int:
    args = parse_args()
    seeds = list(range(1, (2 if args.quick else args.seeds) + 1))
    tick = QUICK_TICK_S if args.quick else TICK_S
    tasks = campaign(args.queue, args.scale, args.samples_per_s)
    base = plain_forecast(tasks)
    deliverables = [t.name for t in tasks if t.deliverable]
    print(f"Deadline policy, SIMULATED: the campaign of {args.queue.name} ({len(tasks)} jobs) on one GPU and one "
          f"CPU slot, {len(seeds)} seed(s), margin {args.margin:g} of the time left; the scheduler's brain is the "
          "real scheduler.deadline decide()/replay() (simulated hours, not a measurement; machine load does not "
          "matter)")
    for note in describe(tasks, args.scale, args.samples_per_s, args.sigma, tick):
        print(f"  {note}")
    noise_free = Run(tasks, {t.id: 1.0 for t in tasks}, base, WARN, tick).go().last
    print(f"deliverables ({len(deliverables)}): {', '.join(deliverables)}")
    print(f"plain-priority forecast at the start: deliverables done by {hours(base)} h (the 1.0x deadline); "
          f"a noise-free plain run ends them at {hours(noise_free)} h")

    plain = {seed: Run(tasks, factors(tasks, seed, args.sigma), base, WARN, tick).go() for seed in seeds}
    act = {(mult, seed): Run(tasks, factors(tasks, seed, args.sigma), mult * base, ACT, tick, args.margin).go()
           for mult in DEADLINES for seed in seeds}
    rows = [summary_row(mult, mult * base, [plain[s] for s in seeds], [act[mult, s] for s in seeds])
            for mult in DEADLINES]
    n = len(deliverables)
    print()
    print(table(rows, ["deadline", "h", f"plain: all {n}", f"k/{n} med (min)", "last h med", "max",
                       f"policy: all {n}", f"k/{n} med (min)", "last h med", "max",
                       "trials plain", "trials policy", "fc err 25%", "50%", "75%"]))
    print(f"all {n} = seeds with every deliverable done by the deadline; k/{n} = deliverables done by it, median "
          "(min) over seeds; last = when the last deliverable ended (h, median and max); trials = tune trials "
          "run, median (min); fc err = the policy run's forecast of the deliverables' end, made 25/50/75% of "
          "the way to it, minus the real end, over the real end (median over seeds)")
    if args.per_seed:
        print()
        print(table([[f"{mult:g}x", str(s), f"{plain[s].in_time(mult * base)}/{n}", hours(plain[s].last),
                      str(plain[s].trials), f"{act[mult, s].in_time(mult * base)}/{n}", hours(act[mult, s].last),
                      str(act[mult, s].trials)] + [pct(act[mult, s].forecast_error(x)) for x in (0.25, 0.5, 0.75)]
                     for mult in DEADLINES for s in seeds],
                    ["deadline", "seed", f"plain k/{n}", "last h", "trials", f"policy k/{n}", "last h", "trials",
                     "fc 25%", "50%", "75%"]))
    print(levers([act[k] for k in sorted(act)], [plain[s] for s in seeds]))
    print(final_line(base, seeds, plain, act))
    return 0


def levers(act: list[Outcome], plain: list[Outcome]) -> str:
    """Which of the policy's levers the runs used (urgent, held, the tune's finish_by, preemption)."""
    urgent = set().union(*(r.acts.urgent for r in act))
    never = sorted(set(act[0].names) - urgent)
    held = set().union(*(r.acts.held for r in act))
    return (f"policy runs: engaged in {sum(r.acts.engaged for r in act)} of {len(act)}; urgent: {len(urgent)} "
            f"jobs, all but {', '.join(never) or 'none'} (on the deliverables' path); held: "
            f"{', '.join(sorted(held)) or 'none'}; the tune got a finish_by in {sum(r.acts.cut for r in act)}, and "
            f"{sum(r.acts.overran for r in act)} of its trials ended after the finish_by in force when they "
            f"started; preemptions: {sum(r.acts.yields for r in act)} (plain runs: "
            f"{sum(r.acts.yields for r in plain)}: on one GPU the backfill tune starts only once every other GPU "
            "job has run)")


def final_line(base: float, seeds: list[int], plain: dict, act: dict) -> str:
    parts = []
    for mult in DEADLINES:
        deadline = mult * base
        p = sum(plain[s].in_time(deadline) == len(plain[s].ends) for s in seeds)
        a = sum(act[mult, s].in_time(deadline) == len(act[mult, s].ends) for s in seeds)
        trials = statistics.median(act[mult, s].trials for s in seeds)
        parts.append(f"{mult:g}x {p}->{a}/{len(seeds)} ({trials:g} trials)")
    return (f"deadline policy, simulated, {len(seeds)} seeds: all deliverables in time, plain->policy: "
            + "; ".join(parts) + f"; plain runs {statistics.median(plain[s].trials for s in seeds):g} trials")


if __name__ == "__main__":
    sys.exit(main())
