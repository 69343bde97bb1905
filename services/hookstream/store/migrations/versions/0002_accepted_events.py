"""Accepted event ids, for idempotent POST /v1/events across API replicas.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    # Spelled out rather than taken from schema.py, like 0001.
    op.create_table(
        "accepted_events",
        sa.Column("tenant_id", sa.String(), primary_key=True),
        sa.Column("event_id", sa.String(), primary_key=True),
        sa.Column("accepted_at_ms", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_accepted_events_accepted_at", "accepted_events", ["accepted_at_ms"])


def downgrade() -> None:
    op.drop_table("accepted_events")
