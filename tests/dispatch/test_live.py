from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from redis.asyncio import Redis

from dispatch.live import (
    SEEN_KEY,
    LiveState,
    NearbyDriver,
    OutboxMessage,
    driver_key,
    geo_key,
    offer_key,
)
from dispatch.locations import LocationUpdate
from dispatch.regions import region_of
from infra.pubsub import user_channel

LIVENESS_S = 30.0
TIMES_SQUARE = (40.7580, -73.9855)
# Either side of the western border of Times Square's region, about 680 m apart.
MANHATTAN_SIDE = (40.7580, -74.0280)
NEW_JERSEY_SIDE = (40.7580, -74.0360)


@pytest.fixture
def live(redis_client: Redis) -> LiveState:
    return LiveState(redis_client, liveness_s=LIVENESS_S)


@pytest.fixture
def now() -> datetime:
    return datetime.now(UTC)


def north_of(point: tuple[float, float], metres: float) -> tuple[float, float]:
    return point[0] + metres / 111_195.0, point[1]


def ping(point: tuple[float, float], at: datetime, heading: float | None = 0.0) -> LocationUpdate:
    return LocationUpdate(
        lat=point[0],
        lng=point[1],
        heading_deg=heading,
        speed_mps=9.5,
        accuracy_m=4.0,
        recorded_at=at,
    )


async def go_online(live: LiveState, point: tuple[float, float], now: datetime) -> uuid.UUID:
    driver_id = uuid.uuid4()
    await live.set_online(driver_id, region_of(*point), point[0], point[1], now)
    return driver_id


async def nearest(
    live: LiveState, now: datetime, k: int = 10, radius_m: float = 5_000.0
) -> list[NearbyDriver]:
    return await live.nearest_available(
        [region_of(*TIMES_SQUARE)], *TIMES_SQUARE, radius_m=radius_m, k=k, now=now
    )


# Drivers


async def test_live_state_needs_a_decoding_client() -> None:
    raw = Redis(decode_responses=False)

    with pytest.raises(ValueError, match="decode_responses"):
        LiveState(raw)
    await raw.aclose()


async def test_an_online_driver_is_found_nearby(live: LiveState, now: datetime) -> None:
    driver_id = await go_online(live, north_of(TIMES_SQUARE, 100), now)

    found = await nearest(live, now)

    assert [hit.driver_id for hit in found] == [driver_id]
    assert found[0].distance_m == pytest.approx(100, abs=1)


async def test_an_online_driver_has_a_position(live: LiveState, now: datetime) -> None:
    point = north_of(TIMES_SQUARE, 100)
    driver_id = await go_online(live, point, now)

    driver = await live.position(driver_id)

    assert driver is not None
    assert (driver.location.lat, driver.location.lng) == point
    assert driver.status == "available"
    assert driver.region == region_of(*point)
    assert driver.last_seen_at == pytest.approx(now, abs=timedelta(milliseconds=1))
    assert driver.available_since == driver.last_seen_at


async def test_positions_of_many_drivers_are_read_at_once(live: LiveState, now: datetime) -> None:
    first = await go_online(live, TIMES_SQUARE, now)
    second = await go_online(live, NEW_JERSEY_SIDE, now)

    found = await live.positions([first, second, uuid.uuid4(), first])

    assert set(found) == {first, second}
    assert found[second].region == region_of(*NEW_JERSEY_SIDE)
    assert await live.positions([]) == {}


async def test_going_online_in_another_region_is_refused(live: LiveState, now: datetime) -> None:
    with pytest.raises(ValueError, match="not in region"):
        await live.set_online(uuid.uuid4(), region_of(*NEW_JERSEY_SIDE), *TIMES_SQUARE, now)

    assert await live.redis.zcard(SEEN_KEY) == 0


async def test_an_offline_driver_is_forgotten(live: LiveState, now: datetime) -> None:
    driver_id = await go_online(live, TIMES_SQUARE, now)

    assert await live.set_offline(driver_id)

    assert await nearest(live, now) == []
    assert await live.position(driver_id) is None
    assert await live.redis.zscore(SEEN_KEY, str(driver_id)) is None
    assert not await live.set_offline(driver_id)


