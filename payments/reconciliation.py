"""Reconciliation: the ledger's Stripe balance against Stripe's own balance transactions.

Every Stripe-backed ledger transaction carries the Stripe id of what moved the money as
its ``reference``; Stripe's balance transaction names the same object as its ``source``.
Both sides are summed per *movement* (the Stripe object and what it did) and compared:

==================  =====================================  ================================
movement            Stripe balance transaction (type)       ledger transaction (kind)
==================  =====================================  ================================
charge              charge, payment: ``amount`` (gross)     ride_settlement, tip,
                                                            cancellation_fee, no_show_fee,
                                                            rider_debt_payment
stripe_fee          the charge's ``fee``                    stripe_fee
refund              refund, payment_refund: ``net``         refund (its money out)
transfer_reversal   transfer_refund: ``net``                refund (the driver's share back)
transfer            transfer: ``net``                       driver_transfer, tip_transfer
payout              payout: ``net``                         platform_payout
dispute             adjustment (dispute): ``net``           dispute_opened
dispute_reversal    adjustment (dispute_reversal): ``net``  dispute_won
==================  =====================================  ================================

Amounts are signed as they move the Stripe balance (in +, out -): Stripe's as it gives
them, the ledger's as its postings on ``stripe_balance``. A dispute's fee is in its net
and in the ledger's dispute posting alike.

Stripe's fees reach the ledger here, and only here: for each charge of the period that
the ledger knows, the fee Stripe took is booked with ``ledger.stripe_fee`` (keyed by the
charge, so a second run books nothing). A charge the ledger does not know gets no fee
until it is recorded and the period is run again.

A transfer reversal is the one movement the ledger cannot name: the refund that caused
it is recorded under the refund's id, and Stripe's reversal id is kept nowhere. Reversals
are therefore paired by currency and amount, earliest with earliest; an unpaired one on
either side is reported (a wrong amount shows as one missing on each side).

Reported differences:

- ``missing_in_ledger``: a Stripe balance transaction created in the period whose
  movement the ledger has not recorded (at any time);
- ``missing_at_stripe``: a ledger movement on ``stripe_balance`` recorded in the period
  with no Stripe balance transaction for it (Stripe is searched from ``LOOKBEHIND``
  before the period, since the ledger records a movement after Stripe made it);
- ``amount_mismatch``: both sides know the movement, with different amounts.

Fee transactions are not checked for ``missing_at_stripe`` on their own: they are booked
from Stripe's data, and their charge is checked with its fee.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from infra.clock import Clock
from infra.db import transaction
from infra.logging import get_logger
from payments import ledger
from payments.errors import LedgerDraftInvalid, LedgerIdempotencyConflict
from payments.ledger import TransactionKind
from payments.ledger_service import LedgerService
from payments.models import ReconciliationRun
from payments.money import Money
from payments.repository import ReconciliationRepository, StripeBalanceMovement
from payments.schemas import (
    BookedFee,
    DifferenceKind,
    MovementKind,
    ReconciliationDifference,
    ReconciliationReport,
    ReconciliationRunRead,
)
from payments.statements import check_period
from payments.stripe_gateway import MAX_PAGE_SIZE, StripeBalanceTransaction

log = get_logger(__name__)

# How long before the period a Stripe movement may be that the ledger records in it
# (retries back off up to an hour; webhooks may come later still).
LOOKBEHIND = timedelta(days=1)
# Clocks differ: Stripe may stamp a movement a little after we record it.
LOOKAHEAD = timedelta(minutes=10)
MAX_RUN_DAYS = 31
# The daily run waits this long after midnight UTC, so the day's last movements are
# recorded before it looks.
SETTLE_DELAY = timedelta(hours=1)

CHARGE_TYPES = frozenset({"charge", "payment"})

_LEDGER_MOVEMENTS: Mapping[TransactionKind, MovementKind] = MappingProxyType(
    {
        TransactionKind.ride_settlement: "charge",
        TransactionKind.tip: "charge",
        TransactionKind.cancellation_fee: "charge",
        TransactionKind.no_show_fee: "charge",
        TransactionKind.rider_debt_payment: "charge",
        TransactionKind.stripe_fee: "stripe_fee",
        TransactionKind.refund: "refund",
        TransactionKind.driver_transfer: "transfer",
        TransactionKind.tip_transfer: "transfer",
        TransactionKind.platform_payout: "payout",
        TransactionKind.dispute_opened: "dispute",
        TransactionKind.dispute_won: "dispute_reversal",
    }
)

_STRIPE_MOVEMENTS: Mapping[str, MovementKind] = MappingProxyType(
    {
        "charge": "charge",
        "payment": "charge",
        "refund": "refund",
        "payment_refund": "refund",
        "transfer": "transfer",
        "transfer_refund": "transfer_reversal",
        "payout": "payout",
    }
)
_DISPUTE_CATEGORIES: Mapping[str, MovementKind] = MappingProxyType(
    {"dispute": "dispute", "dispute_reversal": "dispute_reversal"}
)


class BalanceTransactions(Protocol):
    """The part of ``GatewayProtocol`` reconciliation uses."""

    def list_balance_transactions(
        self,
        *,
        created_from: datetime | None = None,
        created_before: datetime | None = None,
        page_size: int = MAX_PAGE_SIZE,
    ) -> AsyncIterator[StripeBalanceTransaction]: ...


@dataclass(frozen=True, slots=True, order=True)
class Movement:
    """One Stripe object's effect on the balance: what it is, its id, its currency."""

    kind: MovementKind
    reference: str
    currency: str


