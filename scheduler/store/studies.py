"""Optuna's storage on the queue's own database: tune jobs keep their studies beside the jobs.

Optuna owns its tables (`studies`, `trials`, ...) and their migrations (`alembic_version`); sched
only opens them. The tune job gets `open_storage` through its context (`ctx.studies`), so `jobs`
never imports this module; `sched study` and the report read through `read_storage`.
"""

from __future__ import annotations

import random
import time
import warnings

from sqlalchemy import Engine, inspect

from .engine import immediate_transactions, normalize_url

SQLITE_BUSY_TIMEOUT_S = 60.0  # the queue's writers hold the lock briefly; Optuna's writes wait their turn
OPTUNA_TABLES = frozenset({"studies", "trials", "version_info"})


def open_storage(url: str, *, heartbeat_s: int | None = None, grace_s: int | None = None,
                 stale_trial_callback=None, attempts: int = 6):
    """Optuna's RDBStorage on the queue's database, with heartbeats when `heartbeat_s` is given.

    On SQLite every transaction of Optuna's engine begins IMMEDIATE, like the queue's own: Optuna
    reads then writes inside one transaction (ask, tell, heartbeats), and in WAL mode a deferred
    transaction that must upgrade its lock after another connection wrote fails at once with
    "database is locked", whatever the busy timeout.

    Several jobs of a group open a fresh database at once: their CREATE TABLEs race (PostgreSQL
    reports a duplicate type, SQLite "table exists"); table creation is idempotent, so try again.
    """
    import optuna
    from sqlalchemy.exc import SQLAlchemyError

    url = normalize_url(url)
    sqlite = url.startswith("sqlite")
    engine_kwargs = {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S}} if sqlite else {"pool_pre_ping": True}
    extra = {}
    if heartbeat_s is not None:
        extra = dict(heartbeat_interval=heartbeat_s, grace_period=grace_s or max(120, 4 * heartbeat_s),
                     heartbeat_stale_trial_callback=stale_trial_callback)
    for attempt in range(attempts):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                storage = optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, **extra)
            break
        except (SQLAlchemyError, optuna.exceptions.StorageInternalError):
            if attempt == attempts - 1:
                raise
            time.sleep(0.2 + random.random() * (attempt + 1))
    if sqlite:
        immediate_transactions(storage.engine)
        storage.engine.dispose()  # connections opened by the constructor predate the listeners
    return storage


def optuna_tables_present(engine: Engine) -> bool:
    return OPTUNA_TABLES <= set(inspect(engine).get_table_names())


def read_storage(url: str):
    """Optuna's storage for reading studies; creates no table. Close with `close_storage`."""
    import optuna

    return optuna.storages.RDBStorage(normalize_url(url), skip_table_creation=True)


def close_storage(storage) -> None:
    storage.remove_session()
    storage.engine.dispose()