async def test_a_location_moves_the_driver(live: LiveState, now: datetime) -> None:
    driver_id = await go_online(live, TIMES_SQUARE, now)
    moved_to = north_of(TIMES_SQUARE, 300)

    region = await live.update_location(driver_id, ping(moved_to, now, heading=45.0), now)

    assert region == region_of(*TIMES_SQUARE)
    driver = await live.position(driver_id)
    assert driver is not None
    assert (driver.location.lat, driver.location.lng) == moved_to
    assert driver.location.heading_deg == 45.0
    assert driver.location.speed_mps == 9.5
    assert driver.location.accuracy_m == 4.0
    assert (await nearest(live, now))[0].distance_m == pytest.approx(300, abs=1)


async def test_unknown_fields_of_a_location_stay_unknown(live: LiveState, now: datetime) -> None:
    driver_id = await go_online(live, TIMES_SQUARE, now)

    await live.update_location(driver_id, ping(TIMES_SQUARE, now, heading=None), now)

    driver = await live.position(driver_id)
    assert driver is not None
    assert driver.location.heading_deg is None


async def test_a_location_from_a_driver_not_online_is_not_stored(
    live: LiveState, now: datetime
) -> None:
    driver_id = uuid.uuid4()

    assert await live.update_location(driver_id, ping(TIMES_SQUARE, now), now) is None

    assert await live.position(driver_id) is None
    assert await nearest(live, now) == []


async def test_a_driver_crossing_a_border_changes_region(live: LiveState, now: datetime) -> None:
    east, west = region_of(*MANHATTAN_SIDE), region_of(*NEW_JERSEY_SIDE)
    assert east != west
    driver_id = await go_online(live, MANHATTAN_SIDE, now)

    region = await live.update_location(driver_id, ping(NEW_JERSEY_SIDE, now), now)

    assert region == west
    assert await live.redis.zscore(geo_key(east), str(driver_id)) is None
    assert await live.redis.zscore(geo_key(west), str(driver_id)) is not None
    assert await live.drivers_in_region(east, now) == []
    [moved] = await live.drivers_in_region(west, now)
    assert moved.driver_id == driver_id
    assert moved.region == west


async def test_nearest_searches_every_region_given(live: LiveState, now: datetime) -> None:
    east_driver = await go_online(live, north_of(MANHATTAN_SIDE, 50), now)
    west_driver = await go_online(live, NEW_JERSEY_SIDE, now)
    regions = [region_of(*MANHATTAN_SIDE), region_of(*NEW_JERSEY_SIDE)]

    found = await live.nearest_available(regions, *NEW_JERSEY_SIDE, 2_000, 5, now)

    assert [hit.driver_id for hit in found] == [west_driver, east_driver]
    assert found[1].distance_m == pytest.approx(680, rel=0.02)


async def test_nearest_with_no_regions_finds_nobody(live: LiveState, now: datetime) -> None:
    await go_online(live, TIMES_SQUARE, now)

    assert await live.nearest_available([], *TIMES_SQUARE, 1_000, 5, now) == []


async def test_nearest_is_ordered_by_distance_and_cut_at_k(live: LiveState, now: datetime) -> None:
    by_distance = {}
    for metres in (900, 100, 500, 300, 700):
        by_distance[metres] = await go_online(live, north_of(TIMES_SQUARE, metres), now)

    found = await nearest(live, now, k=3)

    assert [hit.driver_id for hit in found] == [by_distance[m] for m in (100, 300, 500)]
    assert [round(hit.distance_m) for hit in found] == [100, 300, 500]


async def test_nearest_widens_its_search_until_it_finds_k(redis_client: Redis) -> None:
    live = LiveState(redis_client, nearest_first_radius_m=50)
    now = datetime.now(UTC)
    far = [await go_online(live, north_of(TIMES_SQUARE, m), now) for m in (2_500, 2_600)]
    near = await go_online(live, north_of(TIMES_SQUARE, 40), now)

    found = await nearest(live, now, k=3)

    assert [hit.driver_id for hit in found] == [near, *far]


async def test_nearest_stays_within_the_radius(live: LiveState, now: datetime) -> None:
    near = await go_online(live, north_of(TIMES_SQUARE, 400), now)
    await go_online(live, north_of(TIMES_SQUARE, 1_500), now)

    found = await nearest(live, now, radius_m=1_000)

    assert [hit.driver_id for hit in found] == [near]


async def test_nearest_refuses_a_bad_query(live: LiveState, now: datetime) -> None:
    with pytest.raises(ValueError, match="k must"):
        await nearest(live, now, k=0)
    with pytest.raises(ValueError, match="radius_m"):
        await nearest(live, now, radius_m=0)