@dataclass(slots=True)
class Side:
    """One side's sum for a movement, with what it was summed from."""

    amount: int = 0
    ids: list[str] = field(default_factory=list)
    at: datetime | None = None
    stripe_type: str | None = None

    def add(self, amount: int, source_id: str, at: datetime) -> None:
        self.amount += amount
        if source_id not in self.ids:
            self.ids.append(source_id)
        self.at = at if self.at is None else min(self.at, at)


def stripe_movement(entry: StripeBalanceTransaction) -> Movement:
    """The movement a Stripe balance transaction belongs to; ``other`` (named by its own
    id if it has no source) for a type the ledger never records."""
    kind = _STRIPE_MOVEMENTS.get(entry.type)
    if kind is None and entry.type == "adjustment":
        kind = _DISPUTE_CATEGORIES.get(entry.reporting_category or "")
    return Movement(kind or "other", entry.source_id or entry.id, entry.amount.currency)


def ledger_movement(row: StripeBalanceMovement) -> Movement:
    """The movement a ledger posting on ``stripe_balance`` belongs to: by its
    transaction's kind, except that money coming back in a refund is a transfer
    reversal."""
    kind = TransactionKind(row.kind)
    if kind is TransactionKind.refund and row.amount > 0:
        return Movement("transfer_reversal", row.reference or str(row.transaction_id), row.currency)
    return Movement(
        _LEDGER_MOVEMENTS.get(kind, "other"), row.reference or str(row.transaction_id), row.currency
    )


def stripe_sides(entries: Iterable[StripeBalanceTransaction]) -> dict[Movement, Side]:
    """Stripe's signed amount per movement: a charge's gross ``amount`` and, apart, minus
    its ``fee``; every other transaction's ``net``."""
    sides: dict[Movement, Side] = defaultdict(Side)
    for entry in entries:
        movement = stripe_movement(entry)
        side = sides[movement]
        side.stripe_type = entry.type
        if movement.kind == "charge":
            side.add(entry.amount.amount, entry.id, entry.created_at)
            if entry.fee.amount:
                fee = Movement("stripe_fee", movement.reference, movement.currency)
                sides[fee].stripe_type = entry.type
                sides[fee].add(-entry.fee.amount, entry.id, entry.created_at)
        else:
            side.add(entry.net.amount, entry.id, entry.created_at)
    return dict(sides)


def ledger_sides(rows: Iterable[StripeBalanceMovement]) -> dict[Movement, Side]:
    sides: dict[Movement, Side] = defaultdict(Side)
    for row in rows:
        sides[ledger_movement(row)].add(row.amount, str(row.transaction_id), row.recorded_at)
    return dict(sides)


