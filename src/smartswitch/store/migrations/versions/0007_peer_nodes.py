"""Peers attached to nodes, and a registering supplier's per-node accounts.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01

``peers.nodes``: the names of the nodes a peer is attached to (a JSON list; empty, as for
every existing peer: all nodes). ``peers.register_nodes``: the per-node accounts of a supplier
the switch registers with (a JSON list of ``{"node", "username", "password"}``; empty: every
node uses the peer's ``register_username``).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # SQLite adds a NOT NULL column only with a default: existing peers are on every node.
    op.add_column("peers", sa.Column("nodes", sa.JSON(), nullable=False, server_default="[]"))
    op.add_column(
        "peers", sa.Column("register_nodes", sa.JSON(), nullable=False, server_default="[]")
    )


def downgrade() -> None:
    with op.batch_alter_table("peers") as batch:
        batch.drop_column("register_nodes")
        batch.drop_column("nodes")
