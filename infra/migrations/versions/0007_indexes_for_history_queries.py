"""indexes for the queries over history: decisions a driver was a candidate in, and
completed trips by when they ended

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-26 08:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op
from sqlalchemy import text

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_match_decisions_candidates",
        "match_decisions",
        ["candidates"],
        postgresql_using="gin",
        postgresql_ops={"candidates": "jsonb_path_ops"},
    )
    op.create_index("ix_match_decisions_window_at", "match_decisions", ["window_at"])
    op.create_index(
        "ix_rides_completed_ended_at",
        "rides",
        ["ended_at"],
        postgresql_where=text("status = 'completed'"),
    )


def downgrade() -> None:
    op.drop_index("ix_rides_completed_ended_at", table_name="rides")
    op.drop_index("ix_match_decisions_window_at", table_name="match_decisions")
    op.drop_index("ix_match_decisions_candidates", table_name="match_decisions")
