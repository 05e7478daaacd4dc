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
from enum import StrEnum
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


class RidePaymentStatus(StrEnum):
    authorizing = "authorizing"  # the authorization call is recorded, not yet answered
    authorized = "authorized"
    declined = "declined"
    capturing = "capturing"  # the final fare is priced; the capture is under way
    captured = "captured"
    in_debt = "in_debt"  # the capture failed: the rider owes the fare
    debt_paid = "debt_paid"
    cancelling = "cancelling"
    cancelled = "cancelled"  # authorization released, nothing charged
    fee_captured = "fee_captured"  # cancellation or no-show fee charged


_RIDE_PAYMENT_STATUSES = ", ".join(f"'{s.value}'" for s in RidePaymentStatus)


class PaymentCustomer(Base):
    """A rider's Stripe customer and the card they charge by default."""

    __tablename__ = "payment_customers"

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"), primary_key=True)
    stripe_customer_id: Mapped[str] = mapped_column(String(255), unique=True)
    default_payment_method_id: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class DriverPayoutAccount(Base):
    """A driver's Stripe Connect Express account."""

    __tablename__ = "driver_payout_accounts"

    driver_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"), primary_key=True)
    stripe_account_id: Mapped[str] = mapped_column(String(255), unique=True)
    details_submitted: Mapped[bool] = mapped_column(server_default=text("false"))
    charges_enabled: Mapped[bool] = mapped_column(server_default=text("false"))
    payouts_enabled: Mapped[bool] = mapped_column(server_default=text("false"))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class RidePayment(Base):
    """The money side of one ride: what was authorized, priced, captured, transferred."""

    __tablename__ = "ride_payments"
    __table_args__ = (
        CheckConstraint(f"status IN ({_RIDE_PAYMENT_STATUSES})", name="status_known"),
        CheckConstraint("authorized_amount > 0", name="authorized_positive"),
        CheckConstraint("captured_amount IS NULL OR captured_amount >= 0", name="captured_ok"),
        CheckConstraint("tip_amount IS NULL OR tip_amount > 0", name="tip_positive"),
        CheckConstraint(
            "refunded_amount >= 0 AND refunded_amount <= coalesce(captured_amount, 0)",
            name="refund_within_capture",
        ),
        Index(
            "ix_ride_payments_due",
            "next_attempt_at",
            postgresql_where=text("next_attempt_at IS NOT NULL"),
        ),
    )

    ride_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    rider_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"), index=True)
    driver_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id"), index=True)
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(16))
    authorized_amount: Mapped[int] = mapped_column(BigInteger)
    payment_intent_id: Mapped[str | None] = mapped_column(String(255), unique=True)
    charge_id: Mapped[str | None] = mapped_column(String(255))
    fare: Mapped[dict[str, Any] | None] = mapped_column(JSONB)  # line items, basis, policy
    split: Mapped[dict[str, int] | None] = mapped_column(JSONB)  # driver, commission, ...
    captured_amount: Mapped[int | None] = mapped_column(BigInteger)
    refunded_amount: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    transfer_id: Mapped[str | None] = mapped_column(String(255))
    transferred_amount: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    tip_amount: Mapped[int | None] = mapped_column(BigInteger)
    tip_charge_id: Mapped[str | None] = mapped_column(String(255))
    tip_transfer_id: Mapped[str | None] = mapped_column(String(255))
    failure_code: Mapped[str | None] = mapped_column(String(64))
    attempts: Mapped[int] = mapped_column(server_default=text("0"))
    next_attempt_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    settled_at: Mapped[datetime | None]


class StripeCall(Base):
    """Every call to Stripe that moves money, recorded (and committed) before it is made,
    with the idempotency key it carries: a retry after a crash reuses the key, so Stripe
    does the thing once."""

    __tablename__ = "stripe_calls"
    __table_args__ = (
        CheckConstraint("status IN ('pending', 'succeeded', 'failed')", name="status_known"),
    )

    idempotency_key: Mapped[str] = mapped_column(String(200), primary_key=True)
    operation: Mapped[str] = mapped_column(String(32))
    ride_id: Mapped[uuid.UUID | None] = mapped_column(index=True)
    request: Mapped[dict[str, Any]] = mapped_column(JSONB)
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(server_default=text("0"))
    result: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class StripeEvent(Base):
    """A webhook event, stored by id once when it arrives and processed by the worker."""

    __tablename__ = "stripe_events"
    __table_args__ = (
        Index(
            "ix_stripe_events_unprocessed",
            "received_at",
            postgresql_where=text("processed_at IS NULL"),
        ),
    )

    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    type: Mapped[str] = mapped_column(String(100))
    account_id: Mapped[str | None] = mapped_column(String(255))
    api_version: Mapped[str | None] = mapped_column(String(64))
    stripe_created_at: Mapped[datetime]
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    received_at: Mapped[datetime]
    processed_at: Mapped[datetime | None]
    attempts: Mapped[int] = mapped_column(server_default=text("0"))
    last_error: Mapped[str | None] = mapped_column(Text)


class DriverPayout(Base):
    """A payout from a driver's connected account to their bank, as Stripe reports it."""

    __tablename__ = "driver_payouts"

    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    driver_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"), index=True)
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(32))
    arrival_at: Mapped[datetime | None]
    updated_at: Mapped[datetime]


class ReconciliationRun(Base):
    __tablename__ = "reconciliation_runs"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    period_from: Mapped[datetime]
    period_to: Mapped[datetime]
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    checked: Mapped[int] = mapped_column(server_default=text("0"))
    differences: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, server_default=text("'[]'"))
