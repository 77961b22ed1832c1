"""Who the primary is: the replicated cluster state (epoch) and the promotion history.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIME = sa.DateTime().with_variant(mysql.DATETIME(fsp=3), "mysql", "mariadb")
TABLE: dict[str, Any] = {
    "mysql_engine": "InnoDB",
    "mysql_charset": "utf8mb4",
    "mysql_collate": "utf8mb4_bin",
}


def upgrade() -> None:
    # No row until the first primary is recorded: a database that was never a cluster's
    # primary has no epoch (readers treat that as epoch 0).
    op.create_table(
        "cluster_state",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("epoch", sa.BigInteger(), nullable=False),
        sa.Column("primary_node", sa.String(64), nullable=False),
        sa.Column("primary_address", sa.String(128), nullable=False),
        sa.Column("changed_at", TIME, nullable=False),
        sa.CheckConstraint("id = 1", name=op.f("ck_cluster_state_single_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cluster_state")),
        **TABLE,
    )
    op.create_table(
        "promotions",
        sa.Column("epoch", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("node", sa.String(64), nullable=False),
        sa.Column("address", sa.String(128), nullable=False),
        sa.Column("previous_node", sa.String(64), nullable=False),
        sa.Column("reason", sa.String(255), nullable=False),
        sa.Column("automatic", sa.Boolean(), nullable=False),
        sa.Column("from_gtid", sa.String(1024), nullable=False),
        sa.Column("promoted_at", TIME, nullable=False),
        sa.PrimaryKeyConstraint("epoch", name=op.f("pk_promotions")),
        **TABLE,
    )


def downgrade() -> None:
    op.drop_table("promotions")
    op.drop_table("cluster_state")
