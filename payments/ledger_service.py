from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from infra.clock import Clock
from infra.ids import new_id
from payments.errors import LedgerIdempotencyConflict
from payments.ledger import (
    AccountBalance,
    AccountKind,
    AccountRef,
    AccountStatement,
    LedgerVerification,
    RecordedTransaction,
    StatementPeriod,
    TransactionDraft,
    TransactionKind,
    build_statement,
)
from payments.money import Money
from payments.repository import LedgerRepository


class LedgerService:
    """Records drafts from payments.ledger and reads balances back. Never commits: the
    database checks that each transaction balances when the caller commits."""

    def __init__(self, session: AsyncSession, clock: Clock) -> None:
        self.repository = LedgerRepository(session)
        self.clock = clock

    async def record(self, draft: TransactionDraft) -> RecordedTransaction:
        """Records ``draft`` once. Recording it again (same key, same content) returns the
        transaction already recorded, with ``created`` False; the same key with other
        content raises ``LedgerIdempotencyConflict``; a posting that would take a
        non-negative account below zero raises ``LedgerAccountOverdrawn``."""
        (recorded,) = await self.record_many([draft])
        return recorded

    async def record_many(self, drafts: Sequence[TransactionDraft]) -> list[RecordedTransaction]:
        """Records every draft as ``record`` does, in a few statements whatever their
        number; answers in the drafts' order. A key repeated in ``drafts`` is recorded
        once (the repeat answers ``created`` False). All or nothing: a conflict or an
        overdrawn account raises and records none of them."""
        unique: dict[str, TransactionDraft] = {}
        fingerprints: dict[str, str] = {}
        for draft in drafts:
            fingerprint = draft.fingerprint()
            first = unique.setdefault(draft.idempotency_key, draft)
            known = fingerprints.setdefault(draft.idempotency_key, fingerprint)
            if first is not draft and known != fingerprint:
                raise LedgerIdempotencyConflict(
                    f"{draft.idempotency_key} is asked for twice with different content",
                    idempotency_key=draft.idempotency_key,
                )
        ids = {key: new_id() for key in unique}
        recorded_at = self.clock.now()
        # One savepoint: a conflict or an overdraft found after the transactions' insert
        # takes it back too.
        async with self.repository.session.begin_nested():
            created = await self.repository.insert_transactions(
                list(unique.values()),
                transaction_ids=[ids[key] for key in unique],
                fingerprints=[fingerprints[key] for key in unique],
                recorded_at=recorded_at,
            )
            # The insert found these keys taken, and transactions are never deleted.
            existing = await self.repository.transactions_by_keys(
                [key for key in unique if key not in created]
            )
            for key, row in existing.items():
                if row.fingerprint != fingerprints[key]:
                    raise LedgerIdempotencyConflict(
                        f"{key} already records another {row.kind} transaction",
                        idempotency_key=key,
                        transaction_id=str(row.id),
                    )
            await self.repository.insert_postings(
                [unique[key] for key in unique if key in created],
                [ids[key] for key in unique if key in created],
            )
        postings = await self.repository.postings_of_many([row.id for row in existing.values()])
        answered: set[str] = set()
        results = []
        for draft in drafts:
            key = draft.idempotency_key
            if key in created:
                results.append(
                    RecordedTransaction(
                        id=ids[key],
                        idempotency_key=key,
                        kind=draft.kind,
                        description=draft.description,
                        reference=draft.reference,
                        recorded_at=recorded_at,
                        postings=draft.postings,
                        created=key not in answered,
                    )
                )
            else:
                row = existing[key]
                results.append(
                    RecordedTransaction(
                        id=row.id,
                        idempotency_key=key,
                        kind=TransactionKind(row.kind),
                        description=row.description,
                        reference=row.reference,
                        recorded_at=row.recorded_at,
                        postings=postings[row.id],
                        created=False,
                    )
                )
            answered.add(key)
        return results

    async def has(self, idempotency_key: str) -> bool:
        """Whether a transaction with this key is recorded (webhooks use it to record a
        fact only when no other path recorded it first)."""
        return await self.repository.transaction_by_key(idempotency_key) is not None

    async def balance(self, account: AccountRef) -> Money:
        """The account's balance in its normal direction; zero for an account never used."""
        return account.normal(await self.repository.signed_balance(account))

    async def balances_of(self, accounts: Iterable[AccountRef]) -> dict[AccountRef, Money]:
        """Each account's balance in its normal direction; zero for an account never used."""
        signed = await self.repository.signed_balances_of(accounts)
        return {account: account.normal(amount) for account, amount in signed.items()}

    async def balances(
        self, kind: AccountKind, currency: str | None = None
    ) -> list[AccountBalance]:
        """Every account of ``kind`` (in ``currency``, if given) with its balance in its
        normal direction, by currency and code."""
        return [
            AccountBalance(account, account.normal(signed))
            for account, signed in await self.repository.signed_balances(kind, currency)
        ]

    async def statement(self, account: AccountRef, period: StatementPeriod) -> AccountStatement:
        opening, entries = await self.repository.statement_entries(account, period)
        return build_statement(account, period, opening, entries)

    async def verify(self) -> LedgerVerification:
        """Checks the whole ledger from its postings, in one snapshot: every transaction
        balances per currency and has postings, every cached balance equals the sum of its
        account's postings, and each currency's postings sum to zero."""
        return await self.repository.verification()
