"""Zones, the service area and quotes, on real PostGIS and a real live state in Redis.

The helpers here (zones of New York, people, quotes) serve the other ride tests too.
"""

from __future__ import annotations

import dataclasses
import math
import secrets
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession

from accounts.models import Role
from accounts.passwords import Passwords
from accounts.service import AccountService
from dispatch.errors import (
    QuoteNotFound,
    RideOutsideServiceArea,
    ZoneCodeTaken,
    ZoneGeometryInvalid,
)
from dispatch.live import LiveState
from dispatch.locations import haversine_m
from dispatch.models import Quote
from dispatch.regions import region_of
from dispatch.schemas import Point, QuoteCreate, ZoneCreate
from dispatch.service import QuoteService, StraightLineRoutes, ZoneService, priced_quote
from infra.clock import FrozenClock
from infra.events import EventBuffer
from infra.settings import Settings
from payments.policies import FarePolicyService
from payments.policy import FarePolicy
from payments.repository import FarePolicyRepository
from tests.factories import PASSWORD

TIMES_SQUARE = Point(lat=40.7580, lng=-73.9855)
UPPER_EAST_SIDE = Point(lat=40.7866, lng=-73.9535)
JFK = Point(lat=40.6413, lng=-73.7781)
PHILADELPHIA = Point(lat=39.9526, lng=-75.1652)

# Roughly New York City's five boroughs, as GeoJSON (longitude first).
NYC = {
    "type": "Polygon",
    "coordinates": [
        [[-74.26, 40.49], [-73.70, 40.49], [-73.70, 40.92], [-74.26, 40.92], [-74.26, 40.49]]
    ],
}
JFK_AREA = {
    "type": "Polygon",
    "coordinates": [
        [[-73.83, 40.62], [-73.74, 40.62], [-73.74, 40.67], [-73.83, 40.67], [-73.83, 40.62]]
    ],
}


def north_of(point: Point, metres: float) -> Point:
    return Point(lat=point.lat + metres / 111_195.0, lng=point.lng)


async def seed_zones(session: AsyncSession, clock: FrozenClock, prefix: str = "") -> None:
    zones = ZoneService(session, clock)
    await zones.create(
        ZoneCreate(code=f"{prefix}nyc", kind="service_area", name="New York City", area=NYC)
    )
    # Fare policies key surcharges by zone code: the seeded policy prices "airport".
    await zones.create(
        ZoneCreate(code=f"{prefix}airport", kind="airport", name="JFK", area=JFK_AREA)
    )


async def make_user(
    session: AsyncSession, settings: Settings, clock: FrozenClock, role: Role
) -> uuid.UUID:
    accounts = AccountService(
        session, settings.auth, Passwords(settings.auth), clock, EventBuffer()
    )
    user = await accounts.create_user(
        role=role,
        email=f"{role.value}.{uuid.uuid4().hex[:12]}@example.org",
        # Random, not counted: committed tests' people must not collide with others'.
        phone=f"+1202{2_000_000 + secrets.randbelow(8_000_000)}",
        full_name=f"A {role.value}",
        password=PASSWORD,
    )
    return user.id


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(datetime.now(UTC))


@pytest.fixture
def live(redis_client: Redis) -> LiveState:
    return LiveState(redis_client)


@pytest.fixture
async def zoned(session: AsyncSession, clock: FrozenClock) -> None:
    await seed_zones(session, clock)


@pytest.fixture
async def rider_id(session: AsyncSession, settings: Settings, clock: FrozenClock) -> uuid.UUID:
    return await make_user(session, settings, clock, Role.rider)


@pytest.fixture
def quotes(session: AsyncSession, clock: FrozenClock, live: LiveState) -> QuoteService:
    return QuoteService(session, clock, live)


# Routing.


def test_a_trip_is_estimated_as_the_straight_line_times_1_4_at_30_kmh() -> None:
    estimate = StraightLineRoutes().trip(TIMES_SQUARE, UPPER_EAST_SIDE)
    straight = haversine_m(
        TIMES_SQUARE.lat, TIMES_SQUARE.lng, UPPER_EAST_SIDE.lat, UPPER_EAST_SIDE.lng
    )
    assert estimate.distance_m == round(straight * 1.4)
    assert estimate.duration_s == math.ceil(straight * 1.4 / (30 / 3.6))


def test_a_pickup_eta_drives_the_detour_at_city_speed() -> None:
    assert StraightLineRoutes().pickup_eta_s(1_000) == math.ceil(1_400 / (30 / 3.6))


# Zones.


