"""Reconciliation of the ledger with Stripe's balance transactions.

Stripe is a fake at the process boundary here: the loopback fakes take no fees, and fees
are what reconciliation books, so most tests list balance transactions they build.
The last test runs against localstripe through the real SDK.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import cast

import pytest
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from infra.clock import FrozenClock, SystemClock
from infra.settings import Settings
from payments import ledger
from payments.errors import PaymentProviderUnavailable, ReportPeriodInvalid
from payments.ledger import AccountKind, Clawback
from payments.ledger_service import LedgerService
from payments.money import Money
from payments.reconciliation import (
    Reconciler,
    ReconciliationRuns,
    run_reconciliation,
)
from payments.schemas import ReconciliationDifference
from payments.service import PaymentService
from payments.stripe_gateway import (
    MAX_PAGE_SIZE,
    GatewayProtocol,
    StripeBalanceTransaction,
    StripeGateway,
)
from payments.tasks import PaymentTasks
from tests.payments.test_statements import (
    LONG,
    MONDAY,
    SHORT,
    Facts,
    Ride,
    priced,
    stripe_id,
    usd,
)
from tests.payments.test_stripe_gateway import authorize, key, new_rider, onboarded_driver

DAY = (datetime(2026, 3, 2, tzinfo=UTC), datetime(2026, 3, 3, tzinfo=UTC))
_txn = itertools.count(1)


class FakeStripeBalance:
    """Stripe's list of balance transactions, newest first, as the gateway pages it."""

    def __init__(self) -> None:
        self.entries: list[StripeBalanceTransaction] = []
        self.listed = 0
        self.down = False

    def add(
        self,
        type: str,
        source_id: str,
        amount: int,
        at: datetime,
        *,
        fee: int = 0,
        category: str | None = None,
    ) -> StripeBalanceTransaction:
        entry = StripeBalanceTransaction(
            id=f"txn_{next(_txn):08d}",
            type=type,
            amount=usd(amount),
            fee=usd(fee),
            net=usd(amount - fee),
            source_id=source_id,
            status="available",
            reporting_category=category or type,
            created_at=at,
            available_at=at + timedelta(days=2),
        )
        self.entries.append(entry)
        return entry

    async def list_balance_transactions(
        self,
        *,
        created_from: datetime | None = None,
        created_before: datetime | None = None,
        page_size: int = MAX_PAGE_SIZE,
    ) -> AsyncIterator[StripeBalanceTransaction]:
        self.listed += 1
        if self.down:
            raise PaymentProviderUnavailable("Stripe could not be reached")
        for entry in sorted(self.entries, key=lambda e: (e.created_at, e.id), reverse=True):
            if created_from is not None and entry.created_at < created_from:
                continue
            if created_before is not None and entry.created_at >= created_before:
                continue
            yield entry


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(MONDAY)


@pytest.fixture
def facts(session: AsyncSession, clock: FrozenClock, settings: Settings) -> Facts:
    return Facts(session, clock, settings)


@pytest.fixture
def stripe() -> FakeStripeBalance:
    return FakeStripeBalance()


@pytest.fixture
def reconciler(session: AsyncSession, stripe: FakeStripeBalance, clock: FrozenClock) -> Reconciler:
    return Reconciler(session, stripe, clock)


async def paid_ride(
    facts: Facts, stripe: FakeStripeBalance, at: datetime = MONDAY, fee: int = 113
) -> Ride:
    """A LONG ride captured at ``at`` + 10 min, in the ledger and at Stripe alike."""
    ride = await facts.ride(await facts.rider(), await facts.driver(), at, LONG)
    stripe.add("charge", ride.charge_id, 2_850, at + timedelta(minutes=10), fee=fee)
    return ride


def kinds(differences: list[ReconciliationDifference]) -> list[tuple[str, str, str]]:
    return [(d.kind, d.movement, d.reference) for d in differences]


async def stripe_fees(session: AsyncSession, clock: FrozenClock) -> Money:
    return await LedgerService(session, clock).balance(
        ledger.shared_account(AccountKind.stripe_fees, "USD")
    )


# Matching.