def compare(
    period_from: datetime,
    period_to: datetime,
    stripe_entries: Sequence[StripeBalanceTransaction],
    referenced: Sequence[StripeBalanceMovement],
    recorded: Sequence[StripeBalanceMovement],
) -> list[ReconciliationDifference]:
    """Every difference between Stripe and the ledger for [period_from, period_to).

    ``stripe_entries``: Stripe's balance transactions from ``LOOKBEHIND`` before the
    period to ``LOOKAHEAD`` after it; ``referenced``: the ledger's stripe_balance
    postings whose transactions reference a source of the period's Stripe entries,
    whenever recorded; ``recorded``: the ledger's stripe_balance postings recorded from
    ``LOOKBEHIND`` before the period to ``LOOKBEHIND`` after it. See the module
    docstring for what is reported; the result is ordered by time.
    """

    def in_period(moment: datetime) -> bool:
        return period_from <= moment < period_to

    differences: list[ReconciliationDifference] = []
    is_reversal = _is_reversal
    stripe = stripe_sides(e for e in stripe_entries if not is_reversal(stripe_movement(e)))
    known = ledger_sides(r for r in referenced if not is_reversal(ledger_movement(r)))
    checked = sorted(
        {
            stripe_movement(e)
            for e in stripe_entries
            if in_period(e.created_at) and not is_reversal(stripe_movement(e))
        }
    )
    for movement in checked:
        ours = known.get(movement)
        if ours is None:
            differences.append(_difference("missing_in_ledger", movement, stripe[movement], None))
            continue
        if ours.amount != stripe[movement].amount:
            differences.append(_difference("amount_mismatch", movement, stripe[movement], ours))
        if movement.kind == "charge":
            fee = Movement("stripe_fee", movement.reference, movement.currency)
            theirs, booked = stripe.get(fee, Side()), known.get(fee, Side())
            if theirs.amount != booked.amount:
                differences.append(_difference("amount_mismatch", fee, theirs, booked))

    recorded_in_period = ledger_sides(
        r
        for r in recorded
        if in_period(r.recorded_at)
        and r.kind != TransactionKind.stripe_fee
        and not is_reversal(ledger_movement(r))
    )
    for movement, ours in sorted(recorded_in_period.items()):
        if movement not in stripe:
            differences.append(_difference("missing_at_stripe", movement, None, ours))

    differences.extend(
        _unpaired_reversals(
            [e for e in stripe_entries if is_reversal(stripe_movement(e))],
            [r for r in recorded if is_reversal(ledger_movement(r))],
            in_period,
        )
    )
    return sorted(differences, key=lambda d: (d.at, d.movement, d.reference, d.kind))


def _is_reversal(movement: Movement) -> bool:
    return movement.kind == "transfer_reversal"


@dataclass(slots=True)
class _Pairs:
    stripe: list[StripeBalanceTransaction] = field(default_factory=list)
    ledger: list[StripeBalanceMovement] = field(default_factory=list)


def _unpaired_reversals(
    stripe_entries: Sequence[StripeBalanceTransaction],
    rows: Sequence[StripeBalanceMovement],
    in_period: Callable[[datetime], bool],
) -> list[ReconciliationDifference]:
    by_amount: defaultdict[tuple[str, int], _Pairs] = defaultdict(_Pairs)
    for entry in stripe_entries:
        by_amount[(entry.net.currency, entry.net.amount)].stripe.append(entry)
    for row in rows:
        by_amount[(row.currency, row.amount)].ledger.append(row)
    differences = []
    for pairs in by_amount.values():
        theirs, ours = pairs.stripe, pairs.ledger
        theirs.sort(key=lambda e: (e.created_at, e.id))
        ours.sort(key=lambda r: (r.recorded_at, str(r.transaction_id)))
        paired = min(len(theirs), len(ours))
        for entry in theirs[paired:]:
            if in_period(entry.created_at):
                movement = stripe_movement(entry)
                side = stripe_sides([entry])[movement]
                differences.append(_difference("missing_in_ledger", movement, side, None))
        for row in ours[paired:]:
            if in_period(row.recorded_at):
                movement = ledger_movement(row)
                differences.append(
                    _difference("missing_at_stripe", movement, None, ledger_sides([row])[movement])
                )
    return differences


def _difference(
    kind: DifferenceKind, movement: Movement, stripe: Side | None, ours: Side | None
) -> ReconciliationDifference:
    at = (stripe.at if stripe else None) or (ours.at if ours else None)
    assert at is not None  # every side summed at least one entry, or is a fee's zero
    return ReconciliationDifference(
        kind=kind,
        movement=movement.kind,
        reference=movement.reference,
        currency=movement.currency,
        stripe_amount=stripe.amount if stripe is not None else None,
        ledger_amount=ours.amount if ours is not None else None,
        stripe_type=stripe.stripe_type if stripe is not None else None,
        balance_transaction_ids=list(stripe.ids) if stripe is not None else [],
        ledger_transaction_ids=[uuid.UUID(i) for i in ours.ids] if ours is not None else [],
        at=at,
    )


