"""Statements, receipts and the co-op's books, from facts recorded through PaymentService.

The numbers, by hand (tests/payments/factories.py's policy, no surge):
- LONG: 10 km, 25 min, to the airport = base 250 + distance 1200 + time 750 + booking fee
  200 + airport 450 = 2850. Of the 2200 ride part: driver 80 % = 1760, commission 15 % =
  330, reserve 5 % = 110. Co-op share = 330 + 110 + 200 = 640; pass-through 450.
- SHORT: 5 km, 700 s = 250 + 600 + 350 + 200 = 1400. Of 1200: driver 960, commission 180,
  reserve 60. Co-op share = 440; no pass-through.
"""

from __future__ import annotations

import itertools
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from accounts.models import Role
from accounts.passwords import Passwords
from accounts.service import AccountService
from infra.clock import FrozenClock
from infra.events import EventBuffer
from infra.settings import Settings
from payments import ledger, pricing
from payments.errors import ReportPeriodInvalid, RidePaymentNotFound, TimeZoneUnknown
from payments.ledger import AccountKind, Clawback
from payments.ledger_service import LedgerService
from payments.money import Money
from payments.pricing import Fare, FareSplit, TripEstimate, TripMeasurement
from payments.schemas import CoopBooks
from payments.service import PaymentService
from payments.statements import SECTIONS, StatementService
from tests.factories import PASSWORD
from tests.payments.factories import make_policy

POLICY = make_policy()
# A Monday, in winter: New York is UTC-5.
MONDAY = datetime(2026, 3, 2, 12, tzinfo=UTC)
LONG = (10_000, 1_500, frozenset({"airport"}))
SHORT = (5_000, 700, frozenset[str]())
_ids = itertools.count(1)


def usd(cents: int) -> Money:
    return Money(cents, "USD")


def stripe_id(prefix: str) -> str:
    return f"{prefix}_test{next(_ids):06d}{uuid.uuid4().hex[:8]}"


def priced(trip: tuple[int, int, frozenset[str]], at: datetime) -> tuple[Fare, FareSplit]:
    distance_m, duration_s, zones = trip
    quote = pricing.quote(
        POLICY, TripEstimate(distance_m, duration_s), surge=Decimal(1), zones=zones, now=at
    )
    fare = pricing.final_fare(POLICY, quote, TripMeasurement(distance_m, duration_s, 0))
    return fare, pricing.split(POLICY, fare)


@dataclass
class Ride:
    ride_id: uuid.UUID
    rider_id: uuid.UUID
    driver_id: uuid.UUID
    charge_id: str


class Facts:
    """Records what Stripe did through PaymentService, as the flows and webhooks do."""

    def __init__(self, session: AsyncSession, clock: FrozenClock, settings: Settings) -> None:
        self.session = session
        self.clock = clock
        self.settings = settings
        self.payments = PaymentService(session, clock)
        self.ledger = LedgerService(session, clock)

    async def user(self, role: Role) -> uuid.UUID:
        accounts = AccountService(
            self.session,
            self.settings.auth,
            Passwords(self.settings.auth),
            self.clock,
            EventBuffer(),
        )
        n = next(_ids)
        user = await accounts.create_user(
            role=role,
            email=f"{role.value}{n}.{uuid.uuid4().hex[:8]}@example.org",
            phone=f"+1202555{n % 10_000:04d}",
            full_name=f"{role.value.capitalize()} {n}",
            password=PASSWORD,
        )
        return user.id

    async def rider(self) -> uuid.UUID:
        rider_id = await self.user(Role.rider)
        await self.payments.save_customer(rider_id, stripe_id("cus"))
        await self.payments.set_default_card(rider_id, stripe_id("pm"))
        return rider_id

    async def driver(self) -> uuid.UUID:
        return await self.user(Role.driver)

    async def ride(
        self,
        rider_id: uuid.UUID,
        driver_id: uuid.UUID,
        at: datetime,
        trip: tuple[int, int, frozenset[str]] = LONG,
        hold: int = 4_000,
    ) -> Ride:
        """A ride requested at ``at`` and settled (captured) ten minutes later."""
        ride_id = uuid.uuid4()
        self.clock.set(at)
        await self.payments.open_authorization(ride_id, rider_id, usd(hold))
        await self.payments.authorized(ride_id, stripe_id("pi"))
        self.clock.set(at + timedelta(minutes=10))
        await self.payments.open_capture(ride_id, driver_id, *priced(trip, at))
        charge_id = stripe_id("ch")
        await self.payments.captured(ride_id, charge_id)
        return Ride(ride_id, rider_id, driver_id, charge_id)

    async def tip(self, ride: Ride, cents: int) -> str:
        await self.payments.open_tip(ride.ride_id, ride.rider_id, usd(cents), stripe_id("pm"))
        charge_id = stripe_id("ch")
        await self.payments.tip_charged(ride.ride_id, charge_id)
        return charge_id

    async def fee(self, charge_id: str, cents: int) -> None:
        await self.ledger.record(ledger.stripe_fee(charge_id=charge_id, fee=usd(cents)))

    async def transfer(self, ride: Ride, cents: int) -> str:
        transfer_id = stripe_id("tr")
        await self.payments.transferred(ride.ride_id, transfer_id, usd(cents))
        return transfer_id

    async def refund(
        self, ride: Ride, cents: int, clawback: Clawback = Clawback.from_payable
    ) -> str:
        refund_id = stripe_id("re")
        await self.payments.refunded(ride.ride_id, refund_id, usd(cents), clawback)
        return refund_id


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(MONDAY)


