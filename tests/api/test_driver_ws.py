"""The driver channel through a real uvicorn and the websockets client, as the app uses
it; the HTTP upload of positions kept offline; the rider's live view of their driver."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from accounts.models import Role
from api.app import create_app
from api.state import Resources
from dispatch.channel import DriverChannels, sync_trip
from dispatch.live import LiveState, driver_key, geo_key
from dispatch.locations import haversine_m
from dispatch.offers import deliver
from dispatch.regions import region_of
from dispatch.schemas import Point, QuoteCreate, RideRead
from dispatch.service import QuoteService, RideService
from infra.clock import FrozenClock
from infra.events import EventBuffer
from infra.settings import DispatchSettings, Settings
from tests.dispatch.test_quotes import TIMES_SQUARE, UPPER_EAST_SIDE, make_user, north_of
from tests.dispatch.test_quotes import seed_zones as seed_service_area
from tests.factories import Account, make_account, make_admin

START = TIMES_SQUARE


@pytest.fixture
async def driver_channels(resources: Resources) -> AsyncIterator[DriverChannels]:
    # Every position reaches the rider at once; breadcrumbs are flushed by the tests
    # (a flush of its own would share the test's connection with the test).
    dispatch = DispatchSettings(
        tracking_interval_s=0, breadcrumb_flush_s=3_600, breadcrumb_flush_max=100_000
    )
    channels = DriverChannels.create(
        resources.redis, resources.sessionmaker, resources.clock, dispatch
    )
    await channels.start()
    yield channels
    await channels.stop()


@pytest.fixture
def app(settings: Settings, resources: Resources, driver_channels: DriverChannels) -> FastAPI:
    app = create_app(settings, resources=resources)
    app.state.driver_channels = driver_channels
    return app


@pytest.fixture
def live(driver_channels: DriverChannels) -> LiveState:
    return driver_channels.live


@pytest.fixture
async def admin(client: httpx.AsyncClient, session: AsyncSession, settings: Settings) -> Account:
    return await make_admin(client, session, settings)


async def member_driver(client: httpx.AsyncClient, admin: Account) -> Account:
    driver = await make_account(client, "driver")
    response = await client.post(
        f"/v1/admin/members/{driver.user_id}/transitions",
        json={
            "to_status": "member",
            "reason": "share paid",
            "share_amount": 5000,
            "share_currency": "USD",
        },
        headers=admin.headers,
    )
    assert response.status_code == 200, response.text
    return driver


@pytest.fixture
async def driver(client: httpx.AsyncClient, admin: Account) -> Account:
    return await member_driver(client, admin)


def channel_url(server: str, account: Account) -> str:
    return f"ws://{server}/v1/drivers/ws?access_token={account.access_token}"


async def next_frame(ws: ClientConnection, wait_s: float = 5.0) -> dict[str, Any]:
    frame: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), wait_s))
    return frame


async def nothing_within(ws: ClientConnection, seconds: float = 0.3) -> bool:
    try:
        await asyncio.wait_for(ws.recv(), seconds)
    except TimeoutError:
        return True
    return False


async def send(ws: ClientConnection, frame: dict[str, Any]) -> None:
    await ws.send(json.dumps(frame))


async def request(ws: ClientConnection, frame: dict[str, Any]) -> dict[str, Any]:
    """Sends a frame with an id and returns its reply."""
    ref = uuid.uuid4().hex[:8]
    await send(ws, {**frame, "id": ref})
    reply = await next_frame(ws)
    assert reply["ref"] == ref, reply
    return reply


def location(point: Point, at: datetime, **fields: Any) -> dict[str, Any]:
    return {
        "type": "location",
        "lat": point.lat,
        "lng": point.lng,
        "heading": 0.0,
        "speed": 10.0,
        "accuracy": 5.0,
        "recorded_at": at.isoformat(),
        **fields,
    }


@contextlib.asynccontextmanager
async def driving(
    server: str, account: Account, channels: DriverChannels, at: Point | None = START
) -> AsyncIterator[ClientConnection]:
    """A driver's channel (online at ``at`` unless None); on leaving, waits until the
    server has closed its side, shift included."""
    async with connect(channel_url(server, account)) as ws:
        hello = await next_frame(ws)
        assert hello["type"] == "hello"
        assert hello["driver_id"] == str(account.user_id)
        if at is not None:
            reply = await request(ws, {"type": "go_online", "lat": at.lat, "lng": at.lng})
            assert reply["type"] == "ok", reply
        yield ws
    for _ in range(500):
        if channels.connected == 0:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the server did not close the driver's channel")


# Who may connect.


async def test_connect_without_a_token_is_refused(live_server: str) -> None:
    with pytest.raises(InvalidStatus) as refused:
        async with connect(f"ws://{live_server}/v1/drivers/ws"):
            pass
    assert refused.value.response.status_code == 401
    assert b"invalid-token" in refused.value.response.body


async def test_a_rider_is_refused(live_server: str, client: httpx.AsyncClient) -> None:
    rider = await make_account(client, "rider")
    with pytest.raises(InvalidStatus) as refused:
        async with connect(channel_url(live_server, rider)):
            pass
    assert refused.value.response.status_code == 403
    assert b"role-not-allowed" in refused.value.response.body


async def test_a_driver_who_is_not_an_active_member_is_refused(
    live_server: str, client: httpx.AsyncClient
) -> None:
    applicant = await make_account(client, "driver")
    with pytest.raises(InvalidStatus) as refused:
        async with connect(channel_url(live_server, applicant)):
            pass
    assert refused.value.response.status_code == 403
    assert b"not-a-member" in refused.value.response.body


# Online, positions, bad input.


async def test_going_online_and_moving_show_in_redis(
    live_server: str, driver: Account, driver_channels: DriverChannels, redis_client: Redis
) -> None:
    driver_id = str(driver.user_id)
    region = region_of(START.lat, START.lng)
    async with driving(live_server, driver, driver_channels) as ws:
        assert await redis_client.geopos(geo_key(region), driver_id) != [None]
        moved = north_of(START, 50)
        await send(ws, location(moved, datetime.now(UTC)))
        assert (await request(ws, {"type": "heartbeat"}))["type"] == "ok"
        stored = await redis_client.hgetall(driver_key(driver.user_id))
        assert (float(stored["lat"]), float(stored["lng"])) == (moved.lat, moved.lng)
        [indexed] = await redis_client.geopos(geo_key(region), driver_id)
        assert indexed is not None
        lng, lat = indexed
        assert haversine_m(lat, lng, moved.lat, moved.lng) < 1


async def test_bad_frames_get_error_frames_change_nothing_and_keep_the_connection(
    live_server: str, driver: Account, driver_channels: DriverChannels, redis_client: Redis
) -> None:
    async with driving(live_server, driver, driver_channels) as ws:
        now = datetime.now(UTC)
        assert (await request(ws, location(START, now - timedelta(seconds=1))))["type"] == "ok"
        before = await redis_client.hgetall(driver_key(driver.user_id))

        await ws.send("{not json")
        assert (await next_frame(ws))["code"] == "malformed-json"
        await send(ws, {"type": "fly"})
        assert (await next_frame(ws))["code"] == "unknown-type"
        bad = {
            "coordinates-out-of-range": location(Point(lat=0, lng=0), now) | {"lat": 95.0},
            "timestamp-in-future": location(START, now + timedelta(minutes=5)),
            "timestamp-stale": location(START, now - timedelta(minutes=5)),
            "impossible-speed": location(north_of(START, 30_000), now),
        }
        for code, frame in bad.items():
            reply = await request(ws, frame)
            assert (reply["type"], reply["code"]) == ("error", code), reply
        assert await redis_client.hgetall(driver_key(driver.user_id)) == before

        # Still open, and a good position still moves the driver.
        assert (await request(ws, location(north_of(START, 10), now)))["type"] == "ok"
        stored = await redis_client.hgetall(driver_key(driver.user_id))
        assert float(stored["lat"]) == north_of(START, 10).lat


async def test_a_driver_not_heard_from_stops_being_offered(
    live_server: str, driver: Account, driver_channels: DriverChannels, live: LiveState
) -> None:
    region = region_of(START.lat, START.lng)
    async with driving(live_server, driver, driver_channels):
        now = datetime.now(UTC)
        found = await live.nearest_available([region], START.lat, START.lng, 1_000, 5, now)
        assert [d.driver_id for d in found] == [driver.user_id]
        later = now + timedelta(seconds=DispatchSettings().liveness_s + 1)
        assert await live.nearest_available([region], START.lat, START.lng, 1_000, 5, later) == []


# Pushes: acknowledged, or delivered again.


async def test_unacknowledged_pushes_are_delivered_again_after_a_reconnect(
    live_server: str, driver: Account, driver_channels: DriverChannels, live: LiveState
) -> None:
    async with driving(live_server, driver, driver_channels, at=None) as ws:
        first = await deliver(live, driver.user_id, {"type": "offer", "n": 1})
        second = await deliver(live, driver.user_id, {"type": "offer", "n": 2})
        assert await next_frame(ws) == {"type": "offer", "n": 1, "message_id": first}
        assert await next_frame(ws) == {"type": "offer", "n": 2, "message_id": second}
        await send(ws, {"type": "ack", "message_id": first})
        assert await nothing_within(ws)
    third = await deliver(live, driver.user_id, {"type": "offer", "n": 3})

    async with driving(live_server, driver, driver_channels, at=None) as ws:
        assert [await next_frame(ws), await next_frame(ws)] == [
            {"type": "offer", "n": 2, "message_id": second},
            {"type": "offer", "n": 3, "message_id": third},
        ]
        assert await nothing_within(ws)
        for message_id in (second, third):
            assert (await request(ws, {"type": "ack", "message_id": message_id}))["type"] == "ok"
        unknown = await request(ws, {"type": "ack", "message_id": first})
        assert unknown["code"] == "unknown-message"
    assert await live.unacked(driver.user_id) == []


# The HTTP upload of positions kept offline.


async def upload(
    client: httpx.AsyncClient, account: Account, positions: list[dict[str, Any]]
) -> httpx.Response:
    body = {"locations": [{k: v for k, v in p.items() if k != "type"} for p in positions]}
    return await client.post("/v1/drivers/me/locations", json=body, headers=account.headers)


async def test_an_offline_batch_is_judged_position_by_position(
    client: httpx.AsyncClient, driver: Account, live: LiveState
) -> None:
    now = datetime.now(UTC)
    await live.set_online(
        driver.user_id,
        region_of(START.lat, START.lng),
        START.lat,
        START.lng,
        now - timedelta(minutes=1),
    )
    newest = north_of(START, 300)
    positions = [
        location(north_of(START, 100), now - timedelta(minutes=50)),
        location(north_of(START, 200), now - timedelta(minutes=49)),
        location(START, now - timedelta(hours=2)),  # older than any upload may be
        location(north_of(START, 40_000), now - timedelta(minutes=48, seconds=59)),  # a jump
        location(START, now - timedelta(minutes=55)),  # before the one accepted before it
        location(newest, now - timedelta(seconds=2)),
    ]

    response = await upload(client, driver, positions)

    assert response.status_code == 200, response.text
    body = response.json()
    assert [(r["index"], r["accepted"], r["reason_code"]) for r in body["results"]] == [
        (0, True, None),
        (1, True, None),
        (2, False, "timestamp-stale"),
        (3, False, "impossible-speed"),
        (4, False, "out-of-order"),
        (5, True, None),
    ]
    assert (body["accepted"], body["rejected"]) == (3, 3)
    assert body["live_position_updated"] is True
    assert (body["ride_id"], body["breadcrumbs"]) == (None, 0)
    stored = await live.position(driver.user_id)
    assert stored is not None
    assert (stored.location.lat, stored.location.lng) == (newest.lat, newest.lng)


async def test_an_old_batch_does_not_move_the_live_position(
    client: httpx.AsyncClient, driver: Account, live: LiveState
) -> None:
    now = datetime.now(UTC)
    await live.set_online(
        driver.user_id, region_of(START.lat, START.lng), START.lat, START.lng, now
    )
    response = await upload(
        client, driver, [location(north_of(START, 100), now - timedelta(minutes=10))]
    )
    assert response.status_code == 200
    assert response.json()["accepted"] == 1
    assert response.json()["live_position_updated"] is False
    stored = await live.position(driver.user_id)
    assert stored is not None
    assert stored.location.lat == START.lat


async def test_a_batch_of_a_driver_offline_is_judged_but_not_made_live(
    client: httpx.AsyncClient, driver: Account, live: LiveState
) -> None:
    response = await upload(client, driver, [location(START, datetime.now(UTC))])
    assert response.json()["accepted"] == 1
    assert response.json()["live_position_updated"] is False
    assert await live.position(driver.user_id) is None


async def test_a_batch_is_at_most_500_positions(client: httpx.AsyncClient, driver: Account) -> None:
    now = datetime.now(UTC)
    positions = [location(START, now - timedelta(seconds=600 - i)) for i in range(501)]
    response = await upload(client, driver, positions)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"


async def test_a_batch_is_for_active_member_drivers(
    client: httpx.AsyncClient,
) -> None:
    for account in (await make_account(client, "rider"), await make_account(client, "driver")):
        response = await upload(client, account, [location(START, datetime.now(UTC))])
        assert response.status_code == 403


# A trip: breadcrumbs in batches, and the rider's view.


async def ride_under_way(
    session: AsyncSession,
    settings: Settings,
    redis: Redis,
    rider_id: uuid.UUID,
    driver_id: uuid.UUID,
    clock: FrozenClock,
) -> RideRead:
    await seed_service_area(session, clock)
    quote = await QuoteService(session, clock, None).create(
        rider_id, QuoteCreate(pickup=START, dropoff=UPPER_EAST_SIDE)
    )
    rides = RideService(session, clock, EventBuffer(), redis)
    ride, _ = await rides.request(rider_id, quote.id, uuid.uuid4().hex)
    ride = await rides.open_for_matching(ride.id)
    pin = ride.pin
    assert pin is not None
    await rides.assign(ride.id, driver_id, None)
    await rides.arrive(ride.id, driver_id, north_of(START, 20))
    ride = await rides.start(ride.id, driver_id, pin)
    await session.commit()
    return ride


async def test_breadcrumbs_of_a_trip_are_written_in_batches_and_give_its_distance(
    live_server: str,
    driver: Account,
    driver_channels: DriverChannels,
    session: AsyncSession,
    settings: Settings,
    redis_client: Redis,
    live: LiveState,
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    # The trip started 40 s ago; the driver drove 1 km north in the last 20 s.
    clock = FrozenClock(now - timedelta(seconds=40))
    rider_id = await make_user(session, settings, clock, Role.rider)
    ride = await ride_under_way(session, settings, redis_client, rider_id, driver.user_id, clock)
    await sync_trip(live, driver.user_id, ride)
    path = [north_of(START, 50 * i) for i in range(21)]
    async with driving(live_server, driver, driver_channels) as ws:
        for i, point in enumerate(path):
            await send(ws, location(point, now - timedelta(seconds=21 - i)))
        assert (await request(ws, {"type": "heartbeat"}))["type"] == "ok"
        assert driver_channels.breadcrumbs.pending == len(path)
        assert await driver_channels.breadcrumbs.flush() == len(path)
        assert driver_channels.breadcrumbs.flushes == 1

    clock.set(now)
    charge = await RideService(session, clock, EventBuffer(), redis_client).complete(
        ride.id, driver.user_id
    )
    driven = sum(haversine_m(a.lat, a.lng, b.lat, b.lng) for a, b in itertools.pairwise(path))
    assert charge.ride.distance_m == pytest.approx(driven, abs=2)
    assert charge.ride.duration_s == 40


async def test_the_rider_of_the_trip_sees_the_driver_and_another_rider_does_not(
    live_server: str,
    client: httpx.AsyncClient,
    driver: Account,
    driver_channels: DriverChannels,
    session: AsyncSession,
    settings: Settings,
    redis_client: Redis,
    live: LiveState,
) -> None:
    rider = await make_account(client, "rider")
    other_rider = await make_account(client, "rider")
    clock = FrozenClock(datetime.now(UTC))
    ride = await ride_under_way(
        session, settings, redis_client, rider.user_id, driver.user_id, clock
    )
    await sync_trip(live, driver.user_id, ride)
    notifications = f"ws://{live_server}/v1/ws"
    async with (
        connect(notifications, additional_headers=rider.headers) as riders_ws,
        connect(notifications, additional_headers=other_rider.headers) as others_ws,
        driving(live_server, driver, driver_channels) as ws,
    ):
        assert (await next_frame(riders_ws))["type"] == "hello"
        assert (await next_frame(others_ws))["type"] == "hello"
        moved = north_of(START, 30)
        await send(ws, location(moved, datetime.now(UTC)))
        seen = await next_frame(riders_ws)
        assert seen["type"] == "driver_position"
        assert seen["ride_id"] == str(ride.id)
        assert (seen["lat"], seen["lng"]) == (moved.lat, moved.lng)
        assert seen["ride_status"] == "in_progress"
        assert await nothing_within(others_ws)

        # The trip over, the rider sees the driver no more.
        await live.clear_trip(driver.user_id, ride.id)
        await send(ws, location(north_of(START, 40), datetime.now(UTC)))
        assert (await request(ws, {"type": "heartbeat"}))["type"] == "ok"
        assert await nothing_within(riders_ws)


async def test_an_offline_batch_of_a_trip_becomes_its_breadcrumbs(
    client: httpx.AsyncClient,
    driver: Account,
    driver_channels: DriverChannels,
    session: AsyncSession,
    settings: Settings,
    redis_client: Redis,
    live: LiveState,
) -> None:
    now = datetime.now(UTC)
    clock = FrozenClock(now - timedelta(minutes=5))
    rider_id = await make_user(session, settings, clock, Role.rider)
    ride = await ride_under_way(session, settings, redis_client, rider_id, driver.user_id, clock)
    await sync_trip(live, driver.user_id, ride)
    positions = [
        location(north_of(START, 100 * i), now - timedelta(seconds=200 - 10 * i)) for i in range(10)
    ]
    response = await upload(client, driver, positions)
    assert response.json()["ride_id"] == str(ride.id)
    assert response.json()["breadcrumbs"] == 10
    assert await driver_channels.breadcrumbs.flush() == 10