class Reconciler:
    def __init__(self, session: AsyncSession, gateway: BalanceTransactions, clock: Clock) -> None:
        self.session = session
        self.repository = ReconciliationRepository(session)
        self.ledger = LedgerService(session, clock)
        self.gateway = gateway
        self.clock = clock

    async def run(self, period_from: datetime, period_to: datetime) -> ReconciliationReport:
        """Compares Stripe's balance transactions created in [period_from, period_to)
        with the ledger, books the Stripe fees the ledger lacks, and stores the run with
        every difference. Flushes, never commits. Raises ``ReportPeriodInvalid`` for a
        period that is empty, naive or longer than ``MAX_RUN_DAYS``."""
        check_period(period_from, period_to, MAX_RUN_DAYS)
        started_at = self.clock.now()
        entries = [
            entry
            async for entry in self.gateway.list_balance_transactions(
                created_from=period_from - LOOKBEHIND, created_before=period_to + LOOKAHEAD
            )
        ]
        in_period = [e for e in entries if period_from <= e.created_at < period_to]
        references = sorted({stripe_movement(e).reference for e in in_period})
        referenced = await self.repository.movements_referencing(references)
        booked = await self._book_fees(in_period, referenced)
        referenced = [*referenced, *booked.values()]
        recorded = await self.repository.movements_recorded(
            period_from - LOOKBEHIND, period_to + LOOKBEHIND
        )
        differences = compare(period_from, period_to, entries, referenced, recorded)
        run = await self.repository.add_run(
            ReconciliationRun(
                period_from=period_from,
                period_to=period_to,
                started_at=started_at,
                finished_at=self.clock.now(),
                checked=len(in_period),
                differences=[d.model_dump(mode="json") for d in differences],
            )
        )
        return ReconciliationReport(
            **ReconciliationRunRead.model_validate(run).model_dump(),
            fees_booked=[
                BookedFee(charge_id=charge_id, amount=-row.amount, currency=row.currency)
                for charge_id, row in booked.items()
            ],
        )

    async def _book_fees(
        self,
        entries: Sequence[StripeBalanceTransaction],
        referenced: Sequence[StripeBalanceMovement],
    ) -> dict[str, StripeBalanceMovement]:
        """Books the fee of every charge among ``entries`` that the ledger knows; returns
        the postings it added, by charge."""
        known = ledger_sides(referenced)
        booked: dict[str, StripeBalanceMovement] = {}
        for movement, side in sorted(stripe_sides(entries).items()):
            charge = Movement("charge", movement.reference, movement.currency)
            if movement.kind != "stripe_fee" or charge not in known or side.amount >= 0:
                continue
            try:
                recorded = await self.ledger.record(
                    ledger.stripe_fee(
                        charge_id=movement.reference,
                        fee=Money(-side.amount, movement.currency),
                    )
                )
            except (LedgerIdempotencyConflict, LedgerDraftInvalid):
                # Another fee is booked for this charge: compare() reports the mismatch.
                continue
            if recorded.created:
                booked[movement.reference] = StripeBalanceMovement(
                    transaction_id=recorded.id,
                    kind=TransactionKind.stripe_fee.value,
                    reference=movement.reference,
                    recorded_at=recorded.recorded_at,
                    currency=movement.currency,
                    amount=side.amount,
                )
        return booked


class ReconciliationRuns:
    def __init__(self, session: AsyncSession) -> None:
        self.repository = ReconciliationRepository(session)

    async def latest(self, limit: int) -> list[ReconciliationRunRead]:
        return [
            ReconciliationRunRead.model_validate(run)
            for run in await self.repository.latest_runs(limit)
        ]


async def run_reconciliation(
    sessionmaker: async_sessionmaker[AsyncSession],
    gateway: BalanceTransactions,
    clock: Clock,
    now: datetime,
) -> None:
    """The worker's daily job: reconciles the last whole UTC day that ended at least
    ``SETTLE_DELAY`` before ``now``, once. Runs of one day are serialised, and a day that
    already has a finished run is not run again (run it again by hand, as an admin, to
    see whether differences were resolved)."""
    day_end = (
        (now - SETTLE_DELAY).astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    )
    period_from = day_end - timedelta(days=1)
    async with transaction(sessionmaker) as session:
        repository = ReconciliationRepository(session)
        await repository.lock_period(period_from, day_end)
        if await repository.finished_run(period_from, day_end) is not None:
            return
        report = await Reconciler(session, gateway, clock).run(period_from, day_end)
    event = "reconciliation_differences" if report.differences else "reconciliation_clean"
    (log.warning if report.differences else log.info)(
        event,
        period_from=period_from.isoformat(),
        checked=report.checked,
        differences=len(report.differences),
        fees_booked=len(report.fees_booked),
    )
