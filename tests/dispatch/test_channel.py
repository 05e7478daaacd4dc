"""The driver channel's frames, without a websocket, on real Redis and PostgreSQL: what
each frame does, and that every bad one gets its error frame and changes nothing."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from types import AsyncGeneratorType
from typing import Any, TypeVar

import pytest
from redis.asyncio import Redis
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from accounts.models import Role
from dispatch.breadcrumbs import BreadcrumbWriter
from dispatch.channel import (
    DriverChannel,
    DriverChannels,
    LocationIngest,
    after_ride_events,
    sync_trip,
)
from dispatch.events import (
    DriverArrived,
    DriverCancelled,
    RideCancelled,
    RideDomainEvent,
    TripStarted,
)
from dispatch.live import LiveState, LiveTrip, geo_key
from dispatch.locations import LocationUpdate
from dispatch.models import DriverShift, Offer, Ride
from dispatch.offers import OfferFlows, deliver
from dispatch.regions import region_of
from dispatch.schemas import Point
from infra.clock import FrozenClock
from infra.pubsub import Subscription, user_channel
from infra.settings import DispatchSettings, Settings
from tests.dispatch.test_offers import make_offer, ride_in_matching
from tests.dispatch.test_quotes import TIMES_SQUARE, make_user, north_of, seed_zones

START = (TIMES_SQUARE.lat, TIMES_SQUARE.lng)


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(datetime.now(UTC).replace(microsecond=0))


@pytest.fixture
def live(redis_client: Redis) -> LiveState:
    return LiveState(redis_client)


@pytest.fixture
def channels(
    live: LiveState,
    clock: FrozenClock,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> DriverChannels:
    settings = DispatchSettings()
    return DriverChannels(
        live=live,
        clock=clock,
        sessionmaker=sessionmaker,
        settings=settings,
        offers=OfferFlows(sessionmaker, clock, live),
        breadcrumbs=BreadcrumbWriter.from_settings(sessionmaker, clock, settings),
    )


@pytest.fixture
async def driver_id(session: AsyncSession, settings: Settings, clock: FrozenClock) -> uuid.UUID:
    return await make_user(session, settings, clock, Role.driver)


@pytest.fixture
def channel(channels: DriverChannels, driver_id: uuid.UUID) -> DriverChannel:
    return channels.connect(driver_id)


def location(point: tuple[float, float] | Point, at: datetime, **fields: Any) -> dict[str, Any]:
    lat, lng = (point.lat, point.lng) if isinstance(point, Point) else point
    frame = {
        "type": "location",
        "lat": lat,
        "lng": lng,
        "heading": 90.0,
        "speed": 8.0,
        "accuracy": 5.0,
        "recorded_at": at.isoformat(),
    }
    return {**frame, **fields}


async def online(channel: DriverChannel, point: tuple[float, float] = START) -> dict[str, Any]:
    reply = await channel.handle({"type": "go_online", "lat": point[0], "lng": point[1], "id": 1})
    assert reply is not None
    assert reply["type"] == "ok", reply
    return reply


async def live_keys(redis: Redis) -> dict[str, Any]:
    """Everything live state holds, to show that a refused frame changed none of it."""
    found: dict[str, Any] = {}
    for key in sorted(str(key) for key in await redis.keys("live:*")):
        kind = await redis.type(key)
        if kind == "hash":
            found[key] = await redis.hgetall(key)
        elif kind == "zset":
            found[key] = await redis.zrange(key, 0, -1, withscores=True)
        elif kind == "stream":
            found[key] = await redis.xrange(key)
        else:
            found[key] = await redis.get(key)
    return found


async def shifts(session: AsyncSession, driver_id: uuid.UUID) -> list[DriverShift]:
    result = await session.execute(
        select(DriverShift)
        .where(DriverShift.driver_id == driver_id)
        .order_by(DriverShift.started_at)
        .execution_options(populate_existing=True)
    )
    return list(result.scalars())


# Going online and offline.


async def test_going_online_puts_the_driver_in_their_regions_index_and_opens_a_shift(
    channel: DriverChannel,
    redis_client: Redis,
    session: AsyncSession,
    driver_id: uuid.UUID,
    clock: FrozenClock,
) -> None:
    reply = await online(channel)
    region = region_of(*START)
    assert reply == {
        "type": "ok",
        "ref": 1,
        "status": "available",
        "region": region,
        "shift_id": reply["shift_id"],
    }
    assert await redis_client.geopos(geo_key(region), str(driver_id)) != [None]
    [shift] = await shifts(session, driver_id)
    assert str(shift.id) == reply["shift_id"]
    assert shift.started_at == clock.now()
    assert shift.ended_at is None


async def test_going_offline_forgets_the_driver_and_closes_the_shift(
    channel: DriverChannel,
    live: LiveState,
    session: AsyncSession,
    driver_id: uuid.UUID,
    clock: FrozenClock,
) -> None:
    await online(channel)
    clock.set(clock.now() + timedelta(minutes=30))
    assert await channel.handle({"type": "go_offline", "id": "off"}) == {
        "type": "ok",
        "ref": "off",
    }
    assert await live.position(driver_id) is None
    [shift] = await shifts(session, driver_id)
    assert shift.ended_at == clock.now()


async def test_going_offline_mid_trip_is_refused(
    channel: DriverChannel, live: LiveState, redis_client: Redis, driver_id: uuid.UUID
) -> None:
    await online(channel)
    trip = LiveTrip(uuid.uuid4(), uuid.uuid4(), "in_progress", *START)
    await live.set_trip(driver_id, trip)
    before = await live_keys(redis_client)
    reply = await channel.handle({"type": "go_offline"})
    assert reply is not None
    assert (reply["code"], reply["status"]) == ("driver-on-trip", 409)
    assert reply["ride_id"] == str(trip.ride_id)
    assert await live_keys(redis_client) == before


async def test_the_end_of_a_connection_closes_the_shift_and_leaves_the_live_state(
    channel: DriverChannel, live: LiveState, session: AsyncSession, driver_id: uuid.UUID
) -> None:
    await online(channel)
    await channel.close()
    assert await live.position(driver_id) is not None
    [shift] = await shifts(session, driver_id)
    assert shift.ended_at is not None


async def test_a_second_connection_has_a_shift_of_its_own_that_outlives_the_first(
    channels: DriverChannels, session: AsyncSession, driver_id: uuid.UUID
) -> None:
    # A phone reconnects before its old connection is noticed gone.
    old = channels.connect(driver_id)
    first = await online(old)
    second = await online(channels.connect(driver_id))
    assert first["shift_id"] != second["shift_id"]
    await old.close()
    ended = {str(shift.id): shift.ended_at for shift in await shifts(session, driver_id)}
    assert ended[first["shift_id"]] is not None
    assert ended[second["shift_id"]] is None


# Positions.


async def test_a_position_moves_the_driver(
    channel: DriverChannel, live: LiveState, driver_id: uuid.UUID, clock: FrozenClock
) -> None:
    await online(channel)
    moved = north_of(TIMES_SQUARE, 40)
    assert await channel.handle(location(moved, clock.now())) is None
    stored = await live.position(driver_id)
    assert stored is not None
    assert (stored.location.lat, stored.location.lng) == (moved.lat, moved.lng)
    assert stored.location.recorded_at == clock.now()
    assert stored.location.speed_mps == 8.0


async def test_a_position_with_an_id_is_acknowledged(
    channel: DriverChannel, clock: FrozenClock
) -> None:
    await online(channel)
    assert await channel.handle(location(START, clock.now(), id="p-1")) == {
        "type": "ok",
        "ref": "p-1",
    }


async def test_a_position_before_going_online_is_refused(
    channel: DriverChannel, redis_client: Redis, clock: FrozenClock
) -> None:
    reply = await channel.handle(location(START, clock.now(), id=3))
    assert reply is not None
    assert (reply["code"], reply["ref"], reply["status"]) == ("not-online", 3, 409)
    assert await live_keys(redis_client) == {}


async def test_a_position_of_a_driver_gone_offline_elsewhere_is_refused(
    channel: DriverChannel, live: LiveState, driver_id: uuid.UUID, clock: FrozenClock
) -> None:
    await online(channel)
    await live.set_offline(driver_id)
    reply = await channel.handle(location(START, clock.now()))
    assert reply is not None
    assert reply["code"] == "not-online"
    assert await live.position(driver_id) is None


def _bad_frames(now: datetime) -> list[tuple[str, dict[str, Any], str]]:
    one_second_later = now + timedelta(seconds=1)
    return [
        ("latitude", location((91.0, START[1]), one_second_later), "coordinates-out-of-range"),
        ("longitude", location((START[0], 181.0), one_second_later), "coordinates-out-of-range"),
        ("future", location(START, now + timedelta(minutes=1)), "timestamp-in-future"),
        ("stale", location(START, now - timedelta(minutes=2)), "timestamp-stale"),
        ("same time", location(START, now), "out-of-order"),
        (
            "jump",
            location(north_of(TIMES_SQUARE, 50_000), one_second_later),
            "impossible-speed",
        ),
        ("speed", location(START, one_second_later, speed=120.0), "impossible-speed"),
        ("heading", location(START, one_second_later, heading=400.0), "heading-out-of-range"),
        (
            "naive time",
            location(START, one_second_later.replace(tzinfo=None)),
            "timestamp-without-timezone",
        ),
        ("not a number", location(START, one_second_later, lat="north"), "invalid-frame"),
        (
            "no time",
            {k: v for k, v in location(START, one_second_later).items() if k != "recorded_at"},
            "invalid-frame",
        ),
        ("extra field", location(START, one_second_later, altitude=12), "invalid-frame"),
        ("unknown type", {"type": "teleport", "lat": 0, "lng": 0}, "unknown-type"),
        ("no type", {"lat": 0, "lng": 0}, "unknown-type"),
        ("unknown ack", {"type": "ack", "message_id": "1-1"}, "unknown-message"),
        ("malformed ack", {"type": "ack", "message_id": "yesterday"}, "unknown-message"),
        ("offer id", {"type": "accept", "offer_id": "the-best-one"}, "invalid-frame"),
        (
            "online at a pole",
            {"type": "go_online", "lat": 90.0, "lng": 0.0},
            "coordinates-out-of-range",
        ),
        ("long id", {"type": "heartbeat", "id": "x" * 65}, "invalid-frame"),
    ]


_CASES = [name for name, _, _ in _bad_frames(datetime.now(UTC))]


@pytest.mark.parametrize("case", range(len(_CASES)), ids=_CASES)
async def test_a_bad_frame_gets_its_error_and_changes_nothing(
    case: int,
    channel: DriverChannel,
    channels: DriverChannels,
    live: LiveState,
    redis_client: Redis,
    session: AsyncSession,
    driver_id: uuid.UUID,
    clock: FrozenClock,
) -> None:
    await online(channel)
    await live.set_trip(driver_id, LiveTrip(uuid.uuid4(), uuid.uuid4(), "in_progress", *START))
    assert await channel.handle(location(START, clock.now())) is None
    queued = channels.breadcrumbs.pending
    before = await live_keys(redis_client)
    shifts_before = [(s.id, s.ended_at) for s in await shifts(session, driver_id)]
    _, frame, code = _bad_frames(clock.now())[case]

    reply = await channel.handle({**frame, "id": "bad"} if "id" not in frame else frame)

    assert reply is not None
    assert reply["type"] == "error"
    assert reply["code"] == code
    assert reply["detail"]
    assert await live_keys(redis_client) == before
    assert channels.breadcrumbs.pending == queued
    assert [(s.id, s.ended_at) for s in await shifts(session, driver_id)] == shifts_before


async def test_an_invalid_frame_names_the_fields(
    channel: DriverChannel, clock: FrozenClock
) -> None:
    await online(channel)
    reply = await channel.handle(location(START, clock.now(), lat="north", speed="fast"))
    assert reply is not None
    assert reply["code"] == "invalid-frame"
    assert [p["name"] for p in reply["invalid_params"]] == ["lat", "speed"]


async def test_after_a_refused_position_the_next_good_one_is_checked_against_the_last_good(
    channel: DriverChannel, live: LiveState, driver_id: uuid.UUID, clock: FrozenClock
) -> None:
    await online(channel)
    now = clock.now()
    assert await channel.handle(location(START, now - timedelta(seconds=2))) is None
    jump = await channel.handle(location(north_of(TIMES_SQUARE, 50_000), now))
    assert jump is not None
    assert jump["code"] == "impossible-speed"
    assert await channel.handle(location(north_of(TIMES_SQUARE, 20), now)) is None
    stored = await live.position(driver_id)
    assert stored is not None
    assert stored.location.lat == north_of(TIMES_SQUARE, 20).lat


FAR = north_of(TIMES_SQUARE, 50_000)


async def test_the_first_position_after_going_online_cannot_teleport(
    channel: DriverChannel, live: LiveState, driver_id: uuid.UUID, clock: FrozenClock
) -> None:
    await online(channel)
    clock.set(clock.now() + timedelta(seconds=10))
    jump = await channel.handle(location(FAR, clock.now()))
    assert jump is not None
    assert jump["code"] == "impossible-speed"
    stored = await live.position(driver_id)
    assert stored is not None
    assert (stored.location.lat, stored.location.lng) == START
    # Where it went online, a device clock a little behind the server's is no jump.
    assert await channel.handle(location(START, clock.now() - timedelta(seconds=12))) is None


async def test_a_new_connection_goes_online_only_near_where_the_driver_was_last_seen(
    channels: DriverChannels, live: LiveState, driver_id: uuid.UUID, clock: FrozenClock
) -> None:
    first = channels.connect(driver_id)
    await online(first)
    assert await first.handle(location(START, clock.now())) is None
    # The connection drops (no go_offline); ten seconds later, another one.
    clock.set(clock.now() + timedelta(seconds=10))
    again = channels.connect(driver_id)
    refused = await again.handle({"type": "go_online", "lat": FAR.lat, "lng": FAR.lng, "id": 2})
    assert refused is not None
    assert refused["code"] == "impossible-speed"
    assert refused["ref"] == 2
    stored = await live.position(driver_id)
    assert stored is not None
    assert (stored.location.lat, stored.location.lng) == START
    nearby = north_of(TIMES_SQUARE, 100)
    assert (await online(again, (nearby.lat, nearby.lng)))["status"] == "available"


async def test_far_from_where_the_driver_was_seen_long_ago_is_no_jump(
    channels: DriverChannels, driver_id: uuid.UUID, clock: FrozenClock
) -> None:
    first = channels.connect(driver_id)
    await online(first)
    clock.set(clock.now() + timedelta(minutes=10))
    assert (await online(channels.connect(driver_id), (FAR.lat, FAR.lng)))["type"] == "ok"


# Liveness.


async def test_a_driver_not_heard_from_is_not_offered_and_a_heartbeat_keeps_them(
    channels: DriverChannels,
    live: LiveState,
    session: AsyncSession,
    settings: Settings,
    clock: FrozenClock,
) -> None:
    silent = await make_user(session, settings, clock, Role.driver)
    beating = await make_user(session, settings, clock, Role.driver)
    await online(channels.connect(silent))
    heart = channels.connect(beating)
    await online(heart, (START[0] + 0.001, START[1]))
    region = region_of(*START)

    async def nearby() -> set[uuid.UUID]:
        found = await live.nearest_available([region], *START, 5_000, 10, clock.now())
        return {driver.driver_id for driver in found}

    assert await nearby() == {silent, beating}
    clock.set(clock.now() + timedelta(seconds=20))
    assert await heart.handle({"type": "heartbeat"}) is None
    clock.set(clock.now() + timedelta(seconds=15))
    assert await nearby() == {beating}


# Offers.


@pytest.fixture
async def zoned(session: AsyncSession, clock: FrozenClock) -> None:
    await seed_zones(session, clock)


@pytest.mark.usefixtures("zoned")
async def test_accepting_an_offer_assigns_the_ride(
    channel: DriverChannel,
    session: AsyncSession,
    clock: FrozenClock,
    live: LiveState,
    redis_client: Redis,
    settings: Settings,
    driver_id: uuid.UUID,
) -> None:
    ride = await ride_in_matching(session, clock, redis_client, settings)
    await online(channel)
    [made] = await make_offer(session, clock, live, ride.id, driver_id)
    reply = await channel.handle({"type": "accept", "offer_id": str(made.offer.id), "id": 9})
    assert reply is not None
    assert (reply["type"], reply["ref"]) == ("ok", 9)
    assert reply["offer"]["status"] == "accepted"
    assert reply["ride"]["status"] == "driver_assigned"
    assert reply["ride"]["pin"] is None


@pytest.mark.usefixtures("zoned")
async def test_declining_an_offer(
    channel: DriverChannel,
    session: AsyncSession,
    clock: FrozenClock,
    live: LiveState,
    redis_client: Redis,
    settings: Settings,
    driver_id: uuid.UUID,
) -> None:
    ride = await ride_in_matching(session, clock, redis_client, settings)
    [made] = await make_offer(session, clock, live, ride.id, driver_id)
    reply = await channel.handle({"type": "decline", "offer_id": str(made.offer.id)})
    assert reply is not None
    assert reply["offer"]["status"] == "declined"


async def offer_and_ride(session: AsyncSession, offer_id: uuid.UUID) -> tuple[str, str]:
    row = (
        await session.execute(
            select(Offer.status, Ride.status)
            .join(Ride, Ride.id == Offer.ride_id)
            .where(Offer.id == offer_id)
            .execution_options(populate_existing=True)
        )
    ).one()
    return row[0], row[1]


@pytest.mark.usefixtures("zoned")
async def test_acting_on_another_drivers_offer_is_403_and_changes_nothing(
    channels: DriverChannels,
    session: AsyncSession,
    clock: FrozenClock,
    live: LiveState,
    redis_client: Redis,
    settings: Settings,
    driver_id: uuid.UUID,
) -> None:
    ride = await ride_in_matching(session, clock, redis_client, settings)
    [made] = await make_offer(session, clock, live, ride.id, driver_id)
    other = channels.connect(await make_user(session, settings, clock, Role.driver))
    for kind in ("accept", "decline"):
        reply = await other.handle({"type": kind, "offer_id": str(made.offer.id), "id": kind})
        assert reply is not None
        assert (reply["code"], reply["status"], reply["ref"]) == ("offer-not-yours", 403, kind)
    assert await offer_and_ride(session, made.offer.id) == ("offered", "matching")


@pytest.mark.usefixtures("zoned")
async def test_accepting_an_expired_offer_is_409_and_changes_nothing(
    channel: DriverChannel,
    session: AsyncSession,
    clock: FrozenClock,
    live: LiveState,
    redis_client: Redis,
    settings: Settings,
    driver_id: uuid.UUID,
) -> None:
    ride = await ride_in_matching(session, clock, redis_client, settings)
    [made] = await make_offer(session, clock, live, ride.id, driver_id)
    clock.set(made.offer.expires_at + timedelta(seconds=1))
    reply = await channel.handle({"type": "accept", "offer_id": str(made.offer.id)})
    assert reply is not None
    assert (reply["code"], reply["status"]) == ("offer-expired", 409)
    assert await offer_and_ride(session, made.offer.id) == ("offered", "matching")


# Pushes.


async def test_the_first_look_in_the_outbox_delivers_what_was_not_acknowledged(
    channels: DriverChannels, live: LiveState, driver_id: uuid.UUID
) -> None:
    first = await live.push_to_driver(driver_id, {"type": "offer", "n": 1})
    second = await live.push_to_driver(driver_id, {"type": "offer", "n": 2})
    earlier = channels.connect(driver_id)
    assert [f["message_id"] for f in await earlier.undelivered()] == [first, second]
    assert await earlier.handle({"type": "ack", "message_id": first}) is None

    reconnected = channels.connect(driver_id)
    assert await reconnected.undelivered() == [{"type": "offer", "n": 2, "message_id": second}]
    assert await reconnected.undelivered() == []
    third = await live.push_to_driver(driver_id, {"type": "offer", "n": 3})
    assert [f["message_id"] for f in await reconnected.undelivered()] == [third]


async def test_an_ack_with_an_id_is_answered(
    channel: DriverChannel, live: LiveState, driver_id: uuid.UUID
) -> None:
    message_id = await live.push_to_driver(driver_id, {"type": "offer"})
    assert await channel.handle({"type": "ack", "message_id": message_id, "id": 4}) == {
        "type": "ok",
        "ref": 4,
    }
    assert await live.unacked(driver_id) == []


T = TypeVar("T")


async def next_of(iterator: AsyncIterator[T]) -> T:
    return await anext(iterator)


async def cancelled(task: asyncio.Task[Any]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def test_a_nudge_on_the_user_channel_sends_the_push_at_once(
    channel: DriverChannel, live: LiveState, redis_client: Redis, driver_id: uuid.UUID
) -> None:
    channel.look_after_sent_ahead_s = 0.05
    async with Subscription(redis_client, user_channel(driver_id)) as inbox:
        passed_on = asyncio.create_task(next_of(channel.notifications(inbox.messages())))
        pushes = channel.outbox_frames()
        first_push = asyncio.create_task(next_of(pushes))
        await asyncio.sleep(0.1)
        assert not first_push.done()
        message_id = await deliver(live, driver_id, {"type": "offer", "offer_id": "o-1"})
        # Sent from the nudge itself, without a round trip to the outbox...
        sent = await asyncio.wait_for(passed_on, 5)
        assert sent == {"type": "offer", "offer_id": "o-1", "message_id": message_id}
        await asyncio.sleep(0.2)
        # ...and once: the look in the outbox the nudge asks for a moment later skips it.
        assert not channel._look_in_outbox.is_set()
        assert not first_push.done()
        assert await live.unacked(driver_id) != []  # still there until acknowledged
        await cancelled(first_push)
        await pushes.aclose()


async def test_a_nudge_before_the_first_look_waits_for_the_outbox_and_goes_once(
    channel: DriverChannel, live: LiveState, driver_id: uuid.UUID
) -> None:
    message_id = await live.push_to_driver(driver_id, {"type": "offer", "n": 1})

    async def nudged() -> AsyncIterator[dict[str, Any]]:
        yield {"type": "offer", "n": 1, "message_id": message_id}

    # Before the connection's first look, the outbox sends everything, in order.
    assert [m async for m in channel.notifications(nudged())] == []
    assert [f["message_id"] for f in await channel.undelivered()] == [message_id]
    assert [m async for m in channel.notifications(nudged())] == []


async def test_a_push_whose_nudge_was_lost_still_comes_from_the_outbox(
    channel: DriverChannel, live: LiveState, driver_id: uuid.UUID
) -> None:
    assert await channel.undelivered() == []
    lost = await live.push_to_driver(driver_id, {"type": "offer", "n": 1})
    nudged = await live.push_to_driver(driver_id, {"type": "offer", "n": 2})

    async def messages() -> AsyncIterator[dict[str, Any]]:
        yield {"type": "offer", "n": 2, "message_id": nudged}

    assert [m["n"] async for m in channel.notifications(messages())] == [2]
    # The look finds the one whose nudge never came, and not the one already sent.
    assert [f["message_id"] for f in await channel.undelivered()] == [lost]
    assert await channel.undelivered() == []


async def test_a_push_sent_from_its_nudge_is_followed_by_a_look_for_lost_ones(
    channel: DriverChannel, live: LiveState, driver_id: uuid.UUID
) -> None:
    channel.look_after_sent_ahead_s = 0.2
    pushes = channel.outbox_frames()
    first_push = asyncio.create_task(next_of(pushes))
    await asyncio.sleep(0.05)  # its first look, at an empty outbox
    lost = await live.push_to_driver(driver_id, {"type": "offer", "n": 1})
    nudged = await live.push_to_driver(driver_id, {"type": "offer", "n": 2})

    async def messages() -> AsyncIterator[dict[str, Any]]:
        yield {"type": "offer", "n": 2, "message_id": nudged}

    started = asyncio.get_running_loop().time()
    # The nudged push goes at once; the outbox is looked in only a moment later...
    assert [m["n"] async for m in channel.notifications(messages())] == [2]
    await asyncio.sleep(0.1)
    assert not first_push.done()
    # ...and the look finds the push whose nudge was lost.
    found = await asyncio.wait_for(first_push, 5)
    assert found == {"type": "offer", "n": 1, "message_id": lost}
    assert asyncio.get_running_loop().time() - started >= 0.2
    await pushes.aclose()


async def test_a_heartbeat_looks_in_the_outbox(
    channel: DriverChannel, live: LiveState, driver_id: uuid.UUID
) -> None:
    await online(channel)
    pushes = channel.outbox_frames()
    first_push = asyncio.create_task(next_of(pushes))
    await asyncio.sleep(0.05)
    # Pushed without a nudge, as if the pub/sub message were lost.
    message_id = await live.push_to_driver(driver_id, {"type": "offer"})
    await asyncio.sleep(0.05)
    assert not first_push.done()
    await channel.handle({"type": "heartbeat"})
    assert await asyncio.wait_for(first_push, 5) == {"type": "offer", "message_id": message_id}
    await pushes.aclose()


async def test_a_connection_waiting_for_its_next_push_keeps_none_it_sent(
    channel: DriverChannel, live: LiveState, driver_id: uuid.UUID
) -> None:
    for n in (1, 2):
        await live.push_to_driver(driver_id, {"type": "offer", "n": n})
    pushes = channel.outbox_frames()
    assert [(await next_of(pushes))["n"] for _ in range(2)] == [1, 2]
    waiting = asyncio.create_task(next_of(pushes))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    # Suspended until the next push: nothing of the two it handed out in its locals.
    assert isinstance(pushes, AsyncGeneratorType)
    assert pushes.ag_frame is not None
    held = pushes.ag_frame.f_locals.values()
    assert [value for value in held if isinstance(value, dict | list) and value] == []
    await cancelled(waiting)
    await pushes.aclose()


async def test_ride_events_reach_the_driver_through_the_outbox_only(
    channel: DriverChannel, live: LiveState, driver_id: uuid.UUID
) -> None:
    event = DriverArrived(
        occurred_at=datetime.now(UTC),
        ride_id=uuid.uuid4(),
        rider_id=uuid.uuid4(),
        driver_id=driver_id,
        status="driver_arrived",
    )
    membership = {"type": "event", "event": "MembershipChanged", "data": {"to_status": "member"}}

    async def published() -> AsyncIterator[dict[str, Any]]:
        yield event.to_message()
        yield membership

    assert [m async for m in channel.notifications(published())] == [membership]
    assert await after_ride_events(live, [event]) == 1
    [pushed] = await channel.undelivered()
    assert pushed["event"] == "DriverArrived"
    assert pushed["data"]["ride_id"] == str(event.ride_id)
    assert pushed["message_id"]


def ride_event(
    kind: type[RideDomainEvent], trip: LiveTrip, driver_id: uuid.UUID, status: str
) -> RideDomainEvent:
    fees = {"fee_amount": 0, "currency": "USD"} if kind is RideCancelled else {}
    return kind(
        occurred_at=datetime.now(UTC),
        ride_id=trip.ride_id,
        rider_id=trip.rider_id,
        driver_id=driver_id,
        status=status,
        **fees,
    )


async def test_the_trip_link_follows_the_rides_events(
    live: LiveState, driver_id: uuid.UUID
) -> None:
    trip = LiveTrip(uuid.uuid4(), uuid.uuid4(), "driver_assigned", *START)
    await live.set_trip(driver_id, trip)
    await after_ride_events(live, [ride_event(DriverArrived, trip, driver_id, "driver_arrived")])
    assert await live.trip_of(driver_id) == replace(trip, status="driver_arrived")
    await after_ride_events(live, [ride_event(TripStarted, trip, driver_id, "in_progress")])
    assert await live.trip_of(driver_id) == replace(trip, status="in_progress")
    await after_ride_events(
        live, [ride_event(RideCancelled, trip, driver_id, "cancelled_by_rider")]
    )
    assert await live.trip_of(driver_id) is None


async def test_a_driver_who_gives_a_ride_up_is_unlinked_from_it(
    live: LiveState, driver_id: uuid.UUID
) -> None:
    trip = LiveTrip(uuid.uuid4(), uuid.uuid4(), "driver_assigned", *START)
    await live.set_trip(driver_id, trip)
    await after_ride_events(live, [ride_event(DriverCancelled, trip, driver_id, "matching")])
    assert await live.trip_of(driver_id) is None


async def test_a_late_event_of_an_earlier_ride_leaves_the_current_trip(
    live: LiveState, driver_id: uuid.UUID
) -> None:
    earlier = LiveTrip(uuid.uuid4(), uuid.uuid4(), "in_progress", *START)
    current = LiveTrip(uuid.uuid4(), uuid.uuid4(), "driver_assigned", *START)
    await live.set_trip(driver_id, current)
    await after_ride_events(
        live,
        [
            ride_event(TripStarted, earlier, driver_id, "in_progress"),
            ride_event(RideCancelled, earlier, driver_id, "cancelled_by_rider"),
        ],
    )
    assert await live.trip_of(driver_id) == current


# Trips: breadcrumbs and the rider's view.


async def test_positions_on_a_trip_are_sampled_as_breadcrumbs(
    channel: DriverChannel,
    channels: DriverChannels,
    live: LiveState,
    driver_id: uuid.UUID,
    clock: FrozenClock,
) -> None:
    await online(channel)
    await live.set_trip(driver_id, LiveTrip(uuid.uuid4(), uuid.uuid4(), "in_progress", *START))
    now = clock.now()
    # Standing still for 10 s: a point every 5 s. Then 40 m a second: every point.
    for second in range(10):
        assert await channel.handle(location(START, now - timedelta(seconds=20 - second))) is None
    for step in range(1, 6):
        at = now - timedelta(seconds=10 - step)
        assert await channel.handle(location(north_of(TIMES_SQUARE, 40 * step), at)) is None
    assert channels.breadcrumbs.pending == 2 + 5


async def test_positions_off_a_trip_leave_no_breadcrumbs(
    channel: DriverChannel, channels: DriverChannels, clock: FrozenClock
) -> None:
    await online(channel)
    assert await channel.handle(location(START, clock.now())) is None
    assert channels.breadcrumbs.pending == 0


async def test_the_rider_of_the_trip_and_no_one_else_sees_the_driver(
    channel: DriverChannel,
    live: LiveState,
    redis_client: Redis,
    driver_id: uuid.UUID,
    clock: FrozenClock,
) -> None:
    rider_id, stranger_id = uuid.uuid4(), uuid.uuid4()
    pickup = north_of(TIMES_SQUARE, 1_000)
    trip = LiveTrip(uuid.uuid4(), rider_id, "driver_assigned", pickup.lat, pickup.lng)
    await online(channel)
    await live.set_trip(driver_id, trip)
    async with (
        Subscription(redis_client, user_channel(rider_id)) as rider,
        Subscription(redis_client, user_channel(stranger_id), user_channel(driver_id)) as others,
    ):
        seen_by_others = asyncio.create_task(next_of(others.messages()))
        rider_messages = rider.messages()
        await channel.handle(location(START, clock.now() - timedelta(seconds=1)))
        # Within the interval: not sent again.
        await channel.handle(location(north_of(TIMES_SQUARE, 5), clock.now()))
        frame = await asyncio.wait_for(next_of(rider_messages), 5)
        assert frame["type"] == "driver_position"
        assert frame["ride_id"] == str(trip.ride_id)
        assert frame["driver_id"] == str(driver_id)
        assert frame["ride_status"] == "driver_assigned"
        assert (frame["lat"], frame["lng"]) == START
        # 1 km as the crow flies is 1.4 km by road: 168 s at 30 km/h.
        assert frame["pickup_eta_s"] == pytest.approx(168, abs=1)
        again = asyncio.create_task(next_of(rider_messages))
        await asyncio.sleep(0.3)
        assert not again.done()
        assert not seen_by_others.done()
        await cancelled(again)
        await cancelled(seen_by_others)


async def test_once_picked_up_the_rider_gets_no_pickup_eta(
    channel: DriverChannel,
    live: LiveState,
    redis_client: Redis,
    driver_id: uuid.UUID,
    clock: FrozenClock,
) -> None:
    rider_id = uuid.uuid4()
    await online(channel)
    await live.set_trip(driver_id, LiveTrip(uuid.uuid4(), rider_id, "in_progress", *START))
    async with Subscription(redis_client, user_channel(rider_id)) as rider:
        await channel.handle(location(START, clock.now()))
        frame = await asyncio.wait_for(next_of(rider.messages()), 5)
    assert frame["ride_status"] == "in_progress"
    assert frame["pickup_eta_s"] is None


@pytest.mark.usefixtures("zoned")
async def test_sync_trip_links_the_driver_while_the_ride_is_theirs(
    session: AsyncSession,
    clock: FrozenClock,
    live: LiveState,
    redis_client: Redis,
    settings: Settings,
    driver_id: uuid.UUID,
) -> None:
    ride = await ride_in_matching(session, clock, redis_client, settings)
    await sync_trip(live, driver_id, ride)
    assert await live.trip_of(driver_id) is None
    assigned = ride.model_copy(update={"status": "driver_assigned", "driver_id": driver_id})
    await sync_trip(live, driver_id, assigned)
    assert await live.trip_of(driver_id) == LiveTrip(
        ride.id, ride.rider_id, "driver_assigned", ride.pickup.lat, ride.pickup.lng
    )
    await sync_trip(live, driver_id, assigned.model_copy(update={"status": "completed"}))
    assert await live.trip_of(driver_id) is None


async def test_clearing_an_earlier_trip_leaves_the_current_one(
    live: LiveState, driver_id: uuid.UUID
) -> None:
    current = LiveTrip(uuid.uuid4(), uuid.uuid4(), "in_progress", *START)
    await live.set_trip(driver_id, current)
    assert not await live.clear_trip(driver_id, uuid.uuid4())
    assert await live.trip_of(driver_id) == current
    assert await live.clear_trip(driver_id, current.ride_id)
    assert await live.trip_of(driver_id) is None


# The shared ingest.


async def test_positions_arriving_together_share_one_round_trip(
    live: LiveState, clock: FrozenClock
) -> None:
    ingest = LocationIngest(live)
    drivers = [uuid.uuid4() for _ in range(50)]
    for driver in drivers:
        await live.set_online(driver, region_of(*START), *START, clock.now())
    update = LocationUpdate(START[0], START[1], None, None, None, clock.now())
    results = await asyncio.gather(
        *(ingest.store(driver, update, clock.now()) for driver in drivers)
    )
    assert results == [(region_of(*START), None)] * 50
    assert ingest.round_trips == 1


async def test_the_ingest_answers_each_caller_with_their_own_trip(
    live: LiveState, clock: FrozenClock
) -> None:
    ingest = LocationIngest(live)
    on_trip, free, offline = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    for driver in (on_trip, free):
        await live.set_online(driver, region_of(*START), *START, clock.now())
    trip = LiveTrip(uuid.uuid4(), uuid.uuid4(), "in_progress", *START)
    await live.set_trip(on_trip, trip)
    update = LocationUpdate(START[0], START[1], None, None, None, clock.now())
    results = await asyncio.gather(
        *(ingest.store(driver, update, clock.now()) for driver in (on_trip, free, offline))
    )
    region = region_of(*START)
    assert results == [(region, trip), (region, None), (None, None)]