async def test_a_busy_driver_is_not_offered(live: LiveState, now: datetime) -> None:
    driver_id = await go_online(live, TIMES_SQUARE, now)

    assert await live.mark_busy(driver_id)

    assert await nearest(live, now) == []
    assert await live.drivers_in_region(region_of(*TIMES_SQUARE), now) == []
    driver = await live.position(driver_id)
    assert driver is not None
    assert driver.status == "busy"
    assert driver.available_since is None


async def test_a_busy_driver_moving_stays_out_of_the_index(live: LiveState, now: datetime) -> None:
    driver_id = await go_online(live, TIMES_SQUARE, now)
    await live.mark_busy(driver_id)

    await live.update_location(driver_id, ping(north_of(TIMES_SQUARE, 200), now), now)

    assert await nearest(live, now) == []
    driver = await live.position(driver_id)
    assert driver is not None
    assert driver.location.lat == north_of(TIMES_SQUARE, 200)[0]


async def test_a_driver_made_available_is_offered_again(live: LiveState, now: datetime) -> None:
    driver_id = await go_online(live, TIMES_SQUARE, now)
    await live.mark_busy(driver_id)
    later = now + timedelta(seconds=5)
    await live.update_location(driver_id, ping(north_of(TIMES_SQUARE, 200), later), later)

    assert await live.mark_available(driver_id, later)

    [found] = await nearest(live, later)
    assert found.driver_id == driver_id
    assert found.distance_m == pytest.approx(200, abs=1)
    driver = await live.position(driver_id)
    assert driver is not None
    assert driver.available_since == pytest.approx(later, abs=timedelta(milliseconds=1))


async def test_an_available_driver_keeps_their_idle_time(live: LiveState, now: datetime) -> None:
    driver_id = await go_online(live, TIMES_SQUARE, now)
    later = now + timedelta(seconds=20)

    await live.mark_available(driver_id, later)
    await live.set_online(driver_id, region_of(*TIMES_SQUARE), *TIMES_SQUARE, later)

    driver = await live.position(driver_id)
    assert driver is not None
    assert driver.available_since == pytest.approx(now, abs=timedelta(milliseconds=1))


async def test_a_busy_driver_who_reconnects_stays_busy(live: LiveState, now: datetime) -> None:
    driver_id = await go_online(live, TIMES_SQUARE, now)
    await live.mark_busy(driver_id)

    status = await live.set_online(driver_id, region_of(*TIMES_SQUARE), *TIMES_SQUARE, now)

    assert status == "busy"
    assert await nearest(live, now) == []


async def test_marking_a_driver_not_online_does_nothing(live: LiveState, now: datetime) -> None:
    assert not await live.mark_busy(uuid.uuid4())
    assert not await live.mark_available(uuid.uuid4(), now)


async def test_a_silent_driver_is_not_offered_even_before_a_sweep(
    live: LiveState, now: datetime
) -> None:
    silent = await go_online(live, north_of(TIMES_SQUARE, 100), now)
    later = now + timedelta(seconds=LIVENESS_S - 5)
    talking = await go_online(live, north_of(TIMES_SQUARE, 800), later)

    assert {hit.driver_id for hit in await nearest(live, later)} == {silent, talking}
    past_liveness = now + timedelta(seconds=LIVENESS_S + 1)
    assert [hit.driver_id for hit in await nearest(live, past_liveness)] == [talking]
    listed = await live.drivers_in_region(region_of(*TIMES_SQUARE), past_liveness)
    assert [driver.driver_id for driver in listed] == [talking]


async def test_live_drivers_behind_many_stale_ones_are_found(
    live: LiveState, now: datetime
) -> None:
    for metres in range(10, 310, 10):
        await go_online(live, north_of(TIMES_SQUARE, metres), now)
    later = now + timedelta(seconds=LIVENESS_S + 1)
    farther = [await go_online(live, north_of(TIMES_SQUARE, 1_000 + m), later) for m in (0, 1)]

    found = await nearest(live, later, k=2)

    assert [hit.driver_id for hit in found] == farther


async def test_the_sweep_drops_silent_drivers(live: LiveState, now: datetime) -> None:
    silent = await go_online(live, TIMES_SQUARE, now)
    later = now + timedelta(seconds=LIVENESS_S + 1)
    talking = await go_online(live, north_of(TIMES_SQUARE, 500), later)

    assert await live.drop_stale(later) == 1

    region = region_of(*TIMES_SQUARE)
    assert await live.redis.zscore(geo_key(region), str(silent)) is None
    assert await live.redis.zscore(SEEN_KEY, str(silent)) is None
    assert await live.redis.zscore(geo_key(region), str(talking)) is not None
    assert 0 < await live.redis.ttl(driver_key(silent)) <= live.forget_after_s
    assert await live.redis.ttl(driver_key(talking)) == -1


