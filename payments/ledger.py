"""The co-op's double-entry ledger, as pure data: accounts, transaction drafts and the
builders of every business money movement. No I/O; LedgerService records the drafts.

Sign convention. A posting is a signed integer of minor units: a debit is positive, a
credit negative, so the postings of a transaction sum to zero and so does the whole
ledger, per currency. An account's balance "in its normal direction" is the sum of its
postings for a debit-normal account (assets, expenses) and minus that sum for a
credit-normal account (liabilities, equity, revenue): a driver owed 12.00 has a
``driver_payable`` balance of +1200 in its normal direction, stored as -1200.

Accounts are identified by a code (``kind`` or ``kind:<owner uuid>``) and a currency;
``CHART`` says each kind's normal side, whether it may go negative (in its normal
direction) and whether it belongs to one owner (a driver, a rider, a member).

Every draft has one currency, at least two postings, no zero amount, and balances; its
idempotency key is derived from its inputs (``ride:<id>:settlement:v1``), so a retried
webhook or job records nothing twice. The ``v1`` suffix changes only if a builder's
postings ever change meaning. A draft's fingerprint covers its kind, reference and
postings (not the wording of its description): the same key with another fingerprint is
a conflict, never a silent second transaction.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from types import MappingProxyType

from payments.errors import (
    DividendCashShareTooLow,
    LedgerAccountOverdrawn,
    LedgerDraftInvalid,
    LedgerIdempotencyConflict,
)
from payments.money import CurrencyMismatch, Money, check_currency

MAX_KEY_LENGTH = 200
MAX_REFERENCE_LENGTH = 200
# Co-op rule (design, section 5): at least this share of a patronage dividend in cash.
MIN_DIVIDEND_CASH_SHARE = Decimal("0.20")


class NormalSide(StrEnum):
    debit = "debit"
    credit = "credit"


class AccountKind(StrEnum):
    # Assets.
    stripe_balance = "stripe_balance"
    bank = "bank"
    disputes = "disputes"  # funds Stripe withdrew for disputes still open
    driver_receivable = "driver_receivable"  # claw-backs a driver owes the co-op
    rider_receivable = "rider_receivable"  # fares a rider still owes
    # Liabilities.
    driver_payable = "driver_payable"
    tips_payable = "tips_payable"
    pass_through_payable = "pass_through_payable"  # zone surcharges owed to third parties
    dividends_payable = "dividends_payable"  # cash part of a member's dividend, unpaid
    # Equity.
    reserve = "reserve"
    member_capital = "member_capital"
    patronage_dividends = "patronage_dividends"  # distributions of surplus (contra-equity)
    # Revenue.
    coop_commission_revenue = "coop_commission_revenue"
    booking_fee_revenue = "booking_fee_revenue"
    cancellation_fee_revenue = "cancellation_fee_revenue"
    # Expenses and contra-revenue.
    stripe_fees = "stripe_fees"
    refunds = "refunds"
    dispute_losses = "dispute_losses"


@dataclass(frozen=True, slots=True)
class AccountRule:
    normal_side: NormalSide
    non_negative: bool
    per_owner: bool


_D, _C = NormalSide.debit, NormalSide.credit
CHART: Mapping[AccountKind, AccountRule] = MappingProxyType(
    {
        AccountKind.stripe_balance: AccountRule(_D, non_negative=False, per_owner=False),
        AccountKind.bank: AccountRule(_D, non_negative=False, per_owner=False),
        AccountKind.disputes: AccountRule(_D, non_negative=True, per_owner=False),
        AccountKind.driver_receivable: AccountRule(_D, non_negative=True, per_owner=True),
        AccountKind.rider_receivable: AccountRule(_D, non_negative=True, per_owner=True),
        AccountKind.driver_payable: AccountRule(_C, non_negative=True, per_owner=True),
        AccountKind.tips_payable: AccountRule(_C, non_negative=True, per_owner=True),
        AccountKind.pass_through_payable: AccountRule(_C, non_negative=False, per_owner=False),
        AccountKind.dividends_payable: AccountRule(_C, non_negative=True, per_owner=True),
        AccountKind.reserve: AccountRule(_C, non_negative=False, per_owner=False),
        AccountKind.member_capital: AccountRule(_C, non_negative=True, per_owner=True),
        AccountKind.patronage_dividends: AccountRule(_D, non_negative=False, per_owner=False),
        AccountKind.coop_commission_revenue: AccountRule(_C, non_negative=False, per_owner=False),
        AccountKind.booking_fee_revenue: AccountRule(_C, non_negative=False, per_owner=False),
        AccountKind.cancellation_fee_revenue: AccountRule(_C, non_negative=False, per_owner=False),
        AccountKind.stripe_fees: AccountRule(_D, non_negative=False, per_owner=False),
        AccountKind.refunds: AccountRule(_D, non_negative=False, per_owner=False),
        AccountKind.dispute_losses: AccountRule(_D, non_negative=False, per_owner=False),
    }
)


class TransactionKind(StrEnum):
    ride_settlement = "ride_settlement"
    rider_debt = "rider_debt"
    rider_debt_payment = "rider_debt_payment"
    stripe_fee = "stripe_fee"
    driver_transfer = "driver_transfer"
    tip = "tip"
    tip_transfer = "tip_transfer"
    refund = "refund"
    dispute_opened = "dispute_opened"
    dispute_won = "dispute_won"
    dispute_lost = "dispute_lost"
    cancellation_fee = "cancellation_fee"
    no_show_fee = "no_show_fee"
    platform_payout = "platform_payout"
    pass_through_remittance = "pass_through_remittance"
    driver_debt_offset = "driver_debt_offset"
    dividend_allocation = "dividend_allocation"
    dividend_payment = "dividend_payment"


class Clawback(StrEnum):
    """How the driver's share of a refund comes back, by policy."""

    none = "none"  # the co-op absorbs it
    from_payable = "from_payable"  # not yet transferred: taken off what the co-op owes
    reverse_transfer = "reverse_transfer"  # Stripe reversed the transfer to the driver
    receivable = "receivable"  # already paid out: the driver owes it


