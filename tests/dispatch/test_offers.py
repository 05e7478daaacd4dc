"""Offers on real PostgreSQL and Redis: one live per ride and per driver, accepting as a
compare-and-set raced by real transactions, declining and expiry excluding the driver.

The helpers here (rides in matching, drivers online, offers made) serve the dispatcher's
tests too.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from redis.asyncio import Redis
from sqlalchemy import delete, func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from accounts.models import Role, User
from dispatch.errors import OfferExpired, OfferNotFound, OfferNotYours
from dispatch.events import DriverAssigned
from dispatch.live import LiveState
from dispatch.models import DriverShift, MatchDecision, Offer, Quote, Ride, RideEvent, Zone
from dispatch.offers import MadeOffer, OfferFlows, OfferService, PlannedOffer
from dispatch.regions import region_of
from dispatch.repository import MatchDecisionRepository, NewDecision
from dispatch.schemas import Point, QuoteCreate, RideRead
from dispatch.service import QuoteService, RideService
from infra.clock import FrozenClock
from infra.events import EventBuffer
from infra.ids import new_id
from infra.settings import Settings
from tests.dispatch.test_quotes import TIMES_SQUARE, make_user, north_of, seed_zones


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(datetime.now(UTC))


@pytest.fixture
def live(redis_client: Redis) -> LiveState:
    return LiveState(redis_client)


@pytest.fixture
async def zoned(session: AsyncSession, clock: FrozenClock) -> None:
    await seed_zones(session, clock)


async def ride_in_matching(
    session: AsyncSession,
    clock: FrozenClock,
    redis: Redis,
    settings: Settings,
    pickup: Point = TIMES_SQUARE,
) -> RideRead:
    """A new rider's ride from ``pickup``, paid for and open to drivers."""
    rider_id = await make_user(session, settings, clock, Role.rider)
    quote = await QuoteService(session, clock, None).create(
        rider_id, QuoteCreate(pickup=pickup, dropoff=north_of(pickup, 3_000))
    )
    rides = RideService(session, clock, EventBuffer(), redis)
    ride, _ = await rides.request(rider_id, quote.id, uuid.uuid4().hex)
    return await rides.open_for_matching(ride.id)


async def driver_online(
    session: AsyncSession,
    clock: FrozenClock,
    live: LiveState,
    settings: Settings,
    at: Point,
    since: datetime | None = None,
) -> uuid.UUID:
    """A new driver, online and available at ``at`` since ``since`` (now by default)."""
    driver_id = await make_user(session, settings, clock, Role.driver)
    await live.set_online(
        driver_id, region_of(at.lat, at.lng), at.lat, at.lng, since or clock.now()
    )
    return driver_id


async def make_offer(
    session: AsyncSession,
    clock: FrozenClock,
    live: LiveState,
    ride_id: uuid.UUID,
    driver_id: uuid.UUID,
) -> list[MadeOffer]:
    """An offer as a window makes it: its decision stored, then the offer."""
    decision = NewDecision(
        id=new_id(),
        ride_id=ride_id,
        region=region_of(TIMES_SQUARE.lat, TIMES_SQUARE.lng),
        policy="batched",
        window_at=clock.now(),
        chosen_driver_id=driver_id,
        candidates=[
            {
                "driver_id": str(driver_id),
                "distance_m": 100.0,
                "eta_s": 17.0,
                "fairness_bonus_s": 0.0,
                "cost": 17.0,
            }
        ],
        params={},
    )
    await MatchDecisionRepository(session).add_many([decision])
    planned = [PlannedOffer(ride_id, driver_id, decision.id, 16.2)]
    return await OfferService(session, clock, live).create(planned, clock.now())


async def offer_statuses(session: AsyncSession, ride_id: uuid.UUID) -> list[tuple[uuid.UUID, str]]:
    rows = await session.execute(
        select(Offer.driver_id, Offer.status).where(Offer.ride_id == ride_id).order_by(Offer.id)
    )
    return [(driver_id, status) for driver_id, status in rows.all()]


