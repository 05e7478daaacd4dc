from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any, NamedTuple, cast

from sqlalchemy import (
    BigInteger,
    Select,
    String,
    Table,
    any_,
    bindparam,
    case,
    func,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, insert
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from infra.db import insert_unless_present
from infra.ids import new_id
from payments.errors import (
    FarePolicyNotInForce,
    FarePolicyVersionExists,
    LedgerAccountOverdrawn,
)
from payments.ledger import (
    AccountKind,
    AccountRef,
    BalanceMismatch,
    LedgerVerification,
    Posting,
    StatementEntry,
    StatementPeriod,
    TransactionDraft,
    TransactionKind,
    UnbalancedTransaction,
)
from payments.models import (
    DriverPayout,
    DriverPayoutAccount,
    FarePolicyVersion,
    LedgerAccount,
    LedgerPosting,
    LedgerTransaction,
    PaymentCustomer,
    ReconciliationRun,
    RidePayment,
    StripeCall,
    StripeEvent,
)
from payments.policy import FarePolicy

# Raised by the ledger_apply_postings trigger (migration 0002).
NON_NEGATIVE_CONSTRAINT = "ledger_account_non_negative"


class LedgerRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def insert_transactions(
        self,
        drafts: Sequence[TransactionDraft],
        *,
        transaction_ids: Sequence[uuid.UUID],
        fingerprints: Sequence[str],
        recorded_at: datetime,
    ) -> set[str]:
        """Inserts the transactions (without postings: ``insert_postings`` adds them) of
        the drafts whose idempotency key is not taken yet, in one statement; answers the
        keys it inserted. A concurrent insert of the same key waits for the other to
        commit or roll back first. Keys must be distinct."""
        inserted = await self.session.execute(
            text(_INSERT_TRANSACTIONS),
            {
                "ids": list(transaction_ids),
                "keys": [d.idempotency_key for d in drafts],
                "kinds": [d.kind.value for d in drafts],
                "descriptions": [d.description for d in drafts],
                "references": [d.reference for d in drafts],
                "fingerprints": list(fingerprints),
                "recorded_at": recorded_at,
            },
        )
        return set(inserted.scalars())

    async def insert_postings(
        self, drafts: Sequence[TransactionDraft], transaction_ids: Sequence[uuid.UUID]
    ) -> None:
        """Inserts the drafts' postings under their transactions, creating missing
        accounts. One statement whatever their number: the balance trigger runs once, so
        each account is locked and updated once and checked against going negative after
        all of them.

        Raises ``LedgerAccountOverdrawn`` when the database refuses a balance below zero;
        the session stays usable, since it runs in a savepoint."""
        if not drafts:
            return
        try:
            async with self.session.begin_nested():
                account_ids = await self._account_ids(
                    {p.account for draft in drafts for p in draft.postings}
                )
                rows = [
                    (transaction_id, account_ids[p.account], p.currency, p.amount)
                    for draft, transaction_id in zip(drafts, transaction_ids, strict=True)
                    for p in draft.postings
                ]
                await self.session.execute(
                    text(_INSERT_POSTINGS),
                    {
                        "transaction_ids": [row[0] for row in rows],
                        "account_ids": [row[1] for row in rows],
                        "currencies": [row[2] for row in rows],
                        "amounts": [row[3] for row in rows],
                    },
                )
        except DBAPIError as exc:
            if _constraint_name(exc) == NON_NEGATIVE_CONSTRAINT:
                raise LedgerAccountOverdrawn(_first_line(exc)) from exc
            raise

    async def transactions_by_keys(self, keys: Sequence[str]) -> dict[str, LedgerTransaction]:
        if not keys:
            return {}
        result = await self.session.execute(
            select(LedgerTransaction).where(LedgerTransaction.idempotency_key.in_(list(keys)))
        )
        return {t.idempotency_key: t for t in result.scalars()}

    async def postings_of_many(
        self, transaction_ids: Sequence[uuid.UUID]
    ) -> dict[uuid.UUID, tuple[Posting, ...]]:
        if not transaction_ids:
            return {}
        result = await self.session.execute(
            select(
                LedgerPosting.transaction_id,
                LedgerAccount.kind,
                LedgerAccount.currency,
                LedgerAccount.owner_id,
                LedgerPosting.amount,
            )
            .join(LedgerAccount, LedgerAccount.id == LedgerPosting.account_id)
            .where(LedgerPosting.transaction_id.in_(list(transaction_ids)))
            .order_by(LedgerPosting.id)
        )
        found: dict[uuid.UUID, list[Posting]] = {t: [] for t in transaction_ids}
        for transaction_id, kind, currency, owner_id, amount in result:
            found[transaction_id].append(
                Posting(AccountRef(AccountKind(kind), currency, owner_id), amount)
            )
        return {t: tuple(postings) for t, postings in found.items()}

    async def transaction_by_key(self, idempotency_key: str) -> LedgerTransaction | None:
        result = await self.session.execute(
            select(LedgerTransaction).where(LedgerTransaction.idempotency_key == idempotency_key)
        )
        return result.scalar_one_or_none()

    async def postings_of(self, transaction_id: uuid.UUID) -> tuple[Posting, ...]:
        result = await self.session.execute(
            select(LedgerAccount.kind, LedgerAccount.currency, LedgerAccount.owner_id)
            .add_columns(LedgerPosting.amount)
            .join(LedgerAccount, LedgerAccount.id == LedgerPosting.account_id)
            .where(LedgerPosting.transaction_id == transaction_id)
            .order_by(LedgerPosting.id)
        )
        return tuple(
            Posting(AccountRef(AccountKind(kind), currency, owner_id), amount)
            for kind, currency, owner_id, amount in result
        )

    async def signed_balance(self, account: AccountRef) -> int:
        result = await self.session.execute(
            select(LedgerAccount.balance_amount).where(
                LedgerAccount.code == account.code, LedgerAccount.currency == account.currency
            )
        )
        return result.scalar_one_or_none() or 0

    async def signed_balances_of(self, accounts: Iterable[AccountRef]) -> dict[AccountRef, int]:
        """Each account's signed balance; zero for an account never used."""
        wanted = list(accounts)
        if not wanted:
            return {}
        result = await self.session.execute(
            select(LedgerAccount.code, LedgerAccount.currency, LedgerAccount.balance_amount).where(
                _codes_in(wanted)
            )
        )
        found = {(code, currency): balance for code, currency, balance in result}
        return {a: found.get((a.code, a.currency), 0) for a in wanted}

    async def signed_balances(
        self, kind: AccountKind, currency: str | None
    ) -> list[tuple[AccountRef, int]]:
        query = (
            select(LedgerAccount.currency, LedgerAccount.owner_id, LedgerAccount.balance_amount)
            .where(LedgerAccount.kind == kind.value)
            .order_by(LedgerAccount.currency, LedgerAccount.code)
        )
        if currency is not None:
            query = query.where(LedgerAccount.currency == currency)
        result = await self.session.execute(query)
        return [
            (AccountRef(kind, account_currency, owner_id), balance)
            for account_currency, owner_id, balance in result
        ]

    async def statement_entries(
        self, account: AccountRef, period: StatementPeriod
    ) -> tuple[int, list[StatementEntry]]:
        """The account's signed balance before the period and its postings in it."""
        account_id = await self.session.scalar(
            select(LedgerAccount.id).where(
                LedgerAccount.code == account.code, LedgerAccount.currency == account.currency
            )
        )
        if account_id is None:
            return 0, []
        opening = await self.session.scalar(
            select(func.coalesce(func.sum(LedgerPosting.amount), 0))
            .select_from(LedgerPosting)
            .join(LedgerTransaction, LedgerTransaction.id == LedgerPosting.transaction_id)
            .where(
                LedgerPosting.account_id == account_id,
                LedgerTransaction.recorded_at < period.start,
            )
        )
        result = await self.session.execute(
            select(
                LedgerTransaction.id,
                LedgerTransaction.recorded_at,
                LedgerTransaction.kind,
                LedgerTransaction.description,
                LedgerTransaction.reference,
                LedgerPosting.amount,
            )
            .join(LedgerTransaction, LedgerTransaction.id == LedgerPosting.transaction_id)
            .where(
                LedgerPosting.account_id == account_id,
                LedgerTransaction.recorded_at >= period.start,
                LedgerTransaction.recorded_at < period.end,
            )
            .order_by(LedgerTransaction.recorded_at, LedgerPosting.id)
        )
        entries = [
            StatementEntry(
                transaction_id=transaction_id,
                recorded_at=recorded_at,
                kind=TransactionKind(kind),
                description=description,
                reference=reference,
                amount=amount,
            )
            for transaction_id, recorded_at, kind, description, reference, amount in result
        ]
        return int(opening or 0), entries

    async def verification(self) -> LedgerVerification:
        findings = await self.session.execute(text(_VERIFY))
        unbalanced: list[UnbalancedTransaction] = []
        empty: list[uuid.UUID] = []
        mismatched: list[BalanceMismatch] = []
        totals: dict[str, int] = {}
        postings = transactions = accounts = 0
        for finding, row_id, code, currency, amount, other in findings:
            if finding == "unbalanced":
                unbalanced.append(UnbalancedTransaction(row_id, currency, int(amount)))
            elif finding == "empty":
                empty.append(row_id)
            elif finding == "mismatch":
                mismatched.append(BalanceMismatch(row_id, code, currency, int(amount), int(other)))
            elif finding == "total":
                totals[currency] = int(amount)
                postings += int(other)
            else:
                transactions, accounts = int(amount), int(other)
        return LedgerVerification(
            transactions=transactions,
            postings=postings,
            accounts=accounts,
            unbalanced=tuple(unbalanced),
            empty_transactions=tuple(empty),
            mismatched_balances=tuple(mismatched),
            totals=totals,
        )

    async def _account_ids(self, accounts: Iterable[AccountRef]) -> dict[AccountRef, uuid.UUID]:
        """The accounts' ids, opening those not opened yet (most already are: they are
        looked up first, and only the missing ones inserted)."""
        wanted = list(accounts)
        ids = await self._existing_account_ids(wanted)
        # Sorted, so concurrent creators insert in the same order and cannot deadlock.
        missing = sorted(
            (a for a in wanted if (a.code, a.currency) not in ids),
            key=lambda a: (a.code, a.currency),
        )
        if missing:
            await self.session.execute(
                insert(LedgerAccount)
                .values(
                    [
                        {
                            "id": new_id(),
                            "code": a.code,
                            "kind": a.kind.value,
                            "currency": a.currency,
                            "normal_side": a.rule.normal_side.value,
                            "non_negative": a.rule.non_negative,
                            "owner_id": a.owner_id,
                        }
                        for a in missing
                    ]
                )
                .on_conflict_do_nothing(index_elements=[LedgerAccount.code, LedgerAccount.currency])
            )
            ids.update(await self._existing_account_ids(missing))
        return {a: ids[(a.code, a.currency)] for a in wanted}

    async def _existing_account_ids(
        self, accounts: Sequence[AccountRef]
    ) -> dict[tuple[str, str], uuid.UUID]:
        result = await self.session.execute(
            select(LedgerAccount.code, LedgerAccount.currency, LedgerAccount.id).where(
                _codes_in(accounts)
            )
        )
        return {(code, currency): account_id for code, currency, account_id in result}


def _bind_type(column: Any) -> Any:
    """A JSONB column's parameters write None as SQL NULL, as the ORM does."""
    return JSONB(none_as_null=True) if isinstance(column.type, JSONB) else column.type


_RECORD_CALLS = """
INSERT INTO stripe_calls
       (idempotency_key, operation, ride_id, request, status, attempts, created_at, updated_at)
SELECT c.idempotency_key, c.operation, c.ride_id, c.request::jsonb, 'pending', 0,
       c.created_at, c.updated_at
  FROM unnest(CAST(:keys AS text[]), CAST(:operations AS text[]), CAST(:ride_ids AS uuid[]),
              CAST(:requests AS text[]), CAST(:created AS timestamptz[]),
              CAST(:updated AS timestamptz[]))
       AS c(idempotency_key, operation, ride_id, request, created_at, updated_at)
    ON CONFLICT (idempotency_key) DO NOTHING
"""


def _codes_in(accounts: Sequence[AccountRef]) -> Any:
    """The accounts' rows, by their unique (code, currency) index: ``code = ANY(...)``
    uses the index, a row-value IN list of many pairs would scan the table."""
    return LedgerAccount.code == any_(
        bindparam("account_codes", sorted({a.code for a in accounts}), type_=ARRAY(String))
    )


_INSERT_TRANSACTIONS = """
INSERT INTO ledger_transactions
       (id, idempotency_key, kind, description, reference, fingerprint, recorded_at)
SELECT t.id, t.idempotency_key, t.kind, t.description, t.reference, t.fingerprint,
       :recorded_at
  FROM unnest(CAST(:ids AS uuid[]), CAST(:keys AS text[]), CAST(:kinds AS text[]),
              CAST(:descriptions AS text[]), CAST(:references AS text[]),
              CAST(:fingerprints AS text[]))
       AS t(id, idempotency_key, kind, description, reference, fingerprint)
    ON CONFLICT (idempotency_key) DO NOTHING
RETURNING idempotency_key
"""

_INSERT_POSTINGS = """
INSERT INTO ledger_postings (transaction_id, account_id, currency, amount)
SELECT * FROM unnest(CAST(:transaction_ids AS uuid[]), CAST(:account_ids AS uuid[]),
                     CAST(:currencies AS text[]), CAST(:amounts AS bigint[]))
"""

# One statement, so every figure comes from the same snapshot even while others record.
_VERIFY = """
WITH per_transaction AS (
    SELECT transaction_id, currency, sum(amount) AS total
      FROM ledger_postings
     GROUP BY transaction_id, currency
), per_account AS (
    SELECT account_id, sum(amount) AS total, count(*) AS postings
      FROM ledger_postings
     GROUP BY account_id
)
SELECT 'unbalanced', transaction_id, NULL, currency, total, NULL::numeric
  FROM per_transaction
 WHERE total <> 0
UNION ALL
SELECT 'empty', t.id, NULL, NULL, NULL, NULL
  FROM ledger_transactions AS t
 WHERE NOT EXISTS (SELECT 1 FROM per_transaction AS p WHERE p.transaction_id = t.id)
UNION ALL
SELECT 'mismatch', a.id, a.code, a.currency, a.balance_amount, COALESCE(p.total, 0)
  FROM ledger_accounts AS a
  LEFT JOIN per_account AS p ON p.account_id = a.id
 WHERE a.balance_amount <> COALESCE(p.total, 0)
UNION ALL
SELECT 'total', NULL, NULL, a.currency, sum(p.total), sum(p.postings)
  FROM per_account AS p
  JOIN ledger_accounts AS a ON a.id = p.account_id
 GROUP BY a.currency
UNION ALL
SELECT 'counts', NULL, NULL, NULL,
       (SELECT count(*) FROM ledger_transactions), (SELECT count(*) FROM ledger_accounts)
"""


class FarePolicyRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def policy_in_force(self, at: datetime) -> FarePolicy:
        """The version with the latest ``effective_at`` not after ``at``; read from the
        database on every call, so a new version applies from its first second."""
        result = await self.session.execute(
            select(FarePolicyVersion)
            .where(FarePolicyVersion.effective_at <= at)
            .order_by(FarePolicyVersion.effective_at.desc(), FarePolicyVersion.version.desc())
            .limit(1)
        )
        row = result.scalar_one_or_none()
        if row is None:
            raise FarePolicyNotInForce(f"no fare policy is in force at {at.isoformat()}")
        return _policy(row)

    async def policy_by_id(self, policy_id: uuid.UUID) -> FarePolicy | None:
        row = await self.session.get(FarePolicyVersion, policy_id)
        return _policy(row) if row is not None else None

    async def add_policy_version(self, policy: FarePolicy, *, reason: str) -> FarePolicy:
        """Stores a new version; raises ``FarePolicyVersionExists`` if its number is
        taken, even by a concurrent writer."""
        row = FarePolicyVersion(**_columns(policy), reason=reason)
        try:
            async with self.session.begin_nested():
                self.session.add(row)
                await self.session.flush()
        except IntegrityError as exc:
            if _constraint_name(exc) == "uq_fare_policy_versions_version":
                raise FarePolicyVersionExists(f"version {policy.version} exists") from exc
            raise
        return _policy(row)


def _columns(policy: FarePolicy) -> dict[str, Any]:
    return {
        "id": policy.id,
        "version": policy.version,
        "effective_at": policy.effective_at,
        "currency": policy.currency,
        "base_fare_amount": policy.base_fare,
        "per_km_amount": policy.per_km,
        "per_minute_amount": policy.per_minute,
        "booking_fee_amount": policy.booking_fee,
        "minimum_fare_amount": policy.minimum_fare,
        "waiting_per_minute_amount": policy.waiting_per_minute,
        "cancellation_fee_amount": policy.cancellation_fee,
        "no_show_fee_amount": policy.no_show_fee,
        "waiting_grace_s": policy.waiting_grace_s,
        "cancellation_grace_s": policy.cancellation_grace_s,
        "quote_ttl_s": policy.quote_ttl_s,
        "surge_cap": policy.surge_cap,
        "commission_rate": policy.commission_rate,
        "reserve_rate": policy.reserve_rate,
        "deviation_tolerance": policy.deviation_tolerance,
        "zone_surcharges": dict(policy.zone_surcharges),
    }


def _policy(row: FarePolicyVersion) -> FarePolicy:
    return FarePolicy(
        id=row.id,
        version=row.version,
        effective_at=row.effective_at,
        currency=row.currency,
        base_fare=row.base_fare_amount,
        per_km=row.per_km_amount,
        per_minute=row.per_minute_amount,
        booking_fee=row.booking_fee_amount,
        minimum_fare=row.minimum_fare_amount,
        waiting_per_minute=row.waiting_per_minute_amount,
        cancellation_fee=row.cancellation_fee_amount,
        no_show_fee=row.no_show_fee_amount,
        waiting_grace_s=row.waiting_grace_s,
        cancellation_grace_s=row.cancellation_grace_s,
        quote_ttl_s=row.quote_ttl_s,
        surge_cap=Decimal(row.surge_cap),
        commission_rate=Decimal(row.commission_rate),
        reserve_rate=Decimal(row.reserve_rate),
        deviation_tolerance=Decimal(row.deviation_tolerance),
        zone_surcharges={zone: int(amount) for zone, amount in row.zone_surcharges.items()},
    )


def _constraint_name(exc: DBAPIError) -> str | None:
    # SQLAlchemy wraps asyncpg's exception, which names the constraint that refused.
    name = getattr(exc.orig.__cause__, "constraint_name", None) if exc.orig else None
    return name if isinstance(name, str) else None


def _first_line(exc: DBAPIError) -> str:
    return str(exc.orig).splitlines()[0] if exc.orig else str(exc)


class CustomerRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, user_id: uuid.UUID) -> PaymentCustomer | None:
        return await self.session.get(PaymentCustomer, user_id, populate_existing=True)

    async def add(self, customer: PaymentCustomer) -> PaymentCustomer:
        """Inserts, or returns the row a concurrent request inserted first."""
        await insert_unless_present(self.session, customer)
        stored = await self.get(customer.user_id)
        assert stored is not None
        return stored

    async def set_default_payment_method(
        self, user_id: uuid.UUID, payment_method_id: str, now: datetime
    ) -> None:
        await self.session.execute(
            update(PaymentCustomer)
            .where(PaymentCustomer.user_id == user_id)
            .values(default_payment_method_id=payment_method_id, updated_at=now)
        )


class PayoutAccountRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, driver_id: uuid.UUID) -> DriverPayoutAccount | None:
        return await self.session.get(DriverPayoutAccount, driver_id, populate_existing=True)

    async def get_many(
        self, driver_ids: Iterable[uuid.UUID]
    ) -> dict[uuid.UUID, DriverPayoutAccount]:
        wanted = list(set(driver_ids))
        if not wanted:
            return {}
        result = await self.session.execute(
            select(DriverPayoutAccount)
            .where(DriverPayoutAccount.driver_id.in_(wanted))
            .execution_options(populate_existing=True)
        )
        return {account.driver_id: account for account in result.scalars()}

    async def by_stripe_id(self, stripe_account_id: str) -> DriverPayoutAccount | None:
        result = await self.session.execute(
            select(DriverPayoutAccount).where(
                DriverPayoutAccount.stripe_account_id == stripe_account_id
            )
        )
        return result.scalar_one_or_none()

    async def add(self, account: DriverPayoutAccount) -> DriverPayoutAccount:
        await insert_unless_present(self.session, account)
        stored = await self.get(account.driver_id)
        assert stored is not None
        return stored

    async def update_capabilities(
        self,
        stripe_account_id: str,
        *,
        details_submitted: bool,
        charges_enabled: bool,
        payouts_enabled: bool,
        now: datetime,
    ) -> DriverPayoutAccount | None:
        result = await self.session.execute(
            update(DriverPayoutAccount)
            .where(DriverPayoutAccount.stripe_account_id == stripe_account_id)
            .values(
                details_submitted=details_submitted,
                charges_enabled=charges_enabled,
                payouts_enabled=payouts_enabled,
                updated_at=now,
            )
            .returning(DriverPayoutAccount)
            .execution_options(populate_existing=True)
        )
        return result.scalar_one_or_none()

    async def upsert_payout(self, payout: DriverPayout) -> None:
        await self.session.execute(
            insert(DriverPayout)
            .values(
                id=payout.id,
                driver_id=payout.driver_id,
                amount=payout.amount,
                currency=payout.currency,
                status=payout.status,
                arrival_at=payout.arrival_at,
                updated_at=payout.updated_at,
            )
            .on_conflict_do_update(
                index_elements=[DriverPayout.id],
                set_={"status": payout.status, "updated_at": payout.updated_at},
                # Stripe may deliver an older status after a newer one.
                where=DriverPayout.updated_at <= payout.updated_at,
            )
        )

    async def payouts(self, driver_id: uuid.UUID, limit: int) -> Sequence[DriverPayout]:
        result = await self.session.execute(
            select(DriverPayout)
            .where(DriverPayout.driver_id == driver_id)
            .order_by(DriverPayout.updated_at.desc())
            .limit(limit)
        )
        return result.scalars().all()


class RidePaymentRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, ride_id: uuid.UUID, *, lock: bool = False) -> RidePayment | None:
        query = select(RidePayment).where(RidePayment.ride_id == ride_id)
        if lock:
            query = query.with_for_update()
        result = await self.session.execute(query.execution_options(populate_existing=True))
        return result.scalar_one_or_none()

    async def get_many(
        self, ride_ids: Iterable[uuid.UUID], *, lock: bool = False
    ) -> dict[uuid.UUID, RidePayment]:
        """The rides' payments (those that exist); locked in ride order when ``lock``, so
        two batches sharing rides queue rather than deadlock."""
        wanted = sorted(set(ride_ids))
        if not wanted:
            return {}
        query = select(RidePayment).where(RidePayment.ride_id.in_(wanted))
        if lock:
            query = query.order_by(RidePayment.ride_id).with_for_update()
        result = await self.session.execute(query.execution_options(populate_existing=True))
        return {payment.ride_id: payment for payment in result.scalars()}

    async def update_many(self, changes: Sequence[tuple[uuid.UUID, dict[str, Any]]]) -> None:
        """Sets each ride's values, by primary key (no compare-and-set: the caller holds
        the rows' locks and has checked their status); one executemany per set of
        columns. Objects already loaded are not refreshed: read them again."""
        table = cast(Table, RidePayment.__table__)
        groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for ride_id, values in changes:
            row = {"ride": ride_id, **{f"new_{k}": v for k, v in values.items()}}
            groups.setdefault(tuple(sorted(values)), []).append(row)
        for columns, rows in groups.items():
            statement = (
                update(table)
                .where(table.c.ride_id == bindparam("ride"))
                .values(
                    {
                        name: bindparam(f"new_{name}", type_=_bind_type(table.c[name]))
                        for name in columns
                    }
                )
            )
            await self.session.execute(statement, rows)

    async def by_payment_intent(self, payment_intent_id: str) -> RidePayment | None:
        result = await self.session.execute(
            select(RidePayment)
            .where(RidePayment.payment_intent_id == payment_intent_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        return result.scalar_one_or_none()

    async def by_charge(self, charge_id: str) -> RidePayment | None:
        result = await self.session.execute(
            select(RidePayment)
            .where((RidePayment.charge_id == charge_id) | (RidePayment.tip_charge_id == charge_id))
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        return result.scalar_one_or_none()

    async def add(self, payment: RidePayment) -> tuple[RidePayment, bool]:
        """Inserts the ride's payment; (existing row, False) when the ride already has one."""
        created = await insert_unless_present(self.session, payment)
        stored = await self.get(payment.ride_id, lock=True)
        assert stored is not None
        return stored, created

    async def update(
        self, ride_id: uuid.UUID, expected: Iterable[str] | None, values: dict[str, Any]
    ) -> RidePayment | None:
        """Compare-and-set on status (when ``expected`` is given); None if it did not match."""
        query = update(RidePayment).where(RidePayment.ride_id == ride_id)
        if expected is not None:
            query = query.where(RidePayment.status.in_(list(expected)))
        result = await self.session.execute(
            query.values(**values).returning(RidePayment).execution_options(populate_existing=True)
        )
        return result.scalar_one_or_none()

    async def due(self, now: datetime, limit: int) -> Sequence[uuid.UUID]:
        """Rides whose payment has a step to retry now; skips rows another worker holds."""
        result = await self.session.execute(
            select(RidePayment.ride_id)
            .where(RidePayment.next_attempt_at <= now)
            .order_by(RidePayment.next_attempt_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return result.scalars().all()

    async def waiting_transfers(self, driver_id: uuid.UUID) -> Sequence[RidePayment]:
        result = await self.session.execute(
            select(RidePayment).where(
                RidePayment.driver_id == driver_id,
                RidePayment.next_attempt_at.is_not(None),
                RidePayment.status.in_(["captured", "debt_paid", "fee_captured"]),
            )
        )
        return result.scalars().all()

    async def for_rider(
        self, rider_id: uuid.UUID, limit: int, before: datetime | None
    ) -> Sequence[RidePayment]:
        query = (
            select(RidePayment)
            .where(RidePayment.rider_id == rider_id)
            .order_by(RidePayment.created_at.desc())
            .limit(limit)
        )
        if before is not None:
            query = query.where(RidePayment.created_at < before)
        return (await self.session.execute(query)).scalars().all()

    async def for_driver(
        self, driver_id: uuid.UUID, start: datetime, end: datetime
    ) -> Sequence[RidePayment]:
        result = await self.session.execute(
            select(RidePayment)
            .where(
                RidePayment.driver_id == driver_id,
                RidePayment.settled_at >= start,
                RidePayment.settled_at < end,
            )
            .order_by(RidePayment.settled_at)
        )
        return result.scalars().all()


class StripeCallRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def record(self, call: StripeCall) -> StripeCall:
        """Records the call before it is made; a retry finds the first record and its key."""
        call.status = "pending"
        await insert_unless_present(self.session, call)
        stored = await self.session.get(StripeCall, call.idempotency_key, populate_existing=True)
        assert stored is not None
        return stored

    async def record_many(self, calls: Sequence[StripeCall]) -> None:
        """Records calls before they are made, in one statement; a key already recorded
        keeps its first record (and request)."""
        if not calls:
            return
        await self.session.execute(
            text(_RECORD_CALLS),
            {
                "keys": [c.idempotency_key for c in calls],
                "operations": [c.operation for c in calls],
                "ride_ids": [c.ride_id for c in calls],
                "requests": [json.dumps(c.request) for c in calls],
                "created": [c.created_at for c in calls],
                "updated": [c.updated_at for c in calls],
            },
        )

    async def finish(
        self,
        idempotency_key: str,
        *,
        status: str,
        result: dict[str, Any] | None,
        error: str | None,
        now: datetime,
    ) -> None:
        await self.finish_many([(idempotency_key, status, result, error)], now=now)

    async def finish_many(
        self,
        answers: Sequence[tuple[str, str, dict[str, Any] | None, str | None]],
        *,
        now: datetime,
    ) -> None:
        """Records what Stripe answered: (key, status, result, error) for each call."""
        if not answers:
            return
        table = cast(Table, StripeCall.__table__)
        await self.session.execute(
            update(table)
            .where(table.c.idempotency_key == bindparam("key"))
            .values(
                status=bindparam("new_status"),
                result=bindparam("new_result", type_=JSONB(none_as_null=True)),
                last_error=bindparam("new_error"),
                attempts=table.c.attempts + 1,
                updated_at=now,
            ),
            [
                {"key": key, "new_status": status, "new_result": result, "new_error": error}
                for key, status, result, error in answers
            ],
        )

    async def get(self, idempotency_key: str) -> StripeCall | None:
        return await self.session.get(StripeCall, idempotency_key, populate_existing=True)

    async def for_ride(self, ride_id: uuid.UUID) -> Sequence[StripeCall]:
        result = await self.session.execute(
            select(StripeCall).where(StripeCall.ride_id == ride_id).order_by(StripeCall.created_at)
        )
        return result.scalars().all()


class StripeEventRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def store(self, event: StripeEvent) -> bool:
        """Stores the event once by its id; False when it was already stored."""
        result = await self.session.execute(
            insert(StripeEvent)
            .values(
                id=event.id,
                type=event.type,
                account_id=event.account_id,
                api_version=event.api_version,
                stripe_created_at=event.stripe_created_at,
                payload=event.payload,
                received_at=event.received_at,
            )
            .on_conflict_do_nothing(index_elements=[StripeEvent.id])
            .returning(StripeEvent.id)
        )
        return result.scalar_one_or_none() is not None

    async def claim(self, event_id: str) -> StripeEvent | None:
        """Locks an unprocessed event for this worker; None if done or held by another."""
        result = await self.session.execute(
            select(StripeEvent)
            .where(StripeEvent.id == event_id, StripeEvent.processed_at.is_(None))
            .with_for_update(skip_locked=True)
            .execution_options(populate_existing=True)
        )
        return result.scalar_one_or_none()

    async def unprocessed(self, older_than: datetime, limit: int) -> Sequence[str]:
        result = await self.session.execute(
            select(StripeEvent.id)
            .where(StripeEvent.processed_at.is_(None), StripeEvent.received_at <= older_than)
            .order_by(StripeEvent.received_at)
            .limit(limit)
        )
        return result.scalars().all()

    async def mark_processed(self, event_id: str, now: datetime) -> None:
        await self.session.execute(
            update(StripeEvent)
            .where(StripeEvent.id == event_id)
            .values(processed_at=now, attempts=StripeEvent.attempts + 1, last_error=None)
        )

    async def mark_failed(self, event_id: str, error: str) -> None:
        await self.session.execute(
            update(StripeEvent)
            .where(StripeEvent.id == event_id)
            .values(attempts=StripeEvent.attempts + 1, last_error=error[:2000])
        )

    async def dead_letter(self, event_id: str, error: str, now: datetime) -> None:
        """Stops retrying an event: marked processed, with the error that stopped it kept."""
        await self.session.execute(
            update(StripeEvent)
            .where(StripeEvent.id == event_id)
            .values(processed_at=now, attempts=StripeEvent.attempts + 1, last_error=error[:2000])
        )

    async def applied_after(self, event_type: str, account_id: str, created_at: datetime) -> bool:
        """Whether an event of ``event_type`` about ``account_id`` that Stripe created after
        ``created_at`` was already applied (processed without error)."""
        found = await self.session.scalar(
            select(StripeEvent.id)
            .where(
                StripeEvent.type == event_type,
                StripeEvent.account_id == account_id,
                StripeEvent.processed_at.is_not(None),
                StripeEvent.last_error.is_(None),
                StripeEvent.stripe_created_at > created_at,
            )
            .limit(1)
        )
        return found is not None


class TripFigures(NamedTuple):
    """One settled ride's money as a driver's statement shows it (minor units)."""

    ride_id: uuid.UUID
    status: str
    settled_at: datetime
    currency: str
    fare: int
    rider_paid: int
    driver_share: int
    tip: int
    coop_share: int
    pass_through: int
    stripe_fees: int
    refunded: int
    transferred: int


class PeriodFigures(NamedTuple):
    period_start: datetime
    currency: str
    trips: int
    fares: int
    rider_paid: int
    driver_earnings: int
    tips: int
    coop_share: int
    pass_through: int
    stripe_fees: int
    refunded: int


class DriverTransferRow(NamedTuple):
    kind: str
    reference: str | None
    recorded_at: datetime
    currency: str
    amount: int  # what left the driver's payable account, positive


class KindTotals(NamedTuple):
    """Postings of one account kind in one currency, summed over every owner (signed)."""

    kind: str
    current: int  # the balance now
    after_period: int  # moved since the period ended
    debits: int  # in the period
    credits: int  # in the period, as a positive number


class StripeBalanceMovement(NamedTuple):
    """One posting on the ledger's stripe_balance account, with its transaction."""

    transaction_id: uuid.UUID
    kind: str
    reference: str | None
    recorded_at: datetime
    currency: str
    amount: int  # signed: debit (money in) +, credit (money out) -


def _split_part(name: str) -> Any:
    return func.coalesce(RidePayment.split.op("->>")(name).cast(BigInteger), 0)


def _when_set(column: Any, amount: Any) -> Any:
    return case((column.is_not(None), amount), else_=0)


def _any_of(name: str, values: Sequence[str]) -> Any:
    # One array parameter, however many values: IN would bind each one separately.
    return any_(bindparam(name, list(values), type_=ARRAY(String)))


class StatementRepository:
    """The reads behind drivers' statements, riders' receipts and the co-op's books."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    def _trips(self, driver_id: uuid.UUID, start: datetime, end: datetime) -> Select[Any]:
        # A debt charge may pay several fares at once: its fee stays with the co-op's
        # books rather than being shown against one of them.
        fare_charge = case((RidePayment.status == "debt_paid", None), else_=RidePayment.charge_id)
        fees = (
            select(func.coalesce(func.sum(LedgerPosting.amount), 0))
            .select_from(LedgerTransaction)
            .join(LedgerPosting, LedgerPosting.transaction_id == LedgerTransaction.id)
            .join(LedgerAccount, LedgerAccount.id == LedgerPosting.account_id)
            .where(
                LedgerTransaction.kind == TransactionKind.stripe_fee.value,
                LedgerAccount.kind == AccountKind.stripe_fees.value,
                LedgerTransaction.reference.in_([fare_charge, RidePayment.tip_charge_id]),
            )
            .scalar_subquery()
        )
        tip = _when_set(RidePayment.tip_charge_id, RidePayment.tip_amount)
        return select(
            RidePayment.ride_id,
            RidePayment.status,
            RidePayment.settled_at,
            RidePayment.currency,
            func.coalesce(RidePayment.fare.op("->>")("total").cast(BigInteger), 0).label("fare"),
            (func.coalesce(RidePayment.captured_amount, 0) + tip).label("rider_paid"),
            _split_part("driver").label("driver_share"),
            tip.label("tip"),
            (_split_part("commission") + _split_part("reserve") + _split_part("booking_fee")).label(
                "coop_share"
            ),
            _split_part("pass_through").label("pass_through"),
            fees.label("stripe_fees"),
            RidePayment.refunded_amount.label("refunded"),
            (
                RidePayment.transferred_amount
                + _when_set(RidePayment.tip_transfer_id, RidePayment.tip_amount)
            ).label("transferred"),
        ).where(
            RidePayment.driver_id == driver_id,
            RidePayment.settled_at >= start,
            RidePayment.settled_at < end,
        )

    async def driver_trips(
        self, driver_id: uuid.UUID, start: datetime, end: datetime
    ) -> list[TripFigures]:
        trips = self._trips(driver_id, start, end).subquery()
        result = await self.session.execute(
            select(trips).order_by(trips.c.settled_at, trips.c.ride_id)
        )
        return [TripFigures(*(row[:4]), *(int(v) for v in row[4:])) for row in result]

    async def driver_periods(
        self, driver_id: uuid.UUID, start: datetime, end: datetime, period: str, tz: str
    ) -> list[PeriodFigures]:
        """Trips grouped by the day or week (``period``) they settled in, in time zone
        ``tz``; only periods with trips."""
        trips = self._trips(driver_id, start, end).subquery()
        periods = select(
            trips, func.date_trunc(period, trips.c.settled_at, tz).label("period_start")
        ).subquery()
        c = periods.c
        result = await self.session.execute(
            select(
                c.period_start,
                c.currency,
                func.count(),
                *(
                    func.sum(column)
                    for column in (
                        c.fare,
                        c.rider_paid,
                        c.driver_share,
                        c.tip,
                        c.coop_share,
                        c.pass_through,
                        c.stripe_fees,
                        c.refunded,
                    )
                ),
            )
            .group_by(c.period_start, c.currency)
            .order_by(c.period_start, c.currency)
        )
        return [PeriodFigures(row[0], row[1], *(int(v) for v in row[2:])) for row in result]

    async def driver_transfers(self, driver_id: uuid.UUID, limit: int) -> list[DriverTransferRow]:
        result = await self.session.execute(
            select(
                LedgerTransaction.kind,
                LedgerTransaction.reference,
                LedgerTransaction.recorded_at,
                LedgerPosting.currency,
                LedgerPosting.amount,
            )
            .join(LedgerPosting, LedgerPosting.transaction_id == LedgerTransaction.id)
            .join(LedgerAccount, LedgerAccount.id == LedgerPosting.account_id)
            .where(
                LedgerAccount.owner_id == driver_id,
                LedgerAccount.kind.in_(
                    [AccountKind.driver_payable.value, AccountKind.tips_payable.value]
                ),
                LedgerTransaction.kind.in_(
                    [TransactionKind.driver_transfer.value, TransactionKind.tip_transfer.value]
                ),
            )
            .order_by(LedgerTransaction.recorded_at.desc(), LedgerPosting.id.desc())
            .limit(limit)
        )
        return [DriverTransferRow(*row) for row in result]

    async def receipts(
        self, rider_id: uuid.UUID, limit: int, before: datetime | None
    ) -> Sequence[RidePayment]:
        """The rider's priced rides, newest first."""
        query = (
            select(RidePayment)
            .where(RidePayment.rider_id == rider_id, RidePayment.fare.is_not(None))
            .order_by(RidePayment.created_at.desc(), RidePayment.ride_id.desc())
            .limit(limit)
        )
        if before is not None:
            query = query.where(RidePayment.created_at < before)
        return (await self.session.execute(query)).scalars().all()

    async def receipt(self, rider_id: uuid.UUID, ride_id: uuid.UUID) -> RidePayment | None:
        result = await self.session.execute(
            select(RidePayment).where(
                RidePayment.ride_id == ride_id,
                RidePayment.rider_id == rider_id,
                RidePayment.fare.is_not(None),
            )
        )
        return result.scalar_one_or_none()

    async def kind_totals(self, currency: str, start: datetime, end: datetime) -> list[KindTotals]:
        result = await self.session.execute(
            text(_KIND_TOTALS), {"currency": currency, "period_from": start, "period_to": end}
        )
        return [KindTotals(kind, *(int(v) for v in rest)) for kind, *rest in result]


# One statement, so the balances now and the postings since come from the same snapshot.
_KIND_TOTALS = """
WITH current AS (
    SELECT kind, sum(balance_amount) AS balance
      FROM ledger_accounts
     WHERE currency = :currency
     GROUP BY kind
), moved AS (
    SELECT a.kind,
           sum(p.amount) FILTER (WHERE t.recorded_at >= :period_to) AS after_period,
           sum(p.amount) FILTER (WHERE t.recorded_at < :period_to AND p.amount > 0) AS debits,
           sum(-p.amount) FILTER (WHERE t.recorded_at < :period_to AND p.amount < 0) AS credits
      FROM ledger_transactions t
      JOIN ledger_postings p ON p.transaction_id = t.id
      JOIN ledger_accounts a ON a.id = p.account_id
     WHERE t.recorded_at >= :period_from AND p.currency = :currency
     GROUP BY a.kind
)
SELECT current.kind,
       current.balance,
       coalesce(moved.after_period, 0),
       coalesce(moved.debits, 0),
       coalesce(moved.credits, 0)
  FROM current
  LEFT JOIN moved USING (kind)
 ORDER BY current.kind
"""


class ReconciliationRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    def _stripe_balance_movements(
        self,
    ) -> Select[uuid.UUID, str, str | None, datetime, str, int]:
        return (
            select(
                LedgerTransaction.id,
                LedgerTransaction.kind,
                LedgerTransaction.reference,
                LedgerTransaction.recorded_at,
                LedgerPosting.currency,
                LedgerPosting.amount,
            )
            .join(LedgerPosting, LedgerPosting.transaction_id == LedgerTransaction.id)
            .join(LedgerAccount, LedgerAccount.id == LedgerPosting.account_id)
            .where(LedgerAccount.kind == AccountKind.stripe_balance.value)
            .order_by(LedgerTransaction.recorded_at, LedgerPosting.id)
        )

    async def movements_referencing(self, references: Sequence[str]) -> list[StripeBalanceMovement]:
        """Every stripe_balance posting of the transactions that reference one of
        ``references``, whenever recorded."""
        if not references:
            return []
        result = await self.session.execute(
            self._stripe_balance_movements().where(
                LedgerTransaction.reference == _any_of("references", references)
            )
        )
        return [StripeBalanceMovement._make(row) for row in result]

    async def movements_recorded(
        self, start: datetime, end: datetime
    ) -> list[StripeBalanceMovement]:
        result = await self.session.execute(
            self._stripe_balance_movements().where(
                LedgerTransaction.recorded_at >= start, LedgerTransaction.recorded_at < end
            )
        )
        return [StripeBalanceMovement._make(row) for row in result]

    async def lock_period(self, period_from: datetime, period_to: datetime) -> None:
        """Serialises runs of one period until the transaction ends."""
        await self.session.execute(
            select(
                func.pg_advisory_xact_lock(
                    func.hashtextextended(
                        f"reconciliation:{period_from.isoformat()}:{period_to.isoformat()}", 0
                    )
                )
            )
        )

    async def finished_run(
        self, period_from: datetime, period_to: datetime
    ) -> ReconciliationRun | None:
        result = await self.session.execute(
            select(ReconciliationRun)
            .where(
                ReconciliationRun.period_from == period_from,
                ReconciliationRun.period_to == period_to,
                ReconciliationRun.finished_at.is_not(None),
            )
            .order_by(ReconciliationRun.finished_at.desc())
            .limit(1)
        )
        return result.scalar_one_or_none()

    async def add_run(self, run: ReconciliationRun) -> ReconciliationRun:
        self.session.add(run)
        await self.session.flush()
        return run

    async def latest_runs(self, limit: int) -> Sequence[ReconciliationRun]:
        result = await self.session.execute(
            select(ReconciliationRun)
            .order_by(ReconciliationRun.started_at.desc(), ReconciliationRun.id)
            .limit(limit)
        )
        return result.scalars().all()