async def test_a_swept_driver_comes_back_with_their_next_update(
    live: LiveState, now: datetime
) -> None:
    driver_id = await go_online(live, TIMES_SQUARE, now)
    later = now + timedelta(seconds=LIVENESS_S + 1)
    await live.drop_stale(later)

    assert await live.update_location(driver_id, ping(TIMES_SQUARE, later), later) is not None

    assert [hit.driver_id for hit in await nearest(live, later)] == [driver_id]
    assert await live.redis.ttl(driver_key(driver_id)) == -1


async def test_the_sweep_works_in_batches(live: LiveState, now: datetime) -> None:
    async with live.redis.pipeline(transaction=False) as pipe:
        for i in range(1_200):
            pipe.zadd(SEEN_KEY, {f"ghost-{i}": 0})
        await pipe.execute()

    assert await live.drop_stale(now) == 1_200
    assert await live.redis.zcard(SEEN_KEY) == 0


async def test_a_driver_made_available_after_a_sweep_waits_for_an_update(
    live: LiveState, now: datetime
) -> None:
    driver_id = await go_online(live, TIMES_SQUARE, now)
    await live.mark_busy(driver_id)
    later = now + timedelta(seconds=LIVENESS_S + 1)
    await live.drop_stale(later)

    await live.mark_available(driver_id, later)

    assert await live.redis.zscore(geo_key(region_of(*TIMES_SQUARE)), str(driver_id)) is None
    await live.update_location(driver_id, ping(TIMES_SQUARE, later), later)
    assert [hit.driver_id for hit in await nearest(live, later)] == [driver_id]


async def test_drivers_in_region_lists_the_live_available_ones(
    live: LiveState, now: datetime
) -> None:
    available = await go_online(live, TIMES_SQUARE, now)
    busy = await go_online(live, north_of(TIMES_SQUARE, 100), now)
    await live.mark_busy(busy)

    [driver] = await live.drivers_in_region(region_of(*TIMES_SQUARE), now)

    assert driver.driver_id == available
    assert (driver.location.lat, driver.location.lng) == TIMES_SQUARE
    assert driver.available_since is not None


async def test_a_large_region_is_listed_whole(live: LiveState, now: datetime) -> None:
    online: set[uuid.UUID] = set()
    # Fifty at a time: the client's pool holds a hundred connections.
    for start in range(0, 1_200, 50):
        points = [north_of(TIMES_SQUARE, i) for i in range(start, start + 50)]
        online.update(await asyncio.gather(*(go_online(live, p, now) for p in points)))

    listed = await live.drivers_in_region(region_of(*TIMES_SQUARE), now)

    assert len(listed) == 1_200
    assert {driver.driver_id for driver in listed} == online


async def test_a_batch_of_locations_is_stored_in_order(live: LiveState, now: datetime) -> None:
    first = await go_online(live, TIMES_SQUARE, now)
    second = await go_online(live, TIMES_SQUARE, now)
    stranger = uuid.uuid4()

    regions = await live.update_locations(
        [
            (first, ping(north_of(TIMES_SQUARE, 100), now)),
            (stranger, ping(TIMES_SQUARE, now)),
            (second, ping(NEW_JERSEY_SIDE, now)),
        ],
        now,
    )

    assert regions == [region_of(*TIMES_SQUARE), None, region_of(*NEW_JERSEY_SIDE)]
    assert [hit.driver_id for hit in await nearest(live, now)] == [first]


async def test_an_unstorable_position_writes_nothing(live: LiveState, now: datetime) -> None:
    driver_id = await go_online(live, TIMES_SQUARE, now)

    with pytest.raises(ValueError, match="geo index"):
        await live.update_location(driver_id, ping((89.0, 0.0), now), now)

    driver = await live.position(driver_id)
    assert driver is not None
    assert (driver.location.lat, driver.location.lng) == TIMES_SQUARE


# Offers


async def test_an_offer_is_held_by_its_driver(live: LiveState, now: datetime) -> None:
    offer_id, ride_id, driver_id = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    expires_at = live.offer_expiry(now)

    assert await live.put_offer(offer_id, ride_id, driver_id, expires_at)

    offer = await live.offer_for_driver(driver_id)
    assert offer is not None
    assert (offer.offer_id, offer.ride_id, offer.driver_id) == (offer_id, ride_id, driver_id)
    assert offer.expires_at == pytest.approx(expires_at, abs=timedelta(milliseconds=1))
    assert await live.offer_for_driver(uuid.uuid4()) is None


