"""v2: cases.test (llama-bench's test kind, "pg" for every older case), cases.target_ci /
max_time_s (-r auto; 0: fixed reps), cases.hub_repo / hub_revision / hub_file (where a hf:// model
came from, "" for older cases) and runs.stored_at.

``stored_at`` is when this store received the run (created, or ingested from a bundle): "latest"
means the run stored last, so a bundle whose ``created_at`` lies in the future (a board with no
real-time clock, or a hostile file) cannot make itself the latest run. Older rows take their
``created_at``, never later than the migration itself.

Revision ID: 2
Revises: 1
"""

import time

import sqlalchemy as sa
from alembic import op

from edgebench.store.migrations import add_missing_columns

revision = "2"
down_revision = "1"
branch_labels = None
depends_on = None


_S = sa.String(1024)
# the Case fields added since v1, each with the default that says what older cases were
NEW_CASE_COLUMNS = [
    sa.Column("test", _S, server_default=sa.text("'pg'")),
    sa.Column("target_ci", sa.Float, server_default=sa.text("0.0")),
    sa.Column("max_time_s", sa.Float, server_default=sa.text("0.0")),
    sa.Column("hub_repo", _S, server_default=sa.text("''")),
    sa.Column("hub_revision", _S, server_default=sa.text("''")),
    sa.Column("hub_file", _S, server_default=sa.text("''")),
]


def upgrade() -> None:
    add_missing_columns("cases", NEW_CASE_COLUMNS)
    add_missing_columns("runs", [sa.Column("stored_at", sa.Float)])
    runs = sa.table("runs", sa.column("created_at", sa.Float), sa.column("stored_at", sa.Float))
    now = time.time()
    op.execute(runs.update().where(runs.c.stored_at.is_(None))
               .values(stored_at=sa.case((runs.c.created_at > now, now), else_=runs.c.created_at)))
