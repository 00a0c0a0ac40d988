"""`sched worker` and `sched demo`: run jobs on this machine."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import SchedError
from .app import console, open_queue, setup_logging


@click.command()
@click.option("--gpus", default="auto", show_default=True,
              help="GPU indices like 0,1 (one slot each), auto (NVML), or none (CPU slots).")
@click.option("--cpu-slots", default=1, show_default=True, type=click.IntRange(1),
              help="CPU slots: jobs with gpus 0 (on a GPU worker too, beside its GPUs).")
@click.option("--gpu-headroom", default="2GiB", show_default=True, metavar="SIZE",
              help="GPU memory left free when jobs share a GPU (gpu_memory).")
@click.option("--gpu-context", default="512MiB", show_default=True, metavar="SIZE",
              help="What each job's CUDA context takes outside torch's allocator: part of a shared job's "
                   "gpu_memory (its allocator gets the rest), added to an auto share.")
@click.option("--min-free", default="1GiB", show_default=True, metavar="SIZE",
              help="Claim nothing while the runs folder has less free space than this.")
@click.option("--max-log-size", default="100MiB", show_default=True, metavar="SIZE",
              help="A job's log beyond this keeps its head and tail (checked each heartbeat).")
@click.option("--until-empty", is_flag=True, help="Exit once no job is left to run.")
@click.option("--idle-exit", default=None, metavar="DURATION",
              help="Exit after this long (30s, 5m) with no job running and none to claim (Slurm workers).")
@click.option("--max-jobs", type=click.IntRange(1), default=None, help="Exit after this many jobs.")
@click.option("--runs", default="runs", show_default=True, envvar="SCHED_RUNS",
              type=click.Path(file_okay=False, path_type=Path), help="Folder for job run folders.")
@click.option("--lease", default=60.0, show_default=True, help="Seconds a job's lease lasts without a heartbeat.")
@click.option("--heartbeat", default=10.0, show_default=True, help="Seconds between heartbeats.")
@click.option("--grace", default=10.0, show_default=True, help="Seconds a stopping job gets before SIGKILL.")
@click.option("--warm/--no-warm", default=True, show_default=True,
              help="Keep a spare runner per slot with the next jobs' imports done, and reuse runners of light jobs.")
@click.pass_context
def worker(ctx, gpus, cpu_slots, gpu_headroom, gpu_context, min_free, max_log_size, until_empty, idle_exit,
           max_jobs, runs, lease, heartbeat, grace, warm) -> None:
    """Run jobs from the queue: GPU jobs on this machine's GPUs (whole, k at once, or sharing one by
    gpu_memory), CPU jobs on --cpu-slots slots; one child process per job.

    SIGTERM or Ctrl-C stops claiming, asks running jobs to stop and queues them again.

    \b
    Example:
      sched worker --gpus 0,1
      sched worker --gpus none --until-empty
    """
    from ..execute.slots import parse_slots
    from ..execute.worker import WorkerLoop, WorkerOptions

    if heartbeat >= lease:
        raise SchedError(f"--heartbeat ({heartbeat}s) must be shorter than --lease ({lease}s)")
    setup_logging(ctx.find_root().obj["verbose"])
    options = WorkerOptions(runs_root=runs, lease_s=lease, heartbeat_s=heartbeat, stop_grace_s=grace,
                            max_jobs=max_jobs, reaper_s=max(1.0, lease / 4), warm=warm,
                            gpu_headroom_mib=_size("--gpu-headroom", gpu_headroom),
                            gpu_context_mib=_size("--gpu-context", gpu_context),
                            min_free_mib=_size("--min-free", min_free, at_least=0),
                            max_log_mib=_size("--max-log-size", max_log_size),
                            idle_exit_s=_duration("--idle-exit", idle_exit))
    WorkerLoop(open_queue(ctx, create=True), parse_slots(gpus, cpu_slots), options).run(until_empty=until_empty)


def _duration(option: str, text: str | None) -> float | None:
    from pipeline.util import parse_duration

    if text is None:
        return None
    try:
        seconds = parse_duration(text)
    except ValueError:
        raise SchedError(f"{option} takes a duration like 30s, 5m or 2h; got '{text}'") from None
    if not 0 < seconds < 10**9:
        raise SchedError(f"{option} takes a positive duration; got '{text}'")
    return seconds


def _size(option: str, text: str, at_least: int | None = None) -> int:
    from ..resources import parse_memory

    if at_least is not None and text.strip() in ("0", "0MiB", "0GiB"):
        return 0
    try:
        value = parse_memory(text)
    except SchedError as exc:
        raise SchedError(str(exc).replace("gpu_memory", option)) from None
    if not isinstance(value, int):
        raise SchedError(f"{option} takes a size like 2GiB; got '{text}'")
    return value


@click.command()
@click.option("--runs", default="runs", show_default=True, type=click.Path(file_okay=False, path_type=Path))
@click.pass_context
def demo(ctx: click.Context, runs: Path) -> None:
    """Run the demo campaign on this machine (CPU) and show the result.

    \b
    Example:
      sched demo && sched status
    """
    from ..demo import run_demo

    setup_logging(ctx.find_root().obj["verbose"])
    run_demo(open_queue(ctx, create=True), runs, console)