def normal_amount(side: NormalSide, signed: int) -> int:
    """A signed sum of postings (debit +, credit -) seen in an account's normal direction."""
    return signed if side is NormalSide.debit else -signed


@dataclass(frozen=True, slots=True)
class AccountRef:
    """One account's identity: its kind, currency and, for per-owner kinds, its owner."""

    kind: AccountKind
    currency: str
    owner_id: uuid.UUID | None = None

    def __post_init__(self) -> None:
        check_currency(self.currency)
        if CHART[self.kind].per_owner != (self.owner_id is not None):
            need = "needs" if CHART[self.kind].per_owner else "takes no"
            raise LedgerDraftInvalid(f"a {self.kind.value} account {need} owner")

    @property
    def code(self) -> str:
        return self.kind.value if self.owner_id is None else f"{self.kind.value}:{self.owner_id}"

    @property
    def rule(self) -> AccountRule:
        return CHART[self.kind]

    def normal(self, signed: int) -> Money:
        return Money(normal_amount(self.rule.normal_side, signed), self.currency)


@dataclass(frozen=True, slots=True)
class Posting:
    account: AccountRef
    amount: int  # signed: debit +, credit -

    def __post_init__(self) -> None:
        if type(self.amount) is not int:
            raise LedgerDraftInvalid("a posting's amount is int minor units")

    @property
    def currency(self) -> str:
        return self.account.currency


def debit(account: AccountRef, money: Money) -> Posting:
    _same_currency(account.currency, money)
    return Posting(account, money.amount)


def credit(account: AccountRef, money: Money) -> Posting:
    _same_currency(account.currency, money)
    return Posting(account, -money.amount)


@dataclass(frozen=True, slots=True)
class TransactionDraft:
    """A balanced transaction not yet recorded. Constructing an invalid one raises
    ``LedgerDraftInvalid``: empty, fewer than two postings, a zero amount, more than one
    currency, postings that do not sum to zero, or a bad key."""

    idempotency_key: str
    kind: TransactionKind
    description: str
    postings: tuple[Posting, ...]
    reference: str | None = None

    def __post_init__(self) -> None:
        validate(self)

    @property
    def currency(self) -> str:
        return self.postings[0].currency

    def fingerprint(self) -> str:
        """A hash of what the transaction does (kind, reference, the multiset of postings),
        used to tell a retry from a different transaction under the same key."""
        lines = sorted((p.account.code, p.currency, p.amount) for p in self.postings)
        payload = json.dumps(
            {"kind": self.kind.value, "reference": self.reference, "postings": lines},
            separators=(",", ":"),
        )
        return hashlib.sha256(payload.encode()).hexdigest()


