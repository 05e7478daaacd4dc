from __future__ import annotations

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
        fingerprint = draft.fingerprint()
        transaction_id = new_id()
        recorded_at = self.clock.now()
        if await self.repository.insert_transaction(
            draft, transaction_id=transaction_id, fingerprint=fingerprint, recorded_at=recorded_at
        ):
            return RecordedTransaction(
                id=transaction_id,
                idempotency_key=draft.idempotency_key,
                kind=draft.kind,
                description=draft.description,
                reference=draft.reference,
                recorded_at=recorded_at,
                postings=draft.postings,
                created=True,
            )
        existing = await self.repository.transaction_by_key(draft.idempotency_key)
        # The insert found the key taken, and transactions are never deleted.
        assert existing is not None
        if existing.fingerprint != fingerprint:
            raise LedgerIdempotencyConflict(
                f"{draft.idempotency_key} already records another {existing.kind} transaction",
                idempotency_key=draft.idempotency_key,
                transaction_id=str(existing.id),
            )
        return RecordedTransaction(
            id=existing.id,
            idempotency_key=existing.idempotency_key,
            kind=TransactionKind(existing.kind),
            description=existing.description,
            reference=existing.reference,
            recorded_at=existing.recorded_at,
            postings=await self.repository.postings_of(existing.id),
            created=False,
        )

    async def has(self, idempotency_key: str) -> bool:
        """Whether a transaction with this key is recorded (webhooks use it to record a
        fact only when no other path recorded it first)."""
        return await self.repository.transaction_by_key(idempotency_key) is not None

    async def balance(self, account: AccountRef) -> Money:
        """The account's balance in its normal direction; zero for an account never used."""
        return account.normal(await self.repository.signed_balance(account))

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
