"""v1: the store as edgebench wrote it up to commit a6517e5 (runs, cases, samples).

On an empty database this creates those tables. On a store written before Alembic (revision 0)
it adds the v1 Case columns such a store may lack, with their defaults, as the Store itself did
before migrations existed. The tables are spelled out here, not taken from database.py: a
revision is history and must not change when today's schema does.

Revision ID: 1
Revises:
"""

import sqlalchemy as sa
from alembic import op

from edgebench.store.migrations import add_missing_columns

revision = "1"
down_revision = None
branch_labels = None
depends_on = None

_S = sa.String(1024)


def _case_columns() -> list[sa.Column]:
    """The Case fields of v1 with their defaults (records.py at a6517e5)."""
    def col(name, type_, default):
        if default is None:
            return sa.Column(name, type_)
        if isinstance(default, bool):
            return sa.Column(name, type_, server_default=sa.true() if default else sa.false())
        return sa.Column(name, type_, server_default=sa.text(f"'{default}'" if isinstance(default, str) else str(default)))

    return [
        col("backend", _S, None), col("model", _S, None),
        col("n_prompt", sa.Integer, 512), col("n_gen", sa.Integer, 128), col("depth", sa.Integer, 0),
        col("n_ctx", sa.Integer, 0), col("n_batch", sa.Integer, 2048), col("n_ubatch", sa.Integer, 512),
        col("n_threads", sa.Integer, 1), col("n_gpu_layers", sa.Integer, 99),
        col("flash_attn", _S, "auto"), col("cache_type_k", _S, "f16"), col("cache_type_v", _S, "f16"),
        col("ep", _S, "cpu"), col("graph_opt", _S, "all"), col("reps", sa.Integer, 5),
        col("warmup", sa.Boolean, True), col("profile", _S, ""), col("preset", _S, ""),
        col("quant_request", _S, ""), col("source", _S, ""), col("speed", sa.Boolean, True),
        col("quality", sa.Boolean, False), col("quality_ctx", sa.Integer, 512),
        col("quality_chunks", sa.Integer, 0), col("quality_text", _S, ""), col("quality_ref", _S, ""),
        col("quality_seed", sa.Integer, 0), col("quality_top_k", sa.Integer, 0),
        col("timeout_s", sa.Float, 900.0),
    ]


def upgrade() -> None:
    if sa.inspect(op.get_bind()).has_table("runs"):  # a store from before Alembic
        add_missing_columns("cases", _case_columns())
        return
    op.create_table(
        "runs",
        sa.Column("run_id", sa.String(64), primary_key=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("finished_at", sa.Float),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("device", sa.String(128), nullable=False),
        sa.Column("schema_version", sa.Integer, nullable=False),
        sa.Column("spec_json", sa.Text, nullable=False),
        sa.Column("env_json", sa.Text, nullable=False),
    )
    op.create_table(
        "cases",
        sa.Column("run_id", sa.String(64), sa.ForeignKey("runs.run_id"), primary_key=True),
        sa.Column("case_id", sa.Integer, primary_key=True),
        sa.Column("case_key", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error", sa.Text, nullable=False),
        sa.Column("started_at", sa.Float),
        sa.Column("finished_at", sa.Float),
        sa.Column("info_json", sa.Text, nullable=False),
        *_case_columns(),
    )
    op.create_table(
        "samples",
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("case_id", sa.Integer, nullable=False),
        sa.Column("rep", sa.Integer, nullable=False),
        sa.Column("phase", sa.String(16), nullable=False),
        sa.Column("metric", sa.String(64), nullable=False),
        sa.Column("idx", sa.Integer, nullable=False),
        sa.Column("label", sa.String(256), nullable=False),
        sa.Column("value", sa.Float, nullable=False),
        sa.Column("t_ns", sa.BigInteger),
    )
    op.create_index("ix_samples_case", "samples", ["run_id", "case_id"])