@pytest.fixture
def facts(session: AsyncSession, clock: FrozenClock, settings: Settings) -> Facts:
    return Facts(session, clock, settings)


@pytest.fixture
def statements(session: AsyncSession, clock: FrozenClock) -> StatementService:
    return StatementService(session, clock)


WEEK = (MONDAY - timedelta(days=1), MONDAY + timedelta(days=7))


# Drivers' statements.


async def test_a_trip_shows_the_fare_and_every_share_of_it(
    facts: Facts, statements: StatementService
) -> None:
    ride = await facts.ride(await facts.rider(), driver := await facts.driver(), MONDAY)

    [line] = await statements.driver_trips(driver, *WEEK)

    assert line.ride_id == ride.ride_id
    assert line.status == "captured"
    assert line.settled_at == MONDAY + timedelta(minutes=10)
    assert (line.fare_amount, line.rider_paid_amount) == (2_850, 2_850)
    assert (line.driver_share_amount, line.coop_share_amount, line.pass_through_amount) == (
        1_760,
        640,
        450,
    )
    assert (line.tip_amount, line.stripe_fee_amount, line.refunded_amount) == (0, 0, 0)
    assert line.transferred_amount == 0


async def test_a_trip_shows_stripes_fees_on_its_fare_and_tip_once_booked(
    facts: Facts, statements: StatementService
) -> None:
    ride = await facts.ride(await facts.rider(), driver := await facts.driver(), MONDAY)
    tip_charge = await facts.tip(ride, 300)
    await facts.fee(ride.charge_id, 113)
    await facts.fee(tip_charge, 39)

    [line] = await statements.driver_trips(driver, *WEEK)

    assert line.stripe_fee_amount == 113 + 39
    # The co-op pays the fees: the driver's share and the tip are untouched.
    assert (line.driver_share_amount, line.tip_amount) == (1_760, 300)
    assert line.rider_paid_amount == 2_850 + 300


async def test_a_trip_shows_what_was_transferred_and_refunded(
    facts: Facts, statements: StatementService
) -> None:
    ride = await facts.ride(await facts.rider(), driver := await facts.driver(), MONDAY)
    await facts.tip(ride, 300)
    await facts.transfer(ride, 1_760)
    await facts.payments.tip_transferred(ride.ride_id, stripe_id("tr"))
    await facts.refund(ride, 500, Clawback.none)

    [line] = await statements.driver_trips(driver, *WEEK)

    assert line.transferred_amount == 1_760 + 300
    assert line.refunded_amount == 500