def validate(draft: TransactionDraft) -> None:
    """Raises ``LedgerDraftInvalid`` unless the draft can be recorded as it is."""
    key = draft.idempotency_key
    if not key or len(key) > MAX_KEY_LENGTH or any(c.isspace() for c in key):
        raise LedgerDraftInvalid(f"idempotency keys are 1-{MAX_KEY_LENGTH} non-blank characters")
    if draft.reference is not None and not 0 < len(draft.reference) <= MAX_REFERENCE_LENGTH:
        raise LedgerDraftInvalid(f"references are 1-{MAX_REFERENCE_LENGTH} characters")
    if not draft.description.strip():
        raise LedgerDraftInvalid("a transaction needs a description")
    if len(draft.postings) < 2:
        raise LedgerDraftInvalid("a transaction needs at least two postings")
    if any(p.amount == 0 for p in draft.postings):
        raise LedgerDraftInvalid("a posting of zero records nothing")
    currencies = {p.currency for p in draft.postings}
    if len(currencies) != 1:
        raise LedgerDraftInvalid(f"one currency per transaction, not {sorted(currencies)}")
    imbalance = sum(p.amount for p in draft.postings)
    if imbalance != 0:
        raise LedgerDraftInvalid(f"postings sum to {imbalance}, not zero")


@dataclass(frozen=True, slots=True)
class RecordedTransaction:
    id: uuid.UUID
    idempotency_key: str
    kind: TransactionKind
    description: str
    reference: str | None
    recorded_at: datetime
    postings: tuple[Posting, ...]
    # False when the key was already recorded with the same content (a replay).
    created: bool


@dataclass(frozen=True, slots=True)
class AccountBalance:
    account: AccountRef
    balance: Money  # in the account's normal direction


@dataclass(frozen=True, slots=True)
class StatementPeriod:
    """The half-open interval [start, end) of recording times."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise LedgerDraftInvalid("statement periods are timezone-aware")
        if self.start >= self.end:
            raise LedgerDraftInvalid("a statement period starts before it ends")


@dataclass(frozen=True, slots=True)
class StatementEntry:
    """One posting on an account as the statement's source reads it."""

    transaction_id: uuid.UUID
    recorded_at: datetime
    kind: TransactionKind
    description: str
    reference: str | None
    amount: int  # signed: debit +, credit -


@dataclass(frozen=True, slots=True)
class StatementLine:
    transaction_id: uuid.UUID
    recorded_at: datetime
    kind: TransactionKind
    description: str
    reference: str | None
    change: Money  # in the account's normal direction
    balance: Money  # running, in the account's normal direction


@dataclass(frozen=True, slots=True)
class AccountStatement:
    account: AccountRef
    period: StatementPeriod
    opening: Money
    lines: tuple[StatementLine, ...]
    closing: Money


def build_statement(
    account: AccountRef,
    period: StatementPeriod,
    opening_signed: int,
    entries: Sequence[StatementEntry],
) -> AccountStatement:
    """The statement of ``account`` over ``period`` from its balance before the period
    (signed) and its postings in the period, in order: each line's running balance is the
    previous one plus its change, and the closing balance is the last running balance."""
    running = opening_signed
    lines: list[StatementLine] = []
    for entry in entries:
        running += entry.amount
        lines.append(
            StatementLine(
                transaction_id=entry.transaction_id,
                recorded_at=entry.recorded_at,
                kind=entry.kind,
                description=entry.description,
                reference=entry.reference,
                change=account.normal(entry.amount),
                balance=account.normal(running),
            )
        )
    return AccountStatement(
        account=account,
        period=period,
        opening=account.normal(opening_signed),
        lines=tuple(lines),
        closing=account.normal(running),
    )


@dataclass(frozen=True, slots=True)
class UnbalancedTransaction:
    transaction_id: uuid.UUID
    currency: str
    imbalance: int


@dataclass(frozen=True, slots=True)
class BalanceMismatch:
    account_id: uuid.UUID
    code: str
    currency: str
    cached: int  # signed, as stored on the account
    computed: int  # signed sum of the account's postings


