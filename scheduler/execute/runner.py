"""The child process that runs jobs: `python -m scheduler.execute.runner --serve PARENT_PID REPORT_FD [MODULE...]`.

The worker starts it as a fresh interpreter (never a fork: a forked CUDA context is unusable, and
the worker must never have imported torch), in its own process group, with the slot's environment.
The runner imports MODULEs first (torch, transformers, the kinds the queue's next jobs need: nothing
that starts CUDA) in a thread of lower CPU priority, so that a spare yields to the slot's running
job, says `ready`, and waits on stdin for a job: one JSON line with the job, the
environment it adds (its devices, its run token) and the database password. A runner that does
this ahead of the claim is the slot's *spare*: a claimed job starts without paying for imports.
A spare is also sent the database (`{"database": url, "password": ...}`) and opens it at once, so
a job's first report does not wait for the connection and the schema check either.

It reports on REPORT_FD (JSON lines): `{"ready": pid}`, then `{"done": job_id, "exit": code,
"again": bool}`. `again`: the job's kind keeps no state in the process (`Kind.reusable`) and was
not stopped, so this runner takes the next job too; otherwise it exits with that code. Exit
codes: 0 succeeded, PREEMPTED_EXIT stopped on request, INPUT_ERROR_EXIT its inputs are wrong,
GPU_OOM_EXIT out of memory on a shared GPU, CUDA_UNUSABLE_EXIT a GPU job found no working CUDA (the
worker fails it as an input error and takes no more GPU jobs), anything else failed. A GPU job's peak memory goes to
its row (`gpu_peak_mib`, what `gpu_memory: auto` reads) whatever its ending. The one-line reason of a failure goes to the job's row (`error`) and to
ERROR_FILE in its folder; the traceback goes to the job's log (stdout and stderr are the log).

Nothing a job starts outlives it: the runner is a child subreaper, kills every process below it
when the job ends, and does the same when its worker dies (`WORKER_GONE_SIGNAL`, jobs/proc.py).

A job of a data-parallel kind given several GPUs (SCHED_PROCESSES=k) runs as k processes that
torchrun starts (scheduler/dataparallel.py); rank 0 of them records (scheduler/ranks.py).
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import sys
import threading
import traceback
from pathlib import Path

PREEMPTED_EXIT = 75  # EX_TEMPFAIL: "try again later"
INPUT_ERROR_EXIT = 65  # EX_DATAERR: the job's inputs are wrong; retrying cannot help
WORKER_GONE_EXIT = 70  # the worker died; the runner killed the job's processes and left
GPU_OOM_EXIT = 76  # out of GPU memory on a GPU it shared: the worker queues it again for a whole GPU
CUDA_UNUSABLE_EXIT = 69  # EX_UNAVAILABLE: on a GPU slot, CUDA does not work (jobs.gpu.CudaUnusable)
ERROR_FILE = ".sched-error.json"
WORKER_GONE_SIGNAL = signal.SIGUSR2  # sent by Linux when the worker dies (PR_SET_PDEATHSIG)


class StopFlag:
    """Set by SIGTERM/SIGUSR1 from the worker; jobs read it through `ctx.should_stop()`."""

    def __init__(self):
        self.value = False

    def set(self, *_):
        self.value = True

    def __call__(self) -> bool:
        return self.value


def _worker_gone(*_) -> None:
    from jobs.proc import kill_tree

    kill_tree(os.getpid())
    os._exit(WORKER_GONE_EXIT)


def _write_error(output_dir: Path, message: str) -> None:
    try:
        (output_dir / ERROR_FILE).write_text(json.dumps({"message": message}))
    except OSError:  # the run folder was deleted: the database has the reason
        pass


class _Reports:
    """The pipe back to the worker: one JSON object per line."""

    def __init__(self, fd: int):
        self.fd = fd

    def send(self, **message) -> None:
        os.write(self.fd, (json.dumps(message) + "\n").encode())


class QueueLink:
    """The queue's database, opened on first use (a shell job that logs nothing never opens it)."""

    def __init__(self):
        self.url: str | None = None
        self._queue = None
        self._records = None

    def records(self):
        if self._records is None:
            from ..jobqueue import JobQueue
            from ..records import Records

            self._queue = JobQueue(self.url)
            self._records = Records(self._queue)
        return self._records

    def open_quietly(self) -> None:
        """Open it ahead of need; if the database does not answer now, the job's first report tries again."""
        try:
            self.records()
        except Exception:  # noqa: BLE001 - an outage, a bad URL: the job's own reports say so
            self.close()

    def set_url(self, url: str) -> None:
        if url != self.url:
            self.close()
            self.url = url

    def close(self) -> None:
        if self._queue is not None:
            self._queue.dispose()
        self._queue = self._records = None


class LazyReporter:
    """A job context's reporter that opens the database when the job first reports something."""

    def __init__(self, queue: QueueLink):
        self.queue = queue

    def __getattr__(self, name):
        return getattr(self.queue.records(), name)