async def test_an_offer_expires_at_its_time(live: LiveState) -> None:
    driver_id = uuid.uuid4()
    offer_id = uuid.uuid4()
    expires_at = datetime.now(UTC) + timedelta(milliseconds=150)
    await live.put_offer(offer_id, uuid.uuid4(), driver_id, expires_at)

    await asyncio.sleep(0.25)

    assert await live.offer_for_driver(driver_id) is None
    assert await live.take_offer(offer_id) is None
    fresh_expiry = live.offer_expiry(datetime.now(UTC))
    assert await live.put_offer(uuid.uuid4(), uuid.uuid4(), driver_id, fresh_expiry)


async def test_a_driver_holds_one_offer_at_a_time(live: LiveState, now: datetime) -> None:
    driver_id = uuid.uuid4()
    expires_at = live.offer_expiry(now)
    await live.put_offer(uuid.uuid4(), uuid.uuid4(), driver_id, expires_at)

    assert not await live.put_offer(uuid.uuid4(), uuid.uuid4(), driver_id, expires_at)


async def test_a_ride_has_one_offer_out_at_a_time(live: LiveState, now: datetime) -> None:
    ride_id = uuid.uuid4()
    expires_at = live.offer_expiry(now)
    await live.put_offer(uuid.uuid4(), ride_id, uuid.uuid4(), expires_at)

    second = uuid.uuid4()
    assert not await live.put_offer(second, ride_id, uuid.uuid4(), expires_at)
    assert not await live.redis.exists(offer_key(second))


async def test_putting_the_same_offer_again_is_harmless(live: LiveState, now: datetime) -> None:
    ids = (uuid.uuid4(), uuid.uuid4(), uuid.uuid4())
    expires_at = live.offer_expiry(now)
    await live.put_offer(*ids, expires_at)

    assert await live.put_offer(*ids, expires_at)


async def test_a_taken_offer_frees_the_driver_and_the_ride(live: LiveState, now: datetime) -> None:
    offer_id, ride_id, driver_id = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    expires_at = live.offer_expiry(now)
    await live.put_offer(offer_id, ride_id, driver_id, expires_at)

    taken = await live.take_offer(offer_id, driver_id)

    assert taken is not None
    assert (taken.offer_id, taken.ride_id, taken.driver_id) == (offer_id, ride_id, driver_id)
    assert await live.offer_for_driver(driver_id) is None
    assert await live.take_offer(offer_id) is None
    assert await live.put_offer(uuid.uuid4(), ride_id, driver_id, expires_at)


async def test_another_drivers_offer_is_not_taken(live: LiveState, now: datetime) -> None:
    offer_id, driver_id = uuid.uuid4(), uuid.uuid4()
    await live.put_offer(offer_id, uuid.uuid4(), driver_id, live.offer_expiry(now))

    assert await live.take_offer(offer_id, uuid.uuid4()) is None

    assert await live.offer_for_driver(driver_id) is not None


async def test_exactly_one_of_many_concurrent_takers_wins(live: LiveState, now: datetime) -> None:
    offer_id = uuid.uuid4()
    await live.put_offer(offer_id, uuid.uuid4(), uuid.uuid4(), live.offer_expiry(now))

    results = await asyncio.gather(*(live.take_offer(offer_id) for _ in range(20)))

    assert sum(result is not None for result in results) == 1


# Region leases


async def test_a_lease_has_one_holder(live: LiveState) -> None:
    assert await live.acquire_lease("842a101ffffffff", "dispatcher-a", 5)

    assert not await live.acquire_lease("842a101ffffffff", "dispatcher-b", 5)
    assert await live.lease_owner("842a101ffffffff") == "dispatcher-a"
    assert await live.lease_owner("842a107ffffffff") is None


async def test_only_the_holder_renews_a_lease(live: LiveState) -> None:
    await live.acquire_lease("842a101ffffffff", "dispatcher-a", 5)

    assert not await live.renew_lease("842a101ffffffff", "dispatcher-b", 60)
    assert await live.redis.pttl("live:lease:842a101ffffffff") <= 5_000
    assert await live.renew_lease("842a101ffffffff", "dispatcher-a", 60)
    assert await live.redis.pttl("live:lease:842a101ffffffff") > 5_000


