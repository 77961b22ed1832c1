"""Money across nodes: an account's reservation slice.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02

``accounts.reserve_seconds``: the prepaid time a call of the account is granted at a time
(NULL, as for every existing account: the node's ``reserve_seconds``).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("accounts", sa.Column("reserve_seconds", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("accounts") as batch:
        batch.drop_column("reserve_seconds")
