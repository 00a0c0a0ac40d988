"""`sched cancel`, `retry`, `priority`, `drain` and `resume`: steer jobs and workers."""

from __future__ import annotations

import click

from .app import complete_job, console, open_queue


@click.command()
@click.argument("jobs", nargs=-1, required=True, shell_complete=complete_job)
@click.pass_context
def cancel(ctx: click.Context, jobs: tuple[str, ...]) -> None:
    """Cancel jobs: queued ones at once, running ones are killed by their worker.

    \b
    Example:
      sched cancel 12 13 tune-roberta
    """
    from ..store.states import CANCELLED

    queue = open_queue(ctx)
    for ref in jobs:
        job_id = queue.resolve(ref)
        result = queue.cancel(job_id)
        console.print(f"job {job_id}: " + ("cancelled" if result == CANCELLED else
                                           "cancel requested; its worker will stop it"))


@click.command()
@click.argument("jobs", nargs=-1, required=True, shell_complete=complete_job)
@click.option("--force", is_flag=True, help="Also run succeeded jobs again (their old metrics stay in the log).")
@click.pass_context
def retry(ctx: click.Context, jobs: tuple[str, ...], force: bool) -> None:
    """Queue failed, killed, lost or cancelled jobs again (and their upstream_failed dependents).

    \b
    Example:
      sched retry finetune-klue/bert-base
      sched retry --force retrain-best
    """
    queue = open_queue(ctx)
    for ref in jobs:
        requeued = queue.retry(queue.resolve(ref), force=force)
        console.print(f"queued again: job(s) {', '.join(map(str, requeued))}")


@click.command(context_settings={"ignore_unknown_options": True})  # `priority JOB -10`: -10 is a number
@click.argument("job", shell_complete=complete_job)
@click.argument("priority", type=int)
@click.pass_context
def priority(ctx: click.Context, job: str, priority: int) -> None:
    """Change a job's priority (higher runs first).

    \b
    Example:
      sched priority tune-roberta -10
    """
    queue = open_queue(ctx)
    job_id = queue.resolve(job)
    queue.reprioritize(job_id, priority)
    console.print(f"job {job_id}: priority {priority}")


@click.command()
@click.pass_context
def drain(ctx: click.Context) -> None:
    """Let workers finish their current jobs and claim no new one.

    \b
    Example:
      sched drain   # before a reboot; then: sched resume
    """
    open_queue(ctx).drain()
    console.print("drained: workers take no new job until `sched resume`")


@click.command()
@click.pass_context
def resume(ctx: click.Context) -> None:
    """Let workers claim jobs again after `sched drain`.

    \b
    Example:
      sched resume
    """
    open_queue(ctx).resume()
    console.print("resumed: workers claim jobs again")
