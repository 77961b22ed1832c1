"""Media settings of peers: direct or relayed media, allowed codecs, recording, fallback.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02

``peers.media_mode``: "direct" (the SDP passes untouched, as for every existing peer) or
"relay" (through rtpengine). ``peers.media_codecs``: the codecs the peer may see (a JSON list,
empty: any). ``peers.media_record``: its relayed calls are recorded. ``peers.media_fallback``:
direct media when no relay is up instead of refusing the call with 503.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # SQLite adds NOT NULL columns only with defaults: existing peers keep direct media.
    op.add_column(
        "peers", sa.Column("media_mode", sa.String(8), nullable=False, server_default="direct")
    )
    op.add_column(
        "peers", sa.Column("media_codecs", sa.JSON(), nullable=False, server_default="[]")
    )
    op.add_column(
        "peers",
        sa.Column("media_record", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    op.add_column(
        "peers",
        sa.Column("media_fallback", sa.Boolean(), nullable=False, server_default=sa.false()),
    )


def downgrade() -> None:
    with op.batch_alter_table("peers") as batch:
        batch.drop_column("media_fallback")
        batch.drop_column("media_record")
        batch.drop_column("media_codecs")
        batch.drop_column("media_mode")
