"""The trip state machine on real PostgreSQL/PostGIS and Redis: guards, races between real
transactions, and the money flows end to end over the real Stripe SDK and its fakes."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from redis.asyncio import Redis
from sqlalchemy import delete, func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from accounts.models import Role, User
from dispatch.errors import (
    CancellationFeeChanged,
    DriverBusy,
    DriverExcluded,
    DriverNotAtPickup,
    NoShowTooEarly,
    NotRideDriver,
    PinAttemptsExhausted,
    QuoteAlreadyUsed,
    QuoteExpired,
    QuoteNotFound,
    RideAlreadyOpen,
    RideAlreadyRated,
    RideNotFound,
    RideRequestKeyReused,
    RideStateConflict,
    WrongPin,
)
from dispatch.events import DriverArrived, DriverCancelled, RideRequested
from dispatch.flows import AUTHORIZATION_TIMEOUT_S, RideFlows
from dispatch.locations import haversine_m
from dispatch.models import Breadcrumb, Quote, Ride, RideEvent, Zone
from dispatch.regions import region_of
from dispatch.repository import point_value
from dispatch.schemas import Point, QuoteCreate, QuoteRead, RideRead
from dispatch.service import ARRIVAL_RADIUS_M, PIN_ATTEMPTS, QuoteService, RideService
from infra.clock import FrozenClock
from infra.events import EventBuffer
from infra.settings import Settings
from payments.errors import CardDeclined, PaymentMethodRequired
from payments.flows import PaymentFlows
from payments.policies import FarePolicyService
from payments.service import STEP_DEADLINE_S
from payments.stripe_gateway import StripeGateway
from tests.dispatch.test_quotes import (
    JFK,
    TIMES_SQUARE,
    UPPER_EAST_SIDE,
    make_user,
    north_of,
    seed_zones,
)
from tests.payments import conftest as stripe_fakes
from tests.payments.fake_connect import FakeConnect
from tests.payments.test_flows import onboard, save_card
from tests.payments.test_stripe_gateway import VISA_DECLINED_ON_CHARGE

# The loopback Stripe of tests/payments, for the flows below.
localstripe = stripe_fakes.localstripe
fake_stripe = stripe_fakes.fake_stripe
stripe_settings = stripe_fakes.stripe_settings
stripe_gateway = stripe_fakes.stripe_gateway

AT_PICKUP = north_of(TIMES_SQUARE, 60)
FAR_FROM_PICKUP = north_of(TIMES_SQUARE, 600)


@dataclass
class People:
    rider: uuid.UUID
    other_rider: uuid.UUID
    driver: uuid.UUID
    other_driver: uuid.UUID


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(datetime.now(UTC))


@pytest.fixture
def events() -> EventBuffer:
    return EventBuffer()


@pytest.fixture
async def people(session: AsyncSession, settings: Settings, clock: FrozenClock) -> People:
    await seed_zones(session, clock)
    return People(
        rider=await make_user(session, settings, clock, Role.rider),
        other_rider=await make_user(session, settings, clock, Role.rider),
        driver=await make_user(session, settings, clock, Role.driver),
        other_driver=await make_user(session, settings, clock, Role.driver),
    )


@pytest.fixture
def rides(
    session: AsyncSession, clock: FrozenClock, events: EventBuffer, redis_client: Redis
) -> RideService:
    return RideService(session, clock, events, redis_client)


async def quote_for(
    session: AsyncSession, clock: FrozenClock, rider_id: uuid.UUID, dropoff: Point = UPPER_EAST_SIDE
) -> QuoteRead:
    return await QuoteService(session, clock, None).create(
        rider_id, QuoteCreate(pickup=TIMES_SQUARE, dropoff=dropoff)
    )


async def requested(
    rides: RideService, session: AsyncSession, clock: FrozenClock, rider_id: uuid.UUID
) -> RideRead:
    quote = await quote_for(session, clock, rider_id)
    ride, created = await rides.request(rider_id, quote.id, uuid.uuid4().hex)
    assert created
    return ride


async def advance(rides: RideService, ride: RideRead, driver_id: uuid.UUID, to: str) -> RideRead:
    """Drives a requested ride forward to ``to`` the way the app and dispatcher would."""
    steps = ["matching", "driver_assigned", "driver_arrived", "in_progress"]
    for step in steps[: steps.index(to) + 1]:
        if step == "matching":
            ride = await rides.open_for_matching(ride.id)
        elif step == "driver_assigned":
            ride = await rides.assign(ride.id, driver_id, None)
        elif step == "driver_arrived":
            ride = await rides.arrive(ride.id, driver_id, AT_PICKUP)
        else:
            assert ride.pin is not None
            ride = await rides.start(ride.id, driver_id, ride.pin)
    return ride


async def ride_in(
    rides: RideService,
    session: AsyncSession,
    clock: FrozenClock,
    people: People,
    status: str,
) -> RideRead:
    ride = await requested(rides, session, clock, people.rider)
    return await advance(rides, ride, people.driver, status)


async def history(session: AsyncSession, ride_id: uuid.UUID) -> list[tuple[str | None, str]]:
    rows = await session.execute(
        select(RideEvent.from_status, RideEvent.to_status)
        .where(RideEvent.ride_id == ride_id)
        .order_by(RideEvent.occurred_at, RideEvent.id)
    )
    return [(source, target) for source, target in rows.all()]


# Requesting.


async def test_a_request_makes_a_ride_with_a_pin_in_its_region(
    rides: RideService,
    session: AsyncSession,
    clock: FrozenClock,
    people: People,
    events: EventBuffer,
) -> None:
    ride = await requested(rides, session, clock, people.rider)
    assert ride.status == "requested"
    assert ride.pin is not None
    assert len(ride.pin) == 4
    assert ride.pin.isdigit()
    assert ride.region == region_of(TIMES_SQUARE.lat, TIMES_SQUARE.lng)
    assert ride.pickup == TIMES_SQUARE
    assert await history(session, ride.id) == [(None, "requested")]
    [event] = events.drain()
    assert isinstance(event, RideRequested)
    assert event.recipients() == (people.rider,)
    assert "pin" not in event.to_message()["data"]


async def test_the_same_key_returns_the_same_ride(
    rides: RideService, session: AsyncSession, clock: FrozenClock, people: People
) -> None:
    quote = await quote_for(session, clock, people.rider)
    first, created = await rides.request(people.rider, quote.id, "key-1")
    again, created_again = await rides.request(people.rider, quote.id, "key-1")
    assert (created, created_again) == (True, False)
    assert again == first


async def test_the_same_key_with_another_quote_is_refused(
    rides: RideService, session: AsyncSession, clock: FrozenClock, people: People
) -> None:
    first = await quote_for(session, clock, people.rider)
    second = await quote_for(session, clock, people.rider, dropoff=JFK)
    await rides.request(people.rider, first.id, "key-1")
    with pytest.raises(RideRequestKeyReused):
        await rides.request(people.rider, second.id, "key-1")


async def test_another_riders_quote_is_not_found(
    rides: RideService, session: AsyncSession, clock: FrozenClock, people: People
) -> None:
    quote = await quote_for(session, clock, people.rider)
    with pytest.raises(QuoteNotFound):
        await rides.request(people.other_rider, quote.id, "key-1")


async def test_an_expired_quote_is_refused(
    rides: RideService, session: AsyncSession, clock: FrozenClock, people: People
) -> None:
    quote = await quote_for(session, clock, people.rider)
    clock.set(quote.expires_at)
    with pytest.raises(QuoteExpired):
        await rides.request(people.rider, quote.id, "key-1")


async def test_a_rider_has_one_open_ride_at_a_time(
    rides: RideService, session: AsyncSession, clock: FrozenClock, people: People
) -> None:
    await requested(rides, session, clock, people.rider)
    with pytest.raises(RideAlreadyOpen):
        await requested(rides, session, clock, people.rider)


async def test_a_quote_makes_one_ride_only(
    rides: RideService, session: AsyncSession, clock: FrozenClock, people: People
) -> None:
    quote = await quote_for(session, clock, people.rider)
    ride, _ = await rides.request(people.rider, quote.id, "key-1")
    await rides.cancel_by_rider(ride.id, people.rider, None)
    with pytest.raises(QuoteAlreadyUsed):
        await rides.request(people.rider, quote.id, "key-2")


# Assignment.


async def test_a_ride_in_matching_is_assigned_to_a_driver(
    rides: RideService, session: AsyncSession, clock: FrozenClock, people: People
) -> None:
    ride = await ride_in(rides, session, clock, people, "driver_assigned")
    assert ride.driver_id == people.driver
    assert ride.driver_assigned_at == clock.now()
    assert await history(session, ride.id) == [
        (None, "requested"),
        ("requested", "matching"),
        ("matching", "driver_assigned"),
    ]


async def test_a_ride_waiting_for_its_payment_cannot_be_assigned(
    rides: RideService, session: AsyncSession, clock: FrozenClock, people: People
) -> None:
    ride = await requested(rides, session, clock, people.rider)
    with pytest.raises(RideStateConflict) as refused:
        await rides.assign(ride.id, people.driver, None)
    assert refused.value.extra == {"ride_status": "requested"}


async def test_a_driver_under_way_cannot_take_another_ride(
    rides: RideService, session: AsyncSession, clock: FrozenClock, people: People
) -> None:
    await ride_in(rides, session, clock, people, "driver_assigned")
    other = await requested(rides, session, clock, people.other_rider)
    await rides.open_for_matching(other.id)
    with pytest.raises(DriverBusy):
        await rides.assign(other.id, people.driver, None)
    assert (await rides.get(other.id)).status == "matching"


# Pickup.


async def test_arrival_counts_only_near_the_pickup(
    rides: RideService, session: AsyncSession, clock: FrozenClock, people: People
) -> None:
    ride = await ride_in(rides, session, clock, people, "driver_assigned")
    with pytest.raises(DriverNotAtPickup) as refused:
        await rides.arrive(ride.id, people.driver, FAR_FROM_PICKUP)
    assert refused.value.extra["distance_m"] == pytest.approx(600, abs=5)
    assert refused.value.extra["max_distance_m"] == ARRIVAL_RADIUS_M
    arrived = await rides.arrive(ride.id, people.driver, AT_PICKUP)
    assert arrived.status == "driver_arrived"


async def test_only_the_rides_driver_arrives(
    rides: RideService, session: AsyncSession, clock: FrozenClock, people: People
) -> None:
    ride = await ride_in(rides, session, clock, people, "driver_assigned")
    with pytest.raises(NotRideDriver):
        await rides.arrive(ride.id, people.other_driver, AT_PICKUP)


async def test_arriving_twice_is_a_conflict(
    rides: RideService, session: AsyncSession, clock: FrozenClock, people: People
) -> None:
    ride = await ride_in(rides, session, clock, people, "driver_arrived")
    with pytest.raises(RideStateConflict):
        await rides.arrive(ride.id, people.driver, AT_PICKUP)


async def test_a_wrong_pin_does_not_start_the_trip(
    rides: RideService, session: AsyncSession, clock: FrozenClock, people: People
) -> None:
    ride = await ride_in(rides, session, clock, people, "driver_arrived")
    assert ride.pin is not None
    wrong = f"{(int(ride.pin) + 1) % 10_000:04d}"
    with pytest.raises(WrongPin) as refused:
        await rides.start(ride.id, people.driver, wrong)
    assert refused.value.extra == {"attempts_left": PIN_ATTEMPTS - 1}
    assert (await rides.get(ride.id)).status == "driver_arrived"


async def test_too_many_wrong_pins_lock_the_start(
    rides: RideService, session: AsyncSession, clock: FrozenClock, people: People
) -> None:
    ride = await ride_in(rides, session, clock, people, "driver_arrived")
    assert ride.pin is not None
    wrong = f"{(int(ride.pin) + 1) % 10_000:04d}"
    for _ in range(PIN_ATTEMPTS):
        with pytest.raises(WrongPin):
            await rides.start(ride.id, people.driver, wrong)
    with pytest.raises(PinAttemptsExhausted):
        await rides.start(ride.id, people.driver, ride.pin)


async def test_the_right_pin_starts_the_trip(
    rides: RideService, session: AsyncSession, clock: FrozenClock, people: People
) -> None:
    ride = await ride_in(rides, session, clock, people, "in_progress")
    assert ride.status == "in_progress"
    assert ride.started_at == clock.now()


# Completion: the trip's distance from its breadcrumbs.


async def record_track(
    session: AsyncSession,
    ride: RideRead,
    driver_id: uuid.UUID,
    path: list[Point],
    start: datetime,
    end: datetime,
) -> float:
    """Breadcrumbs along ``path`` evenly in time; returns the path's great-circle length."""
    step = (end - start) / (len(path) - 1)
    for i, point in enumerate(path):
        session.add(
            Breadcrumb(
                ride_id=ride.id,
                driver_id=driver_id,
                point=point_value(point.lat, point.lng),
                recorded_at=start + step * i,
            )
        )
    await session.flush()
    return sum(haversine_m(a.lat, a.lng, b.lat, b.lng) for a, b in itertools.pairwise(path))