async def test_a_polygon_is_stored_as_a_multipolygon(
    session: AsyncSession, clock: FrozenClock
) -> None:
    zone = await ZoneService(session, clock).create(
        ZoneCreate(code="jfk", kind="airport", name="JFK", area=JFK_AREA)
    )
    assert zone.area["type"] == "MultiPolygon"
    assert zone.area["coordinates"][0] == JFK_AREA["coordinates"]


async def test_a_self_crossing_polygon_is_refused(
    session: AsyncSession, clock: FrozenClock
) -> None:
    bowtie = {
        "type": "Polygon",
        "coordinates": [
            [[-74.0, 40.7], [-73.9, 40.8], [-73.9, 40.7], [-74.0, 40.8], [-74.0, 40.7]]
        ],
    }
    with pytest.raises(ZoneGeometryInvalid, match="Self-intersection"):
        await ZoneService(session, clock).create(
            ZoneCreate(code="bowtie", kind="surcharge", name="Bow tie", area=bowtie)
        )


@pytest.mark.parametrize(
    "area",
    [
        {"type": "Point", "coordinates": [-74.0, 40.7]},
        {"type": "Polygon", "coordinates": [[[-74.0, 40.7], [-73.9]]]},
        {"type": "Polygon", "coordinates": "nope"},
        {"type": "Polygon", "coordinates": [[[40.7, -200.0], [40.8, -200], [40.8, -199]]]},
        {"type": "Polygon", "coordinates": []},
    ],
    ids=["point", "short-position", "not-a-list", "out-of-range", "empty"],
)
async def test_an_area_that_is_not_a_polygon_is_refused(
    session: AsyncSession, clock: FrozenClock, area: dict[str, Any]
) -> None:
    with pytest.raises(ZoneGeometryInvalid):
        await ZoneService(session, clock).create(
            ZoneCreate(code="bad", kind="surcharge", name="Bad", area=area)
        )


async def test_a_zone_code_is_unique(session: AsyncSession, clock: FrozenClock) -> None:
    zones = ZoneService(session, clock)
    await zones.create(ZoneCreate(code="jfk", kind="airport", name="JFK", area=JFK_AREA))
    with pytest.raises(ZoneCodeTaken):
        await zones.create(ZoneCreate(code="jfk", kind="airport", name="Again", area=JFK_AREA))


@pytest.mark.usefixtures("zoned")
async def test_the_service_area_and_zones_hold_points(
    session: AsyncSession, clock: FrozenClock
) -> None:
    zones = ZoneService(session, clock)
    assert await zones.in_service_area(TIMES_SQUARE)
    assert not await zones.in_service_area(PHILADELPHIA)
    assert await zones.zones_at(JFK) == frozenset({"airport"})
    assert await zones.zones_at(TIMES_SQUARE) == frozenset()


# Quotes.


@pytest.mark.usefixtures("zoned")
async def test_a_quote_prices_the_trip_with_the_policy_in_force(
    quotes: QuoteService, rider_id: uuid.UUID, session: AsyncSession, clock: FrozenClock
) -> None:
    quote = await quotes.create(rider_id, QuoteCreate(pickup=TIMES_SQUARE, dropoff=UPPER_EAST_SIDE))

    policy = await FarePolicyService(session).in_force(clock.now())
    estimate = StraightLineRoutes().trip(TIMES_SQUARE, UPPER_EAST_SIDE)
    assert (quote.estimated_distance_m, quote.estimated_duration_s) == (
        estimate.distance_m,
        estimate.duration_s,
    )
    assert quote.fare.policy_id == policy.id
    assert quote.fare.surge_multiplier == Decimal(1)
    codes = [item.code for item in quote.fare.line_items]
    assert codes == ["base_fare", "distance", "time", "booking_fee"]
    assert quote.fare.total == sum(item.amount for item in quote.fare.line_items)
    assert quote.expires_at == clock.now() + timedelta(seconds=policy.quote_ttl_s)
    assert quote.pickup_eta_s is None  # nobody is online


@pytest.mark.usefixtures("zoned")
async def test_a_stored_quote_prices_again_exactly_as_quoted(
    quotes: QuoteService, rider_id: uuid.UUID, session: AsyncSession
) -> None:
    quote = await quotes.create(rider_id, QuoteCreate(pickup=TIMES_SQUARE, dropoff=JFK))
    row = await session.get(Quote, quote.id)
    assert row is not None
    priced = priced_quote(row)
    assert priced.total.amount == quote.fare.total == row.total_amount
    assert priced.zones == frozenset({"airport"})
    assert priced.estimate.distance_m == quote.estimated_distance_m


