"""A peer identified by its TLS client certificate (mutual TLS).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02

``peers.tls_fingerprint``: the SHA-256 fingerprint (``AB:CD:...``, 95 characters) of the
certificate the peer presents on the node's TLS port. Set, the peer is recognised by that
certificate, and its ACL no longer suffices: its calls must come over TLS with it. Null, as
for every existing peer: no certificate asked for.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("peers", sa.Column("tls_fingerprint", sa.String(95), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("peers") as batch:
        batch.drop_column("tls_fingerprint")