def along(a: Point, b: Point, pieces: int) -> list[Point]:
    return [
        Point(lat=a.lat + (b.lat - a.lat) * i / pieces, lng=a.lng + (b.lng - a.lng) * i / pieces)
        for i in range(pieces + 1)
    ]


async def test_a_trip_like_its_estimate_keeps_the_upfront_fare(
    rides: RideService, session: AsyncSession, clock: FrozenClock, people: People
) -> None:
    ride = await ride_in(rides, session, clock, people, "in_progress")
    start = clock.now()
    quote = await session.get(Quote, ride.quote_id)
    assert quote is not None
    end = start + timedelta(seconds=quote.estimated_duration_s)
    # Up the avenue, then across the street: about 1.4 times the straight line.
    corner = Point(lat=UPPER_EAST_SIDE.lat, lng=TIMES_SQUARE.lng)
    path = along(TIMES_SQUARE, corner, 10) + along(corner, UPPER_EAST_SIDE, 10)[1:]
    length = await record_track(session, ride, people.driver, path, start, end)
    clock.set(end)

    charge = await rides.complete(ride.id, people.driver)

    assert charge.ride.status == "completed"
    assert charge.ride.distance_m == pytest.approx(length, rel=0.005)
    assert charge.ride.duration_s == quote.estimated_duration_s
    assert charge.fare is not None
    assert charge.split is not None
    assert charge.fare.basis == "upfront"
    assert charge.fare.total.amount == quote.total_amount
    assert charge.split.total == charge.fare.total
    assert charge.ride.final_fare is not None
    assert charge.ride.final_fare.total == quote.total_amount


