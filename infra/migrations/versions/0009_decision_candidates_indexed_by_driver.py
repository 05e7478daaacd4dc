"""decisions a driver was a candidate in, found by an index of the candidates' ids only

Migration 0007 indexed the whole of ``match_decisions.candidates`` (GIN, jsonb_path_ops):
every key and value of every candidate, figures included, about fifty index entries per
decision, written inside the matching window's transaction, before its offers can reach
the drivers. With the index's pending list on (the default) most windows were cheap and
some paid for the whole list at once (a flush of hundreds of milliseconds); with it
off, every window paid about 9 ms for 45 decisions.

The only question asked of it is "the decisions I was a candidate in". The candidates'
driver ids now have a column of their own, ``candidate_driver_ids``, written with the
decision, and a GIN index over that array alone (ten entries per decision), without a
pending list, so no window pays for another's entries.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-26 10:10:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "match_decisions",
        sa.Column(
            "candidate_driver_ids",
            postgresql.ARRAY(sa.Uuid()),
            server_default=sa.text("'{}'"),
            nullable=False,
        ),
    )
    op.execute(
        """
        UPDATE match_decisions
           SET candidate_driver_ids = ARRAY(
                   SELECT CAST(candidate ->> 'driver_id' AS uuid)
                     FROM jsonb_array_elements(candidates) AS candidate)
        """
    )
    op.drop_index("ix_match_decisions_candidates", table_name="match_decisions")
    op.create_index(
        "ix_match_decisions_candidate_driver_ids",
        "match_decisions",
        ["candidate_driver_ids"],
        postgresql_using="gin",
        postgresql_with={"fastupdate": "off"},
    )


def downgrade() -> None:
    op.drop_index("ix_match_decisions_candidate_driver_ids", table_name="match_decisions")
    op.create_index(
        "ix_match_decisions_candidates",
        "match_decisions",
        ["candidates"],
        postgresql_using="gin",
        postgresql_ops={"candidates": "jsonb_path_ops"},
    )
    op.drop_column("match_decisions", "candidate_driver_ids")
