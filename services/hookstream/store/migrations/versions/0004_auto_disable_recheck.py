"""When an auto-disable streak already acted on is to be looked at again.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    # Spelled out rather than taken from schema.py, like 0001.
    op.add_column(
        "webhook_health", sa.Column("auto_disable_recheck_ms", sa.BigInteger(), nullable=True)
    )


def downgrade() -> None:
    op.drop_column("webhook_health", "auto_disable_recheck_ms")
