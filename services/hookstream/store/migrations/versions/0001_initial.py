"""Initial store schema: attempts, deliveries, webhook_health.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    # Spelled out rather than taken from schema.py: a migration must keep creating the
    # schema of its own version after schema.py moves on.
    op.create_table(
        "attempts",
        sa.Column("attempt_id", sa.String(), primary_key=True),
        sa.Column("delivery_id", sa.String(), nullable=False),
        sa.Column("event_id", sa.String(), nullable=False),
        sa.Column("webhook_id", sa.String(), nullable=False),
        sa.Column("tenant_id", sa.String(), nullable=False),
        sa.Column("event_type", sa.String(), nullable=False),
        sa.Column("attempt_number", sa.Integer(), nullable=False),
        sa.Column("trigger", sa.String(), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("started_at_ms", sa.BigInteger(), nullable=False),
        sa.Column("duration_ms", sa.Integer(), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("outcome", sa.String(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("response_body", sa.Text(), nullable=True),
        sa.Column("next_attempt_at_ms", sa.BigInteger(), nullable=True),
        sa.Column("webhook_disabled", sa.Boolean(), nullable=False),
    )
    op.create_index("ix_attempts_webhook_started", "attempts", ["webhook_id", "started_at_ms"])
    op.create_index("ix_attempts_delivery_started", "attempts", ["delivery_id", "started_at_ms"])
    op.create_index("ix_attempts_started", "attempts", ["started_at_ms"])
    op.create_index("ix_attempts_tenant_started", "attempts", ["tenant_id", "started_at_ms"])

    op.create_table(
        "deliveries",
        sa.Column("delivery_id", sa.String(), primary_key=True),
        sa.Column("tenant_id", sa.String(), nullable=False),
        sa.Column("webhook_id", sa.String(), nullable=False),
        sa.Column("event_id", sa.String(), nullable=False),
        sa.Column("event_type", sa.String(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("attempt_count", sa.Integer(), nullable=False),
        sa.Column("last_status_code", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("last_attempt_at_ms", sa.BigInteger(), nullable=False),
        sa.Column("next_attempt_at_ms", sa.BigInteger(), nullable=True),
        sa.Column("created_at_ms", sa.BigInteger(), nullable=False),
        sa.Column("updated_at_ms", sa.BigInteger(), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=True),
    )
    op.create_index(
        "ix_deliveries_tenant_created", "deliveries", ["tenant_id", "created_at_ms", "delivery_id"]
    )
    op.create_index(
        "ix_deliveries_webhook_created",
        "deliveries",
        ["webhook_id", "created_at_ms", "delivery_id"],
    )
    op.create_index(
        "ix_deliveries_webhook_status_created",
        "deliveries",
        ["webhook_id", "status", "created_at_ms"],
    )
    op.create_index(
        "ix_deliveries_event_type_created", "deliveries", ["event_type", "created_at_ms"]
    )
    op.create_index("ix_deliveries_status_created", "deliveries", ["status", "created_at_ms"])

    op.create_table(
        "webhook_health",
        sa.Column("webhook_id", sa.String(), primary_key=True),
        sa.Column("tenant_id", sa.String(), nullable=False),
        sa.Column("last_outcome", sa.String(), nullable=False),
        sa.Column("last_status_code", sa.Integer(), nullable=True),
        sa.Column("last_attempt_at_ms", sa.BigInteger(), nullable=False),
        sa.Column("failing_since_ms", sa.BigInteger(), nullable=True),
        sa.Column("auto_disabled_streak_ms", sa.BigInteger(), nullable=True),
    )
    op.create_index("ix_webhook_health_failing_since", "webhook_health", ["failing_since_ms"])


def downgrade() -> None:
    op.drop_table("webhook_health")
    op.drop_table("deliveries")
    op.drop_table("attempts")