async def test_a_fare_above_the_hold_shows_only_what_the_card_paid(
    facts: Facts, statements: StatementService
) -> None:
    await facts.ride(await facts.rider(), driver := await facts.driver(), MONDAY, hold=2_000)

    [line] = await statements.driver_trips(driver, *WEEK)

    assert (line.fare_amount, line.rider_paid_amount, line.driver_share_amount) == (
        2_850,
        2_000,
        1_760,
    )


async def test_statements_hold_only_the_drivers_own_trips_of_the_period(
    facts: Facts, statements: StatementService
) -> None:
    rider, driver, other = await facts.rider(), await facts.driver(), await facts.driver()
    inside = await facts.ride(rider, driver, MONDAY)
    await facts.ride(rider, driver, MONDAY + timedelta(days=8))
    await facts.ride(rider, other, MONDAY + timedelta(hours=1))

    lines = await statements.driver_trips(driver, *WEEK)

    assert [line.ride_id for line in lines] == [inside.ride_id]


async def test_a_period_must_start_before_it_ends(statements: StatementService) -> None:
    with pytest.raises(ReportPeriodInvalid):
        await statements.driver_trips(uuid.uuid4(), MONDAY, MONDAY)


async def test_a_period_of_more_than_a_year_is_refused(statements: StatementService) -> None:
    with pytest.raises(ReportPeriodInvalid):
        await statements.driver_trips(uuid.uuid4(), MONDAY - timedelta(days=367), MONDAY)


async def test_a_period_without_a_time_zone_is_refused(statements: StatementService) -> None:
    naive = MONDAY.replace(tzinfo=None)
    with pytest.raises(ReportPeriodInvalid):
        await statements.driver_trips(uuid.uuid4(), naive, naive + timedelta(days=1))


# Daily and weekly summaries.


async def test_days_are_summed_in_utc_by_default(
    facts: Facts, statements: StatementService
) -> None:
    rider, driver = await facts.rider(), await facts.driver()
    late = MONDAY.replace(hour=23, minute=30)  # settles 23:40 UTC Monday
    await facts.ride(rider, driver, late, LONG)
    await facts.ride(rider, driver, late + timedelta(hours=1), SHORT)  # 00:40 UTC Tuesday

    days = await statements.driver_summary(driver, "day", *WEEK)

    assert [(d.period_start, d.trips, d.fares_amount) for d in days] == [
        (datetime(2026, 3, 2, tzinfo=UTC), 1, 2_850),
        (datetime(2026, 3, 3, tzinfo=UTC), 1, 1_400),
    ]


async def test_days_are_the_drivers_local_days_in_their_time_zone(
    facts: Facts, statements: StatementService
) -> None:
    rider, driver = await facts.rider(), await facts.driver()
    late = MONDAY.replace(hour=23, minute=30)
    await facts.ride(rider, driver, late, LONG)  # 18:40 in New York
    await facts.ride(rider, driver, late + timedelta(hours=1), SHORT)  # 19:40 in New York

    [day] = await statements.driver_summary(driver, "day", *WEEK, tz="America/New_York")

    assert day.period_start == datetime(2026, 3, 2, 5, tzinfo=UTC)  # midnight in New York
    assert str(day.period_start.tzinfo) == "America/New_York"
    assert (day.trips, day.fares_amount, day.driver_earnings_amount) == (2, 4_250, 2_720)
    assert (day.coop_share_amount, day.pass_through_amount) == (640 + 440, 450)


async def test_weeks_start_on_monday_and_sum_every_figure(
    facts: Facts, statements: StatementService
) -> None:
    rider, driver = await facts.rider(), await facts.driver()
    first = await facts.ride(rider, driver, MONDAY, LONG)
    await facts.ride(rider, driver, MONDAY + timedelta(days=6), SHORT)  # Sunday
    await facts.ride(rider, driver, MONDAY + timedelta(days=7), SHORT)  # next Monday
    await facts.tip(first, 300)
    await facts.fee(first.charge_id, 113)
    await facts.refund(first, 200, Clawback.none)

    weeks = await statements.driver_summary(
        driver, "week", MONDAY - timedelta(days=1), MONDAY + timedelta(days=14)
    )

    assert [(w.period_start, w.trips) for w in weeks] == [
        (datetime(2026, 3, 2, tzinfo=UTC), 2),
        (datetime(2026, 3, 9, tzinfo=UTC), 1),
    ]
    first_week = weeks[0]
    assert first_week.fares_amount == 2_850 + 1_400
    assert first_week.rider_paid_amount == 2_850 + 300 + 1_400
    assert first_week.driver_earnings_amount == 1_760 + 960
    assert first_week.tips_amount == 300
    assert first_week.coop_share_amount == 640 + 440
    assert first_week.pass_through_amount == 450
    assert first_week.stripe_fees_amount == 113
    assert first_week.refunded_amount == 200