async def test_a_period_where_both_sides_agree_reports_nothing(
    facts: Facts, stripe: FakeStripeBalance, reconciler: Reconciler, clock: FrozenClock
) -> None:
    ride = await paid_ride(facts, stripe)
    clock.set(MONDAY + timedelta(minutes=20))
    tip_charge = await facts.tip(ride, 300)
    stripe.add("charge", tip_charge, 300, clock.now(), fee=39)
    clock.set(MONDAY + timedelta(hours=1))
    transfer_id = await facts.transfer(ride, 1_760)
    stripe.add("transfer", transfer_id, -1_760, clock.now())
    clock.set(MONDAY + timedelta(hours=2))
    # Of 500: the driver's 309 comes back by reversing the transfer.
    refund_id = await facts.refund(ride, 500, Clawback.reverse_transfer)
    stripe.add("refund", refund_id, -500, clock.now() - timedelta(seconds=2))
    stripe.add("transfer_refund", stripe_id("trr"), 309, clock.now() - timedelta(seconds=1))
    clock.set(MONDAY + timedelta(hours=3))
    await facts.ledger.record(ledger.platform_payout(payout_id="po_coop1", amount=usd(1_000)))
    stripe.add("payout", "po_coop1", -1_000, clock.now())
    clock.set(MONDAY + timedelta(hours=4))
    await facts.ledger.record(
        ledger.dispute_opened(
            dispute_id="du_test1", charge_id=ride.charge_id, amount=usd(2_850), fee=usd(1_500)
        )
    )
    stripe.add("adjustment", "du_test1", -2_850, clock.now(), fee=1_500, category="dispute")
    clock.set(MONDAY + timedelta(days=1, hours=3))

    report = await reconciler.run(*DAY)

    assert report.differences == []
    assert report.checked == 7
    assert {(f.charge_id, f.amount) for f in report.fees_booked} == {
        (ride.charge_id, 113),
        (tip_charge, 39),
    }


async def test_a_stripe_charge_the_ledger_lacks_is_missing_in_ledger(
    stripe: FakeStripeBalance, reconciler: Reconciler, session: AsyncSession, clock: FrozenClock
) -> None:
    entry = stripe.add("charge", "ch_unknown1", 1_000, MONDAY, fee=59)

    report = await reconciler.run(*DAY)

    [difference] = report.differences
    assert (difference.kind, difference.movement, difference.reference) == (
        "missing_in_ledger",
        "charge",
        "ch_unknown1",
    )
    assert (difference.stripe_amount, difference.ledger_amount) == (1_000, None)
    assert difference.balance_transaction_ids == [entry.id]
    assert difference.at == MONDAY
    # No fee is booked for a charge the ledger does not know.
    assert report.fees_booked == []
    assert await stripe_fees(session, clock) == usd(0)


async def test_a_ledger_movement_stripe_lacks_is_missing_at_stripe(
    facts: Facts, reconciler: Reconciler
) -> None:
    ride = await facts.ride(await facts.rider(), await facts.driver(), MONDAY)

    report = await reconciler.run(*DAY)

    [difference] = report.differences
    assert kinds(report.differences) == [("missing_at_stripe", "charge", ride.charge_id)]
    assert (difference.stripe_amount, difference.ledger_amount) == (None, 2_850)
    assert difference.at == MONDAY + timedelta(minutes=10)
    assert len(difference.ledger_transaction_ids) == 1


async def test_different_amounts_are_an_amount_mismatch(
    facts: Facts, stripe: FakeStripeBalance, reconciler: Reconciler, clock: FrozenClock
) -> None:
    ride = await paid_ride(facts, stripe)
    clock.set(MONDAY + timedelta(hours=1))
    transfer_id = await facts.transfer(ride, 1_760)
    stripe.add("transfer", transfer_id, -1_700, clock.now())

    report = await reconciler.run(*DAY)

    [difference] = report.differences
    assert kinds(report.differences) == [("amount_mismatch", "transfer", transfer_id)]
    assert (difference.stripe_amount, difference.ledger_amount) == (-1_700, -1_760)


async def test_a_disputes_fee_is_part_of_what_is_compared(
    facts: Facts, stripe: FakeStripeBalance, reconciler: Reconciler
) -> None:
    ride = await paid_ride(facts, stripe)
    await facts.ledger.record(
        ledger.dispute_opened(
            dispute_id="du_test2", charge_id=ride.charge_id, amount=usd(2_850), fee=usd(0)
        )
    )
    stripe.add("adjustment", "du_test2", -2_850, MONDAY, fee=1_500, category="dispute")

    report = await reconciler.run(*DAY)

    assert kinds(report.differences) == [("amount_mismatch", "dispute", "du_test2")]


# Stripe's fees.


