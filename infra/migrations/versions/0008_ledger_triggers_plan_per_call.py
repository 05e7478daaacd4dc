"""the ledger's trigger functions plan their queries for each call

PL/pgSQL caches a plan per connection. Planned while the ledger is small (a new
deployment, a fresh test database), the per-posting balance check keeps scanning the
whole of ledger_postings long after it has grown: one full scan per posting recorded.
With force_custom_plan each call is planned against the tables as they are now, so the
checks use the transaction_id index as soon as it pays.

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
        op.execute(f"ALTER FUNCTION {function} SET plan_cache_mode = force_custom_plan")


def downgrade() -> None:
    for function in FUNCTIONS:
        op.execute(f"ALTER FUNCTION {function} RESET plan_cache_mode")