async def test_an_unknown_time_zone_is_refused(statements: StatementService) -> None:
    with pytest.raises(TimeZoneUnknown):
        await statements.driver_summary(uuid.uuid4(), "day", *WEEK, tz="Mars/Olympus_Mons")


# Payout history.


async def test_payout_history_lists_transfers_and_payouts_newest_first(
    facts: Facts, statements: StatementService, clock: FrozenClock
) -> None:
    ride = await facts.ride(await facts.rider(), driver := await facts.driver(), MONDAY)
    await facts.tip(ride, 300)
    clock.set(MONDAY + timedelta(hours=1))
    transfer_id = await facts.transfer(ride, 1_760)
    clock.set(MONDAY + timedelta(hours=2))
    tip_transfer_id = stripe_id("tr")
    await facts.payments.tip_transferred(ride.ride_id, tip_transfer_id)
    account = stripe_id("acct")
    await facts.payments.save_payout_account(driver, account)
    arrival = MONDAY + timedelta(days=2)
    await facts.payments.driver_payout_seen(
        account, "po_test1", usd(2_060), "in_transit", arrival, MONDAY + timedelta(days=1)
    )

    history = await statements.driver_payouts(driver)

    assert [(t.transfer_id, t.kind, t.amount) for t in history.transfers] == [
        (tip_transfer_id, "tips", 300),
        (transfer_id, "earnings", 1_760),
    ]
    assert [(p.id, p.amount, p.status, p.arrival_at) for p in history.payouts] == [
        ("po_test1", 2_060, "in_transit", arrival)
    ]


async def test_payout_history_holds_no_other_drivers_transfers(
    facts: Facts, statements: StatementService
) -> None:
    rider, driver, other = await facts.rider(), await facts.driver(), await facts.driver()
    await facts.transfer(await facts.ride(rider, other, MONDAY), 1_760)

    history = await statements.driver_payouts(driver)

    assert (history.transfers, history.payouts) == ([], [])


# Receipts.


async def test_a_receipt_has_the_fares_line_items_tip_and_refund(
    facts: Facts, statements: StatementService
) -> None:
    ride = await facts.ride(rider := await facts.rider(), await facts.driver(), MONDAY)
    await facts.tip(ride, 300)
    await facts.refund(ride, 500, Clawback.none)

    receipt = await statements.rider_receipt(rider, ride.ride_id)

    assert [(i.code, i.amount) for i in receipt.line_items] == [
        ("base_fare", 250),
        ("distance", 1_200),
        ("time", 750),
        ("booking_fee", 200),
        ("zone_surcharge:airport", 450),
    ]
    assert (receipt.basis, receipt.fare_amount, receipt.tip_amount) == ("upfront", 2_850, 300)
    assert (receipt.charged_amount, receipt.refunded_amount) == (3_150, 500)
    assert receipt.total_amount == 2_650
    assert receipt.requested_at == MONDAY


async def test_a_tip_whose_charge_has_not_succeeded_is_not_on_the_receipt(
    facts: Facts, statements: StatementService
) -> None:
    ride = await facts.ride(rider := await facts.rider(), await facts.driver(), MONDAY)
    await facts.payments.open_tip(ride.ride_id, rider, usd(300), stripe_id("pm"))

    receipt = await statements.rider_receipt(rider, ride.ride_id)

    assert (receipt.tip_amount, receipt.charged_amount) == (0, 2_850)