@dataclass(frozen=True, slots=True)
class LedgerVerification:
    transactions: int
    postings: int
    accounts: int
    unbalanced: tuple[UnbalancedTransaction, ...]
    empty_transactions: tuple[uuid.UUID, ...]
    mismatched_balances: tuple[BalanceMismatch, ...]
    # Sum of every posting per currency; zero in a sound ledger.
    totals: Mapping[str, int]

    @property
    def ok(self) -> bool:
        return (
            not self.unbalanced
            and not self.empty_transactions
            and not self.mismatched_balances
            and all(total == 0 for total in self.totals.values())
        )


@dataclass(frozen=True, slots=True)
class LedgerBook:
    """An in-memory ledger with the database's rules, as a model to reason and test with:
    ``record`` returns a new book and leaves this one unchanged."""

    fingerprints: Mapping[str, str] = field(default_factory=dict)
    balances: Mapping[AccountRef, int] = field(default_factory=dict)  # signed sums

    def record(self, draft: TransactionDraft) -> LedgerBook:
        """The book with ``draft`` recorded; this very book if the same draft already is.
        Raises ``LedgerIdempotencyConflict`` when the key holds a different transaction
        and ``LedgerAccountOverdrawn`` when a non-negative account would go below zero."""
        fingerprint = draft.fingerprint()
        known = self.fingerprints.get(draft.idempotency_key)
        if known == fingerprint:
            return self
        if known is not None:
            raise LedgerIdempotencyConflict(f"key {draft.idempotency_key} holds another one")
        balances = dict(self.balances)
        for posting in draft.postings:
            balances[posting.account] = balances.get(posting.account, 0) + posting.amount
        for account in {p.account for p in draft.postings}:
            if account.rule.non_negative and account.normal(balances[account]).amount < 0:
                raise LedgerAccountOverdrawn(f"{account.code} would go below zero")
        return LedgerBook(
            fingerprints={**self.fingerprints, draft.idempotency_key: fingerprint},
            balances=balances,
        )

    def record_many(self, drafts: Sequence[TransactionDraft]) -> LedgerBook:
        """The book with all ``drafts`` recorded at once, as the database records a batch
        (LedgerService.record_many): keys as ``record`` treats them, a key repeated in the
        batch recorded once, and balances checked once, after the whole batch. All or
        nothing: raises as ``record`` does."""
        fingerprints = dict(self.fingerprints)
        balances = dict(self.balances)
        touched: set[AccountRef] = set()
        for draft in drafts:
            fingerprint = draft.fingerprint()
            known = fingerprints.get(draft.idempotency_key)
            if known == fingerprint:
                continue
            if known is not None:
                raise LedgerIdempotencyConflict(f"key {draft.idempotency_key} holds another one")
            fingerprints[draft.idempotency_key] = fingerprint
            for posting in draft.postings:
                balances[posting.account] = balances.get(posting.account, 0) + posting.amount
                touched.add(posting.account)
        for account in touched:
            if account.rule.non_negative and account.normal(balances[account]).amount < 0:
                raise LedgerAccountOverdrawn(f"{account.code} would go below zero")
        return LedgerBook(fingerprints=fingerprints, balances=balances)

    def balance(self, account: AccountRef) -> Money:
        return account.normal(self.balances.get(account, 0))

    def totals(self) -> dict[str, int]:
        totals: Counter[str] = Counter()
        for account, signed in self.balances.items():
            totals[account.currency] += signed
        return dict(totals)


# Accounts, by name.


def stripe_balance(currency: str) -> AccountRef:
    return AccountRef(AccountKind.stripe_balance, currency)


def shared_account(kind: AccountKind, currency: str) -> AccountRef:
    return AccountRef(kind, currency)


def owned_account(kind: AccountKind, owner_id: uuid.UUID, currency: str) -> AccountRef:
    return AccountRef(kind, currency, owner_id)


# Builders. Each takes Money and ids and returns a balanced draft; amounts that must be
# positive are checked, optional parts may be zero and then leave no posting.