def main(argv: list[str]) -> int:
    if not argv or argv[0] != "--serve":
        sys.exit("usage: python -m scheduler.execute.runner --serve PARENT_PID REPORT_FD [MODULE...]")
    parent_pid, reports = int(argv[1]), _Reports(int(argv[2]))
    # The handler first: Linux may send the signal as soon as prctl has run.
    signal.signal(WORKER_GONE_SIGNAL, _worker_gone)
    stop = StopFlag()
    signal.signal(signal.SIGTERM, stop.set)
    signal.signal(signal.SIGUSR1, stop.set)

    from jobs.proc import become_subreaper, die_with_parent, leave_terminal

    die_with_parent(WORKER_GONE_SIGNAL)
    if os.getppid() != parent_pid:  # the worker died before prctl took effect
        return WORKER_GONE_EXIT
    become_subreaper()
    leave_terminal()
    _preload_yielding(argv[3:])
    _freeze_heap()
    reports.send(ready=os.getpid())
    return _serve(reports, stop)


PRELOAD_NICENESS = 10  # how much nicer than the runner its import thread is: about a tenth of a busy core


def _preload_yielding(modules: list[str]) -> None:
    """`_preload` in a thread of lower CPU priority. A spare imports while the slot's job runs, and
    torch and transformers take seconds of a core: on a machine whose cores the job's training
    threads fill, the job goes first and the spare takes what is left. Only the import thread is
    made nicer (Linux priorities are per thread, and threads inherit their creator's): the thread
    that runs the next job keeps the runner's priority."""
    failure: list[BaseException] = []

    def imports() -> None:
        _lower_thread_priority(PRELOAD_NICENESS)
        try:
            _preload(modules)
        except BaseException as exc:  # noqa: BLE001 - raised again in the runner's own thread
            failure.append(exc)

    thread = threading.Thread(target=imports, name="sched-preload", daemon=True)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]


def _lower_thread_priority(by: int) -> None:
    """Make the calling thread `by` nicer (on Linux a thread id is a PRIO_PROCESS target). Where
    that is not possible the thread keeps its priority: the spare is then merely less polite."""
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + by))
    except (AttributeError, OSError):
        pass