async def test_fees_are_booked_once_however_often_the_period_is_run(
    facts: Facts,
    stripe: FakeStripeBalance,
    reconciler: Reconciler,
    session: AsyncSession,
    clock: FrozenClock,
) -> None:
    ride = await paid_ride(facts, stripe, fee=113)

    first = await reconciler.run(*DAY)
    second = await reconciler.run(*DAY)

    assert [(f.charge_id, f.amount, f.currency) for f in first.fees_booked] == [
        (ride.charge_id, 113, "USD")
    ]
    assert second.fees_booked == []
    assert (first.differences, second.differences) == ([], [])
    assert await stripe_fees(session, clock) == usd(113)


async def test_a_fee_booked_with_another_amount_is_an_amount_mismatch(
    facts: Facts, stripe: FakeStripeBalance, reconciler: Reconciler
) -> None:
    ride = await paid_ride(facts, stripe, fee=113)
    await facts.fee(ride.charge_id, 100)

    report = await reconciler.run(*DAY)

    [difference] = report.differences
    assert kinds(report.differences) == [("amount_mismatch", "stripe_fee", ride.charge_id)]
    assert (difference.stripe_amount, difference.ledger_amount) == (-113, -100)
    assert report.fees_booked == []


async def test_a_fee_in_the_ledger_that_stripe_did_not_take_is_an_amount_mismatch(
    facts: Facts, stripe: FakeStripeBalance, reconciler: Reconciler
) -> None:
    ride = await paid_ride(facts, stripe, fee=0)
    await facts.fee(ride.charge_id, 100)

    report = await reconciler.run(*DAY)

    assert kinds(report.differences) == [("amount_mismatch", "stripe_fee", ride.charge_id)]


# Transfer reversals (paired by amount: the ledger keeps no reversal id).


async def test_a_stripe_reversal_without_its_refund_in_the_ledger_is_missing_in_ledger(
    stripe: FakeStripeBalance, reconciler: Reconciler
) -> None:
    reversal_id = stripe_id("trr")
    stripe.add("transfer_refund", reversal_id, 309, MONDAY)

    report = await reconciler.run(*DAY)

    assert kinds(report.differences) == [("missing_in_ledger", "transfer_reversal", reversal_id)]


async def test_a_reversal_in_the_ledger_that_stripe_did_not_make_is_missing_at_stripe(
    facts: Facts, stripe: FakeStripeBalance, reconciler: Reconciler, clock: FrozenClock
) -> None:
    ride = await paid_ride(facts, stripe)
    clock.set(MONDAY + timedelta(hours=1))
    stripe.add("transfer", await facts.transfer(ride, 1_760), -1_760, clock.now())
    refund_id = await facts.refund(ride, 500, Clawback.reverse_transfer)
    stripe.add("refund", refund_id, -500, clock.now())

    report = await reconciler.run(*DAY)

    [difference] = report.differences
    assert kinds(report.differences) == [("missing_at_stripe", "transfer_reversal", refund_id)]
    assert difference.ledger_amount == 309


# Periods.


async def test_stripe_entries_of_other_periods_are_not_checked(
    stripe: FakeStripeBalance, reconciler: Reconciler
) -> None:
    stripe.add("charge", "ch_tuesday1", 1_000, DAY[1] + timedelta(minutes=1))
    stripe.add("charge", "ch_sunday1", 1_000, DAY[0] - timedelta(minutes=1))

    report = await reconciler.run(*DAY)

    assert (report.checked, report.differences) == (0, [])


async def test_a_movement_recorded_just_after_stripe_made_it_across_midnight_matches(
    facts: Facts, stripe: FakeStripeBalance, session: AsyncSession, clock: FrozenClock
) -> None:
    # Captured at Stripe at 23:59:50 on Sunday, recorded at 00:00:20 on Monday.
    ride = await facts.ride(
        await facts.rider(), await facts.driver(), DAY[0] - timedelta(minutes=9, seconds=40)
    )
    stripe.add("charge", ride.charge_id, 2_850, DAY[0] - timedelta(seconds=10), fee=113)
    reconciler = Reconciler(session, stripe, clock)

    sunday = await reconciler.run(DAY[0] - timedelta(days=1), DAY[0])
    monday = await reconciler.run(*DAY)

    assert (sunday.checked, sunday.differences) == (1, [])
    assert (monday.checked, monday.differences) == (0, [])


async def test_a_period_longer_than_a_month_is_refused(reconciler: Reconciler) -> None:
    with pytest.raises(ReportPeriodInvalid):
        await reconciler.run(DAY[0] - timedelta(days=40), DAY[1])


# Runs.


