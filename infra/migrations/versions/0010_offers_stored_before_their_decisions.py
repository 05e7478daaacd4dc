"""a window's offers are committed and pushed before its decisions are stored

A matching window's decisions (every request's candidates and costs) used to be
inserted in the same transaction as its offers, which referenced them by foreign key:
about 5 ms of PostgreSQL work for 45 decisions, plus building them, between the end of
matching and the offers reaching the drivers. The dispatcher now commits the offers
first, pushes them, and then stores the decisions in a transaction of their own (tried
again on failure; logged in full if it still fails). The offers' reference to their
decision stays, without the foreign key that would have made the decision come first.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-26 10:45:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_constraint("fk_offers_decision_id_match_decisions", "offers", type_="foreignkey")


def downgrade() -> None:
    # NOT VALID: offers whose decisions were lost with a dispatcher that died between
    # the two would otherwise refuse the way back; new rows are checked again.
    op.execute(
        "ALTER TABLE offers ADD CONSTRAINT fk_offers_decision_id_match_decisions "
        "FOREIGN KEY (decision_id) REFERENCES match_decisions (id) NOT VALID"
    )