async def excluded(session: AsyncSession, ride_id: uuid.UUID) -> list[uuid.UUID]:
    result = await session.execute(
        select(Ride.excluded_driver_ids)
        .where(Ride.id == ride_id)
        .execution_options(populate_existing=True)
    )
    return list(result.scalar_one())


@dataclass
class Scene:
    ride: RideRead
    driver: uuid.UUID
    other_driver: uuid.UUID


@pytest.fixture
async def scene(
    session: AsyncSession,
    clock: FrozenClock,
    live: LiveState,
    redis_client: Redis,
    settings: Settings,
    zoned: None,
) -> Scene:
    ride = await ride_in_matching(session, clock, redis_client, settings)
    return Scene(
        ride=ride,
        driver=await driver_online(session, clock, live, settings, north_of(TIMES_SQUARE, 100)),
        other_driver=await driver_online(
            session, clock, live, settings, north_of(TIMES_SQUARE, 300)
        ),
    )


def offers(session: AsyncSession, clock: FrozenClock, live: LiveState) -> OfferService:
    return OfferService(session, clock, live, EventBuffer())


# Making offers.


async def test_an_offer_is_stored_live_until_its_expiry(
    session: AsyncSession, clock: FrozenClock, live: LiveState, scene: Scene
) -> None:
    [made] = await make_offer(session, clock, live, scene.ride.id, scene.driver)
    assert made.offer.status == "offered"
    assert made.offer.driver_id == scene.driver
    assert made.offer.pickup_eta_s == 17  # rounded up
    assert made.offer.expires_at == clock.now() + timedelta(seconds=15)
    frame = made.frame()
    assert frame["type"] == "offer"
    assert frame["ride_id"] == str(scene.ride.id)
    assert frame["pickup"] == {"lat": TIMES_SQUARE.lat, "lng": TIMES_SQUARE.lng}
    assert frame["fare"]["amount"] == scene.ride.upfront_fare.total


async def test_a_ride_gets_one_live_offer(
    session: AsyncSession, clock: FrozenClock, live: LiveState, scene: Scene
) -> None:
    await make_offer(session, clock, live, scene.ride.id, scene.driver)
    assert await make_offer(session, clock, live, scene.ride.id, scene.other_driver) == []
    assert await offer_statuses(session, scene.ride.id) == [(scene.driver, "offered")]


async def test_a_driver_holds_one_live_offer(
    session: AsyncSession,
    clock: FrozenClock,
    live: LiveState,
    redis_client: Redis,
    settings: Settings,
    scene: Scene,
) -> None:
    other_ride = await ride_in_matching(session, clock, redis_client, settings)
    await make_offer(session, clock, live, scene.ride.id, scene.driver)
    assert await make_offer(session, clock, live, other_ride.id, scene.driver) == []


async def test_no_offer_is_made_for_a_ride_assigned_since_the_window_read_it(
    session: AsyncSession, clock: FrozenClock, live: LiveState, scene: Scene
) -> None:
    # The first offer was accepted after the window read the ride as open: that offer
    # is no longer live, so only a second look at the ride stops a second offer.
    [first] = await make_offer(session, clock, live, scene.ride.id, scene.driver)
    await offers(session, clock, live).accept(first.offer.id, scene.driver)
    assert await make_offer(session, clock, live, scene.ride.id, scene.other_driver) == []


async def test_no_offer_is_made_to_a_driver_the_ride_excludes(
    session: AsyncSession, clock: FrozenClock, live: LiveState, scene: Scene
) -> None:
    [first] = await make_offer(session, clock, live, scene.ride.id, scene.driver)
    await offers(session, clock, live).decline(first.offer.id, scene.driver)
    assert await make_offer(session, clock, live, scene.ride.id, scene.driver) == []


async def test_no_offer_is_made_to_a_driver_on_a_ride(
    session: AsyncSession,
    clock: FrozenClock,
    live: LiveState,
    redis_client: Redis,
    settings: Settings,
    scene: Scene,
) -> None:
    [first] = await make_offer(session, clock, live, scene.ride.id, scene.driver)
    await offers(session, clock, live).accept(first.offer.id, scene.driver)
    other_ride = await ride_in_matching(session, clock, redis_client, settings)
    assert await make_offer(session, clock, live, other_ride.id, scene.driver) == []