async def test_only_the_holder_releases_a_lease(live: LiveState) -> None:
    await live.acquire_lease("842a101ffffffff", "dispatcher-a", 5)

    assert not await live.release_lease("842a101ffffffff", "dispatcher-b")
    assert await live.lease_owner("842a101ffffffff") == "dispatcher-a"
    assert await live.release_lease("842a101ffffffff", "dispatcher-a")
    assert await live.acquire_lease("842a101ffffffff", "dispatcher-b", 5)


async def test_an_expired_lease_can_be_taken_but_not_renewed(live: LiveState) -> None:
    await live.acquire_lease("842a101ffffffff", "dispatcher-a", 0.1)

    await asyncio.sleep(0.2)

    assert not await live.renew_lease("842a101ffffffff", "dispatcher-a", 5)
    assert await live.acquire_lease("842a101ffffffff", "dispatcher-b", 5)


async def test_a_lease_needs_a_positive_ttl(live: LiveState) -> None:
    with pytest.raises(ValueError, match="ttl_s"):
        await live.acquire_lease("842a101ffffffff", "dispatcher-a", 0)


# Driver outbox


async def test_unacknowledged_pushes_are_delivered_again(live: LiveState) -> None:
    driver_id = uuid.uuid4()
    first = await live.push_to_driver(driver_id, {"type": "offer", "n": 1})
    second = await live.push_to_driver(driver_id, {"type": "offer", "n": 2})

    pending = await live.unacked(driver_id)

    assert [(m.message_id, m.body["n"]) for m in pending] == [(first, 1), (second, 2)]
    assert await live.unacked(driver_id) == pending


async def test_an_acknowledged_push_is_not_delivered_again(live: LiveState) -> None:
    driver_id = uuid.uuid4()
    first = await live.push_to_driver(driver_id, {"n": 1})
    second = await live.push_to_driver(driver_id, {"n": 2})

    assert await live.ack(driver_id, first)

    assert [m.message_id for m in await live.unacked(driver_id)] == [second]
    assert not await live.ack(driver_id, first)


async def test_a_malformed_ack_is_refused(live: LiveState) -> None:
    driver_id = uuid.uuid4()
    await live.push_to_driver(driver_id, {"n": 1})

    assert not await live.ack(driver_id, "not-an-id")
    assert len(await live.unacked(driver_id)) == 1


async def test_the_outbox_keeps_only_the_newest(redis_client: Redis) -> None:
    live = LiveState(redis_client, outbox_max_len=3)
    driver_id = uuid.uuid4()
    for n in range(5):
        await live.push_to_driver(driver_id, {"n": n})

    assert [m.body["n"] for m in await live.unacked(driver_id)] == [2, 3, 4]
    assert 0 < await redis_client.ttl(f"live:outbox:{driver_id}") <= live.outbox_retention_s


async def test_each_driver_has_their_own_outbox(live: LiveState) -> None:
    await live.push_to_driver(uuid.uuid4(), {"n": 1})

    assert await live.unacked(uuid.uuid4()) == []


async def test_delivering_keeps_each_push_and_publishes_it_with_its_id(
    live: LiveState, redis_client: Redis
) -> None:
    drivers = [uuid.uuid4(), uuid.uuid4(), uuid.uuid4()]
    pubsub = redis_client.pubsub()
    await pubsub.subscribe(*(user_channel(d) for d in drivers))
    try:
        for _ in drivers:
            await pubsub.get_message(timeout=1)  # the subscription confirmations
        messages = [
            {"type": "offer", "text": 'quote " and } brace', "n": 1},
            {"type": "offer", "n": 2},
            {},
        ]

        ids = await live.deliver_to_drivers(list(zip(drivers, messages, strict=True)))

        published: list[tuple[str, dict[str, object]]] = []
        while len(published) < len(drivers):
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
            assert message is not None
            published.append((message["channel"], json.loads(message["data"])))
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]
    assert published == [
        (user_channel(d), {**m, "message_id": i})
        for d, m, i in zip(drivers, messages, ids, strict=True)
    ]
    for driver_id, message, message_id in zip(drivers, messages, ids, strict=True):
        assert await live.unacked(driver_id) == [OutboxMessage(message_id, message)]
        assert 0 < await redis_client.ttl(f"live:outbox:{driver_id}") <= live.outbox_retention_s


async def test_delivering_nothing_calls_nothing(live: LiveState) -> None:
    assert await live.deliver_to_drivers([]) == []