def ride_settlement(
    *,
    ride_id: uuid.UUID,
    driver_id: uuid.UUID,
    charge_id: str,
    driver: Money,
    commission: Money,
    reserve: Money,
    booking_fee: Money,
    pass_through: Money,
    rider_id: uuid.UUID | None = None,
    unpaid: Money | None = None,
) -> TransactionDraft:
    """A captured fare: the charge lands in the Stripe balance and is owed to the driver,
    the co-op (commission, reserve, booking fee) and third parties (zone surcharges).
    ``unpaid`` is the part of the fare the capture could not take (a metered fare above
    the card's hold): the rider owes it. Keyed by ride: a ride's fare is recognised once,
    captured or as debt."""
    total = _fare_total(
        driver=driver,
        commission=commission,
        reserve=reserve,
        booking_fee=booking_fee,
        pass_through=pass_through,
    )
    owed = unpaid if unpaid is not None else Money.zero(total.currency)
    _non_negative(unpaid=owed)
    if not owed.is_zero() and rider_id is None:
        raise LedgerDraftInvalid("an unpaid part needs the rider who owes it")
    captured = _minus(total, owed)
    _positive(captured=captured)
    debt = (
        (debit(owned_account(AccountKind.rider_receivable, rider_id, total.currency), owed),)
        if rider_id is not None and not owed.is_zero()
        else ()
    )
    return TransactionDraft(
        idempotency_key=f"ride:{ride_id}:settlement:v1",
        kind=TransactionKind.ride_settlement,
        description=f"Fare of ride {ride_id} captured",
        postings=_postings(
            debit(stripe_balance(total.currency), captured),
            *debt,
            *_fare_credits(driver_id, driver, commission, reserve, booking_fee, pass_through),
        ),
        reference=_token("charge_id", charge_id),
    )


def rider_debt(
    *,
    ride_id: uuid.UUID,
    rider_id: uuid.UUID,
    driver_id: uuid.UUID,
    driver: Money,
    commission: Money,
    reserve: Money,
    booking_fee: Money,
    pass_through: Money,
) -> TransactionDraft:
    """A fare whose capture failed: shared out as if captured (the driver is still owed),
    with the rider owing the whole of it. Shares the key of ``ride_settlement``."""
    total = _fare_total(
        driver=driver,
        commission=commission,
        reserve=reserve,
        booking_fee=booking_fee,
        pass_through=pass_through,
    )
    return TransactionDraft(
        idempotency_key=f"ride:{ride_id}:settlement:v1",
        kind=TransactionKind.rider_debt,
        description=f"Fare of ride {ride_id} owed by the rider after a failed capture",
        postings=_postings(
            debit(owned_account(AccountKind.rider_receivable, rider_id, total.currency), total),
            *_fare_credits(driver_id, driver, commission, reserve, booking_fee, pass_through),
        ),
        reference=str(ride_id),
    )


def rider_debt_payment(*, rider_id: uuid.UUID, charge_id: str, amount: Money) -> TransactionDraft:
    """A later charge paying (part of) a rider's debt."""
    _positive(amount=amount)
    return TransactionDraft(
        idempotency_key=f"charge:{_token('charge_id', charge_id)}:rider_debt_payment:v1",
        kind=TransactionKind.rider_debt_payment,
        description=f"Rider {rider_id} paid an outstanding fare",
        postings=_postings(
            debit(stripe_balance(amount.currency), amount),
            credit(owned_account(AccountKind.rider_receivable, rider_id, amount.currency), amount),
        ),
        reference=charge_id,
    )


def stripe_fee(*, charge_id: str, fee: Money) -> TransactionDraft:
    """Stripe's processing fee on a charge, taken from the Stripe balance."""
    _positive(fee=fee)
    return TransactionDraft(
        idempotency_key=f"charge:{_token('charge_id', charge_id)}:stripe_fee:v1",
        kind=TransactionKind.stripe_fee,
        description=f"Stripe fee on charge {charge_id}",
        postings=_postings(
            debit(shared_account(AccountKind.stripe_fees, fee.currency), fee),
            credit(stripe_balance(fee.currency), fee),
        ),
        reference=charge_id,
    )


def driver_transfer(*, transfer_id: str, driver_id: uuid.UUID, amount: Money) -> TransactionDraft:
    """Earnings moved to the driver's connected account: the co-op owes that much less."""
    _positive(amount=amount)
    return TransactionDraft(
        idempotency_key=f"transfer:{_token('transfer_id', transfer_id)}:earnings:v1",
        kind=TransactionKind.driver_transfer,
        description=f"Earnings transferred to driver {driver_id}",
        postings=_postings(
            debit(owned_account(AccountKind.driver_payable, driver_id, amount.currency), amount),
            credit(stripe_balance(amount.currency), amount),
        ),
        reference=transfer_id,
    )


