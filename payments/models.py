"""Tables of the ledger and of the fare policy versions.

The database guards the ledger's invariants itself (triggers in migration 0002): postings
sum to zero per currency in every transaction (checked at commit), balances move only
with postings, accounts that may not go negative never do, and transactions, postings and
policy versions are append-only. See payments/ledger.py for the sign convention.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    ForeignKeyConstraint,
    Identity,
    Index,
    Integer,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from infra.db import Base
from infra.ids import new_id
from payments.ledger import CHART, TransactionKind
from payments.money import MINOR_UNIT_EXPONENT


def _sql_list(values: list[str]) -> str:
    return ", ".join(f"'{v}'" for v in values)


_CURRENCIES = _sql_list(sorted(MINOR_UNIT_EXPONENT))
# Each kind's normal side, non-negative rule and ownership, exactly as payments.ledger.CHART.
_CHART_ROWS = ", ".join(
    f"('{kind.value}', '{rule.normal_side.value}', {str(rule.non_negative).lower()}, "
    f"{str(rule.per_owner).lower()})"
    for kind, rule in CHART.items()
)


class LedgerAccount(Base):
    """One account per code and currency. ``balance_amount`` is the signed sum of its
    postings (debit +, credit -), kept by a trigger in the posting's own transaction."""

    __tablename__ = "ledger_accounts"
    __table_args__ = (
        UniqueConstraint("code", "currency"),
        # The target of postings' (account_id, currency) foreign key: a posting's currency
        # is its account's.
        UniqueConstraint("id", "currency"),
        CheckConstraint(
            f"(kind, normal_side, non_negative, owner_id IS NOT NULL) IN ({_CHART_ROWS})",
            name="kind_follows_chart",
        ),
        CheckConstraint("code = kind || COALESCE(':' || owner_id::text, '')", name="code_derived"),
        CheckConstraint(f"currency IN ({_CURRENCIES})", name="currency_known"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    code: Mapped[str] = mapped_column(String(120))
    kind: Mapped[str] = mapped_column(String(40))
    currency: Mapped[str] = mapped_column(String(3))
    normal_side: Mapped[str] = mapped_column(String(6))
    non_negative: Mapped[bool]
    owner_id: Mapped[uuid.UUID | None] = mapped_column(index=True)
    balance_amount: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


class LedgerTransaction(Base):
    __tablename__ = "ledger_transactions"
    __table_args__ = (
        CheckConstraint(
            f"kind IN ({_sql_list([k.value for k in TransactionKind])})", name="kind_known"
        ),
        CheckConstraint("fingerprint ~ '^[0-9a-f]{64}$'", name="fingerprint_sha256"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    idempotency_key: Mapped[str] = mapped_column(String(200), unique=True)
    kind: Mapped[str] = mapped_column(String(40))
    description: Mapped[str] = mapped_column(Text)
    reference: Mapped[str | None] = mapped_column(String(200), index=True)
    # sha256 of what the transaction does; tells a retry from a reuse of the key.
    fingerprint: Mapped[str] = mapped_column(String(64))
    recorded_at: Mapped[datetime] = mapped_column(index=True)


class LedgerPosting(Base):
    __tablename__ = "ledger_postings"
    __table_args__ = (
        ForeignKeyConstraint(
            ["account_id", "currency"],
            ["ledger_accounts.id", "ledger_accounts.currency"],
            ondelete="RESTRICT",
        ),
        CheckConstraint("amount <> 0", name="amount_not_zero"),
        Index("ix_ledger_postings_account_id_id", "account_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    transaction_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("ledger_transactions.id", ondelete="RESTRICT"), index=True
    )
    account_id: Mapped[uuid.UUID]
    currency: Mapped[str] = mapped_column(String(3))
    amount: Mapped[int] = mapped_column(BigInteger)  # signed: debit +, credit -


_POLICY_AMOUNTS = (
    "base_fare_amount",
    "per_km_amount",
    "per_minute_amount",
    "booking_fee_amount",
    "minimum_fare_amount",
    "waiting_per_minute_amount",
    "cancellation_fee_amount",
    "no_show_fee_amount",
)


def _policy_checks() -> tuple[Any, ...]:
    # The rules of payments.policy.FarePolicy.__post_init__, in SQL.
    return (
        *(
            CheckConstraint(f"{column} >= 0", name=f"{column}_non_negative")
            for column in _POLICY_AMOUNTS
        ),
        CheckConstraint(f"currency IN ({_CURRENCIES})", name="currency_known"),
        CheckConstraint("version > 0", name="version_positive"),
        CheckConstraint("waiting_grace_s >= 0", name="waiting_grace_non_negative"),
        CheckConstraint("cancellation_grace_s >= 0", name="cancellation_grace_non_negative"),
        CheckConstraint("quote_ttl_s > 0", name="quote_ttl_positive"),
        CheckConstraint("surge_cap >= 1", name="surge_cap_at_least_one"),
        CheckConstraint("commission_rate >= 0", name="commission_rate_non_negative"),
        CheckConstraint("reserve_rate >= 0", name="reserve_rate_non_negative"),
        CheckConstraint("commission_rate + reserve_rate <= 1", name="shares_within_fare"),
        CheckConstraint("deviation_tolerance >= 0", name="deviation_tolerance_non_negative"),
        CheckConstraint(
            "jsonb_typeof(zone_surcharges) = 'object' AND NOT jsonb_path_exists("
            "zone_surcharges, '$.* ? (@.type() != \"number\" || @ < 0 || @ != @.floor())')",
            name="zone_surcharges_amounts",
        ),
    )


class FarePolicyVersion(Base):
    """One version of every price parameter, in force from ``effective_at`` until a later
    version's. Append-only: a new policy is a new version."""

    __tablename__ = "fare_policy_versions"
    __table_args__ = _policy_checks()

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    version: Mapped[int] = mapped_column(Integer, unique=True)
    effective_at: Mapped[datetime] = mapped_column(index=True)
    currency: Mapped[str] = mapped_column(String(3))
    base_fare_amount: Mapped[int] = mapped_column(BigInteger)
    per_km_amount: Mapped[int] = mapped_column(BigInteger)
    per_minute_amount: Mapped[int] = mapped_column(BigInteger)
    booking_fee_amount: Mapped[int] = mapped_column(BigInteger)
    minimum_fare_amount: Mapped[int] = mapped_column(BigInteger)
    waiting_per_minute_amount: Mapped[int] = mapped_column(BigInteger)
    cancellation_fee_amount: Mapped[int] = mapped_column(BigInteger)
    no_show_fee_amount: Mapped[int] = mapped_column(BigInteger)
    waiting_grace_s: Mapped[int] = mapped_column(Integer)
    cancellation_grace_s: Mapped[int] = mapped_column(Integer)
    quote_ttl_s: Mapped[int] = mapped_column(Integer)
    # Unconstrained numeric: a voted rate is stored exactly, never rounded by the column.
    surge_cap: Mapped[Decimal] = mapped_column(Numeric)
    commission_rate: Mapped[Decimal] = mapped_column(Numeric)
    reserve_rate: Mapped[Decimal] = mapped_column(Numeric)
    deviation_tolerance: Mapped[Decimal] = mapped_column(Numeric)
    zone_surcharges: Mapped[dict[str, int]] = mapped_column(
        JSONB, server_default=text("'{}'::jsonb")
    )
    reason: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