# Accepting.


async def test_accepting_assigns_the_ride_and_tells_the_rider(
    session: AsyncSession, clock: FrozenClock, live: LiveState, scene: Scene
) -> None:
    [made] = await make_offer(session, clock, live, scene.ride.id, scene.driver)
    events = EventBuffer()
    acceptance = await OfferService(session, clock, live, events).accept(
        made.offer.id, scene.driver
    )
    assert acceptance.accepted_now
    assert acceptance.result.offer.status == "accepted"
    assert acceptance.result.ride.status == "driver_assigned"
    assert acceptance.result.ride.driver_id == scene.driver
    assert acceptance.result.ride.pin is None
    [event] = events.drain()
    assert isinstance(event, DriverAssigned)
    assert event.offer_id == made.offer.id
    assert scene.ride.rider_id in event.recipients()


async def test_accepting_again_answers_the_same(
    session: AsyncSession, clock: FrozenClock, live: LiveState, scene: Scene
) -> None:
    [made] = await make_offer(session, clock, live, scene.ride.id, scene.driver)
    first = await offers(session, clock, live).accept(made.offer.id, scene.driver)
    again = await offers(session, clock, live).accept(made.offer.id, scene.driver)
    assert not again.accepted_now
    assert again.result.ride.id == first.result.ride.id
    assert again.result.ride.driver_id == scene.driver


async def test_another_drivers_offer_cannot_be_accepted(
    session: AsyncSession, clock: FrozenClock, live: LiveState, scene: Scene
) -> None:
    [made] = await make_offer(session, clock, live, scene.ride.id, scene.driver)
    with pytest.raises(OfferNotYours) as refused:
        await offers(session, clock, live).accept(made.offer.id, scene.other_driver)
    assert refused.value.status == 403
    assert await offer_statuses(session, scene.ride.id) == [(scene.driver, "offered")]


async def test_an_expired_offer_cannot_be_accepted(
    session: AsyncSession, clock: FrozenClock, live: LiveState, scene: Scene
) -> None:
    [made] = await make_offer(session, clock, live, scene.ride.id, scene.driver)
    clock.set(made.offer.expires_at)
    with pytest.raises(OfferExpired) as refused:
        await offers(session, clock, live).accept(made.offer.id, scene.driver)
    assert refused.value.status == 409
    assert (
        await RideService(session, clock, EventBuffer(), live.redis).get(scene.ride.id)
    ).status == "matching"


async def test_a_declined_offer_cannot_be_accepted(
    session: AsyncSession, clock: FrozenClock, live: LiveState, scene: Scene
) -> None:
    [made] = await make_offer(session, clock, live, scene.ride.id, scene.driver)
    await offers(session, clock, live).decline(made.offer.id, scene.driver)
    with pytest.raises(OfferExpired):
        await offers(session, clock, live).accept(made.offer.id, scene.driver)


async def test_an_unknown_offer_is_not_found(
    session: AsyncSession, clock: FrozenClock, live: LiveState, scene: Scene
) -> None:
    with pytest.raises(OfferNotFound):
        await offers(session, clock, live).accept(uuid.uuid4(), scene.driver)


# Declining and expiry.


async def test_declining_keeps_the_ride_open_without_the_driver(
    session: AsyncSession, clock: FrozenClock, live: LiveState, scene: Scene
) -> None:
    [made] = await make_offer(session, clock, live, scene.ride.id, scene.driver)
    declined = await offers(session, clock, live).decline(made.offer.id, scene.driver)
    assert declined.status == "declined"
    assert await excluded(session, scene.ride.id) == [scene.driver]
    ride = await RideService(session, clock, EventBuffer(), live.redis).get(scene.ride.id)
    assert ride.status == "matching"
    # The ride is free for another offer at once.
    assert len(await make_offer(session, clock, live, scene.ride.id, scene.other_driver)) == 1


