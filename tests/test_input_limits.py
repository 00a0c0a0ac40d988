"""Faults a days-long campaign meets (issue 19): huge logs, odd output paths and input files, values
past what Python or the database can hold, names that cannot be reached. Every case is one line
naming what is wrong, nothing hangs, and nothing already stored is lost or half-written."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
import threading
import time
import tracemalloc
from pathlib import Path

import pytest
from click.testing import CliRunner

from scheduler.cli import cli
from scheduler.errors import PlanError
from scheduler.jobqueue import JobQueue, JobSpec
from scheduler.plan import build_plan, load_plan
from tests.helpers import submit

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def sched(sqlite_url):
    """`sched --db <a queue that holds one job, 'keep'> ARGS` -> click's result."""
    queue = JobQueue(sqlite_url)
    submit(queue, "keep", "echo")
    queue.dispose()

    def run(*args: str):
        return CliRunner().invoke(cli, ["--db", sqlite_url, *args])

    return run


def one_line_error(result, says: str) -> None:
    """A user error: exit 1, `error: ...` on one line, no traceback."""
    assert isinstance(result.exception, SystemExit) and result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert says in lines[0], result.output


def only_keep_stored(sqlite_url: str) -> None:
    """The job the fixture stored is still there, alone and unchanged."""
    queue = JobQueue(sqlite_url)
    try:
        assert [(row.name, row.status) for row in queue.find()] == [("keep", "queued")]
    finally:
        queue.dispose()


# ---- 4. sched logs: a log of any size in bounded memory -----------------------------------------

BIG = 40 * 1024 * 1024  # a 40 MiB line without a newline


