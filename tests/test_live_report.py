"""`sched report --serve`: the report over HTTP, rendered again when the queue changes, reloading
itself; localhost by default (a warning otherwise), Ctrl-C stops it cleanly."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from scheduler.jobqueue import JobQueue, JobSpec
from scheduler.report.live import LiveReport, ReportServer, is_loopback
from tests.helpers import wait_for

ROOT = Path(__file__).resolve().parents[1]


def fetch(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.read().decode("utf-8")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8")


def page_data(page: str) -> dict:
    return json.loads(re.search(r'id="report-data">(.*?)</script>', page, re.S).group(1))


@pytest.fixture
def served(sqlite_url):
    queue = JobQueue(sqlite_url)
    live = LiveReport(queue, every_s=0.2)
    live.start()
    server = ReportServer(live, "127.0.0.1", 0)  # any free port
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield queue, live, server.url
    server.shutdown()
    server.server_close()
    live.stop()
    queue.dispose()


def test_the_served_page_follows_the_queue(served):
    queue, live, url = served
    queue.submit([JobSpec(name="hello-live", kind="echo", params={"message": "hi"})])
    wait_for(lambda: fetch(url + "version")[1] == "2", 30, "the new job was never rendered")
    status, page = fetch(url)
    assert status == 200
    assert page_data(page)["counts"]["queued"] == 1 and page_data(page)["timeline"] == []
    assert re.search(r"live: rendered at \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d UTC", page)  # says when
    assert 'fetch("version"' in page and 'http-equiv="refresh"' in page  # reloads itself

    worker = queue.register_worker("h", 1, ["cpu0"])  # the job runs and finishes
    job = queue.claim(worker, "cpu0", 0)
    assert queue.succeed(job.id, worker)
    wait_for(lambda: fetch(url + "version")[1] == "3", 30, "the finished job was never rendered")
    data = page_data(fetch(url)[1])
    assert data["counts"]["succeeded"] == 1 and data["counts"]["queued"] == 0
    assert [row["job"] for row in data["timeline"]] == ["hello-live"]

    time.sleep(1.0)  # five checks with nothing changed: no render
    assert fetch(url + "version")[1] == "3"
    assert fetch(url + "nothing-here")[0] == 404


def test_a_page_that_cannot_be_rendered_again_stays_served(served, monkeypatch):
    queue, live, url = served
    first = fetch(url)[1]

    def broken(*_args, **_kwargs):
        raise RuntimeError("database is locked")

    monkeypatch.setattr(sys.modules["scheduler.report.gather"], "gather", broken)
    queue.submit([JobSpec(name="later", kind="echo")])
    wait_for(lambda: live.problem is not None, 30, "the failed render was not noticed")
    assert fetch(url) == (200, first) and "database is locked" in live.problem


def test_only_loopback_addresses_count_as_private():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.1.2.3") and not is_loopback("gpu-host")


def test_sched_report_serve_warns_off_localhost_and_stops_on_ctrl_c(sqlite_url, tmp_path):
    queue = JobQueue(sqlite_url)
    queue.submit([JobSpec(name="first-job", kind="echo")])
    queue.dispose()
    proc = subprocess.Popen(
        [sys.executable, "-m", "scheduler.cli", "--db", sqlite_url, "report", "--serve", "--host", "0.0.0.0",
         "--port", "0", "--every", "0.5s"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "300"})
    try:
        lines = []
        deadline = time.monotonic() + 60
        while not any("serving the report at" in line for line in lines):
            assert time.monotonic() < deadline and proc.poll() is None, "".join(lines)
            lines.append(proc.stdout.readline())
        text = "".join(lines)
        assert "warning: serving on 0.0.0.0, reachable by anyone" in text
        port = re.search(r"http://0\.0\.0\.0:(\d+)/", text).group(1)
        status, page = fetch(f"http://127.0.0.1:{port}/")
        assert status == 200 and page_data(page)["counts"]["queued"] == 1
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, rest
    assert "stopped" in rest and "Traceback" not in rest


def test_serve_refuses_a_bad_every(sqlite_url):
    from click.testing import CliRunner

    from scheduler.cli import cli

    JobQueue(sqlite_url).dispose()
    result = CliRunner().invoke(cli, ["--db", sqlite_url, "report", "--serve", "--every", "soon"])
    assert result.exit_code == 1 and "--every" in result.output