async def test_declining_again_answers_the_same(
    session: AsyncSession, clock: FrozenClock, live: LiveState, scene: Scene
) -> None:
    [made] = await make_offer(session, clock, live, scene.ride.id, scene.driver)
    await offers(session, clock, live).decline(made.offer.id, scene.driver)
    again = await offers(session, clock, live).decline(made.offer.id, scene.driver)
    assert again.status == "declined"
    assert await excluded(session, scene.ride.id) == [scene.driver]


async def test_another_drivers_offer_cannot_be_declined(
    session: AsyncSession, clock: FrozenClock, live: LiveState, scene: Scene
) -> None:
    [made] = await make_offer(session, clock, live, scene.ride.id, scene.driver)
    with pytest.raises(OfferNotYours):
        await offers(session, clock, live).decline(made.offer.id, scene.other_driver)


async def test_offers_past_their_expiry_expire_and_exclude_their_driver(
    session: AsyncSession, clock: FrozenClock, live: LiveState, scene: Scene
) -> None:
    [made] = await make_offer(session, clock, live, scene.ride.id, scene.driver)
    region = scene.ride.region
    assert await offers(session, clock, live).expire_due(clock.now(), [region]) == []
    clock.set(made.offer.expires_at)
    [expired] = await offers(session, clock, live).expire_due(clock.now(), [region])
    assert expired.id == made.offer.id
    assert expired.status == "expired"
    assert await excluded(session, scene.ride.id) == [scene.driver]
    assert await offers(session, clock, live).expire_due(clock.now(), [region]) == []


async def test_expiry_leaves_other_regions_alone(
    session: AsyncSession, clock: FrozenClock, live: LiveState, scene: Scene
) -> None:
    [made] = await make_offer(session, clock, live, scene.ride.id, scene.driver)
    clock.set(made.offer.expires_at)
    assert await offers(session, clock, live).expire_due(clock.now(), ["842a103ffffffff"]) == []


# The flows: what follows the commit.


async def test_an_accepted_offer_leaves_the_live_state_and_puts_the_driver_on_the_trip(
    session: AsyncSession,
    sessionmaker: async_sessionmaker[AsyncSession],
    clock: FrozenClock,
    live: LiveState,
    scene: Scene,
) -> None:
    [made] = await make_offer(session, clock, live, scene.ride.id, scene.driver)
    await session.commit()
    await live.put_offer(made.offer.id, scene.ride.id, scene.driver, made.offer.expires_at)
    await OfferFlows(sessionmaker, clock, live).accept(made.offer.id, scene.driver)
    assert await live.offer_for_driver(scene.driver) is None
    position = await live.position(scene.driver)
    assert position is not None
    assert position.status == "busy"
    trip = await live.trip_of(scene.driver)
    assert trip is not None
    assert (trip.ride_id, trip.rider_id, trip.status) == (
        scene.ride.id,
        scene.ride.rider_id,
        "driver_assigned",
    )


# Races between real transactions, each committed for real.


@dataclass
class Committed:
    maker: async_sessionmaker[AsyncSession]
    clock: FrozenClock
    live: LiveState
    settings: Settings
    prefix: str
    users: list[uuid.UUID]

    async def user(self, session: AsyncSession, role: Role) -> uuid.UUID:
        user_id = await make_user(session, self.settings, self.clock, role)
        self.users.append(user_id)
        return user_id


@pytest.fixture
async def committed(
    engine: AsyncEngine, settings: Settings, redis_client: Redis
) -> AsyncIterator[Committed]:
    maker = async_sessionmaker(engine, expire_on_commit=False)
    clock = FrozenClock(datetime.now(UTC))
    prefix = f"offers-{uuid.uuid4().hex[:8]}-"
    async with maker() as session:
        await seed_zones(session, clock, prefix)
        await session.commit()
    state = Committed(maker, clock, LiveState(redis_client), settings, prefix, [])
    yield state
    await delete_committed(engine, state.users, prefix)