@pytest.fixture
def big_log(sqlite_url, tmp_path):
    """A finished job whose log is one 40 MiB line, then two short ones."""
    queue = JobQueue(sqlite_url)
    submit(queue, "talker", "echo")
    worker = queue.register_worker("host", 1, ["cpu0"])
    job = queue.claim(worker, "cpu0", 0, runs_root=tmp_path / "runs")
    log = Path(job.log_path)
    log.parent.mkdir(parents=True)
    with open(log, "wb") as fh:
        block = b"x" * (1 << 20)
        for _ in range(BIG // len(block)):
            fh.write(block)
        fh.write(b"\nlast-1\nlast-2\n")
    queue.succeed(job.id, worker)
    queue.dispose()
    return log


def _logs_in_bounded_memory(sqlite_url, *args):
    """`sched logs ARGS` with the peak of Python's allocations while it ran."""
    JobQueue(sqlite_url).dispose()  # the schema checked once, outside the measure
    tracemalloc.start()
    try:
        result = CliRunner().invoke(cli, ["--db", sqlite_url, "logs", *args])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.exit_code == 0, result.output
    return result.output, peak


def test_logs_tail_of_a_huge_line_reads_from_the_end_in_bounded_memory(big_log, sqlite_url):
    out, peak = _logs_in_bounded_memory(sqlite_url, "talker", "-n", "2")
    assert out == "last-1\nlast-2\n"
    assert peak < 8 * 1024 * 1024, f"peak {peak:,} bytes for a {BIG:,}-byte line"


def test_logs_cut_a_huge_line_with_a_count_of_what_was_left_out(big_log, sqlite_url):
    for args in (["-n", "3"], []):
        out, peak = _logs_in_bounded_memory(sqlite_url, "talker", *args)
        first, *rest = out.split("\n")
        assert first == "x" * 4000 + f" … [{BIG - 4000:,} more characters of this line left out]"
        assert rest == ["last-1", "last-2", ""]
        assert peak < 8 * 1024 * 1024, f"{args}: peak {peak:,} bytes for a {BIG:,}-byte line"
    out, _ = _logs_in_bounded_memory(sqlite_url, "talker", "-n", "1", "--max-line", "3")
    assert out == "las … [3 more characters of this line left out]\n"


def test_logs_follow_prints_what_a_running_job_writes_until_it_ends(sqlite_url, tmp_path):
    queue = JobQueue(sqlite_url)
    submit(queue, "talker", "echo")
    worker = queue.register_worker("host", 1, ["cpu0"])
    job = queue.claim(worker, "cpu0", 0, runs_root=tmp_path / "runs")
    log = Path(job.log_path)
    log.parent.mkdir(parents=True)
    log.write_text("before\n")

    def job_runs():
        time.sleep(0.8)
        with open(log, "a") as fh:
            fh.write("while following\npartial")
        time.sleep(0.8)
        with open(log, "a") as fh:
            fh.write(" line\n")  # written just before it ends: still printed
        queue.succeed(job.id, worker)

    writer = threading.Thread(target=job_runs)
    writer.start()
    result = CliRunner().invoke(cli, ["--db", sqlite_url, "logs", "talker", "-f"])
    writer.join()
    queue.dispose()
    assert result.exit_code == 0, result.output
    assert result.output == "before\nwhile following\npartial line\n"


def test_logs_of_a_log_with_many_lines_and_of_utf8_split_across_blocks(sqlite_url, tmp_path, monkeypatch):
    import scheduler.logtail as logtail

    monkeypatch.setattr(logtail, "BLOCK", 7)  # blocks end inside lines and inside characters
    queue = JobQueue(sqlite_url)
    submit(queue, "talker", "echo")
    worker = queue.register_worker("host", 1, ["cpu0"])
    job = queue.claim(worker, "cpu0", 0, runs_root=tmp_path / "runs")
    queue.succeed(job.id, worker)
    queue.dispose()
    log = Path(job.log_path)
    log.parent.mkdir(parents=True)
    lines = [f"줄 {i} 에포크" for i in range(50)]
    log.write_text("\n".join(lines))  # the last line has no newline
    run = CliRunner().invoke
    assert run(cli, ["--db", sqlite_url, "logs", "talker"]).output == "\n".join(lines)
    assert run(cli, ["--db", sqlite_url, "logs", "talker", "-n", "3"]).output == "\n".join(lines[-3:])
    assert run(cli, ["--db", sqlite_url, "logs", "talker", "-n", "500"]).output == "\n".join(lines)


# ---- 5. sched report --out: only a regular file or a new one, in a folder that exists ------------

def test_report_refuses_a_device_a_symlink_a_folder_and_a_missing_folder(sched, tmp_path, monkeypatch):
    import scheduler.report

    written = []  # a refused path is never written, so even a broken check leaves /dev/full alone
    monkeypatch.setattr(scheduler.report, "atomic_write", lambda path, data: written.append(path))
    target = tmp_path / "kept.html"
    target.write_text("not mine")
    link = tmp_path / "link.html"
    link.symlink_to(target)
    cases = [
        ("/dev/full", "cannot write the report to /dev/full: a device"),
        (str(link), f"cannot write the report to {link}: a symlink"),
        (str(tmp_path / "no" / "such" / "r.html"), f"no folder {tmp_path / 'no' / 'such'}"),
    ]
    for out, says in cases:
        one_line_error(sched("report", "--out", out), says)
    assert written == [] and stat.S_ISCHR(os.stat("/dev/full").st_mode)
    assert link.is_symlink() and target.read_text() == "not mine"
    assert not (tmp_path / "no").exists()
    fifo = tmp_path / "pipe.html"
    os.mkfifo(fifo)
    one_line_error(sched("report", "--out", str(fifo)), "not a regular file")
    assert written == []


def test_report_replaces_a_regular_file_and_writes_a_new_one(sched, tmp_path):
    old = tmp_path / "old.html"
    old.write_text("old report")
    for out in (old, tmp_path / "new.html"):
        result = sched("report", "--out", str(out))
        assert result.exit_code == 0, result.output
        assert out.read_text().lower().startswith("<!doctype html>") and not out.is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".html") == ["new.html", "old.html"]


# ---- 7. a shell job's env cannot set sched's variables, nor names no program can take ------------

@pytest.mark.parametrize("key, says", [
    ("SCHED_RUN_TOKEN", "'SCHED_RUN_TOKEN': SCHED_* variables are sched's own"),
    ("SCHED_DB", "'SCHED_DB': SCHED_* variables are sched's own"),
    ("A=B", "'A=B' is not a variable name"),
    ("", "'' is not a variable name"),
    ("A\0B", "'A\\x00B' is not a variable name"),
    ("1A", "'1A' is not a variable name"),
    ("A-B", "'A-B' is not a variable name"),
])
def test_a_shell_jobs_env_key_is_checked_at_submit(key, says, sched, sqlite_url, tmp_path):
    import json

    path = tmp_path / "queue.yaml"
    path.write_text("jobs:\n  - {name: probe, kind: shell, params: {argv: [env], env: %s}}\n"
                    % json.dumps({key: "x"}))
    one_line_error(sched("submit", str(path)), f"{path}: job 'probe' (jobs[0]): params.env: {says}")
    only_keep_stored(sqlite_url)


