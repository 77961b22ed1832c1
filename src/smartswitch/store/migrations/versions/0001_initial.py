"""The initial schema: configuration, CDRs, the money audit trail, settings, config_version.

Revision ID: 0001
Revises:
Create Date: 2025-01-01

Plain SQLAlchemy types only, so this file keeps meaning what it meant when it was written.
Money is DECIMAL(18, s) on MariaDB and a scaled BIGINT on SQLite (see smartswitch.store.types);
times are DATETIME(3) on MariaDB.  Enums are VARCHAR(16) holding the value.
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _money(scale: int) -> sa.types.TypeEngine[Any]:
    return sa.Numeric(18, scale).with_variant(sa.BigInteger(), "sqlite")


AMOUNT = _money(4)
PRICE = _money(6)
TIME = sa.DateTime().with_variant(mysql.DATETIME(fsp=3), "mysql", "mariadb")
ENUM = sa.String(16)
NAME = sa.String(64)
TABLE: dict[str, Any] = {
    "mysql_engine": "InnoDB",
    "mysql_charset": "utf8mb4",
    "mysql_collate": "utf8mb4_bin",
}


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", NAME, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("balance", AMOUNT, nullable=False),
        sa.Column("credit_limit", AMOUNT, nullable=False),
        sa.Column("prepaid", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_accounts")),
        sa.UniqueConstraint("name", name=op.f("uq_accounts_name")),
        **TABLE,
    )
    op.create_table(
        "tariffs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", NAME, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tariffs")),
        sa.UniqueConstraint("name", name=op.f("uq_tariffs_name")),
        **TABLE,
    )
    op.create_table(
        "rates",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("tariff_id", sa.Integer(), nullable=False),
        sa.Column("prefix", sa.String(32), nullable=False),
        sa.Column("price_per_minute", PRICE, nullable=False),
        sa.Column("connect_fee", PRICE, nullable=False),
        sa.Column("increment_min", sa.Integer(), nullable=False),
        sa.Column("increment_step", sa.Integer(), nullable=False),
        sa.Column("free_seconds", sa.Integer(), nullable=False),
        sa.Column("effective_from", TIME, nullable=True),
        sa.Column("effective_to", TIME, nullable=True),
        sa.ForeignKeyConstraint(
            ["tariff_id"],
            ["tariffs.id"],
            name=op.f("fk_rates_tariff_id_tariffs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rates")),
        **TABLE,
    )
    op.create_index(op.f("ix_rates_tariff_id_prefix"), "rates", ["tariff_id", "prefix"])
    op.create_table(
        "peers",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", NAME, nullable=False),
        sa.Column("role", ENUM, nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("tariff_id", sa.Integer(), nullable=True),
        sa.Column("acl", sa.JSON(), nullable=False),
        sa.Column("username", NAME, nullable=True),
        sa.Column("password", sa.String(128), nullable=True),
        sa.Column("address", sa.String(255), nullable=True),
        sa.Column("transport", sa.String(8), nullable=False),
        sa.Column("max_calls", sa.Integer(), nullable=True),
        sa.Column("max_cps", sa.Integer(), nullable=True),
        sa.Column("caller_rewrite", sa.JSON(), nullable=False),
        sa.Column("callee_rewrite", sa.JSON(), nullable=False),
        sa.Column("profit_control", ENUM, nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_peers_account_id_accounts")
        ),
        sa.ForeignKeyConstraint(
            ["tariff_id"], ["tariffs.id"], name=op.f("fk_peers_tariff_id_tariffs")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_peers")),
        sa.UniqueConstraint("name", name=op.f("uq_peers_name")),
        sa.UniqueConstraint("username", name=op.f("uq_peers_username")),
        **TABLE,
    )
    op.create_index(op.f("ix_peers_account_id"), "peers", ["account_id"])
    op.create_index(op.f("ix_peers_tariff_id"), "peers", ["tariff_id"])
    op.create_table(
        "routes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("prefix", sa.String(32), nullable=False),
        sa.Column("strategy", ENUM, nullable=False),
        sa.Column("name", NAME, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_routes")),
        sa.UniqueConstraint("prefix", name=op.f("uq_routes_prefix")),
        **TABLE,
    )
    op.create_table(
        "route_suppliers",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("route_id", sa.Integer(), nullable=False),
        sa.Column("peer_id", sa.Integer(), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("weight", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["peer_id"], ["peers.id"], name=op.f("fk_route_suppliers_peer_id_peers")
        ),
        sa.ForeignKeyConstraint(
            ["route_id"],
            ["routes.id"],
            name=op.f("fk_route_suppliers_route_id_routes"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_route_suppliers")),
        sa.UniqueConstraint(
            "route_id", "peer_id", name=op.f("uq_route_suppliers_route_id_peer_id")
        ),
        **TABLE,
    )
    op.create_index(op.f("ix_route_suppliers_peer_id"), "route_suppliers", ["peer_id"])
    op.create_table(
        "cdrs",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("call_id", sa.String(255), nullable=False),
        sa.Column("node", NAME, nullable=False),
        sa.Column("customer_peer_id", sa.Integer(), nullable=False),
        sa.Column("customer_account_id", sa.Integer(), nullable=False),
        sa.Column("caller", sa.String(128), nullable=False),
        sa.Column("callee", sa.String(128), nullable=False),
        sa.Column("caller_out", sa.String(128), nullable=False),
        sa.Column("callee_out", sa.String(128), nullable=False),
        sa.Column("setup_time", TIME, nullable=False),
        sa.Column("answer_time", TIME, nullable=True),
        sa.Column("end_time", TIME, nullable=False),
        sa.Column("duration_ms", sa.Integer(), nullable=False),
        sa.Column("billed_seconds", sa.Integer(), nullable=False),
        sa.Column("price", AMOUNT, nullable=False),
        sa.Column("cost", AMOUNT, nullable=False),
        sa.Column("profit", AMOUNT, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("supplier_peer_id", sa.Integer(), nullable=True),
        sa.Column("supplier_account_id", sa.Integer(), nullable=True),
        sa.Column("sip_code", sa.Integer(), nullable=False),
        sa.Column("sip_reason", sa.String(255), nullable=False),
        sa.Column("hangup_side", ENUM, nullable=False),
        sa.Column("hangup_reason", sa.String(255), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cdrs")),
        **TABLE,
    )
    op.create_index(op.f("ix_cdrs_call_id"), "cdrs", ["call_id"])
    op.create_index(
        op.f("ix_cdrs_customer_account_id_setup_time"),
        "cdrs",
        ["customer_account_id", "setup_time"],
    )
    op.create_index(op.f("ix_cdrs_setup_time"), "cdrs", ["setup_time"])
    op.create_table(
        "cdr_attempts",
        sa.Column("cdr_id", sa.String(40), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("supplier_peer_id", sa.Integer(), nullable=False),
        sa.Column("sip_code", sa.Integer(), nullable=False),
        sa.Column("reason", sa.String(255), nullable=False),
        sa.Column("start_time", TIME, nullable=False),
        sa.Column("end_time", TIME, nullable=False),
        sa.ForeignKeyConstraint(
            ["cdr_id"],
            ["cdrs.id"],
            name=op.f("fk_cdr_attempts_cdr_id_cdrs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("cdr_id", "seq", name=op.f("pk_cdr_attempts")),
        **TABLE,
    )
    op.create_table(
        "balance_changes",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("amount", AMOUNT, nullable=False),
        sa.Column("kind", ENUM, nullable=False),
        sa.Column("reference", sa.String(40), nullable=True),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("actor", NAME, nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_balance_changes")),
        **TABLE,
    )
    op.create_index(
        op.f("ix_balance_changes_account_id_created_at"),
        "balance_changes",
        ["account_id", "created_at"],
    )
    op.create_index(op.f("ix_balance_changes_reference"), "balance_changes", ["reference"])
    op.create_table(
        "settings",
        sa.Column("name", NAME, nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_settings")),
        **TABLE,
    )
    config_version = op.create_table(
        "config_version",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.CheckConstraint("id = 1", name=op.f("ck_config_version_single_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_config_version")),
        **TABLE,
    )
    # The one row every configuration change bumps; starting at 0 means "never configured".
    op.bulk_insert(config_version, [{"id": 1, "version": 0}])


def downgrade() -> None:
    for table in (
        "config_version",
        "settings",
        "balance_changes",
        "cdr_attempts",
        "cdrs",
        "route_suppliers",
        "routes",
        "peers",
        "rates",
        "tariffs",
        "accounts",
    ):
        op.drop_table(table)
