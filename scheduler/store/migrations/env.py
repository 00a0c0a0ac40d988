"""Alembic environment for sched's own tables (`sched_*`).

Run by `scheduler.store.migrate` on a connection it already holds inside a transaction (and a
lock), never from alembic's command line: `sched db upgrade` is the command. Optuna's tables live
in the same database with Optuna's own migrations and version table (`alembic_version`); ours is
`sched_alembic_version`, and every object outside sched's tables is ignored.
"""

from alembic import context

from scheduler.store.schema import SCHED_TABLES, metadata

VERSION_TABLE = "sched_alembic_version"


def include_name(name, type_, _parent_names):
    if type_ == "table":
        return name in SCHED_TABLES
    return True


connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, version_table=VERSION_TABLE,
                  include_name=include_name, render_as_batch=True, compare_type=True)
with context.begin_transaction():
    context.run_migrations()