def test_a_shell_jobs_env_value_with_nul_is_refused_and_a_plain_env_accepted(tmp_path):
    with pytest.raises(PlanError, match="'FOO': the value holds a NUL"):
        build_plan({"jobs": [{"name": "s", "kind": "shell", "params": {"argv": ["env"], "env": {"FOO": "a\0b"}}}]})
    spec, = build_plan({"jobs": [{"name": "s", "kind": "shell",
                                  "params": {"argv": ["env"], "env": {"FOO_1": "x", "_bar": "y=z"}}}]})
    assert spec.params["env"] == {"FOO_1": "x", "_bar": "y=z"}


# ---- 8. sched submit reads a regular file, at most the limit -------------------------------------

def _submit_in_subprocess(path: Path, url: str) -> subprocess.CompletedProcess:
    """In its own process with a timeout: a hang fails the test instead of stopping the suite."""
    return subprocess.run([sys.executable, "-m", "scheduler.cli", "--db", url, "submit", str(path)],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)


def test_submit_refuses_a_fifo_and_endless_devices_without_hanging(sched, sqlite_url, tmp_path):
    fifo = tmp_path / "queue.yaml"
    os.mkfifo(fifo)  # no writer: opening it for reading would wait for one forever
    cases = [(fifo, "a FIFO, not a queue file"), (Path("/dev/zero"), "a device, not a queue file"),
             (Path("/dev/urandom"), "a device, not a queue file")]
    for path, says in cases:
        started = time.monotonic()
        done = _submit_in_subprocess(path, sqlite_url)
        assert time.monotonic() - started < 30
        assert done.returncode == 1 and "Traceback" not in done.stderr
        assert done.stderr.strip() == f"error: {path}: {says} (give a regular file)", done.stderr
    link = tmp_path / "link.yaml"
    link.symlink_to(fifo)
    one_line_error(sched("submit", str(link)), "a FIFO, not a queue file")
    one_line_error(sched("cron", "add", "0 2 * * *", str(fifo)), "a FIFO, not a queue file")
    only_keep_stored(sqlite_url)


def test_submit_stops_reading_one_byte_past_the_limit(sched, sqlite_url, tmp_path):
    from scheduler.limits import MAX_FILE_BYTES

    path = tmp_path / "queue.yaml"
    path.write_text("#" * (MAX_FILE_BYTES + 1))
    one_line_error(sched("submit", str(path)), f"more than {MAX_FILE_BYTES:,} bytes")
    path.write_text("jobs:\n  - {name: a, kind: echo}\n" + "#" * (MAX_FILE_BYTES - 40))
    assert sched("submit", str(path)).exit_code == 0


# ---- 9. values past what Python or the database holds: one line, no traceback --------------------

DIGITS = "9" * 5000  # Python refuses to convert more than 4,300 digits to an int


@pytest.mark.parametrize("args, says", [
    (["add", "echo", "--name", "x", "-p", f"message={DIGITS}"],
     "-p message: invalid YAML at line 1, column 1: a whole number of 5,000 characters; at most 1,000"),
    (["add", "echo", "--name", "x", "-p", "seed=" + "1:" * 3000 + "1"], "a whole number of 6,001 characters"),
    (["ls", "--since", "99999999999999d"], "--since 99999999999999d reaches back more than 36,500 days"),
    (["ls", "--since", "999999d"], "--since 999999d reaches back more than 36,500 days"),
    (["ls", "--since", "9999999999999h"], "reaches back more than 36,500 days"),
    (["show", "99999999999999999999"], "no job named or numbered '99999999999999999999'"),
    (["logs", "99999999999999999999"], "no job named or numbered '99999999999999999999'"),
    (["retry", "99999999999999999999"], "no job named or numbered '99999999999999999999'"),
    (["cancel", "9223372036854775808"], "no job named or numbered '9223372036854775808'"),
    (["show", "²"], "no job named or numbered '²'"),
    (["add", "echo", "--name", "x", "--gpus", "1", "--gpu-memory", "99999999999999999999TiB"],
     "sched add: job 'x' (jobs[0]), field gpu_memory: 99999999999999999999TiB is more than a GPU holds"),
    (["add", "echo", "--name", "x", "--gpus", "1", "--gpu-memory", "9" * 400 + "TiB"], "is not a size"),
    (["--db", "mysql://x", "ls"], "unsupported database URL mysql://x: sched supports sqlite:///PATH and "
                                  "postgresql://USER@HOST/DB"),
    (["--db", "postgres://u:secret@h/db", "ls"], "unsupported database URL postgres://u:***@h/db"),
    (["cron", "add", "0 0 31 2 *", "QUEUE"], "cron expression '0 0 31 2 *' never fires"),
    (["cron", "add", ",".join(["0"] * 3000) + " * * * *", "QUEUE"], "cron expression of 6,007 characters; at most 200"),
], ids=["-p 5000 digits", "-p base-60 6001 chars", "since 99999999999999d", "since 999999d", "since 9999999999999h",
        "show big id", "logs big id", "retry big id", "cancel 2**63", "show superscript two", "gpu-memory 1e20 TiB",
        "gpu-memory 400 digits", "mysql url", "postgres url", "cron never fires", "cron 6007 chars"])
