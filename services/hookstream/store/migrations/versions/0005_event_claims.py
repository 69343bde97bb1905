"""Event ids are claimed before their publish, and confirmed after it.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    # Spelled out rather than taken from schema.py, like 0001. Rows from before were recorded
    # after their publish: NULL, published.
    op.add_column("accepted_events", sa.Column("claim_token", sa.String(), nullable=True))


def downgrade() -> None:
    op.drop_column("accepted_events", "claim_token")
