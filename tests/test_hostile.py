"""Hostile or unlucky input: every case is a one-line error naming what is wrong, nothing is stored,
nothing hangs, and what is stored is shown as data (never as markup or terminal control)."""

from __future__ import annotations

import time

import pytest
from click.testing import CliRunner
from rich.console import Console

from scheduler.cli import cli
from scheduler.errors import PlanError
from scheduler.jobqueue import JobQueue
from scheduler.plan import build_plan, load_plan
from scheduler.render import status_view
from scheduler.store.schema import jobs
from scheduler.views import job_detail, status_snapshot
from tests.helpers import submit

BOMB = """
a: &a ["x", "x", "x", "x", "x", "x", "x", "x", "x"]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
jobs:
  - {name: bomb, kind: echo, params: {message: hi, write_file: null}, tags: *g}
"""

MATRIX = "jobs:\n  - name: m-{a}-{b}-{c}-{d}-{e}-{f}-{g}\n    kind: echo\n    matrix:\n" + "".join(
    f"      {k}: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]\n" for k in "abcdefg")

DEEP = "jobs:\n  - {name: deep, kind: echo, params: {message: " + "[" * 3000 + "]" * 3000 + "}}\n"

# (case, queue file text, what the one-line error says)
FILES = [
    ("alias bomb", BOMB, "more than 100,000 values"),
    ("7x10 matrix", MATRIX, "more than 5,000 jobs"),
    ("deep nesting", DEEP, "nest"),
    ("huge params", "jobs:\n  - {name: big, kind: echo, params: {message: " + "x" * 70_000 + "}}\n",
     "params: 70,0"),
    ("priority beyond 64 bits", "jobs:\n  - {name: p, kind: echo, priority: 99999999999999999999999}\n",
     "priority"),
    ("priority beyond PostgreSQL's integer", "jobs:\n  - {name: p, kind: echo, priority: 2147483648}\n",
     "priority"),
    ("negative timeout", "jobs:\n  - {name: t, kind: echo, timeout: -5}\n", "positive, finite"),
    ("infinite timeout", "jobs:\n  - {name: t, kind: echo, timeout: .inf}\n", "positive, finite"),
    ("nan timeout", "jobs:\n  - {name: t, kind: echo, timeout: .nan}\n", "positive, finite"),
    ("nan in params", "jobs:\n  - {name: t, kind: echo, params: {metric: .nan}}\n", "cannot be stored as JSON"),
    ("whitespace-only name", "jobs:\n  - {name: '   ', kind: echo}\n", "empty or only spaces"),
    ("name with an escape sequence", 'jobs:\n  - {name: "x\\e[2J", kind: echo}\n', "control characters"),
    ("duplicate key", "jobs:\n  - name: a\n    kind: echo\n    name: b\n", "key 'name' is written twice"),
    ("defaults for a misspelt kind", "defaults: {params: {finetun: {epochs: 3}}}\njobs:\n  - {name: a, kind: echo}\n",
     "defaults.params.finetun: unknown job kind 'finetun'"),
    ("python tag", "jobs:\n  - {name: a, kind: echo, params: {message: !!python/object/apply:os.system [ls]}}\n",
     "invalid YAML"),
    ("too many attempts", "jobs:\n  - {name: a, kind: echo, max_attempts: 1000}\n", "max_attempts"),
    ("write outside the run folder", "jobs:\n  - {name: a, kind: echo, params: {write_file: ../../x}}\n",
     "not a plain file name"),
]


@pytest.mark.parametrize("case, text, says", FILES, ids=[c for c, _, _ in FILES])
def test_a_hostile_queue_file_is_one_clear_error_fast_and_submits_nothing(case, text, says, tmp_path):
    path = tmp_path / "queue.yaml"
    path.write_text(text)
    url = f"sqlite:///{tmp_path / 'experiments.db'}"
    started = time.monotonic()
    result = CliRunner().invoke(cli, ["--db", url, "submit", str(path)])
    elapsed = time.monotonic() - started
    assert elapsed < 5, f"{case}: took {elapsed:.1f}s"
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit) and "Traceback" not in result.output
    assert says in result.output.replace("\n", ""), result.output
    queue = JobQueue(url)
    assert queue.status_counts() == {}
    queue.dispose()


@pytest.mark.parametrize("args, says", [
    (["-p", "argv=[unclosed"], "invalid YAML"),
    (["-p", "message=!!python/name:os.system"], "invalid YAML"),
    (["--priority", "99999999999999999999"], "priority"),
    (["--timeout", "-5"], "'-5' is not a duration"),
])
def test_a_hostile_sched_add_is_one_clear_error(args, says, sqlite_url):
    result = CliRunner().invoke(cli, ["--db", sqlite_url, "add", "echo", "--name", "x", *args])
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert says in result.output
    queue = JobQueue(sqlite_url)
    assert queue.status_counts() == {}
    queue.dispose()


