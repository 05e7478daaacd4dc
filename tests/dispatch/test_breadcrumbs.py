"""Trip breadcrumbs: which positions are kept, and that they reach PostGIS in batches
that give the trip's distance."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from redis.asyncio import Redis
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from accounts.models import Role
from dispatch.breadcrumbs import BreadcrumbSampler, BreadcrumbWriter
from dispatch.locations import LocationUpdate, haversine_m
from dispatch.models import Breadcrumb
from dispatch.repository import RideRepository
from dispatch.schemas import Point, RideRead
from dispatch.service import RideService
from infra.clock import FrozenClock
from infra.events import EventBuffer
from infra.settings import Settings
from tests.dispatch.test_offers import ride_in_matching
from tests.dispatch.test_quotes import TIMES_SQUARE, make_user, north_of, seed_zones

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


def at(point: Point, seconds: float) -> LocationUpdate:
    return LocationUpdate(point.lat, point.lng, 0.0, 8.0, 5.0, T0 + timedelta(seconds=seconds))


# The sampler.


def test_the_first_position_of_a_ride_is_kept() -> None:
    sampler = BreadcrumbSampler(sample_s=5, min_move_m=30)
    assert sampler.keep(uuid.uuid4(), uuid.uuid4(), at(TIMES_SQUARE, 0))


def test_a_driver_standing_still_leaves_a_point_per_interval() -> None:
    sampler = BreadcrumbSampler(sample_s=5, min_move_m=30)
    ride, driver = uuid.uuid4(), uuid.uuid4()
    kept = [s for s in range(12) if sampler.keep(ride, driver, at(TIMES_SQUARE, s))]
    assert kept == [0, 5, 10]


def test_a_moving_driver_leaves_every_point_beyond_the_distance() -> None:
    sampler = BreadcrumbSampler(sample_s=5, min_move_m=30)
    ride, driver = uuid.uuid4(), uuid.uuid4()
    path = [north_of(TIMES_SQUARE, 20 * s) for s in range(7)]
    kept = [s for s, point in enumerate(path) if sampler.keep(ride, driver, at(point, s))]
    # 20 m a second: past 30 m every other second.
    assert kept == [0, 2, 4, 6]


def test_a_new_ride_starts_with_its_first_point() -> None:
    sampler = BreadcrumbSampler(sample_s=5, min_move_m=30)
    driver = uuid.uuid4()
    assert sampler.keep(uuid.uuid4(), driver, at(TIMES_SQUARE, 0))
    assert sampler.keep(uuid.uuid4(), driver, at(TIMES_SQUARE, 1))


def test_a_position_older_than_the_last_kept_is_not_kept() -> None:
    sampler = BreadcrumbSampler(sample_s=5, min_move_m=30)
    ride, driver = uuid.uuid4(), uuid.uuid4()
    assert sampler.keep(ride, driver, at(TIMES_SQUARE, 10))
    assert not sampler.keep(ride, driver, at(north_of(TIMES_SQUARE, 500), 2))


def test_drivers_are_sampled_apart() -> None:
    sampler = BreadcrumbSampler(sample_s=5, min_move_m=30)
    ride = uuid.uuid4()
    assert sampler.keep(ride, uuid.uuid4(), at(TIMES_SQUARE, 0))
    assert sampler.keep(ride, uuid.uuid4(), at(TIMES_SQUARE, 1))


def test_forgetting_drops_only_drivers_not_heard_from() -> None:
    sampler = BreadcrumbSampler(sample_s=5, min_move_m=30)
    ride, old, recent = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    sampler.keep(ride, old, at(TIMES_SQUARE, 0))
    sampler.keep(ride, recent, at(TIMES_SQUARE, 100))
    assert sampler.forget_before(T0 + timedelta(seconds=50)) == 1
    # The old driver's next point starts afresh; the recent one's is still sampled.
    assert sampler.keep(ride, old, at(TIMES_SQUARE, 101))
    assert not sampler.keep(ride, recent, at(TIMES_SQUARE, 101))


# The writer.


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(T0)


async def ride_under_way(
    session: AsyncSession, clock: FrozenClock, redis: Redis, settings: Settings
) -> tuple[RideRead, uuid.UUID]:
    """A ride in progress, and its driver."""
    await seed_zones(session, clock)
    ride = await ride_in_matching(session, clock, redis, settings)
    driver_id = await make_user(session, settings, clock, Role.driver)
    rides = RideService(session, clock, EventBuffer(), redis)
    await rides.assign(ride.id, driver_id, None)
    await rides.arrive(ride.id, driver_id, north_of(TIMES_SQUARE, 20))
    assert ride.pin is not None
    return await rides.start(ride.id, driver_id, ride.pin), driver_id


async def stored(session: AsyncSession, ride_id: uuid.UUID) -> int:
    result = await session.execute(
        select(func.count()).select_from(Breadcrumb).where(Breadcrumb.ride_id == ride_id)
    )
    return int(result.scalar_one())


async def test_a_trips_breadcrumbs_are_written_in_one_statement_and_give_its_distance(
    session: AsyncSession,
    sessionmaker: async_sessionmaker[AsyncSession],
    clock: FrozenClock,
    redis_client: Redis,
    settings: Settings,
) -> None:
    ride, driver_id = await ride_under_way(session, clock, redis_client, settings)
    writer = BreadcrumbWriter(sessionmaker, clock, sample_s=5, min_move_m=30)
    # North 1 km, then east 500 m, 50 m every 5 s.
    corner = north_of(TIMES_SQUARE, 1_000)
    path = [north_of(TIMES_SQUARE, 50 * i) for i in range(21)] + [
        Point(lat=corner.lat, lng=corner.lng + 0.000593 * i) for i in range(1, 11)
    ]
    for i, point in enumerate(path):
        assert writer.add(ride.id, driver_id, at(point, 5 * i))
    assert await stored(session, ride.id) == 0

    assert await writer.flush() == len(path)

    assert writer.flushes == 1
    assert await stored(session, ride.id) == len(path)
    track = await RideRepository(session).track(
        ride.id, driver_id, T0, T0 + timedelta(seconds=5 * len(path))
    )
    length = sum(haversine_m(a.lat, a.lng, b.lat, b.lng) for a, b in itertools.pairwise(path))
    assert track.points == len(path)
    assert track.length_m == pytest.approx(length, rel=0.005)
    assert track.span_s == 5 * (len(path) - 1)


async def test_breadcrumbs_of_a_ride_the_driver_is_not_driving_are_dropped(
    session: AsyncSession,
    sessionmaker: async_sessionmaker[AsyncSession],
    clock: FrozenClock,
    redis_client: Redis,
    settings: Settings,
) -> None:
    ride, driver_id = await ride_under_way(session, clock, redis_client, settings)
    writer = BreadcrumbWriter(sessionmaker, clock, sample_s=0, min_move_m=0)
    writer.add(ride.id, driver_id, at(TIMES_SQUARE, 0))
    writer.add(ride.id, uuid.uuid4(), at(TIMES_SQUARE, 0))
    writer.add(uuid.uuid4(), driver_id, at(TIMES_SQUARE, 1))
    assert await writer.flush() == 1
    assert await stored(session, ride.id) == 1
    assert writer.pending == 0


async def test_a_failed_write_keeps_the_breadcrumbs_for_the_next(
    clock: FrozenClock, settings: Settings
) -> None:
    # A database that does not answer: nothing listens on port 1.
    engine = create_async_engine("postgresql+asyncpg://nobody@127.0.0.1:1/none")
    try:
        writer = BreadcrumbWriter(async_sessionmaker(engine), clock, sample_s=0, min_move_m=0)
        for second in range(3):
            writer.add(uuid.uuid4(), uuid.uuid4(), at(TIMES_SQUARE, second))
        with pytest.raises(ConnectionRefusedError):
            await writer.flush()
        assert writer.pending == 3
        assert writer.written == 0
    finally:
        await engine.dispose()


async def test_the_writer_drops_the_oldest_beyond_its_bound(clock: FrozenClock) -> None:
    engine = create_async_engine("postgresql+asyncpg://nobody@127.0.0.1:1/none")
    writer = BreadcrumbWriter(
        async_sessionmaker(engine), clock, sample_s=0, flush_max=2, max_pending=3
    )
    for second in range(5):
        writer.add(uuid.uuid4(), uuid.uuid4(), at(TIMES_SQUARE, second))
    assert (writer.pending, writer.dropped) == (3, 2)
    await engine.dispose()


async def test_the_running_writer_flushes_when_enough_wait_and_on_stop(
    session: AsyncSession,
    sessionmaker: async_sessionmaker[AsyncSession],
    clock: FrozenClock,
    redis_client: Redis,
    settings: Settings,
) -> None:
    ride, driver_id = await ride_under_way(session, clock, redis_client, settings)
    writer = BreadcrumbWriter(
        sessionmaker, clock, sample_s=0, min_move_m=0, flush_s=3_600, flush_max=3
    )
    await writer.start()
    try:
        for second in range(3):
            writer.add(ride.id, driver_id, at(TIMES_SQUARE, second))
        for _ in range(100):
            if writer.flushes:
                break
            await asyncio.sleep(0.01)
        assert (writer.flushes, writer.written) == (1, 3)
        writer.add(ride.id, driver_id, at(TIMES_SQUARE, 3))
    finally:
        await writer.stop()
    assert writer.written == 4
    assert await stored(session, ride.id) == 4


async def test_the_running_writer_flushes_every_interval(
    session: AsyncSession,
    sessionmaker: async_sessionmaker[AsyncSession],
    clock: FrozenClock,
    redis_client: Redis,
    settings: Settings,
) -> None:
    ride, driver_id = await ride_under_way(session, clock, redis_client, settings)
    writer = BreadcrumbWriter(sessionmaker, clock, sample_s=0, flush_s=0.05, flush_max=1_000)
    await writer.start()
    try:
        writer.add(ride.id, driver_id, at(TIMES_SQUARE, 0))
        for _ in range(100):
            if writer.written:
                break
            await asyncio.sleep(0.01)
        assert writer.written == 1
    finally:
        await writer.stop()