def _preload(modules: list[str]) -> None:
    """Import what the next jobs will need, before they are claimed (a missing one is left out)."""
    import jobs  # noqa: F401 - the registry, for every job

    from .. import jobqueue, records

    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - the job imports it itself, and says why if it fails
            print(f"preload of {name} failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)


def _freeze_heap() -> None:
    """Keep what the imports built out of every later garbage collection. torch and transformers
    leave millions of objects, and a full collection walks them all: the Trainer runs one as
    training starts (accelerate's free_memory), 0.2-0.4 s on a CPU here. Frozen, they are skipped;
    what a job creates is collected as before."""
    import gc

    gc.collect()  # garbage the imports left is freed, not frozen
    gc.freeze()


def _serve(reports: _Reports, stop: StopFlag) -> int:
    from jobs import gpu
    from jobs.proc import kill_tree
    from pipeline import startup

    base_env = dict(os.environ)
    queue = QueueLink()
    while True:
        line = sys.stdin.readline()
        if not line:  # the worker closed our stdin: no more jobs
            queue.close()
            return 0
        order = json.loads(line)
        if "database" in order:  # a spare, before any claim: open the queue's database now
            queue.set_url(url_with_password(order["database"], order.get("password")))
            queue.open_quietly()
            continue
        attach_log(order["log_path"])
        os.environ.clear()
        os.environ.update({**base_env, **order["env"]})
        startup.begin(order.get("claimed_at"), order["job"]["output_dir"])
        startup.mark("handed to the runner")
        queue.set_url(url_with_password(order["env"]["SCHED_DB"], order.get("password")))
        try:
            code, reusable = _run(order["job"], stop, queue)
        finally:
            kill_tree(os.getpid())  # whatever the job left running (a server, `cmd &`, a setsid daemon)
            sys.stdout.flush()
            sys.stderr.flush()
        # A runner whose job started CUDA is tied to that job's GPUs: it ends with the job.
        again = reusable and order.get("reuse", False) and not stop() and code in (0, 1, INPUT_ERROR_EXIT) \
            and not gpu.cuda_started()
        reports.send(done=order["job"]["id"], exit=code, again=again)
        if not again:
            queue.close()
            return code


def attach_log(path: str) -> None:
    """The job's log becomes this process's stdout and stderr (its programs inherit them)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.makedirs(os.path.dirname(path), exist_ok=True)  # its run folder may have been deleted meanwhile
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)  # never through a link
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def url_with_password(url: str, password: str | None) -> str:
    """The database URL with the password the worker sent (it is kept out of the job's environment)."""
    if password is None:
        return url
    from ..store.engine import with_password

    return with_password(url, password)


def job_context(job: dict, stop, reporter, url: str | None):
    """The context a job's run() gets (in this runner, or in each rank of a data-parallel job)."""
    from functools import partial

    from jobs.context import JobContext

    from ..store.studies import open_storage

    return JobContext(job_id=job["id"], name=job["name"], output_dir=Path(job["output_dir"]),
                      device=os.environ.get("SCHED_DEVICE", "cpu"), reporter=reporter,
                      attempt=job["attempts"], stop_requested=stop, group=job.get("group_name"),
                      db_url=url, studies=partial(open_storage, url))


def _run(job: dict, stop: StopFlag, queue: QueueLink) -> tuple[int, bool]:
    """Run one job; (exit code, whether its kind lets this runner take another job)."""
    from jobs import get_kind, gpu
    from jobs.context import Preempted
    from pipeline import startup

    from ..outage import BufferedReporter

    output_dir = Path(job["output_dir"])
    (output_dir / ERROR_FILE).unlink(missing_ok=True)
    reporter = BufferedReporter(LazyReporter(queue))  # a database outage does not fail the job
    reusable = False
    try:
        if stop():  # asked to stop while this runner was starting: do not start the job
            raise Preempted("stopped before the job started")
        kind = get_kind(job["kind"])
        reusable = kind.reusable
        params = kind.parse(job["params"])
        _preflight(kind, params, job["name"], reporter)
        startup.mark("params and preflight")
        processes = int(os.environ.get("SCHED_PROCESSES", "1"))
        if kind.data_parallel and processes > 1:
            from .dataparallel import run_ranks

            run_ranks(job, processes, stop, queue.url)
        else:
            gpu.prepare(in_process=kind.torch_in_runner)
            startup.mark("device prepared")
            kind.run(params, job_context(job, stop, reporter, queue.url))
        reporter.finish()  # what it reported during an outage, written before it counts as done
    except Preempted as exc:
        print(f"preempted: {exc}", file=sys.stderr, flush=True)
        _flush_quietly(reporter)  # what it reported before it stopped (the next attempt goes on from there)
        return PREEMPTED_EXIT, reusable
    except BaseException as exc:  # noqa: BLE001 - every failure must reach the worker as a reason
        _flush_quietly(reporter)
        if gpu.share_mib() is not None and gpu.is_out_of_memory(exc):
            traceback.print_exc()
            print(f"out of GPU memory on a shared GPU ({gpu.share_mib()} MiB share): queued again for a "
                  "whole GPU", file=sys.stderr, flush=True)
            return GPU_OOM_EXIT, False
        code, message = failure_of(exc)
        _write_error(output_dir, message)
        try:
            reporter.set_error(job["id"], message)
        except Exception:  # noqa: BLE001 - the database is unreachable: the file has the reason
            traceback.print_exc()
        return code, reusable and isinstance(exc, Exception)
    finally:
        record_peak(job["id"], reporter)
    return 0, reusable


def _flush_quietly(reporter) -> None:
    """Write what a job that is ending anyway reported during an outage, if the database answers."""
    try:
        reporter.flush()
    except Exception:  # noqa: BLE001 - its ending matters more than its last metrics
        traceback.print_exc()


def record_peak(job_id: int, reporter) -> None:
    """The job's peak GPU memory to its row (`gpu_memory: auto` reads it); nothing off the GPU."""
    from jobs import gpu

    peak = gpu.peak_mib()
    if peak is None:
        return
    try:
        reporter.record_gpu_peak(job_id, peak)
    except Exception:  # noqa: BLE001 - the database is unreachable: the job's ending matters more
        traceback.print_exc()


def failure_of(exc: BaseException) -> tuple[int, str]:
    """(exit code, one-line reason) of a job that raised `exc`; its traceback goes to the log.

    The ranks of a data-parallel job printed their own tracebacks: their failure arrives as the
    reason and exit code of the rank that failed first (scheduler.execute.dataparallel.RanksFailed)."""
    from .dataparallel import RanksFailed

    if isinstance(exc, RanksFailed):
        return exc.code, exc.reason
    from jobs.gpu import CudaUnusable
    from jobs.shell import CommandFailed

    if isinstance(exc, CommandFailed):
        # A program that exited non-zero wrote its own output above; sched's frames say nothing.
        print(exc, file=sys.stderr, flush=True)
        return 1, f"{type(exc).__name__}: {exc}"
    traceback.print_exc()
    if isinstance(exc, CudaUnusable):
        return CUDA_UNUSABLE_EXIT, f"{type(exc).__name__}: {exc}"
    return (INPUT_ERROR_EXIT if _is_input_error(exc) else 1), f"{type(exc).__name__}: {exc}"


def _preflight(kind, params, name: str, reporter) -> None:
    """The kind's input checks once more, right before it runs (a file may have changed since submit)."""
    if kind.preflight is None:
        return
    from jobs.preflight import OtherJob, Preflight

    from ..errors import NotFound

    def lookup(other: str) -> OtherJob | None:
        try:
            record = reporter.job(other)
        except NotFound:
            return None
        return OtherJob(record.name, record.kind, record.params or {}, record.status)

    pre = Preflight(lookup)
    kind.check(params, pre)
    pre.raise_problems(name)


def _is_input_error(exc: BaseException) -> bool:
    """Bad data, bad params, an unknown model, a failed preflight: the same on every attempt."""
    from jobs.registry import ParamsError
    from pipeline.errors import InputError

    return isinstance(exc, (InputError, ParamsError))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
