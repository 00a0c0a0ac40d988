"""Shared fixtures: a fresh queue database per test, on SQLite and on a real PostgreSQL.

PostgreSQL comes from $SCHED_TEST_PG_URL (default: the local server, trust auth). When
$SCHED_REQUIRE_PG=1 (CI), an unreachable server fails the run instead of skipping its tests.
"""

from __future__ import annotations

import os
import uuid

import pytest

PG_URL = os.environ.get("SCHED_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REQUIRE_PG = os.environ.get("SCHED_REQUIRE_PG") == "1"


def _pg_admin():
    import psycopg
    from sqlalchemy.engine import make_url

    url = make_url(PG_URL)
    return psycopg.connect(host=url.host, port=url.port or 5432, user=url.username,
                           password=url.password, dbname=url.database, autocommit=True,
                           connect_timeout=5)


def _pg_available() -> str | None:
    try:
        with _pg_admin():
            return None
    except Exception as exc:  # noqa: BLE001 - any reason means "no server"
        return str(exc).splitlines()[0]


@pytest.fixture(scope="session")
def pg_server():
    problem = _pg_available()
    if problem:
        if REQUIRE_PG:
            pytest.fail(f"PostgreSQL required (SCHED_REQUIRE_PG=1) but unreachable at {PG_URL}: {problem}")
        pytest.skip(f"PostgreSQL not reachable at {PG_URL}: {problem}")
    return PG_URL


def fresh_pg_database(base_url: str) -> tuple[str, str]:
    from sqlalchemy.engine import make_url

    name = f"sched_test_{uuid.uuid4().hex[:12]}"
    with _pg_admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return make_url(base_url).set(database=name).render_as_string(hide_password=False), name


def drop_pg_database(name: str) -> None:
    with _pg_admin() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    """A URL of an empty database: a SQLite file, or a new PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'experiments.db'}"
        return
    base = request.getfixturevalue("pg_server")
    url, name = fresh_pg_database(base)
    try:
        yield url
    finally:
        drop_pg_database(name)


@pytest.fixture
def sqlite_url(tmp_path):
    return f"sqlite:///{tmp_path / 'experiments.db'}"


@pytest.fixture
def queue(db_url):
    from scheduler.jobqueue import JobQueue

    q = JobQueue(db_url)
    yield q
    q.dispose()


@pytest.fixture
def small_data(tmp_path):
    """400 real training reviews (100 per class) and 60 test reviews, as CSV paths."""
    from tests.helpers import review_sample, sample_test_csv

    return review_sample(tmp_path, 100), sample_test_csv(tmp_path, 60)
