"""Recording per account: every relayed call of the account is recorded.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02

``accounts.media_record``: the relayed calls billed to the account are recorded, whatever
their peers say (false, as for every existing account: the peers decide).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | Sequence[str] | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Expand only: a NOT NULL column with a server default, so that nodes still running the
    # previous release (which do not name the column) go on inserting accounts.
    op.add_column(
        "accounts",
        sa.Column("media_record", sa.Boolean(), nullable=False, server_default=sa.false()),
    )


def downgrade() -> None:
    with op.batch_alter_table("accounts") as batch:
        batch.drop_column("media_record")