def test_a_value_past_the_limits_is_one_line_and_stores_nothing(args, says, sched, sqlite_url, tmp_path):
    queue_file = tmp_path / "nightly.yaml"
    queue_file.write_text("jobs:\n  - {name: 'n-{date}', kind: echo}\n")
    args = [str(queue_file) if a == "QUEUE" else a for a in args]
    one_line_error(sched(*args), says)
    only_keep_stored(sqlite_url)
    queue = JobQueue(sqlite_url)
    from scheduler.cron import list_crons

    assert list_crons(queue) == []
    queue.dispose()


@pytest.mark.parametrize("text, says", [
    (f"jobs:\n  - {{name: a, kind: echo, priority: {DIGITS}}}\n", "a whole number of 5,000 characters"),
    (f"jobs:\n  - {{name: a, kind: echo, params: {{message: 0x{'f' * 2000}}}}}\n", "a whole number of 2,002"),
    ("jobs:\n  - {name: a, kind: echo, gpus: 1, gpu_memory: 3000000TiB}\n", "more than a GPU holds"),
    ("jobs:\n  - {name: a, kind: echo, gpus: 1, gpu_memory: %sTiB}\n" % ("9" * 400), "is not a size"),
], ids=["5000 digits", "2000 hex digits", "3000000TiB", "400-digit size"])
def test_a_queue_file_value_past_the_limits_is_one_line(text, says, sched, sqlite_url, tmp_path):
    path = tmp_path / "queue.yaml"
    path.write_text(text)
    one_line_error(sched("submit", str(path)), says)
    only_keep_stored(sqlite_url)


def test_a_cron_that_fires_only_in_leap_years_is_accepted(sched, tmp_path):
    path = tmp_path / "leap.yaml"
    path.write_text("jobs:\n  - {name: 'n-{date}', kind: echo}\n")
    result = sched("cron", "add", "0 0 29 2 *", str(path))
    assert result.exit_code == 0, result.output
    assert re.search(r"next run \d{4}-02-29 00:00 UTC", " ".join(result.output.split())), result.output


def test_ids_beyond_postgresqls_integer_name_no_job(db_url):
    queue = JobQueue(db_url)
    job_id = submit(queue, "keep", "echo")
    try:
        for ref in ("2147483648", "9223372036854775807", "99999999999999999999", 2 ** 40):
            with pytest.raises(Exception, match="no job named or numbered"):
                queue.resolve(ref)
        assert queue.resolve(str(job_id)) == job_id == queue.resolve("keep")
    finally:
        queue.dispose()


# ---- 12. all-digit names cannot be reached by name: refused ---------------------------------------

def test_all_digit_names_are_refused_in_a_queue_file_and_in_sched_add(sched, sqlite_url, tmp_path):
    path = tmp_path / "queue.yaml"
    path.write_text("jobs:\n  - {name: '42', kind: echo}\n")
    one_line_error(sched("submit", str(path)), f"{path}: job '42' (jobs[0]), field name: name '42' is all digits")
    path.write_text("jobs:\n  - {name: '{seed}', kind: echo, matrix: {seed: ['1', '2']}}\n")
    one_line_error(sched("submit", str(path)), "field name: name '1' is all digits")
    one_line_error(sched("add", "echo", "--name", "007"), "sched add: job '007' (jobs[0]), field name: name '007'")
    only_keep_stored(sqlite_url)
    with pytest.raises(PlanError, match="all digits"):
        JobQueue(sqlite_url).submit([JobSpec(name="12", kind="echo")])
    spec, = build_plan({"jobs": [{"name": "run-42", "kind": "echo"}]})  # a digit among others is fine
    assert spec.name == "run-42"


# ---- 14. after names the file; vars use vars; a -p key given twice --------------------------------

def test_an_unknown_after_names_the_file_the_job_and_the_field(sched, sqlite_url, tmp_path):
    path = tmp_path / "queue.yaml"
    path.write_text("jobs:\n  - {name: a, kind: echo, after: [ghost]}\n")
    one_line_error(sched("submit", str(path)),
                   f"{path}: job 'a', field after: unknown dependency 'ghost' (not in this batch, not in the queue)")
    one_line_error(sched("submit", "--dry-run", str(path)), f"{path}: job 'a', field after: unknown dependency")
    one_line_error(sched("add", "echo", "--name", "b", "--after", "ghost"),
                   "sched add: job 'b', field after: unknown dependency 'ghost'")
    only_keep_stored(sqlite_url)