async def test_a_run_is_stored_with_its_differences(
    stripe: FakeStripeBalance, reconciler: Reconciler, session: AsyncSession
) -> None:
    stripe.add("charge", "ch_unknown2", 1_000, MONDAY)

    report = await reconciler.run(*DAY)
    [stored] = await ReconciliationRuns(session).latest(10)

    assert stored.id == report.id
    assert (stored.period_from, stored.period_to, stored.checked) == (*DAY, 1)
    assert stored.differences == report.differences
    assert stored.finished_at is not None


async def test_the_daily_job_reconciles_the_previous_utc_day_once(
    sessionmaker: async_sessionmaker[AsyncSession],
    session: AsyncSession,
    stripe: FakeStripeBalance,
    clock: FrozenClock,
) -> None:
    stripe.add("charge", "ch_unknown3", 1_000, MONDAY)
    tuesday = DAY[1] + timedelta(hours=3)

    await run_reconciliation(sessionmaker, stripe, clock, tuesday)
    await run_reconciliation(sessionmaker, stripe, clock, tuesday + timedelta(hours=1))

    [run] = await ReconciliationRuns(session).latest(10)
    assert (run.period_from, run.period_to) == DAY
    assert kinds(run.differences) == [("missing_in_ledger", "charge", "ch_unknown3")]
    assert stripe.listed == 1


async def test_the_daily_job_waits_an_hour_after_midnight_for_the_day_to_settle(
    sessionmaker: async_sessionmaker[AsyncSession],
    session: AsyncSession,
    stripe: FakeStripeBalance,
    clock: FrozenClock,
) -> None:
    await run_reconciliation(sessionmaker, stripe, clock, DAY[1] + timedelta(minutes=30))

    [run] = await ReconciliationRuns(session).latest(10)
    assert (run.period_from, run.period_to) == (DAY[0] - timedelta(days=1), DAY[0])


async def test_the_hourly_job_waits_out_a_stripe_outage_and_runs_the_next_hour(
    sessionmaker: async_sessionmaker[AsyncSession],
    session: AsyncSession,
    stripe: FakeStripeBalance,
    clock: FrozenClock,
    redis_client: Redis,
) -> None:
    tasks = PaymentTasks(sessionmaker, cast(GatewayProtocol, stripe), redis_client, clock)
    stripe.add("charge", "ch_unknown4", 1_000, MONDAY)
    tuesday = DAY[1] + timedelta(hours=3)
    stripe.down = True

    await tasks.reconcile(tuesday)  # deferred, not raised

    assert await ReconciliationRuns(session).latest(10) == []
    stripe.down = False
    await tasks.reconcile(tuesday + timedelta(hours=1))
    [run] = await ReconciliationRuns(session).latest(10)
    assert kinds(run.differences) == [("missing_in_ledger", "charge", "ch_unknown4")]


# Against localstripe, through the real SDK.


@pytest.mark.slow
async def test_a_ride_paid_through_stripe_reconciles_with_its_balance_transactions(
    session: AsyncSession, stripe_gateway: StripeGateway, facts: Facts
) -> None:
    clock = SystemClock()
    start = clock.now().replace(microsecond=0) - timedelta(seconds=1)
    service = PaymentService(session, clock)
    rider_id, driver_id = await facts.rider(), await facts.driver()
    card = await new_rider(stripe_gateway)
    account = await onboarded_driver(stripe_gateway)
    await service.save_customer(rider_id, card.customer_id)
    await service.set_default_card(rider_id, card.payment_method_id)
    ride_id = uuid.uuid4()
    intent = await authorize(stripe_gateway, card, 1_400)
    await service.open_authorization(ride_id, rider_id, usd(1_400))
    await service.authorized(ride_id, intent.id)
    fare, split = priced(SHORT, clock.now())
    await service.open_capture(ride_id, driver_id, fare, split)
    captured = await stripe_gateway.capture(
        payment_intent_id=intent.id, amount=usd(1_400), idempotency_key=key("capture")
    )
    assert captured.latest_charge_id is not None
    await service.captured(ride_id, captured.latest_charge_id)
    transfer = await stripe_gateway.create_transfer(
        amount=usd(960),
        destination_account_id=account.id,
        source_charge_id=captured.latest_charge_id,
        metadata={},
        idempotency_key=key("transfer"),
    )
    await service.transferred(ride_id, transfer.id, usd(960))

    report = await Reconciler(session, stripe_gateway, clock).run(
        start, clock.now() + timedelta(seconds=2)
    )

    ours = {captured.latest_charge_id, transfer.id}
    listed = {
        e.source_id async for e in stripe_gateway.list_balance_transactions(created_from=start)
    }
    assert ours <= listed
    assert [d for d in report.differences if d.reference in ours] == []