async def test_a_long_detour_is_metered_on_the_track(
    rides: RideService, session: AsyncSession, clock: FrozenClock, people: People
) -> None:
    ride = await ride_in(rides, session, clock, people, "in_progress")
    start = clock.now()
    end = start + timedelta(minutes=15)
    detour = Point(lat=40.7300, lng=-73.9000)
    path = along(TIMES_SQUARE, detour, 10) + along(detour, UPPER_EAST_SIDE, 10)[1:]
    length = await record_track(session, ride, people.driver, path, start, end)
    clock.set(end)

    charge = await rides.complete(ride.id, people.driver)

    assert charge.fare is not None
    assert charge.fare.basis == "metered"
    assert charge.ride.distance_m == pytest.approx(length, rel=0.005)
    distance = next(i for i in charge.fare.line_items if i.code == "distance")
    policy = await FarePolicyService(session).by_id(charge.fare.policy_id)
    assert charge.ride.distance_m is not None
    assert distance.amount == policy.money(policy.per_km).times_ratio(charge.ride.distance_m, 1000)


async def test_too_few_breadcrumbs_fall_back_to_the_estimate(
    rides: RideService, session: AsyncSession, clock: FrozenClock, people: People
) -> None:
    ride = await ride_in(rides, session, clock, people, "in_progress")
    start = clock.now()
    await record_track(session, ride, people.driver, [TIMES_SQUARE, JFK], start, start)
    clock.set(start + timedelta(minutes=10))

    charge = await rides.complete(ride.id, people.driver)

    quote = await session.get(Quote, ride.quote_id)
    assert quote is not None
    assert charge.ride.distance_m == quote.estimated_distance_m
    event = (
        await session.execute(
            select(RideEvent).where(
                RideEvent.ride_id == ride.id, RideEvent.to_status == "completed"
            )
        )
    ).scalar_one()
    assert event.data["distance_source"] == "estimate"