def test_vars_that_use_other_vars_are_filled_in_any_order(tmp_path):
    path = _write(tmp_path, "queue.yaml",
                  "vars: {name: '{model}-{size}', model: '{family}', family: bert, size: 3,\n"
                  "       files: ['{data}/a.csv'], data: /d}\n"
                  "jobs:\n  - name: 'ft-{name}-{s}'\n    kind: shell\n    matrix: {s: ['{size}x', '{{lit}}']}\n"
                  "    params: {argv: '{files}'}\n")
    specs = load_plan(path)
    assert [s.name for s in specs] == ["ft-bert-3-3x", "ft-bert-3-{lit}"]
    assert specs[0].params["argv"] == ["/d/a.csv"]
    spec, = load_plan(_write(tmp_path, "q2.yaml",
                             "vars: {a: '{b}', b: 7}\njobs:\n  - {name: x, kind: sleep, params: {seconds: '{a}'}}\n"))
    assert spec.params["seconds"] == 7  # a whole "{var}" keeps the value's type, through other vars too
    assert [s.name for s in load_plan(path, {"family": "roberta"})][0] == "ft-roberta-3-3x"  # --var wins


def _write(folder: Path, name: str, text: str) -> Path:
    (folder / name).write_text(text)
    return folder / name


@pytest.mark.parametrize("vars_text, says", [
    ("{a: '{b}', b: '{c}', c: 'x{a}'}", "vars: variables use each other in a cycle: {a} -> {b} -> {c} -> {a}"),
    ("{a: 'x{a}'}", "cycle: {a} -> {a}"),
    ("{a: '{nope}'}", "vars.a: unknown variable {nope}"),
    ("{a: '{b}{b}{b}{b}{b}{b}{b}{b}', b: '{c}{c}{c}{c}{c}{c}{c}{c}', c: '{d}{d}{d}{d}{d}{d}{d}{d}',"
     " d: '{e}{e}{e}{e}{e}{e}{e}{e}', e: '{f}{f}{f}{f}{f}{f}{f}{f}', f: '{g}{g}{g}{g}{g}{g}{g}{g}', g: xxxxxxxx}",
     "longer than 65,536 characters once its variables are filled"),
    ("{a: ['{b}', '{b}', '{b}', '{b}', '{b}', '{b}', '{b}', '{b}', '{b}', '{b}'],"
     " b: ['{c}', '{c}', '{c}', '{c}', '{c}', '{c}', '{c}', '{c}', '{c}', '{c}'],"
     " c: ['{d}', '{d}', '{d}', '{d}', '{d}', '{d}', '{d}', '{d}', '{d}', '{d}'],"
     " d: ['{e}', '{e}', '{e}', '{e}', '{e}', '{e}', '{e}', '{e}', '{e}', '{e}'],"
     " e: ['{f}', '{f}', '{f}', '{f}', '{f}', '{f}', '{f}', '{f}', '{f}', '{f}'], f: [1, 2, 3, 4, 5, 6, 7, 8, 9, 0]}",
     "more than 100,000 values"),
], ids=["cycle of three", "self", "unknown", "string growth", "value growth"])
def test_vars_in_a_cycle_unknown_or_exploding_are_one_line_fast(vars_text, says, sched, sqlite_url, tmp_path):
    path = _write(tmp_path, "queue.yaml", f"vars: {vars_text}\njobs:\n  - {{name: n, kind: shell, "
                                           "params: {argv: ['{a}']}}\n")
    started = time.monotonic()
    result = sched("submit", str(path))
    assert time.monotonic() - started < 5
    one_line_error(result, says)
    assert result.output.startswith(f"error: {path}: ")
    only_keep_stored(sqlite_url)


def test_a_key_given_twice_to_p_or_var_is_refused_naming_it(sched, sqlite_url, tmp_path):
    one_line_error(sched("add", "echo", "--name", "x", "-p", "message=a", "-p", "message=b"),
                   "-p message is given twice; give each key once")
    path = _write(tmp_path, "queue.yaml", "jobs:\n  - {name: '{n}', kind: echo}\n")
    one_line_error(sched("submit", str(path), "--var", "n=a", "--var", "n=b"), "--var n is given twice")
    only_keep_stored(sqlite_url)