def test_priority_out_of_range_is_refused_by_sched_priority(sqlite_url):
    queue = JobQueue(sqlite_url)
    submit(queue, "a", "echo")
    result = CliRunner().invoke(cli, ["--db", sqlite_url, "priority", "a", "2147483648"])
    assert result.exit_code == 1 and "out of range" in result.output
    assert queue.get("a").priority == 0
    queue.dispose()


MARKUP_NAMES = ["[/]", "[red]pretend-ok[/red]", "[bold]x", "a[/b]c", "[link=file:///etc]x[/link]"]
HOSTILE_MESSAGE = "boom [/] \x1b[2J\x1b]0;owned\x07 [red]fake[/red] \u202eevil"


def _render(snapshot) -> str:
    console = Console(width=400, record=True, force_terminal=False)
    console.print(status_view(snapshot, width=400))
    return console.export_text()


def test_names_and_messages_are_shown_as_data_never_as_markup_or_terminal_control(queue):
    worker = queue.register_worker("h\x1b[31mhost", 1, ["cpu0"])
    for name in MARKUP_NAMES:
        submit(queue, name, "echo")
    job = queue.claim(worker, "cpu0", 0)
    queue.fail(job.id, worker, message=HOSTILE_MESSAGE)
    with queue.write() as conn:  # a row written by another program: an escape sequence in a name
        conn.execute(jobs.update().where(jobs.c.name == MARKUP_NAMES[1]).values(name="evil\x1b[2Jname"))
    text = _render(status_snapshot(queue, all_jobs=False))
    assert "\x1b" not in text and "\x07" not in text and "\u202e" not in text
    assert "[/]" in text and "a[/b]c" in text and "[bold]x" in text
    assert "evil\\x1b[2Jname" in text and "\\x1b]0;owned\\x07" in text and "[red]fake[/red]" in text
    detail = Console(width=160, record=True)
    from scheduler.render import job_view

    detail.print(job_view(job_detail(queue, job.id)))
    assert "\\x1b[2J" in detail.export_text()


def test_sched_add_and_status_print_a_markup_name_without_a_traceback(sqlite_url):
    runner = CliRunner()
    added = runner.invoke(cli, ["--db", sqlite_url, "add", "echo", "--name", "[/]"], catch_exceptions=False)
    assert added.exit_code == 0 and "added job 1 '[/]'" in added.output
    shown = runner.invoke(cli, ["--db", sqlite_url, "status"], catch_exceptions=False)
    assert shown.exit_code == 0 and "[/]" in shown.output
    listed = runner.invoke(cli, ["--db", sqlite_url, "results", "--kind", "echo"], catch_exceptions=False)
    assert listed.exit_code == 0 and "[/]" in listed.output


def test_an_error_quoting_a_hostile_name_is_printed_literally(sqlite_url):
    CliRunner().invoke(cli, ["--db", sqlite_url, "init"])
    result = CliRunner().invoke(cli, ["--db", sqlite_url, "show", "[bold]nope\x1b[2J"])
    assert result.exit_code == 1
    assert "no job named or numbered '[bold]nope\\x1b[2J'" in result.output and "\x1b" not in result.output


def test_build_plan_refuses_a_name_that_is_not_text():
    with pytest.raises(PlanError, match="field name: Input should be a valid string"):
        build_plan({"jobs": [{"name": 5, "kind": "echo"}]})
    with pytest.raises(PlanError, match=r"resolves to \['a', 'b'\]; a name must be text"):
        build_plan({"vars": {"n": ["a", "b"]}, "jobs": [{"name": "{n}", "kind": "echo"}]})
    with pytest.raises(PlanError, match="starts or ends with spaces"):
        build_plan({"jobs": [{"name": " x", "kind": "echo"}]})


def test_a_queue_file_that_is_too_large_is_refused_before_it_is_read(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_bytes(b"#" * (3 * 1024 * 1024))
    with pytest.raises(PlanError, match="bytes; a queue file may have at most"):
        load_plan(path)


def test_a_malformed_database_file_is_named(tmp_path):
    path = tmp_path / "experiments.db"
    path.write_bytes(b"this is not a database" * 100)
    result = CliRunner().invoke(cli, ["--db", f"sqlite:///{path}", "status"])
    assert result.exit_code == 1 and str(path) in result.output.replace("\n", "")
    assert "not a database" in result.output


def test_a_non_integer_schema_version_is_refused_with_a_message(sqlite_url):
    from sqlalchemy import text

    JobQueue(sqlite_url).dispose()
    from scheduler.store.engine import make_engine

    engine = make_engine(sqlite_url)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE sched_alembic_version"))
        conn.execute(text("UPDATE sched_meta SET value = 'banana' WHERE key = 'schema_version'"))
    engine.dispose()
    result = CliRunner().invoke(cli, ["--db", sqlite_url, "status"])
    assert result.exit_code == 1 and "schema version banana, which this sched cannot read" in result.output
