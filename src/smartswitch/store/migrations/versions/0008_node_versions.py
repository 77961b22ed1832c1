"""What each node runs: its release and the newest schema revision its code knows.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02

``nodes.version`` (the package version) and ``nodes.schema_head`` (the newest migration the
node's code carries), written by each node when it registers (smartswitch.cluster.nodes).
``smartswitch db upgrade`` reads them to refuse a contract migration while a node that does
not know it still runs. Expand only: both have a default ("": a node of an earlier release,
which writes neither), so the previous release keeps working against this schema.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: Expand (adds only): safe while nodes of the previous release run (store/migrate.py).
contract = False


def upgrade() -> None:
    op.add_column("nodes", sa.Column("version", sa.String(32), nullable=False, server_default=""))
    op.add_column(
        "nodes", sa.Column("schema_head", sa.String(32), nullable=False, server_default="")
    )


def downgrade() -> None:
    with op.batch_alter_table("nodes") as batch:
        batch.drop_column("schema_head")
        batch.drop_column("version")