def tip(
    *, charge_id: str, ride_id: uuid.UUID, driver_id: uuid.UUID, amount: Money
) -> TransactionDraft:
    """A tip, charged on its own: all of it is owed to the driver."""
    _positive(amount=amount)
    return TransactionDraft(
        idempotency_key=f"charge:{_token('charge_id', charge_id)}:tip:v1",
        kind=TransactionKind.tip,
        description=f"Tip for ride {ride_id}",
        postings=_postings(
            debit(stripe_balance(amount.currency), amount),
            credit(owned_account(AccountKind.tips_payable, driver_id, amount.currency), amount),
        ),
        reference=charge_id,
    )


def tip_transfer(*, transfer_id: str, driver_id: uuid.UUID, amount: Money) -> TransactionDraft:
    _positive(amount=amount)
    return TransactionDraft(
        idempotency_key=f"transfer:{_token('transfer_id', transfer_id)}:tips:v1",
        kind=TransactionKind.tip_transfer,
        description=f"Tips transferred to driver {driver_id}",
        postings=_postings(
            debit(owned_account(AccountKind.tips_payable, driver_id, amount.currency), amount),
            credit(stripe_balance(amount.currency), amount),
        ),
        reference=transfer_id,
    )


def refund(
    *,
    refund_id: str,
    ride_id: uuid.UUID,
    driver_id: uuid.UUID,
    amount: Money,
    driver_share: Money,
    pass_through_share: Money,
    clawback: Clawback,
) -> TransactionDraft:
    """A full or partial refund of a fare. ``amount`` leaves the Stripe balance; of it,
    ``driver_share`` comes back from the driver as ``clawback`` says (or is absorbed by
    the co-op with ``Clawback.none``), ``pass_through_share`` is no longer owed to third
    parties, and the rest is the co-op's refunds (contra-revenue)."""
    _positive(amount=amount)
    _non_negative(driver_share=driver_share, pass_through_share=pass_through_share)
    kept = _minus(amount, driver_share, pass_through_share)
    if kept.amount < 0:
        raise LedgerDraftInvalid("the driver and pass-through shares exceed the refund")
    currency = amount.currency
    absorbed = kept + driver_share if clawback is Clawback.none else kept
    clawback_postings = {
        Clawback.none: (),
        Clawback.from_payable: (
            debit(owned_account(AccountKind.driver_payable, driver_id, currency), driver_share),
        ),
        Clawback.reverse_transfer: (debit(stripe_balance(currency), driver_share),),
        Clawback.receivable: (
            debit(owned_account(AccountKind.driver_receivable, driver_id, currency), driver_share),
        ),
    }[clawback]
    return TransactionDraft(
        idempotency_key=f"refund:{_token('refund_id', refund_id)}:v1",
        kind=TransactionKind.refund,
        description=f"Refund of {amount} on ride {ride_id} (driver share: {clawback.value})",
        postings=_postings(
            credit(stripe_balance(currency), amount),
            debit(shared_account(AccountKind.refunds, currency), absorbed),
            debit(shared_account(AccountKind.pass_through_payable, currency), pass_through_share),
            *clawback_postings,
        ),
        reference=refund_id,
    )


def dispute_opened(
    *, dispute_id: str, charge_id: str, amount: Money, fee: Money
) -> TransactionDraft:
    """Stripe withdraws the disputed amount (held until the dispute closes) and its
    dispute fee (an expense) from the balance."""
    _positive(amount=amount)
    _non_negative(fee=fee)
    currency = amount.currency
    return TransactionDraft(
        idempotency_key=f"dispute:{_token('dispute_id', dispute_id)}:opened:v1",
        kind=TransactionKind.dispute_opened,
        description=f"Dispute {dispute_id} opened on charge {_token('charge_id', charge_id)}",
        postings=_postings(
            debit(shared_account(AccountKind.disputes, currency), amount),
            debit(shared_account(AccountKind.stripe_fees, currency), fee),
            credit(stripe_balance(currency), amount + fee),
        ),
        reference=dispute_id,
    )


