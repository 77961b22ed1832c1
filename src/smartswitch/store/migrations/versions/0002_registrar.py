"""The registrar: subscribers, DIDs, persisted registrations; peers that deliver DIDs or want
the switch to register with them; the subscriber of a CDR.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24

Plain SQLAlchemy types only (see 0001).  Only registrar tables and columns belong here: the web
interface's tables come in a later revision.
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIME = sa.DateTime().with_variant(mysql.DATETIME(fsp=3), "mysql", "mariadb")
NAME = sa.String(64)
NUMBER = sa.String(32)
TABLE: dict[str, Any] = {
    "mysql_engine": "InnoDB",
    "mysql_charset": "utf8mb4",
    "mysql_collate": "utf8mb4_bin",
}


def upgrade() -> None:
    # SQLite can add a NOT NULL column only with a default: existing peers deliver no DIDs.
    op.add_column(
        "peers",
        sa.Column("deliver_dids", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    op.add_column("peers", sa.Column("register_username", NAME, nullable=True))
    op.add_column("peers", sa.Column("register_password", sa.String(128), nullable=True))
    op.add_column("peers", sa.Column("register_registrar", sa.String(255), nullable=True))
    op.add_column("peers", sa.Column("register_expires", sa.Integer(), nullable=True))
    op.add_column("cdrs", sa.Column("subscriber_id", sa.Integer(), nullable=True))

    op.create_table(
        "subscribers",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("username", NAME, nullable=False),
        sa.Column("realm", sa.String(128), nullable=False),
        sa.Column("ha1_md5", sa.String(32), nullable=False),
        sa.Column("ha1_sha256", sa.String(64), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("tariff_id", sa.Integer(), nullable=True),
        sa.Column("allowed_cidrs", sa.JSON(), nullable=False),
        sa.Column("max_contacts", sa.Integer(), nullable=False),
        sa.Column("max_calls", sa.Integer(), nullable=True),
        sa.Column("caller_id", NUMBER, nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_subscribers_account_id_accounts")
        ),
        sa.ForeignKeyConstraint(
            ["tariff_id"], ["tariffs.id"], name=op.f("fk_subscribers_tariff_id_tariffs")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_subscribers")),
        sa.UniqueConstraint("username", name=op.f("uq_subscribers_username")),
        **TABLE,
    )
    op.create_index(op.f("ix_subscribers_account_id"), "subscribers", ["account_id"])
    op.create_index(op.f("ix_subscribers_tariff_id"), "subscribers", ["tariff_id"])

    op.create_table(
        "dids",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("number", NUMBER, nullable=False),
        sa.Column("subscriber_id", sa.Integer(), nullable=True),
        sa.Column("peer_id", sa.Integer(), nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.CheckConstraint(
            "(subscriber_id IS NULL) <> (peer_id IS NULL)", name=op.f("ck_dids_one_owner")
        ),
        sa.ForeignKeyConstraint(
            ["subscriber_id"], ["subscribers.id"], name=op.f("fk_dids_subscriber_id_subscribers")
        ),
        sa.ForeignKeyConstraint(["peer_id"], ["peers.id"], name=op.f("fk_dids_peer_id_peers")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dids")),
        sa.UniqueConstraint("number", name=op.f("uq_dids_number")),
        **TABLE,
    )
    op.create_index(op.f("ix_dids_subscriber_id"), "dids", ["subscriber_id"])
    op.create_index(op.f("ix_dids_peer_id"), "dids", ["peer_id"])

    op.create_table(
        "registrations",
        sa.Column("node", NAME, nullable=False),
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("aor", NAME, nullable=False),
        sa.Column("contact", sa.Text(), nullable=False),
        sa.Column("expires_at", TIME, nullable=False),
        sa.Column("registered_at", TIME, nullable=False),
        sa.Column("call_id", sa.String(255), nullable=False),
        sa.Column("cseq", sa.Integer(), nullable=False),
        sa.Column("transport", sa.String(8), nullable=False),
        sa.Column("source_host", NAME, nullable=False),
        sa.Column("source_port", sa.Integer(), nullable=False),
        sa.Column("user_agent", sa.String(255), nullable=False),
        sa.Column("q", sa.Float(), nullable=True),
        sa.Column("origin_node", NAME, nullable=False),
        sa.PrimaryKeyConstraint("node", "id", name=op.f("pk_registrations")),
        **TABLE,
    )
    op.create_index(
        op.f("ix_registrations_node_expires_at"), "registrations", ["node", "expires_at"]
    )


def downgrade() -> None:
    for table in ("registrations", "dids", "subscribers"):
        op.drop_table(table)
    with op.batch_alter_table("cdrs") as batch:
        batch.drop_column("subscriber_id")
    with op.batch_alter_table("peers") as batch:
        for column in (
            "register_expires",
            "register_registrar",
            "register_password",
            "register_username",
            "deliver_dids",
        ):
            batch.drop_column(column)
