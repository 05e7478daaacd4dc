"""the ledger's trigger functions always look postings up by index

PL/pgSQL caches a plan per connection. Planned while the ledger is small (a new
deployment, a fresh test database), the per-posting balance check kept scanning the
whole of ledger_postings long after it had grown: one full scan per posting recorded.
With sequential scans off inside these functions their cached plans use the indexes
(ledger_postings.transaction_id, ledger_accounts.id) whatever the tables' size when they
were made; a scan of the trigger's own transition table, which has no index, is still
allowed (it is the only way to read it).

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-26 08:35:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FUNCTIONS = (
    "ledger_check_postings_balance()",
    "ledger_check_transaction_has_postings()",
    "ledger_apply_postings()",
)


def upgrade() -> None:
    for function in FUNCTIONS:
        op.execute(f"ALTER FUNCTION {function} SET enable_seqscan = off")


def downgrade() -> None:
    for function in FUNCTIONS:
        op.execute(f"ALTER FUNCTION {function} RESET enable_seqscan")