def dispute_closed(
    *, dispute_id: str, amount: Money, won: bool, fee_returned: Money
) -> TransactionDraft:
    """A dispute's end: won, the withheld amount (and any fee Stripe returns) comes back
    to the balance; lost, it is written off as a dispute loss. A dispute closes once."""
    _positive(amount=amount)
    _non_negative(fee_returned=fee_returned)
    if not won and not fee_returned.is_zero():
        raise LedgerDraftInvalid("Stripe returns no dispute fee on a lost dispute")
    currency = amount.currency
    held = shared_account(AccountKind.disputes, currency)
    if won:
        postings = _postings(
            debit(stripe_balance(currency), amount + fee_returned),
            credit(held, amount),
            credit(shared_account(AccountKind.stripe_fees, currency), fee_returned),
        )
    else:
        postings = _postings(
            debit(shared_account(AccountKind.dispute_losses, currency), amount),
            credit(held, amount),
        )
    return TransactionDraft(
        idempotency_key=f"dispute:{_token('dispute_id', dispute_id)}:closed:v1",
        kind=TransactionKind.dispute_won if won else TransactionKind.dispute_lost,
        description=f"Dispute {dispute_id} {'won' if won else 'lost'}",
        postings=postings,
        reference=dispute_id,
    )


def cancellation_fee(
    *,
    ride_id: uuid.UUID,
    charge_id: str,
    driver_id: uuid.UUID | None,
    driver_share: Money,
    coop_share: Money,
    no_show: bool,
) -> TransactionDraft:
    """A captured cancellation or no-show fee, shared between the driver who lost the
    time and the co-op. A ride is cancelled once, so both kinds share one key."""
    _non_negative(driver_share=driver_share, coop_share=coop_share)
    total = driver_share + coop_share
    _positive(fee=total)
    if driver_id is None and not driver_share.is_zero():
        raise LedgerDraftInvalid("a driver share needs a driver")
    currency = total.currency
    driver_posting = (
        ()
        if driver_id is None
        else (credit(owned_account(AccountKind.driver_payable, driver_id, currency), driver_share),)
    )
    what = "No-show" if no_show else "Cancellation"
    return TransactionDraft(
        idempotency_key=f"ride:{ride_id}:cancellation_fee:v1",
        kind=TransactionKind.no_show_fee if no_show else TransactionKind.cancellation_fee,
        description=f"{what} fee of ride {ride_id} captured",
        postings=_postings(
            debit(stripe_balance(currency), total),
            *driver_posting,
            credit(shared_account(AccountKind.cancellation_fee_revenue, currency), coop_share),
        ),
        reference=_token("charge_id", charge_id),
    )


def platform_payout(*, payout_id: str, amount: Money) -> TransactionDraft:
    """Stripe pays part of the platform balance out to the co-op's bank account."""
    _positive(amount=amount)
    return TransactionDraft(
        idempotency_key=f"payout:{_token('payout_id', payout_id)}:v1",
        kind=TransactionKind.platform_payout,
        description="Stripe balance paid out to the co-op's bank",
        postings=_postings(
            debit(shared_account(AccountKind.bank, amount.currency), amount),
            credit(stripe_balance(amount.currency), amount),
        ),
        reference=payout_id,
    )


def pass_through_remittance(*, remittance_id: str, amount: Money) -> TransactionDraft:
    """Collected zone surcharges paid from the bank to the third parties owed them."""
    _positive(amount=amount)
    return TransactionDraft(
        idempotency_key=f"remittance:{_token('remittance_id', remittance_id)}:v1",
        kind=TransactionKind.pass_through_remittance,
        description="Zone surcharges remitted to third parties",
        postings=_postings(
            debit(shared_account(AccountKind.pass_through_payable, amount.currency), amount),
            credit(shared_account(AccountKind.bank, amount.currency), amount),
        ),
        reference=remittance_id,
    )


def driver_debt_offset(*, offset_id: str, driver_id: uuid.UUID, amount: Money) -> TransactionDraft:
    """A driver's claw-back debt paid out of their later earnings, before any transfer."""
    _positive(amount=amount)
    currency = amount.currency
    return TransactionDraft(
        idempotency_key=f"driver:{driver_id}:debt_offset:{_token('offset_id', offset_id)}:v1",
        kind=TransactionKind.driver_debt_offset,
        description=f"Driver {driver_id}'s debt offset against earnings",
        postings=_postings(
            debit(owned_account(AccountKind.driver_payable, driver_id, currency), amount),
            credit(owned_account(AccountKind.driver_receivable, driver_id, currency), amount),
        ),
        reference=offset_id,
    )