async def test_completing_again_answers_the_same_fare(
    rides: RideService, session: AsyncSession, clock: FrozenClock, people: People
) -> None:
    ride = await ride_in(rides, session, clock, people, "in_progress")
    clock.set(clock.now() + timedelta(minutes=12))
    first = await rides.complete(ride.id, people.driver)
    again = await rides.complete(ride.id, people.driver)
    assert again.fare == first.fare
    assert again.split == first.split


async def test_a_trip_not_started_cannot_complete(
    rides: RideService, session: AsyncSession, clock: FrozenClock, people: People
) -> None:
    ride = await ride_in(rides, session, clock, people, "driver_arrived")
    with pytest.raises(RideStateConflict):
        await rides.complete(ride.id, people.driver)


async def test_another_driver_cannot_complete_the_trip(
    rides: RideService, session: AsyncSession, clock: FrozenClock, people: People
) -> None:
    ride = await ride_in(rides, session, clock, people, "in_progress")
    with pytest.raises(NotRideDriver):
        await rides.complete(ride.id, people.other_driver)


# Cancellation by the rider.


async def test_cancelling_before_a_driver_is_free(
    rides: RideService, session: AsyncSession, clock: FrozenClock, people: People
) -> None:
    ride = await ride_in(rides, session, clock, people, "matching")
    preview = await rides.cancellation_preview(ride.id, people.rider)
    assert (preview.fee, preview.free_until) == (None, None)
    charge = await rides.cancel_by_rider(ride.id, people.rider, "changed my mind")
    assert charge.ride.status == "cancelled_by_rider"
    assert charge.fare is None
    assert charge.ride.cancellation_reason == "changed my mind"


async def test_cancelling_after_the_grace_costs_the_fee_shown_first(
    rides: RideService, session: AsyncSession, clock: FrozenClock, people: People
) -> None:
    ride = await ride_in(rides, session, clock, people, "driver_assigned")
    policy = await FarePolicyService(session).in_force(clock.now())
    free = await rides.cancellation_preview(ride.id, people.rider)
    assert free.fee is None
    assert ride.driver_assigned_at is not None
    assert free.free_until == ride.driver_assigned_at + timedelta(
        seconds=policy.cancellation_grace_s
    )
    clock.set(clock.now() + timedelta(seconds=policy.cancellation_grace_s + 1))

    preview = await rides.cancellation_preview(ride.id, people.rider)
    charge = await rides.cancel_by_rider(
        ride.id, people.rider, None, preview.fee.total if preview.fee else 0
    )

    assert preview.fee is not None
    assert preview.fee.total == policy.cancellation_fee
    assert charge.fare is not None
    assert charge.fare.total.amount == policy.cancellation_fee
    assert charge.driver_id == people.driver


async def test_a_fee_above_the_one_accepted_refuses_the_cancellation(
    rides: RideService, session: AsyncSession, clock: FrozenClock, people: People
) -> None:
    ride = await ride_in(rides, session, clock, people, "driver_assigned")
    clock.set(clock.now() + timedelta(minutes=10))
    with pytest.raises(CancellationFeeChanged):
        await rides.cancel_by_rider(ride.id, people.rider, None, accept_fee_amount=0)
    assert (await rides.get(ride.id)).status == "driver_assigned"


async def test_a_trip_under_way_cannot_be_cancelled(
    rides: RideService, session: AsyncSession, clock: FrozenClock, people: People
) -> None:
    ride = await ride_in(rides, session, clock, people, "in_progress")
    with pytest.raises(RideStateConflict):
        await rides.cancel_by_rider(ride.id, people.rider, None)


async def test_another_rider_cannot_cancel(
    rides: RideService, session: AsyncSession, clock: FrozenClock, people: People
) -> None:
    ride = await ride_in(rides, session, clock, people, "matching")
    with pytest.raises(RideNotFound):
        await rides.cancel_by_rider(ride.id, people.other_rider, None)


