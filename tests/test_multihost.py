"""Two workers, each with its own run folder on a shared path, drain one campaign from PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter

from sqlalchemy import select

from scheduler.jobqueue import JobQueue
from scheduler.plan import build_plan
from scheduler.store.schema import jobs
from tests.conftest import drop_pg_database, fresh_pg_database


def test_two_hosts_drain_a_campaign_each_job_once(pg_server, tmp_path):
    url, name = fresh_pg_database(pg_server)
    try:
        shared = tmp_path / "shared"
        marker = shared / "starts.txt"
        shared.mkdir()
        plan = {"vars": {"m": str(marker)},
                "defaults": {"params": {"sleep": {"seconds": 0.5, "marker": "{m}"}}, "max_attempts": 2},
                "jobs": [{"name": "prepare", "kind": "sleep", "priority": 10},
                         {"name": "train-{i}", "kind": "sleep", "after": ["prepare"],
                          "matrix": {"i": list(range(12))}},
                         {"name": "summary", "kind": "sleep", "priority": -1, "after": ["train-{i}"]}]}
        queue = JobQueue(url)
        queue.submit(build_plan(plan))
        env = {**os.environ, "SCHED_DB": url}
        hosts = [subprocess.Popen([sys.executable, "-m", "scheduler.cli", "worker", "--gpus", "none",
                                   "--until-empty", "--runs", str(shared / host)], env=env, cwd=tmp_path)
                 for host in ("host-a", "host-b")]
        assert [h.wait(timeout=120) for h in hosts] == [0, 0]
        with queue.read() as conn:
            rows = conn.execute(select(jobs.c.name, jobs.c.status, jobs.c.attempts, jobs.c.worker_id,
                                       jobs.c.output_dir)).all()
        assert {r.status for r in rows} == {"succeeded"} and {r.attempts for r in rows} == {1}
        starts = Counter(marker.read_text().split())
        assert set(starts.values()) == {1} and len(starts) == 14  # every job ran exactly once
        assert len({r.worker_id for r in rows}) == 2  # both hosts took work
        for r in rows:  # each job's files are in the run folder of the host that ran it
            assert os.path.isdir(r.output_dir) and "/shared/host-" in r.output_dir
        queue.dispose()
    finally:
        drop_pg_database(name)