@pytest.mark.usefixtures("zoned")
async def test_a_trip_to_the_airport_pays_its_surcharge(
    quotes: QuoteService, rider_id: uuid.UUID
) -> None:
    quote = await quotes.create(rider_id, QuoteCreate(pickup=TIMES_SQUARE, dropoff=JFK))
    surcharges = [i for i in quote.fare.line_items if i.code == "zone_surcharge:airport"]
    assert [s.amount for s in surcharges] == [400]  # the seeded policy's airport fee
    assert quote.fare.zones == ["airport"]


@pytest.mark.usefixtures("zoned")
@pytest.mark.parametrize("outside", ["pickup", "dropoff"])
async def test_a_trip_outside_the_service_area_is_refused(
    quotes: QuoteService, rider_id: uuid.UUID, outside: str
) -> None:
    ends = {"pickup": TIMES_SQUARE, "dropoff": UPPER_EAST_SIDE, outside: PHILADELPHIA}
    with pytest.raises(RideOutsideServiceArea) as refused:
        await quotes.create(rider_id, QuoteCreate(**ends))
    assert refused.value.extra == {"point": outside}
    assert outside in refused.value.detail


async def test_without_a_service_area_every_trip_is_refused(
    quotes: QuoteService, rider_id: uuid.UUID
) -> None:
    with pytest.raises(RideOutsideServiceArea):
        await quotes.create(rider_id, QuoteCreate(pickup=TIMES_SQUARE, dropoff=UPPER_EAST_SIDE))


@pytest.mark.usefixtures("zoned")
async def test_a_quote_tells_the_nearest_available_drivers_eta(
    quotes: QuoteService, rider_id: uuid.UUID, live: LiveState, clock: FrozenClock
) -> None:
    near, far = north_of(TIMES_SQUARE, 800), north_of(TIMES_SQUARE, 2_500)
    for point in (near, far):
        await live.set_online(
            uuid.uuid4(), region_of(point.lat, point.lng), point.lat, point.lng, clock.now()
        )
    quote = await quotes.create(rider_id, QuoteCreate(pickup=TIMES_SQUARE, dropoff=UPPER_EAST_SIDE))
    # Redis' geo index stores positions to within centimetres.
    assert quote.pickup_eta_s == pytest.approx(StraightLineRoutes().pickup_eta_s(800), abs=1)


@pytest.mark.usefixtures("zoned")
async def test_a_busy_driver_gives_no_eta(
    quotes: QuoteService, rider_id: uuid.UUID, live: LiveState, clock: FrozenClock
) -> None:
    near = north_of(TIMES_SQUARE, 800)
    driver_id = uuid.uuid4()
    await live.set_online(driver_id, region_of(near.lat, near.lng), near.lat, near.lng, clock.now())
    await live.mark_busy(driver_id)
    quote = await quotes.create(rider_id, QuoteCreate(pickup=TIMES_SQUARE, dropoff=UPPER_EAST_SIDE))
    assert quote.pickup_eta_s is None


@pytest.mark.usefixtures("zoned")
async def test_a_new_policy_version_prices_the_next_quote(
    quotes: QuoteService, rider_id: uuid.UUID, session: AsyncSession, clock: FrozenClock
) -> None:
    trip = QuoteCreate(pickup=TIMES_SQUARE, dropoff=UPPER_EAST_SIDE)
    before = await quotes.create(rider_id, trip)
    current = await FarePolicyService(session).in_force(clock.now())
    await FarePolicyRepository(session).add_policy_version(
        raised_base_fare(current, clock.now()), reason="members voted a higher base fare"
    )
    after = await quotes.create(rider_id, trip)
    assert after.fare.policy_version == current.version + 1
    assert after.fare.total == before.fare.total + 100


def raised_base_fare(current: FarePolicy, now: datetime) -> FarePolicy:
    return dataclasses.replace(
        current,
        id=uuid.uuid4(),
        version=current.version + 1,
        effective_at=now - timedelta(seconds=1),
        base_fare=current.base_fare + 100,
    )


@pytest.mark.usefixtures("zoned")
async def test_a_quote_of_another_rider_is_not_found(
    quotes: QuoteService,
    rider_id: uuid.UUID,
    session: AsyncSession,
    settings: Settings,
    clock: FrozenClock,
) -> None:
    quote = await quotes.create(rider_id, QuoteCreate(pickup=TIMES_SQUARE, dropoff=JFK))
    other = await make_user(session, settings, clock, Role.rider)
    assert (await quotes.get(quote.id, rider_id)).id == quote.id
    with pytest.raises(QuoteNotFound):
        await quotes.get(quote.id, other)