# Cancellation by the driver, no-shows, timeouts.


async def test_a_driver_who_cancels_puts_the_ride_back_without_them(
    rides: RideService,
    session: AsyncSession,
    clock: FrozenClock,
    people: People,
    events: EventBuffer,
) -> None:
    ride = await ride_in(rides, session, clock, people, "driver_arrived")
    events.clear()
    back = await rides.cancel_by_driver(ride.id, people.driver, "flat tyre")
    assert back.status == "matching"
    assert (back.driver_id, back.driver_assigned_at, back.driver_arrived_at) == (None, None, None)
    [event] = events.drain()
    assert isinstance(event, DriverCancelled)
    assert set(event.recipients()) == {people.rider, people.driver}
    with pytest.raises(DriverExcluded):
        await rides.assign(ride.id, people.driver, None)
    again = await rides.assign(ride.id, people.other_driver, None)
    assert again.driver_id == people.other_driver


async def test_a_ride_back_in_matching_waits_from_then(
    rides: RideService, session: AsyncSession, clock: FrozenClock, people: People
) -> None:
    ride = await ride_in(rides, session, clock, people, "driver_assigned")
    clock.set(clock.now() + timedelta(minutes=5))
    await rides.cancel_by_driver(ride.id, people.driver, None)
    [request] = await rides.open_requests(ride.region, 10)
    assert request.id == ride.id
    assert request.requested_at == clock.now()
    assert request.excluded_driver_ids == frozenset({people.driver})


async def test_a_no_show_waits_for_the_grace_then_costs_the_fee(
    rides: RideService, session: AsyncSession, clock: FrozenClock, people: People
) -> None:
    ride = await ride_in(rides, session, clock, people, "driver_arrived")
    policy = await FarePolicyService(session).in_force(clock.now())
    with pytest.raises(NoShowTooEarly):
        await rides.no_show(ride.id, people.driver)
    clock.set(clock.now() + timedelta(seconds=policy.waiting_grace_s + 1))
    charge = await rides.no_show(ride.id, people.driver)
    assert charge.ride.status == "no_show"
    assert charge.fare is not None
    assert charge.fare.total.amount == policy.no_show_fee


async def test_no_driver_found_ends_a_ride_still_matching(
    rides: RideService, session: AsyncSession, clock: FrozenClock, people: People
) -> None:
    ride = await ride_in(rides, session, clock, people, "matching")
    ended = await rides.no_driver_found(ride.id)
    assert ended.status == "no_driver_found"
    assert ended.ended_at == clock.now()


async def test_a_ride_with_a_driver_is_not_given_up(
    rides: RideService, session: AsyncSession, clock: FrozenClock, people: People
) -> None:
    ride = await ride_in(rides, session, clock, people, "driver_assigned")
    with pytest.raises(RideStateConflict):
        await rides.no_driver_found(ride.id)


# Rating and reading.


async def test_a_completed_ride_is_rated_once(
    rides: RideService, session: AsyncSession, clock: FrozenClock, people: People
) -> None:
    ride = await ride_in(rides, session, clock, people, "in_progress")
    with pytest.raises(RideStateConflict):
        await rides.rate(ride.id, people.rider, 5, None)
    await rides.complete(ride.id, people.driver)
    rated = await rides.rate(ride.id, people.rider, 4, "smooth")
    assert rated.rating == 4
    with pytest.raises(RideAlreadyRated):
        await rides.rate(ride.id, people.rider, 5, None)


async def test_a_ride_is_seen_by_its_rider_and_driver_only(
    rides: RideService, session: AsyncSession, clock: FrozenClock, people: People
) -> None:
    ride = await ride_in(rides, session, clock, people, "driver_assigned")
    assert (await rides.read_for(ride.id, people.rider)).pin == ride.pin
    assert (await rides.read_for(ride.id, people.driver)).pin is None
    for stranger in (people.other_rider, people.other_driver):
        with pytest.raises(RideNotFound):
            await rides.read_for(ride.id, stranger)


async def test_history_is_the_riders_own_newest_first(
    rides: RideService, session: AsyncSession, clock: FrozenClock, people: People
) -> None:
    first = await requested(rides, session, clock, people.rider)
    await rides.cancel_by_rider(first.id, people.rider, None)
    clock.set(clock.now() + timedelta(seconds=1))
    second = await requested(rides, session, clock, people.rider)
    await requested(rides, session, clock, people.other_rider)
    page = await rides.history(people.rider, 1, None)
    assert [r.id for r in page] == [second.id]
    assert [r.id for r in await rides.history(people.rider, 10, page[-1].requested_at)] == [
        first.id
    ]


async def test_every_transition_is_announced_to_rider_and_driver(
    rides: RideService,
    session: AsyncSession,
    clock: FrozenClock,
    people: People,
    events: EventBuffer,
) -> None:
    ride = await ride_in(rides, session, clock, people, "driver_assigned")
    events.clear()
    await rides.arrive(ride.id, people.driver, AT_PICKUP)
    [event] = events.drain()
    assert isinstance(event, DriverArrived)
    assert event.recipients() == (people.rider, people.driver)


# Races between real transactions, each committed for real.


