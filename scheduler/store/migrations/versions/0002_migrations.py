"""Schema versions move to Alembic (`sched_alembic_version`); sched 0.1 must refuse the database.

sched 0.1 opens a database only when `sched_meta.schema_version` is 1. Every revision from here
writes its own number there, so an older sched says "schema version N, this sched expects 1"
instead of writing into tables it does not know.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(sa.text("UPDATE sched_meta SET value = '2' WHERE key = 'schema_version'"))
