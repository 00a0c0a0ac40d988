"""The queue's storage: tables, every query, engines and migrations.

- `states`: job and worker states (no database imports)
- `schema`: the tables (SQLAlchemy Core)
- `engine`: URLs, engines (SQLite WAL + BEGIN IMMEDIATE), the database clock
- `migrate`: create, upgrade (Alembic, `migrations/`) or refuse a database on open
- `queries`: every statement sched runs against its tables, by area
- `studies`: Optuna's storage on the queue's database

Import the submodule you need; this package imports nothing, so `scheduler.store.states` stays free.
"""