@dataclass
class Committed:
    maker: async_sessionmaker[AsyncSession]
    clock: FrozenClock
    redis: Redis
    people: People

    def rides(self, session: AsyncSession) -> RideService:
        return RideService(session, self.clock, EventBuffer(), self.redis)


@pytest.fixture
async def committed(
    engine: AsyncEngine, settings: Settings, redis_client: Redis
) -> AsyncIterator[Committed]:
    maker = async_sessionmaker(engine, expire_on_commit=False)
    clock = FrozenClock(datetime.now(UTC))
    prefix = f"race-{uuid.uuid4().hex[:8]}-"
    async with maker() as session:
        await seed_zones(session, clock, prefix)
        people = People(
            rider=await make_user(session, settings, clock, Role.rider),
            other_rider=await make_user(session, settings, clock, Role.rider),
            driver=await make_user(session, settings, clock, Role.driver),
            other_driver=await make_user(session, settings, clock, Role.driver),
        )
        await session.commit()
    yield Committed(maker, clock, redis_client, people)
    users = [people.rider, people.other_rider, people.driver, people.other_driver]
    async with engine.begin() as connection:
        # Ride events refuse deletes by trigger; replica mode skips user triggers, which
        # only the cleanup of a test may do.
        await connection.execute(text("SET LOCAL session_replication_role = replica"))
        ride_ids = select(Ride.id).where(Ride.rider_id.in_(users))
        await connection.execute(delete(RideEvent).where(RideEvent.ride_id.in_(ride_ids)))
        await connection.execute(delete(Ride).where(Ride.rider_id.in_(users)))
        await connection.execute(delete(Quote).where(Quote.rider_id.in_(users)))
        await connection.execute(delete(Zone).where(Zone.code.startswith(prefix)))
        await connection.execute(delete(User).where(User.id.in_(users)))


async def committed_ride(committed: Committed, status: str) -> RideRead:
    async with committed.maker() as session:
        rides = committed.rides(session)
        ride = await requested(rides, session, committed.clock, committed.people.rider)
        ride = await advance(rides, ride, committed.people.driver, status)
        await session.commit()
    return ride


async def test_two_drivers_racing_for_a_ride_one_wins(committed: Committed) -> None:
    ride = await committed_ride(committed, "matching")

    async def accept(driver_id: uuid.UUID) -> str:
        async with committed.maker() as session:
            try:
                await committed.rides(session).assign(ride.id, driver_id, uuid.uuid4())
            except RideStateConflict:
                return "lost"
            await session.commit()
            return "won"

    people = committed.people
    outcomes = await asyncio.gather(accept(people.driver), accept(people.other_driver))
    assert sorted(outcomes) == ["lost", "won"]
    async with committed.maker() as session:
        winner = people.driver if outcomes[0] == "won" else people.other_driver
        assert (await committed.rides(session).get(ride.id)).driver_id == winner
        assert (await history(session, ride.id))[-1] == ("matching", "driver_assigned")


async def test_concurrent_requests_with_one_key_make_one_ride(committed: Committed) -> None:
    rider = committed.people.rider
    async with committed.maker() as session:
        quote = await quote_for(session, committed.clock, rider)
        await session.commit()

    async def request() -> uuid.UUID:
        async with committed.maker() as session:
            ride, _ = await committed.rides(session).request(rider, quote.id, "same-key")
            await session.commit()
            return ride.id

    ids = await asyncio.gather(*(request() for _ in range(4)))
    assert len(set(ids)) == 1
    async with committed.maker() as session:
        count = await session.scalar(select(func.count()).where(Ride.rider_id == rider))
        assert count == 1


async def test_two_cancels_of_one_ride_cancel_it_once(committed: Committed) -> None:
    ride = await committed_ride(committed, "driver_assigned")
    rider = committed.people.rider

    async def cancel() -> str:
        async with committed.maker() as session:
            charge = await committed.rides(session).cancel_by_rider(ride.id, rider, None)
            await session.commit()
            return charge.ride.status

    assert list(await asyncio.gather(cancel(), cancel())) == ["cancelled_by_rider"] * 2
    async with committed.maker() as session:
        steps = await history(session, ride.id)
    assert [target for _, target in steps].count("cancelled_by_rider") == 1


async def test_a_rider_and_a_driver_cancelling_at_once_leave_a_consistent_history(
    committed: Committed,
) -> None:
    ride = await committed_ride(committed, "driver_assigned")
    people = committed.people

    async def rider_cancels() -> None:
        async with committed.maker() as session:
            await committed.rides(session).cancel_by_rider(ride.id, people.rider, None)
            await session.commit()

    async def driver_cancels() -> None:
        async with committed.maker() as session:
            try:
                await committed.rides(session).cancel_by_driver(ride.id, people.driver, None)
            except RideStateConflict:
                return
            await session.commit()

    await asyncio.gather(rider_cancels(), driver_cancels())
    async with committed.maker() as session:
        steps = await history(session, ride.id)
        final = await committed.rides(session).get(ride.id)
    assert final.status == "cancelled_by_rider"
    # Each transition starts where the one before it ended: no update was lost.
    assert all(after[0] == before[1] for before, after in itertools.pairwise(steps))


# The money flows, over the real Stripe SDK and the loopback fakes.


