"""Schema migrations: old databases are upgraded (never refused, never lost), new ones are built by
the migrations, and those builds equal the tables in scheduler/store/schema.py. SQLite and PostgreSQL.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, select, text

from scheduler.cli import cli
from scheduler.jobqueue import JobQueue
from scheduler.records import Records
from scheduler.store import migrate
from scheduler.store.engine import make_engine, normalize_url
from scheduler.store.migrate import SchemaVersionError, ensure_schema, head, revisions
from scheduler.store.schema import cron_fires, jobs, meta, metadata, metrics
from tests.helpers import submit

FIXTURE = Path(__file__).with_name("fixtures") / "schema1.db"


def _legacy_copy(tmp_path) -> str:
    path = tmp_path / "experiments.db"
    shutil.copy(FIXTURE, path)
    return f"sqlite:///{path}"


def test_newest_revision_from_file_names_is_alembics_head():
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(migrate.MIGRATIONS))
    script = ScriptDirectory.from_config(config)
    assert script.get_current_head() == head()
    assert [r.revision for r in script.walk_revisions()][::-1] == revisions()  # one linear history


def test_a_sched_0_1_database_is_upgraded_with_a_backup_and_keeps_everything(tmp_path):
    url = _legacy_copy(tmp_path)
    before = sqlite3.connect(tmp_path / "experiments.db")
    old_jobs = before.execute("SELECT id, name, status, attempts, failure_kind, message FROM sched_jobs "
                              "ORDER BY id").fetchall()
    old_trials = before.execute("SELECT number, state FROM trials ORDER BY number").fetchall()
    before.close()
    assert len(old_jobs) == 5 and len(old_trials) == 3

    queue = JobQueue(url)  # opening upgrades
    with queue.read() as conn:
        assert conn.execute(text("SELECT version_num FROM sched_alembic_version")).scalar() == head()
        assert conn.execute(select(meta.c.value).where(meta.c.key == "schema_version")).scalar() == str(int(head()))
        rows = conn.execute(select(jobs.c.id, jobs.c.name, jobs.c.status, jobs.c.attempts, jobs.c.failure_kind,
                                   jobs.c.message).order_by(jobs.c.id)).all()
        assert [tuple(r) for r in rows] == old_jobs
        assert conn.execute(select(cron_fires.c.cron_name, cron_fires.c.jobs_submitted)).all() == [("nightly", 3)]
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar()  # Optuna's own, untouched
    record = Records(queue).job("ft-a")
    assert record.metrics == {"val_accuracy": pytest.approx(0.61), "loss": pytest.approx(1.2)}
    assert record.artifacts == {"model": "/runs/00001-ft-a/model"}
    assert queue.get("ens").status == "upstream_failed" and "ft-b" in queue.get("ens").message

    import optuna

    study = optuna.load_study(study_name="tune-x", storage=url)
    assert [(t.number, t.state.name) for t in study.trials] == [(n, s) for n, s in old_trials]
    assert study.best_value == pytest.approx(0.7)

    backup = tmp_path / "experiments.db.backup-0001"
    assert backup.exists()
    copy = sqlite3.connect(backup)
    assert copy.execute("SELECT value FROM sched_meta WHERE key = 'schema_version'").fetchone() == ("1",)
    assert copy.execute("SELECT count(*) FROM sched_jobs").fetchone() == (5,)
    copy.close()

    # The upgraded queue works: the old queued jobs run, new ones join them.
    worker = queue.register_worker("new-host", 1, ["gpu0"])
    submit(queue, "after-upgrade", "echo", priority=10)
    assert [queue.claim(worker, "gpu0", 1).name for _ in range(3)] == ["after-upgrade", "tune-x#1", "later"]
    queue.dispose()


def test_opening_an_upgraded_database_again_changes_nothing(tmp_path):
    url = _legacy_copy(tmp_path)
    JobQueue(url).dispose()
    engine = make_engine(url)
    assert ensure_schema(engine).changed is False
    engine.dispose()
    assert sorted(p.name for p in tmp_path.iterdir() if "backup" in p.name) == ["experiments.db.backup-0001"]


def _as_sched_0_1(url: str) -> None:
    """Turn a database built by revision 0001 into what sched 0.1 left: no Alembic version table."""
    engine = create_engine(normalize_url(url))
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE sched_alembic_version"))
        assert conn.execute(select(meta.c.value).where(meta.c.key == "schema_version")).scalar() == "1"
    engine.dispose()


def _build_revision(url: str, revision: str) -> None:
    from alembic import command

    engine = make_engine(url)
    with engine.begin() as conn:
        command.upgrade(migrate._alembic_config(conn), revision)
    engine.dispose()


def test_a_legacy_database_is_upgraded_on_both_backends(db_url):
    _build_revision(db_url, "0001")
    _as_sched_0_1(db_url)
    engine = create_engine(normalize_url(db_url))
    with engine.begin() as conn:  # rows as sched 0.1 wrote them
        conn.execute(text("INSERT INTO sched_jobs (name, kind, params, priority, status, gpus, tags, attempts, "
                          "max_attempts, preemptible, cancel_requested, created_at) VALUES ('old', 'echo', '{}', "
                          "3, 'queued', 0, '[]', 0, 1, false, false, '2026-11-01 10:00:00')"))
    engine.dispose()
    queue = JobQueue(db_url)
    worker = queue.register_worker("h", 1, ["cpu0"])
    job = queue.claim(worker, "cpu0", 0)
    assert job.name == "old" and job.priority == 3
    assert queue.succeed(job.id, worker)
    queue.dispose()


def test_migrations_build_exactly_the_tables_of_schema_py(db_url):
    """A column added to schema.py without a migration (or the other way round) fails here."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from scheduler.store.schema import SCHED_TABLES

    JobQueue(db_url).dispose()  # built by running every migration
    engine = make_engine(db_url)
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={
            "compare_type": True, "version_table": migrate.VERSION_TABLE,
            "include_name": lambda name, type_, _: type_ != "table" or name in SCHED_TABLES})
        diff = compare_metadata(context, metadata)
    engine.dispose()
    assert diff == []