def dividend_allocation(
    *, year: int, member_id: uuid.UUID, cash: Money, capital: Money
) -> TransactionDraft:
    """A member's patronage dividend for ``year``: ``cash`` becomes payable to them and
    ``capital`` is credited to their capital account. At least
    ``MIN_DIVIDEND_CASH_SHARE`` of the whole must be cash."""
    _non_negative(cash=cash, capital=capital)
    total = cash + capital
    _positive(dividend=total)
    if Decimal(cash.amount) < MIN_DIVIDEND_CASH_SHARE * total.amount:
        raise DividendCashShareTooLow(
            f"{cash} of {total} is less than {MIN_DIVIDEND_CASH_SHARE:%} in cash"
        )
    if not 2000 <= year <= 9999:
        raise LedgerDraftInvalid("a dividend year is a four-digit year")
    currency = total.currency
    return TransactionDraft(
        idempotency_key=f"dividend:{year}:member:{member_id}:allocation:v1",
        kind=TransactionKind.dividend_allocation,
        description=f"Patronage dividend {year} for member {member_id}",
        postings=_postings(
            debit(shared_account(AccountKind.patronage_dividends, currency), total),
            credit(owned_account(AccountKind.dividends_payable, member_id, currency), cash),
            credit(owned_account(AccountKind.member_capital, member_id, currency), capital),
        ),
        reference=str(year),
    )


def dividend_payment(*, payment_id: str, member_id: uuid.UUID, amount: Money) -> TransactionDraft:
    """The cash part of a member's dividend paid from the co-op's bank."""
    _positive(amount=amount)
    currency = amount.currency
    return TransactionDraft(
        idempotency_key=f"dividend_payment:{_token('payment_id', payment_id)}:v1",
        kind=TransactionKind.dividend_payment,
        description=f"Dividend paid to member {member_id}",
        postings=_postings(
            debit(owned_account(AccountKind.dividends_payable, member_id, currency), amount),
            credit(shared_account(AccountKind.bank, currency), amount),
        ),
        reference=payment_id,
    )


def _fare_total(**shares: Money) -> Money:
    _non_negative(**shares)
    total = _sum(shares.values())
    _positive(fare=total)
    return total


def _fare_credits(
    driver_id: uuid.UUID,
    driver: Money,
    commission: Money,
    reserve: Money,
    booking_fee: Money,
    pass_through: Money,
) -> tuple[Posting, ...]:
    currency = driver.currency
    return (
        credit(owned_account(AccountKind.driver_payable, driver_id, currency), driver),
        credit(shared_account(AccountKind.coop_commission_revenue, currency), commission),
        credit(shared_account(AccountKind.reserve, currency), reserve),
        credit(shared_account(AccountKind.booking_fee_revenue, currency), booking_fee),
        credit(shared_account(AccountKind.pass_through_payable, currency), pass_through),
    )


def _postings(*postings: Posting) -> tuple[Posting, ...]:
    return tuple(p for p in postings if p.amount != 0)


def _sum(parts: Iterable[Money]) -> Money:
    parts = list(parts)
    try:
        return sum(parts[1:], parts[0])
    except CurrencyMismatch as exc:
        raise LedgerDraftInvalid(str(exc)) from exc


def _minus(whole: Money, *parts: Money) -> Money:
    try:
        for part in parts:
            whole = whole - part
    except CurrencyMismatch as exc:
        raise LedgerDraftInvalid(str(exc)) from exc
    return whole


def _same_currency(currency: str, money: Money) -> None:
    if money.currency != currency:
        raise LedgerDraftInvalid(f"{money} posted to a {currency} account")


def _positive(**amounts: Money) -> None:
    for name, money in amounts.items():
        if money.amount <= 0:
            raise LedgerDraftInvalid(f"{name} must be positive, not {money}")


def _non_negative(**amounts: Money) -> None:
    for name, money in amounts.items():
        if money.amount < 0:
            raise LedgerDraftInvalid(f"{name} must not be negative, not {money}")


def _token(name: str, value: str) -> str:
    # Provider ids go into idempotency keys; a colon or blank would make keys ambiguous.
    if not value or len(value) > 100 or ":" in value or any(c.isspace() for c in value):
        raise LedgerDraftInvalid(f"{name} must be 1-100 characters without ':' or blanks")
    return value