@pytest.fixture
def payment_flows(
    sessionmaker: async_sessionmaker[AsyncSession],
    stripe_gateway: StripeGateway,
    clock: FrozenClock,
) -> PaymentFlows:
    return PaymentFlows(sessionmaker, stripe_gateway, clock)


@pytest.fixture
def flows(
    sessionmaker: async_sessionmaker[AsyncSession],
    payment_flows: PaymentFlows,
    clock: FrozenClock,
    redis_client: Redis,
) -> RideFlows:
    return RideFlows(sessionmaker, payment_flows, clock, redis_client)


@pytest.fixture
async def paying(people: People, payment_flows: PaymentFlows, fake_stripe: FakeConnect) -> People:
    await save_card(payment_flows, fake_stripe, people.rider)
    await onboard(payment_flows, people.driver)
    return people


async def request_through(
    flows: RideFlows, session: AsyncSession, clock: FrozenClock, rider_id: uuid.UUID
) -> RideRead:
    quote = await quote_for(session, clock, rider_id)
    ride, _ = await flows.request_ride(rider_id, quote.id, uuid.uuid4().hex)
    return ride


async def drive(flows: RideFlows, ride: RideRead, driver_id: uuid.UUID, to: str) -> RideRead:
    async with flows.rides() as rides:
        return await advance(rides, ride, driver_id, to)


@pytest.mark.slow
async def test_a_ride_from_request_to_payout(
    flows: RideFlows,
    payment_flows: PaymentFlows,
    paying: People,
    session: AsyncSession,
    clock: FrozenClock,
) -> None:
    quote = await quote_for(session, clock, paying.rider)
    ride, created = await flows.request_ride(paying.rider, quote.id, "trip-1")
    assert created
    assert ride.status == "matching"  # the hold is on the card: dispatch may take it
    replayed, created_again = await flows.request_ride(paying.rider, quote.id, "trip-1")
    assert (replayed.id, created_again) == (ride.id, False)
    held = await payment_flows.read(ride.id)
    assert held.status == "authorized"
    assert held.authorized_amount > quote.fare.total

    ride = await drive(flows, ride, paying.driver, "in_progress")
    clock.set(clock.now() + timedelta(seconds=quote.estimated_duration_s))
    done = await flows.complete_trip(ride.id, paying.driver)

    assert done.status == "completed"
    payment = await payment_flows.read(ride.id)
    assert payment.status == "captured"
    assert payment.captured_amount == quote.fare.total
    assert payment.split is not None
    assert payment.transferred_amount == payment.split["driver"]


@pytest.mark.slow
async def test_a_declined_card_ends_the_ride_before_dispatch(
    flows: RideFlows,
    payment_flows: PaymentFlows,
    people: People,
    fake_stripe: FakeConnect,
    session: AsyncSession,
    clock: FrozenClock,
) -> None:
    await save_card(payment_flows, fake_stripe, people.rider, VISA_DECLINED_ON_CHARGE)
    quote = await quote_for(session, clock, people.rider)
    with pytest.raises(CardDeclined):
        await flows.request_ride(people.rider, quote.id, "trip-1")
    async with flows.rides() as rides:
        ride = await rides.find_request(people.rider, "trip-1", quote.id)
    assert ride is not None
    assert ride.status == "payment_failed"


@pytest.mark.slow
async def test_a_rider_without_a_card_is_refused_and_nothing_is_kept(
    flows: RideFlows, people: People, session: AsyncSession, clock: FrozenClock
) -> None:
    quote = await quote_for(session, clock, people.rider)
    with pytest.raises(PaymentMethodRequired):
        await flows.request_ride(people.rider, quote.id, "trip-1")
    async with flows.rides() as rides:
        assert await rides.find_request(people.rider, "trip-1", quote.id) is None


@pytest.mark.slow
async def test_a_ride_waits_while_stripe_is_down_then_goes_to_matching(
    flows: RideFlows,
    payment_flows: PaymentFlows,
    paying: People,
    fake_stripe: FakeConnect,
    session: AsyncSession,
    clock: FrozenClock,
) -> None:
    fake_stripe.add_fault("/v1/payment_intents", status=503)
    ride = await request_through(flows, session, clock, paying.rider)
    assert ride.status == "requested"
    assert await flows.promote_authorized() == 0  # still no answer: it waits

    await payment_flows.advance(ride.id)  # the payments worker's retry
    assert await flows.promote_authorized() == 1

    async with flows.rides() as rides:
        assert (await rides.get(ride.id)).status == "matching"


@pytest.mark.slow
async def test_a_ride_gives_up_when_stripe_stays_down(
    flows: RideFlows,
    payment_flows: PaymentFlows,
    paying: People,
    fake_stripe: FakeConnect,
    session: AsyncSession,
    clock: FrozenClock,
) -> None:
    fake_stripe.add_fault("/v1/payment_intents", status=503)
    ride = await request_through(flows, session, clock, paying.rider)
    clock.set(clock.now() + timedelta(seconds=AUTHORIZATION_TIMEOUT_S))
    assert await flows.promote_authorized() == 1
    async with flows.rides() as rides:
        assert (await rides.get(ride.id)).status == "payment_failed"
    assert (await payment_flows.read(ride.id)).status == "cancelled"


