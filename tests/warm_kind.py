"""A job kind for the warm-start tests (loaded through $SCHED_KINDS=tests.warm_kind): it preloads
`tests.heavy_module`, standing in for torch and transformers, and records at its start whether that
module was already imported in its process, by which process and at which CPU priority, whether the
runner froze its imports out of garbage collection, and the job's own priority, session and process
group."""

from __future__ import annotations

import gc
import json
import os
import sys
import threading
import time

from pydantic import BaseModel, ConfigDict

from jobs.context import JobContext
from jobs.registry import Kind

MODULE_IMPORTED_AT = time.time()  # a spare imports the kind's module too, before the claim


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    marker: str  # a file to append one JSON line to


def run(params: Params, ctx: JobContext) -> None:
    already = "tests.heavy_module" in sys.modules
    import tests.heavy_module as heavy

    with open(params.marker, "a") as fh:
        fh.write(json.dumps({"job": ctx.name, "pid": os.getpid(), "preloaded": already,
                             "imported_at": heavy.IMPORTED_AT, "started_at": time.time(),
                             "frozen": gc.get_freeze_count(), "kind_imported_at": MODULE_IMPORTED_AT,
                             "database_open": _database_open(), "import_niceness": heavy.IMPORT_NICENESS,
                             "job_niceness": os.getpriority(os.PRIO_PROCESS, threading.get_native_id()),
                             "session": os.getsid(0), "process_group": os.getpgid(0)}) + "\n")


def _database_open() -> bool:
    """Whether this runner had opened the queue's database before the job reported anything."""
    # The runner runs as __main__ (python -m), so its QueueLink is found by its class's name.
    link = next((obj for obj in gc.get_objects() if type(obj).__name__ == "QueueLink"), None)
    return link is not None and link._records is not None


KIND = Kind("warmcheck", Params, run, summary="records whether its preload was imported before it ran",
            preload=("tests.heavy_module",))
