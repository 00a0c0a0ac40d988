"""`sched slurm`: sched's workers as Slurm jobs on a cluster (scheduler/slurm.py)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from ..errors import SchedError
from .app import console, open_queue


def _template(ctx, gpus_per_worker, cpus_per_task, mem, time_limit, partition, account, qos, sbatch_arg,
              cpu_slots, grace, lease, idle_exit, runs):
    from ..execute.slurm import WorkerTemplate, bare_url, require_postgresql

    from ..store.location import resolve_url

    require_postgresql(resolve_url(ctx.find_root().obj["db"]))  # before opening: a SQLite file is no queue here
    url = open_queue(ctx).url
    return WorkerTemplate(db_url=bare_url(url), runs=Path(runs).resolve(), gpus=gpus_per_worker,
                          cpus=cpus_per_task, mem=mem, time=time_limit, partition=partition, account=account,
                          qos=qos, sbatch_args=tuple(sbatch_arg), cpu_slots=cpu_slots, grace_s=grace,
                          lease_s=lease, idle_exit=idle_exit)


def worker_job_options(command):
    """The options of a worker job, shared by `up` and `scale`."""
    for option in reversed([
        click.option("--gpus-per-worker", default=0, show_default=True, type=click.IntRange(0),
                     help="GPUs each worker job asks Slurm for (--gres=gpu:K); 0: CPU workers."),
        click.option("--cpus-per-task", default=2, show_default=True, type=click.IntRange(1)),
        click.option("--cpu-slots", default=1, show_default=True, type=click.IntRange(1),
                     help="CPU slots of each worker (jobs with gpus: 0)."),
        click.option("--mem", default=None, help="Memory per worker job, as sbatch takes it (e.g. 32G)."),
        click.option("--time", "time_limit", default=None, help="Slurm time limit (e.g. 4:00:00)."),
        click.option("--partition", default=None),
        click.option("--account", default=None),
        click.option("--qos", default=None),
        click.option("--sbatch-arg", multiple=True, help="Any other sbatch option, e.g. --constraint=a100."),
        click.option("--grace", default=60.0, show_default=True,
                     help="Seconds a stopping job gets to checkpoint; Slurm signals the worker this long "
                          "(plus a margin) before its time limit."),
        click.option("--lease", default=60.0, show_default=True),
        click.option("--idle-exit", default="5m", show_default=True,
                     help="A worker with nothing to claim for this long exits, giving its node back."),
        click.option("--runs", default="runs", show_default=True, envvar="SCHED_RUNS",
                     help="Run folders (on storage every node sees)."),
    ]):
        command = option(command)
    return command


@click.group()
def slurm() -> None:
    """Run sched's workers as Slurm jobs that drain the shared PostgreSQL queue.

    \b
    Example:
      sched --db postgresql://me@dbhost/exp slurm up --workers 4 --gpus-per-worker 1 --time 8:00:00
      sched --db postgresql://me@dbhost/exp slurm scale --max 8 --gpus-per-worker 1 --every 60
      sched slurm ls
    """


@slurm.command()
@click.option("--workers", "count", default=1, show_default=True, type=click.IntRange(1))
@worker_job_options
@click.pass_context
def up(ctx, count, gpus_per_worker, cpus_per_task, cpu_slots, mem, time_limit, partition, account, qos,
       sbatch_arg, grace, lease, idle_exit, runs) -> None:
    """Submit worker jobs: each is one `sched worker` in a Slurm allocation.

    \b
    Example:
      sched slurm up --workers 2 --gpus-per-worker 2 --partition gpu --time 12:00:00
    """
    from ..execute.slurm import Slurm

    template = _template(ctx, gpus_per_worker, cpus_per_task, mem, time_limit, partition, account, qos, sbatch_arg,
                         cpu_slots, grace, lease, None if idle_exit in ("0", "never") else idle_exit, runs)
    script = template.write()
    ids = [Slurm().submit(script) for _ in range(count)]
    console.print(f"submitted {count} worker job(s): {', '.join(ids)} (batch script: {script})")


@slurm.command()
@click.option("--min", "minimum", default=0, show_default=True, type=click.IntRange(0))
@click.option("--max", "maximum", default=4, show_default=True, type=click.IntRange(1))
@click.option("--every", default=None, type=click.FloatRange(1), help="Keep scaling, every this many seconds.")
@click.option("--once", is_flag=True, help="Scale once and exit (for cron on the login node); the default.")
@worker_job_options
@click.pass_context
def scale(ctx, minimum, maximum, every, once, gpus_per_worker, cpus_per_task, cpu_slots, mem, time_limit, partition,
          account, qos, sbatch_arg, grace, lease, idle_exit, runs) -> None:
    """Keep as many worker jobs (pending plus running) as the queued work needs, up to --max.

    Pending worker jobs no longer needed are cancelled; running ones exit after --idle-exit.

    \b
    Example:
      sched slurm scale --max 8 --gpus-per-worker 1 --every 60     # in tmux on the login node
      sched slurm scale --max 8 --gpus-per-worker 1 --once         # from cron
    """
    from ..execute.slurm import Slurm, scale_once

    if minimum > maximum:
        raise SchedError(f"--min ({minimum}) is more than --max ({maximum})")
    template = _template(ctx, gpus_per_worker, cpus_per_task, mem, time_limit, partition, account, qos, sbatch_arg,
                         cpu_slots, grace, lease, idle_exit, runs)
    queue, engine = open_queue(ctx), Slurm()
    while True:
        plan = scale_once(queue, engine, template, minimum, maximum)
        console.print(f"{time.strftime('%H:%M:%S')} work for {plan.needed} worker(s), {plan.have} up or pending: "
                      f"submitted {plan.submit}, cancelled {len(plan.cancel)} pending")
        if every is None or once:
            return
        time.sleep(every)


@slurm.command(name="ls")
@click.option("--json", "as_json", is_flag=True)
def list_workers(as_json) -> None:
    """sched's worker jobs: Slurm job id, state (pending with Slurm's reason), node, time left.

    \b
    Example:
      sched slurm ls --json
    """
    from rich.table import Table

    from ..execute.slurm import Slurm

    jobs = Slurm().workers()
    if as_json:
        click.echo(json.dumps([j.as_json() for j in jobs], indent=2))
        return
    table = Table(title=f"{len(jobs)} sched worker job(s)")
    for column in ("job", "state", "node", "time left", "GPUs"):
        table.add_column(column)
    for j in jobs:
        state = j.state + (f" ({j.reason})" if j.pending and j.reason else "")
        table.add_row(j.job_id, state, j.node or "-", j.time_left, str(j.gpus))
    console.print(table)


@slurm.command()
@click.option("--now", is_flag=True, help="Cancel the worker jobs at once (their jobs are queued again).")
def down(now) -> None:
    """Drain sched's worker jobs: pending ones are cancelled, running ones finish their jobs and exit.

    \b
    Example:
      sched slurm down          # let running jobs finish
      sched slurm down --now    # scancel them all
    """
    from ..execute.slurm import DRAIN_SIGNAL, Slurm

    engine = Slurm()
    jobs = engine.workers()
    pending = [j.job_id for j in jobs if j.pending]
    running = [j.job_id for j in jobs if not j.pending]
    if now:
        engine.cancel(pending + running)
        console.print(f"cancelled {len(pending) + len(running)} worker job(s)")
        return
    engine.cancel(pending)
    engine.cancel(running, signal=DRAIN_SIGNAL)
    console.print(f"cancelled {len(pending)} pending worker job(s); {len(running)} running one(s) finish their "
                  "jobs and exit")
