"""a shift per connection; a driver's time online is the union of their shifts

A driver had at most one open shift, shared by every connection of theirs. When a
phone reconnected before its old connection was noticed gone (common on mobile), the old
connection's end closed the shift the new one was using, and the rest of the driver's
time online went uncounted (earnings per hour online, the fairness inputs). Each
connection now opens and closes a shift of its own, and time online is the union of a
driver's shifts (``range_agg``), so overlapping connections count once.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-26 11:50:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index("uq_driver_shifts_open", table_name="driver_shifts")


def downgrade() -> None:
    # Back to one open shift per driver: the newest of a driver's open shifts stays open,
    # the others end where the newest began.
    op.execute(
        """
        UPDATE driver_shifts AS s
           SET ended_at = GREATEST(s.started_at, newest.started_at)
          FROM (SELECT DISTINCT ON (driver_id) id, driver_id, started_at
                  FROM driver_shifts
                 WHERE ended_at IS NULL
                 ORDER BY driver_id, started_at DESC, id DESC) AS newest
         WHERE s.driver_id = newest.driver_id AND s.ended_at IS NULL AND s.id <> newest.id
        """
    )
    op.create_index(
        "uq_driver_shifts_open",
        "driver_shifts",
        ["driver_id"],
        unique=True,
        postgresql_where=sa.text("ended_at IS NULL"),
    )