async def test_another_riders_receipt_is_not_found(
    facts: Facts, statements: StatementService
) -> None:
    ride = await facts.ride(await facts.rider(), await facts.driver(), MONDAY)

    with pytest.raises(RidePaymentNotFound):
        await statements.rider_receipt(await facts.rider(), ride.ride_id)


async def test_a_ride_never_priced_has_no_receipt(
    facts: Facts, statements: StatementService
) -> None:
    rider = await facts.rider()
    ride_id = uuid.uuid4()
    await facts.payments.open_authorization(ride_id, rider, usd(4_000))

    with pytest.raises(RidePaymentNotFound):
        await statements.rider_receipt(rider, ride_id)
    assert await statements.rider_receipts(rider, 10) == []


async def test_receipts_come_newest_first_in_pages(
    facts: Facts, statements: StatementService
) -> None:
    rider, driver = await facts.rider(), await facts.driver()
    rides = [await facts.ride(rider, driver, MONDAY + timedelta(hours=h)) for h in range(3)]

    first = await statements.rider_receipts(rider, 2)
    rest = await statements.rider_receipts(rider, 2, before=first[-1].requested_at)

    assert [r.ride_id for r in first + rest] == [r.ride_id for r in reversed(rides)]


# The co-op's books.


def _line(books: CoopBooks, kind: AccountKind) -> tuple[int, int, int, int]:
    [line] = [line for line in books.lines if line.account == kind.value]
    return line.opening_amount, line.increases_amount, line.decreases_amount, line.closing_amount


async def test_books_show_the_income_statement_of_the_period(
    facts: Facts, statements: StatementService
) -> None:
    rider = await facts.rider()
    long = await facts.ride(rider, await facts.driver(), MONDAY, LONG)
    await facts.ride(rider, await facts.driver(), MONDAY + timedelta(hours=1), SHORT)
    await facts.fee(long.charge_id, 113)
    # Of a 500 refund: driver 309 back off what is owed, pass-through 79, co-op 112.
    await facts.refund(long, 500, Clawback.from_payable)

    books = await statements.coop_books("USD", *WEEK)

    assert books.income.revenue_amount == (330 + 200) + (180 + 200)
    assert books.income.expenses_amount == 113 + 112
    assert books.income.surplus_amount == 910 - 225
    assert books.income.reserve_added_amount == 110 + 60
    assert _line(books, AccountKind.coop_commission_revenue) == (0, 510, 0, 510)
    assert _line(books, AccountKind.refunds) == (0, 112, 0, 112)


async def test_books_total_each_persons_accounts_without_naming_anyone(
    facts: Facts, statements: StatementService
) -> None:
    rider = await facts.rider()
    long = await facts.ride(rider, await facts.driver(), MONDAY, LONG)
    await facts.ride(rider, await facts.driver(), MONDAY + timedelta(hours=1), SHORT)
    await facts.transfer(long, 1_760)

    books = await statements.coop_books("USD", *WEEK)

    assert _line(books, AccountKind.driver_payable) == (0, 1_760 + 960, 1_760, 960)
    assert _line(books, AccountKind.stripe_balance) == (0, 4_250, 1_760, 2_490)
    assert _line(books, AccountKind.pass_through_payable) == (0, 450, 0, 450)
    assert [line.account for line in books.lines] == [kind.value for kind in AccountKind]
    assert str(rider) not in books.model_dump_json()
    assert str(long.driver_id) not in books.model_dump_json()


async def test_books_open_with_what_came_before_and_leave_out_what_came_after(
    facts: Facts, statements: StatementService
) -> None:
    rider, driver = await facts.rider(), await facts.driver()
    await facts.ride(rider, driver, MONDAY - timedelta(days=3), LONG)
    await facts.ride(rider, driver, MONDAY, SHORT)
    await facts.ride(rider, driver, MONDAY + timedelta(days=10), SHORT)

    books = await statements.coop_books("USD", *WEEK)

    assert _line(books, AccountKind.reserve) == (110, 60, 0, 170)
    assert books.income.revenue_amount == 180 + 200


def test_every_account_kind_has_a_section_in_the_books() -> None:
    assert set(SECTIONS) == set(AccountKind)