@pytest.mark.slow
async def test_a_free_cancellation_releases_the_hold(
    flows: RideFlows,
    payment_flows: PaymentFlows,
    paying: People,
    session: AsyncSession,
    clock: FrozenClock,
) -> None:
    ride = await request_through(flows, session, clock, paying.rider)
    cancelled = await flows.cancel(ride.id, paying.rider, None)
    assert cancelled.status == "cancelled_by_rider"
    payment = await payment_flows.read(ride.id)
    assert payment.status == "cancelled"
    assert payment.captured_amount is None


@pytest.mark.slow
async def test_a_late_cancellation_takes_the_fee_from_the_hold(
    flows: RideFlows,
    payment_flows: PaymentFlows,
    paying: People,
    session: AsyncSession,
    clock: FrozenClock,
) -> None:
    ride = await request_through(flows, session, clock, paying.rider)
    ride = await drive(flows, ride, paying.driver, "driver_assigned")
    policy = await FarePolicyService(session).in_force(clock.now())
    clock.set(clock.now() + timedelta(seconds=policy.cancellation_grace_s + 1))
    await flows.cancel(ride.id, paying.rider, None, accept_fee_amount=policy.cancellation_fee)
    payment = await payment_flows.read(ride.id)
    assert payment.status == "fee_captured"
    assert payment.captured_amount == policy.cancellation_fee


@pytest.mark.slow
async def test_a_no_show_charges_its_fee(
    flows: RideFlows,
    payment_flows: PaymentFlows,
    paying: People,
    session: AsyncSession,
    clock: FrozenClock,
) -> None:
    ride = await request_through(flows, session, clock, paying.rider)
    ride = await drive(flows, ride, paying.driver, "driver_arrived")
    policy = await FarePolicyService(session).in_force(clock.now())
    clock.set(clock.now() + timedelta(seconds=policy.waiting_grace_s + 1))
    ended = await flows.no_show(ride.id, paying.driver)
    assert ended.status == "no_show"
    payment = await payment_flows.read(ride.id)
    assert payment.status == "fee_captured"
    assert payment.captured_amount == policy.no_show_fee


@pytest.mark.slow
async def test_no_driver_found_releases_the_hold(
    flows: RideFlows,
    payment_flows: PaymentFlows,
    paying: People,
    session: AsyncSession,
    clock: FrozenClock,
) -> None:
    ride = await request_through(flows, session, clock, paying.rider)
    ended = await flows.no_driver_found(ride.id)
    assert ended.status == "no_driver_found"
    assert (await payment_flows.read(ride.id)).status == "cancelled"


class Crash(Exception):
    """The process dying between two steps."""


@pytest.mark.slow
async def test_a_crash_between_completion_and_settlement_is_settled_by_the_worker(
    flows: RideFlows,
    payment_flows: PaymentFlows,
    paying: People,
    session: AsyncSession,
    clock: FrozenClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ride = await request_through(flows, session, clock, paying.rider)
    ride = await drive(flows, ride, paying.driver, "in_progress")
    clock.set(clock.now() + timedelta(seconds=600))

    async def crash(*args: object) -> None:
        raise Crash

    with monkeypatch.context() as patched:
        patched.setattr(payment_flows, "settle_ride", crash)
        with pytest.raises(Crash):
            await flows.complete_trip(ride.id, paying.driver)

    # The completion and the capture it calls for were committed together.
    async with flows.rides() as rides:
        assert (await rides.get(ride.id)).status == "completed"
    waiting = await payment_flows.read(ride.id)
    assert waiting.status == "capturing"
    assert await payment_flows.advance_due() == 0  # not yet: the step may be in flight

    clock.set(clock.now() + timedelta(seconds=STEP_DEADLINE_S))
    assert await payment_flows.advance_due() == 1

    settled = await payment_flows.read(ride.id)
    assert settled.status == "captured"
    assert settled.split is not None
    assert settled.transferred_amount == settled.split["driver"]


@pytest.mark.slow
async def test_a_crash_after_a_late_cancellation_still_takes_the_fee(
    flows: RideFlows,
    payment_flows: PaymentFlows,
    paying: People,
    session: AsyncSession,
    clock: FrozenClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ride = await request_through(flows, session, clock, paying.rider)
    ride = await drive(flows, ride, paying.driver, "driver_assigned")
    policy = await FarePolicyService(session).in_force(clock.now())
    clock.set(clock.now() + timedelta(seconds=policy.cancellation_grace_s + 1))

    async def crash(*args: object) -> None:
        raise Crash

    with monkeypatch.context() as patched:
        patched.setattr(payment_flows, "cancel_ride", crash)
        with pytest.raises(Crash):
            await flows.cancel(
                ride.id, paying.rider, None, accept_fee_amount=policy.cancellation_fee
            )

    assert (await payment_flows.read(ride.id)).status == "cancelling"
    clock.set(clock.now() + timedelta(seconds=STEP_DEADLINE_S))
    assert await payment_flows.advance_due() == 1
    payment = await payment_flows.read(ride.id)
    assert payment.status == "fee_captured"
    assert payment.captured_amount == policy.cancellation_fee