def test_a_newer_database_is_refused_untouched(db_url):
    queue = JobQueue(db_url)
    submit(queue, "keep-me", "echo")
    with queue.write() as conn:
        conn.execute(text("UPDATE sched_alembic_version SET version_num = '9999'"))
    queue.dispose()
    with pytest.raises(SchemaVersionError, match=r"schema revision '9999', newer than this sched knows"):
        JobQueue(db_url)
    engine = create_engine(normalize_url(db_url))
    with engine.connect() as conn:
        assert conn.execute(select(jobs.c.name)).scalars().all() == ["keep-me"]
        assert conn.execute(text("SELECT version_num FROM sched_alembic_version")).scalar() == "9999"
    engine.dispose()


def test_tables_named_like_scheds_without_a_version_are_refused(db_url):
    engine = create_engine(normalize_url(db_url))
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE sched_jobs (id INTEGER PRIMARY KEY, payload TEXT)"))
    engine.dispose()
    with pytest.raises(SchemaVersionError, match="named like sched's .*sched_jobs.* but no schema version"):
        JobQueue(db_url)
    engine = create_engine(normalize_url(db_url))
    with engine.connect() as conn:
        assert [c for c in conn.execute(text("SELECT * FROM sched_jobs")).keys()] == ["id", "payload"]
    engine.dispose()


def test_sched_tables_without_a_version_row_are_refused(sqlite_url):
    _build_revision(sqlite_url, "0001")
    _as_sched_0_1(sqlite_url)
    engine = create_engine(sqlite_url)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM sched_meta"))
    engine.dispose()
    with pytest.raises(SchemaVersionError, match="sched's tables but no schema version"):
        JobQueue(sqlite_url)


def test_db_commands_report_and_upgrade(tmp_path):
    url = _legacy_copy(tmp_path)
    runner = CliRunner()
    current = runner.invoke(cli, ["--db", url, "db", "current"], catch_exceptions=False)
    assert "schema revision 0001 (sched 0.1); this sched upgrades it" in current.output
    upgraded = runner.invoke(cli, ["--db", url, "db", "upgrade"], catch_exceptions=False)
    assert f"upgraded from revision 0001 to {head()}" in upgraded.output and "backup-0001" in upgraded.output
    again = runner.invoke(cli, ["--db", url, "db", "upgrade"], catch_exceptions=False)
    assert f"already at revision {head()}" in again.output
    new = runner.invoke(cli, ["--db", f"sqlite:///{tmp_path / 'new.db'}", "db", "upgrade"], catch_exceptions=False)
    assert f"created at schema revision {head()}" in new.output
    assert "Example" in runner.invoke(cli, ["db", "upgrade", "--help"]).output


def test_metrics_survive_with_their_steps(tmp_path):
    queue = JobQueue(_legacy_copy(tmp_path))
    with queue.read() as conn:
        rows = conn.execute(select(metrics.c.key, metrics.c.step, metrics.c.split).order_by(metrics.c.id)).all()
    assert [tuple(r) for r in rows] == [("val_accuracy", None, None), ("loss", 10, "train")]
    queue.dispose()


ENDING_INDEXES = ("ix_sched_jobs_finished", "ix_sched_jobs_kind_finished", "ix_sched_jobs_status_finished")


def test_the_ending_indexes_hold_ended_jobs_only_and_still_serve_the_reads_of_endings(db_url):
    """A claim (queued -> running) must not rewrite the indexes over endings (revision 0010), and
    the reads of endings must still find their index rather than scan every job."""
    _build_revision(db_url, "0009")
    queue = JobQueue(db_url)  # upgrades to the newest revision
    with queue.read() as conn:
        if conn.dialect.name == "sqlite":
            found = dict(conn.execute(text("SELECT name, sql FROM sqlite_master WHERE type = 'index'")).all())
        else:
            found = dict(conn.execute(text("SELECT indexname, indexdef FROM pg_indexes "
                                           "WHERE tablename = 'sched_jobs'")).all())
        for name in ENDING_INDEXES:
            assert "finished_at IS NOT NULL" in found[name], found[name]
        if conn.dialect.name == "sqlite":
            for sql, index in [
                ("SELECT * FROM sched_jobs WHERE finished_at IS NOT NULL ORDER BY finished_at DESC LIMIT 10",
                 "ix_sched_jobs_finished"),
                ("SELECT started_at FROM sched_jobs WHERE kind = 'echo' AND status = 'succeeded' "
                 "AND finished_at > '2026-01-01' ORDER BY finished_at DESC LIMIT 20", "ix_sched_jobs_kind_finished"),
            ]:
                plan = " ".join(str(row[3]) for row in conn.execute(text("EXPLAIN QUERY PLAN " + sql)))
                assert f"USING INDEX {index}" in plan, plan
    queue.dispose()