async def delete_committed(engine: AsyncEngine, users: list[uuid.UUID], prefix: str) -> None:
    """Removes what a committing test stored for ``users`` and the zones of ``prefix``."""
    async with engine.begin() as connection:
        # Ride events refuse deletes by trigger; replica mode skips user triggers, which
        # only the cleanup of a test may do.
        await connection.execute(text("SET LOCAL session_replication_role = replica"))
        ride_ids = select(Ride.id).where(Ride.rider_id.in_(users))
        await connection.execute(delete(Offer).where(Offer.ride_id.in_(ride_ids)))
        await connection.execute(delete(MatchDecision).where(MatchDecision.ride_id.in_(ride_ids)))
        await connection.execute(delete(RideEvent).where(RideEvent.ride_id.in_(ride_ids)))
        await connection.execute(delete(Ride).where(Ride.rider_id.in_(users)))
        await connection.execute(delete(Quote).where(Quote.rider_id.in_(users)))
        await connection.execute(delete(DriverShift).where(DriverShift.driver_id.in_(users)))
        await connection.execute(delete(Zone).where(Zone.code.startswith(prefix)))
        await connection.execute(delete(User).where(User.id.in_(users)))


async def test_ten_concurrent_accepts_assign_the_ride_once(committed: Committed) -> None:
    async with committed.maker() as session:
        ride = await ride_in_matching(
            session, committed.clock, committed.live.redis, committed.settings
        )
        committed.users.append(ride.rider_id)
        driver = await committed.user(session, Role.driver)
        others = [await committed.user(session, Role.driver) for _ in range(5)]
        [made] = await make_offer(session, committed.clock, committed.live, ride.id, driver)
        await session.commit()

    async def accept(driver_id: uuid.UUID) -> str:
        async with committed.maker() as session:
            service = OfferService(session, committed.clock, committed.live, EventBuffer())
            try:
                acceptance = await service.accept(made.offer.id, driver_id)
            except OfferNotYours:
                return "not yours"
            await session.commit()
            return "won" if acceptance.accepted_now else "replayed"

    outcomes = await asyncio.gather(*(accept(d) for d in [driver] * 5 + others))
    assert sorted(outcomes) == ["not yours"] * 5 + ["replayed"] * 4 + ["won"]
    async with committed.maker() as session:
        assignments = await session.scalar(
            select(func.count()).where(
                RideEvent.ride_id == ride.id, RideEvent.to_status == "driver_assigned"
            )
        )
        assert assignments == 1
        assert await offer_statuses(session, ride.id) == [(driver, "accepted")]
        row = await session.get(Ride, ride.id)
        assert row is not None
        assert row.driver_id == driver


async def test_an_accept_racing_the_expiry_either_wins_or_is_refused(
    committed: Committed,
) -> None:
    async with committed.maker() as session:
        ride = await ride_in_matching(
            session, committed.clock, committed.live.redis, committed.settings
        )
        committed.users.append(ride.rider_id)
        driver = await committed.user(session, Role.driver)
        [made] = await make_offer(session, committed.clock, committed.live, ride.id, driver)
        await session.commit()
    # The driver's clock is a moment before the expiry, the dispatcher's at it.
    driver_clock = FrozenClock(made.offer.expires_at - timedelta(milliseconds=1))
    dispatcher_clock = FrozenClock(made.offer.expires_at)

    async def accept() -> str:
        async with committed.maker() as session:
            service = OfferService(session, driver_clock, committed.live, EventBuffer())
            try:
                await service.accept(made.offer.id, driver)
            except OfferExpired:
                return "refused"
            await session.commit()
            return "won"

    async def expire() -> int:
        async with committed.maker() as session:
            service = OfferService(session, dispatcher_clock, committed.live, EventBuffer())
            expired = await service.expire_due(dispatcher_clock.now(), [ride.region])
            await session.commit()
            return len(expired)

    accepted, expired = await asyncio.gather(accept(), expire())
    assert (accepted, expired) in {("won", 0), ("refused", 1)}
    async with committed.maker() as session:
        [(_, status)] = await offer_statuses(session, ride.id)
        row = await session.get(Ride, ride.id)
        assert row is not None
    if accepted == "won":
        assert (status, row.status, list(row.excluded_driver_ids)) == (
            "accepted",
            "driver_assigned",
            [],
        )
    else:
        assert (status, row.status, list(row.excluded_driver_ids)) == (
            "expired",
            "matching",
            [driver],
        )
