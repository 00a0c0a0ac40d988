"""`on_finish:` and `on_failure:` of queue.yaml: a program the worker runs when a job ends for good.

    defaults:
      on_failure: [notify-send, "sched: {name} failed"]      # {vars} are filled at submit
      on_finish: [sh, -c, 'curl -s -d "$SCHED_JOB_NAME $SCHED_JOB_STATUS" https://ntfy.sh/my-runs']

`on_finish` runs after every final ending (succeeded, failed, killed, lost, cancelled), `on_failure`
after failed, killed and lost. The program runs without a shell, in the background (the worker
does not wait for it; it is killed after HOOK_TIMEOUT_S), with its output appended to the job's
log, and this in its environment:

    SCHED_JOB_ID, SCHED_JOB_NAME, SCHED_JOB_KIND, SCHED_JOB_STATUS, SCHED_JOB_MESSAGE,
    SCHED_JOB_ATTEMPTS, SCHED_JOB_OUTPUT_DIR, and SCHED_METRIC_<KEY> per final metric
    (key upper-cased, other characters as _), e.g. SCHED_METRIC_VAL_ACCURACY=0.8123
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import threading
import time

from ..fmt import visible
from ..store.states import CANCELLED, FAILED, KILLED, LOST, SUCCEEDED

log = logging.getLogger("sched.hooks")

HOOK_TIMEOUT_S = 300.0
FINISHED = (SUCCEEDED, FAILED, KILLED, LOST, CANCELLED)
FAILURES = (FAILED, KILLED, LOST)

_running: list[tuple[subprocess.Popen, float]] = []
_lock = threading.Lock()


def run_hooks(queue, job_id: int, status: str) -> list[subprocess.Popen]:
    """Start the job's hooks for this final `status`; never raises (a hook must not stop a worker)."""
    try:
        return _start(queue, job_id, status)
    except Exception as exc:  # noqa: BLE001 - logged; the worker carries on
        log.warning("job %s: its on_finish/on_failure hook could not start: %s", job_id, exc)
        return []


def _start(queue, job_id: int, status: str) -> list[subprocess.Popen]:
    from ..records import Records

    reap()
    record = Records(queue).job(job_id)
    row = queue.get(job_id)
    hooks = row.hooks or {}
    argvs = [hooks[k] for k in ("on_finish", "on_failure")
             if k in hooks and (status in FINISHED if k == "on_finish" else status in FAILURES)]
    if not argvs:
        return []
    env = {**os.environ, "SCHED_JOB_ID": str(row.id), "SCHED_JOB_NAME": row.name, "SCHED_JOB_KIND": row.kind,
           "SCHED_JOB_STATUS": status, "SCHED_JOB_MESSAGE": row.message or "", "SCHED_JOB_ATTEMPTS": str(row.attempts),
           "SCHED_JOB_OUTPUT_DIR": row.output_dir or ""}
    env.pop("SCHED_DB", None)  # a notification needs no database access (nor its password)
    for key, value in record.metrics.items():
        env["SCHED_METRIC_" + re.sub(r"[^A-Z0-9]", "_", key.upper())] = repr(value)
    started = []
    for argv in argvs:
        output = _log_file(row.log_path)
        try:
            proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
                                    start_new_session=True, cwd=row.output_dir if row.output_dir and
                                    os.path.isdir(row.output_dir) else None)
        except OSError as exc:
            log.warning("%s #%s: hook %s could not start: %s", visible(row.name), row.id, visible(argv[0]), exc)
            continue
        finally:
            if output is not subprocess.DEVNULL:
                output.close()
        with _lock:
            _running.append((proc, time.monotonic()))
        started.append(proc)
        log.info("%s #%s %s: started hook %s", visible(row.name), row.id, status, visible(" ".join(argv)))
    return started


def _log_file(path: str | None):
    if path:
        try:
            return open(path, "a", encoding="utf-8")  # noqa: SIM115 - handed to the child, closed here
        except OSError:
            pass
    return subprocess.DEVNULL


def reap() -> None:
    """Collect finished hooks; kill those running longer than HOOK_TIMEOUT_S."""
    now = time.monotonic()
    with _lock:
        still = []
        for proc, started in _running:
            if proc.poll() is not None:
                continue
            if now - started > HOOK_TIMEOUT_S:
                proc.kill()
                proc.wait()
                continue
            still.append((proc, started))
        _running[:] = still
