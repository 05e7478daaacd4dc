"""Matching windows on real PostgreSQL and Redis, with a frozen clock: who gets which
offer, expiry and declines handing the ride on, the timeout, leases between dispatchers,
and the decisions kept for transparency."""

from __future__ import annotations

import asyncio
import math
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import structlog.testing
from redis.asyncio import Redis
from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dispatch.dispatcher import (
    DISPATCHERS_KEY,
    NEAREST_QUERY_WORTH_DRIVERS,
    Dispatcher,
    WindowReport,
    governed_fairness_weight,
    matching_params,
)
from dispatch.flows import RideFlows
from dispatch.live import LiveState, lease_key
from dispatch.locations import LocationUpdate
from dispatch.matching import MatchingParams, Policy
from dispatch.models import MatchDecision, Offer
from dispatch.offers import OfferService
from dispatch.regions import region_of
from dispatch.repository import MatchDecisionRepository
from dispatch.schemas import Point, RideRead
from dispatch.service import RideService
from governance.models import GovernedParameter
from infra.clock import FrozenClock
from infra.events import EventBuffer
from infra.pubsub import Subscription, user_channel
from infra.settings import DispatchSettings, Settings
from payments.flows import PaymentFlows
from payments.stripe_gateway import StripeGateway
from tests.dispatch.test_offers import driver_online, excluded, ride_in_matching
from tests.dispatch.test_quotes import JFK, TIMES_SQUARE, north_of, seed_zones

pytestmark = pytest.mark.usefixtures("zoned")

TIMES_SQUARE_REGION = region_of(TIMES_SQUARE.lat, TIMES_SQUARE.lng)
JFK_REGION = region_of(JFK.lat, JFK.lng)
NUDGE_WAIT_S = 5.0


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(datetime.now(UTC))


@pytest.fixture
def live(redis_client: Redis) -> LiveState:
    return LiveState(redis_client)


@pytest.fixture
async def zoned(session: AsyncSession, clock: FrozenClock) -> None:
    await seed_zones(session, clock)


def east_of(point: Point, metres: float) -> Point:
    return Point(lat=point.lat, lng=point.lng + metres / 84_300.0)


@pytest.fixture
async def gateway(settings: Settings) -> Any:
    # Never called: these rides hold no card, so releasing their hold asks nothing of
    # Stripe (the ride flows find no payment).
    gateway = StripeGateway(settings.stripe)
    yield gateway
    await gateway.aclose()


@pytest.fixture
def ride_flows(
    sessionmaker: async_sessionmaker[AsyncSession],
    clock: FrozenClock,
    redis_client: Redis,
    gateway: StripeGateway,
) -> RideFlows:
    return RideFlows(sessionmaker, PaymentFlows(sessionmaker, gateway, clock), clock, redis_client)


@pytest.fixture
def make_dispatcher(
    sessionmaker: async_sessionmaker[AsyncSession],
    live: LiveState,
    clock: FrozenClock,
    ride_flows: RideFlows,
) -> Any:
    def make(
        owner: str = "dispatcher-a",
        policy: Policy = "batched",
        params: MatchingParams | None = None,
        nearest_query_worth_drivers: float = NEAREST_QUERY_WORTH_DRIVERS,
    ) -> Dispatcher:
        return Dispatcher(
            sessionmaker,
            live,
            clock,
            params or matching_params(DispatchSettings()),
            owner,
            no_driver=ride_flows,
            policy=policy,
            nearest_query_worth_drivers=nearest_query_worth_drivers,
        )

    return make


@pytest.fixture
def dispatcher(make_dispatcher: Any) -> Dispatcher:
    dispatcher: Dispatcher = make_dispatcher()
    return dispatcher


async def ride_at(
    session: AsyncSession, clock: FrozenClock, redis: Redis, settings: Settings, pickup: Point
) -> RideRead:
    ride = await ride_in_matching(session, clock, redis, settings, pickup)
    await session.commit()
    return ride


async def online(
    session: AsyncSession,
    clock: FrozenClock,
    live: LiveState,
    settings: Settings,
    at: Point,
    since: datetime | None = None,
) -> uuid.UUID:
    """A driver online at ``at``, available since ``since`` and heard from just now."""
    driver_id = await driver_online(session, clock, live, settings, at, since)
    if since is not None:
        heard = LocationUpdate(
            lat=at.lat,
            lng=at.lng,
            heading_deg=None,
            speed_mps=None,
            accuracy_m=None,
            recorded_at=clock.now(),
        )
        await live.update_location(driver_id, heard, clock.now())
    await session.commit()
    return driver_id


def offered(report: WindowReport) -> dict[uuid.UUID, uuid.UUID]:
    """ride -> driver of the window's offers."""
    return {made.offer.ride_id: made.offer.driver_id for made in report.offers}


async def live_offers(session: AsyncSession) -> list[tuple[uuid.UUID, uuid.UUID]]:
    rows = await session.execute(
        select(Offer.ride_id, Offer.driver_id).where(Offer.status == "offered")
    )
    return sorted((ride_id, driver_id) for ride_id, driver_id in rows.all())


async def later(clock: FrozenClock, seconds: float) -> datetime:
    clock.set(clock.now() + timedelta(seconds=seconds))
    return clock.now()


# Who gets the offer.


# Drivers found by one query per request (0: always) or by scanning the regions (inf);
# a query stops at the radius, a scan takes every driver of the regions it reaches.
@pytest.mark.parametrize(
    ("query_worth", "considered"), [(0.0, 2), (math.inf, 3)], ids=["nearest", "scan"]
)
async def test_a_window_offers_each_ride_its_nearest_driver(
    session: AsyncSession,
    clock: FrozenClock,
    live: LiveState,
    redis_client: Redis,
    settings: Settings,
    make_dispatcher: Any,
    query_worth: float,
    considered: int,
) -> None:
    dispatcher = make_dispatcher(nearest_query_worth_drivers=query_worth)
    # Beyond every request's radius: never a candidate.
    await online(session, clock, live, settings, north_of(TIMES_SQUARE, 7_000))
    north_ride = await ride_at(
        session, clock, redis_client, settings, north_of(TIMES_SQUARE, 2_000)
    )
    south_ride = await ride_at(session, clock, redis_client, settings, TIMES_SQUARE)
    near_north = await online(session, clock, live, settings, north_of(TIMES_SQUARE, 2_100))
    near_south = await online(session, clock, live, settings, north_of(TIMES_SQUARE, -150))
    report = await dispatcher.run_window(clock.now())
    assert report.owned == (TIMES_SQUARE_REGION,)
    assert report.regions[0].drivers == considered
    assert offered(report) == {north_ride.id: near_north, south_ride.id: near_south}


async def test_the_offer_reaches_the_drivers_outbox_and_channel(
    session: AsyncSession,
    clock: FrozenClock,
    live: LiveState,
    redis_client: Redis,
    settings: Settings,
    dispatcher: Dispatcher,
) -> None:
    ride = await ride_at(session, clock, redis_client, settings, TIMES_SQUARE)
    driver = await online(session, clock, live, settings, north_of(TIMES_SQUARE, 200))
    async with Subscription(redis_client, user_channel(driver)) as inbox:
        report = await dispatcher.run_window(clock.now())
        nudge = await asyncio.wait_for(anext(inbox.messages()), NUDGE_WAIT_S)
    [made] = report.offers
    [message] = await live.unacked(driver)
    assert message.body == made.frame()
    assert message.body["ride_id"] == str(ride.id)
    assert nudge == {**made.frame(), "message_id": message.message_id}
    held = await live.offer_for_driver(driver)
    assert held is not None
    assert held.offer_id == made.offer.id


async def test_rides_and_drivers_hold_one_live_offer_across_windows(
    session: AsyncSession,
    clock: FrozenClock,
    live: LiveState,
    redis_client: Redis,
    settings: Settings,
    dispatcher: Dispatcher,
) -> None:
    first = await ride_at(session, clock, redis_client, settings, TIMES_SQUARE)
    driver = await online(session, clock, live, settings, north_of(TIMES_SQUARE, 200))
    await dispatcher.run_window(clock.now())
    second = await ride_at(session, clock, redis_client, settings, north_of(TIMES_SQUARE, 100))
    report = await dispatcher.run_window(await later(clock, 2))
    # The driver holds the first ride's offer: the second ride waits, and the first
    # ride is not offered again.
    assert report.offers == []
    assert await live_offers(session) == [(first.id, driver)]
    assert second.id not in offered(report)


async def test_an_expired_offer_goes_to_another_driver_next_window(
    session: AsyncSession,
    clock: FrozenClock,
    live: LiveState,
    redis_client: Redis,
    settings: Settings,
    dispatcher: Dispatcher,
) -> None:
    ride = await ride_at(session, clock, redis_client, settings, TIMES_SQUARE)
    nearest = await online(session, clock, live, settings, north_of(TIMES_SQUARE, 100))
    farther = await online(session, clock, live, settings, north_of(TIMES_SQUARE, 900))
    assert offered(await dispatcher.run_window(clock.now())) == {ride.id: nearest}
    assert offered(await dispatcher.run_window(await later(clock, 2))) == {}
    report = await dispatcher.run_window(await later(clock, 14))
    assert [offer.driver_id for offer in report.expired] == [nearest]
    assert offered(report) == {ride.id: farther}
    assert await excluded(session, ride.id) == [nearest]


async def test_a_declined_offer_goes_to_another_driver_next_window(
    session: AsyncSession,
    clock: FrozenClock,
    live: LiveState,
    redis_client: Redis,
    settings: Settings,
    dispatcher: Dispatcher,
) -> None:
    ride = await ride_at(session, clock, redis_client, settings, TIMES_SQUARE)
    nearest = await online(session, clock, live, settings, north_of(TIMES_SQUARE, 100))
    farther = await online(session, clock, live, settings, north_of(TIMES_SQUARE, 900))
    [made] = (await dispatcher.run_window(clock.now())).offers
    await OfferService(session, clock, live).decline(made.offer.id, nearest)
    await session.commit()
    assert offered(await dispatcher.run_window(await later(clock, 2))) == {ride.id: farther}


async def test_a_driver_with_a_ride_under_way_gets_no_offer(
    session: AsyncSession,
    clock: FrozenClock,
    live: LiveState,
    redis_client: Redis,
    settings: Settings,
    dispatcher: Dispatcher,
) -> None:
    await ride_at(session, clock, redis_client, settings, TIMES_SQUARE)
    busy = await online(session, clock, live, settings, north_of(TIMES_SQUARE, 100))
    [made] = (await dispatcher.run_window(clock.now())).offers
    await OfferService(session, clock, live).accept(made.offer.id, busy)
    await session.commit()
    # Not marked busy in the live state (as if that step had been lost): the database
    # still keeps the driver out.
    await ride_at(session, clock, redis_client, settings, north_of(TIMES_SQUARE, 50))
    report = await dispatcher.run_window(await later(clock, 2))
    [region] = report.regions
    assert (region.requests, region.drivers, report.offers) == (1, 0, [])


# Giving up.


async def test_a_ride_without_a_driver_ends_after_the_timeout_and_the_rider_is_told(
    session: AsyncSession,
    clock: FrozenClock,
    live: LiveState,
    redis_client: Redis,
    settings: Settings,
    dispatcher: Dispatcher,
) -> None:
    ride = await ride_at(session, clock, redis_client, settings, TIMES_SQUARE)
    assert (await dispatcher.run_window(await later(clock, 119))).no_driver_found == ()
    async with Subscription(redis_client, user_channel(ride.rider_id)) as inbox:
        report = await dispatcher.run_window(await later(clock, 1))
        told = await asyncio.wait_for(anext(inbox.messages()), NUDGE_WAIT_S)
    assert report.no_driver_found == (ride.id,)
    assert told["event"] == "NoDriverFound"
    assert told["data"]["ride_id"] == str(ride.id)
    rides = RideService(session, clock, EventBuffer(), redis_client)
    assert (await rides.get(ride.id)).status == "no_driver_found"


async def test_a_ride_holding_an_offer_is_not_given_up_on(
    session: AsyncSession,
    clock: FrozenClock,
    live: LiveState,
    redis_client: Redis,
    settings: Settings,
    dispatcher: Dispatcher,
) -> None:
    ride = await ride_at(session, clock, redis_client, settings, TIMES_SQUARE)
    await later(clock, 110)
    await online(session, clock, live, settings, north_of(TIMES_SQUARE, 100))
    assert len((await dispatcher.run_window(clock.now())).offers) == 1
    report = await dispatcher.run_window(await later(clock, 12))
    assert report.no_driver_found == ()
    rides = RideService(session, clock, EventBuffer(), redis_client)
    assert (await rides.get(ride.id)).status == "matching"


# Policies and fairness.


async def test_batched_and_greedy_choose_differently(
    session: AsyncSession,
    clock: FrozenClock,
    live: LiveState,
    redis_client: Redis,
    settings: Settings,
    make_dispatcher: Any,
) -> None:
    # On a line: driver A at 0 m, driver B at 1,000 m; the older ride at 400 m, the
    # newer at -300 m. Nearest-first gives the older ride A (1,700 m driven in all);
    # the optimum gives it B (900 m).
    older = await ride_at(session, clock, redis_client, settings, east_of(TIMES_SQUARE, 400))
    await later(clock, 1)
    newer = await ride_at(session, clock, redis_client, settings, east_of(TIMES_SQUARE, -300))
    a = await online(session, clock, live, settings, TIMES_SQUARE)
    b = await online(session, clock, live, settings, east_of(TIMES_SQUARE, 1_000))
    nearest_first = make_dispatcher("greedy", policy="greedy")
    greedy = await nearest_first.run_window(clock.now())
    assert offered(greedy) == {older.id: a, newer.id: b}
    await nearest_first.release_all()
    await session.execute(delete(Offer))
    batched = await make_dispatcher("batched").run_window(await later(clock, 2))
    assert offered(batched) == {older.id: b, newer.id: a}


async def test_a_driver_idle_longer_wins_a_close_call(
    session: AsyncSession,
    clock: FrozenClock,
    live: LiveState,
    redis_client: Redis,
    settings: Settings,
    make_dispatcher: Any,
) -> None:
    ride = await ride_at(session, clock, redis_client, settings, TIMES_SQUARE)
    # 100 m farther is 17 s more of pickup; 15 minutes idle is worth 30 s at weight 60.
    just_online = await online(session, clock, live, settings, north_of(TIMES_SQUARE, 500))
    idle = await online(
        session,
        clock,
        live,
        settings,
        north_of(TIMES_SQUARE, 600),
        since=clock.now() - timedelta(minutes=15),
    )
    fair_dispatcher = make_dispatcher("fair")
    fair = await fair_dispatcher.run_window(clock.now())
    assert offered(fair) == {ride.id: idle}
    await fair_dispatcher.release_all()
    await session.execute(delete(Offer))
    blind = MatchingParams(fairness_weight_s=0.0)
    unfair = await make_dispatcher("blind", params=blind).run_window(await later(clock, 2))
    assert offered(unfair) == {ride.id: just_online}


# Transparency.


async def test_every_decision_is_stored_with_its_candidates_and_costs(
    session: AsyncSession,
    clock: FrozenClock,
    live: LiveState,
    redis_client: Redis,
    settings: Settings,
    dispatcher: Dispatcher,
) -> None:
    ride = await ride_at(session, clock, redis_client, settings, TIMES_SQUARE)
    winner = await online(session, clock, live, settings, north_of(TIMES_SQUARE, 100))
    loser = await online(session, clock, live, settings, north_of(TIMES_SQUARE, 700))
    [made] = (await dispatcher.run_window(clock.now())).offers
    decision = await session.get(MatchDecision, made.offer.decision_id)
    assert decision is not None
    assert decision.ride_id == ride.id
    assert decision.region == TIMES_SQUARE_REGION
    assert decision.policy == "batched"
    assert decision.window_at == clock.now()
    assert decision.chosen_driver_id == winner
    assert [c["driver_id"] for c in decision.candidates] == [str(winner), str(loser)]
    first, second = decision.candidates
    assert first["cost"] == pytest.approx(first["eta_s"] - first["fairness_bonus_s"])
    assert first["distance_m"] == pytest.approx(100, abs=1)
    assert second["distance_m"] == pytest.approx(700, abs=1)
    assert decision.params["k"] == 10
    assert decision.params["solver"] == "dense"
    assert decision.params["waited_s"] == 0


async def test_the_decisions_are_stored_after_the_offers_went_out(
    session: AsyncSession,
    clock: FrozenClock,
    live: LiveState,
    redis_client: Redis,
    settings: Settings,
    dispatcher: Dispatcher,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ride = await ride_at(session, clock, redis_client, settings, TIMES_SQUARE)
    driver = await online(session, clock, live, settings, north_of(TIMES_SQUARE, 100))
    add_many = MatchDecisionRepository.add_many
    seen_at_store: list[list[tuple[uuid.UUID, uuid.UUID]]] = []

    async def spying(repository: MatchDecisionRepository, decisions: Any) -> None:
        # By then the offer is committed and in the driver's outbox.
        seen_at_store.append(await live_offers(session))
        assert [m.body["ride_id"] for m in await live.unacked(driver)] == [str(ride.id)]
        await add_many(repository, decisions)

    monkeypatch.setattr(MatchDecisionRepository, "add_many", spying)

    [made] = (await dispatcher.run_window(clock.now())).offers

    assert seen_at_store == [[(ride.id, driver)]]
    assert await session.get(MatchDecision, made.offer.decision_id) is not None


async def test_decisions_that_fail_to_store_are_tried_again(
    session: AsyncSession,
    clock: FrozenClock,
    live: LiveState,
    redis_client: Redis,
    settings: Settings,
    dispatcher: Dispatcher,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await ride_at(session, clock, redis_client, settings, TIMES_SQUARE)
    await online(session, clock, live, settings, north_of(TIMES_SQUARE, 100))
    add_many = MatchDecisionRepository.add_many
    calls = 0

    async def flaky(repository: MatchDecisionRepository, decisions: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("the database went away")
        await add_many(repository, decisions)

    monkeypatch.setattr(MatchDecisionRepository, "add_many", flaky)
    monkeypatch.setattr("dispatch.dispatcher.DECISION_RETRY_S", 0.01)

    [made] = (await dispatcher.run_window(clock.now())).offers

    assert calls == 2
    assert await session.get(MatchDecision, made.offer.decision_id) is not None


async def test_decisions_that_cannot_be_stored_leave_the_offers_and_are_logged_in_full(
    session: AsyncSession,
    clock: FrozenClock,
    live: LiveState,
    redis_client: Redis,
    settings: Settings,
    dispatcher: Dispatcher,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ride = await ride_at(session, clock, redis_client, settings, TIMES_SQUARE)
    driver = await online(session, clock, live, settings, north_of(TIMES_SQUARE, 100))

    async def broken(repository: MatchDecisionRepository, decisions: Any) -> None:
        raise ConnectionError("the database went away")

    monkeypatch.setattr(MatchDecisionRepository, "add_many", broken)
    monkeypatch.setattr("dispatch.dispatcher.DECISION_RETRY_S", 0.01)

    with structlog.testing.capture_logs() as logs:
        [made] = (await dispatcher.run_window(clock.now())).offers

    assert await live_offers(session) == [(ride.id, driver)]
    assert await session.get(MatchDecision, made.offer.decision_id) is None
    [failure] = [entry for entry in logs if entry["event"] == "decisions_not_stored"]
    [logged] = failure["decisions"]
    assert logged["id"] == str(made.offer.decision_id)
    assert logged["chosen_driver_id"] == str(driver)
    assert [c["driver_id"] for c in logged["candidates"]] == [str(driver)]
    assert len([e for e in logs if e["event"] == "decisions_not_stored_yet"]) == 2


async def test_a_ride_with_no_candidate_leaves_no_decision(
    session: AsyncSession,
    clock: FrozenClock,
    redis_client: Redis,
    settings: Settings,
    dispatcher: Dispatcher,
) -> None:
    await ride_at(session, clock, redis_client, settings, TIMES_SQUARE)
    report = await dispatcher.run_window(clock.now())
    assert report.regions[0].requests == 1
    assert await session.scalar(select(func.count()).select_from(MatchDecision)) == 0


# Regions and leases.


async def test_two_dispatchers_share_the_regions(
    session: AsyncSession,
    clock: FrozenClock,
    live: LiveState,
    redis_client: Redis,
    settings: Settings,
    make_dispatcher: Any,
) -> None:
    manhattan = await ride_at(session, clock, redis_client, settings, TIMES_SQUARE)
    airport = await ride_at(session, clock, redis_client, settings, JFK)
    in_manhattan = await online(session, clock, live, settings, north_of(TIMES_SQUARE, 100))
    at_airport = await online(session, clock, live, settings, north_of(JFK, 100))
    first, second = make_dispatcher("first"), make_dispatcher("second")
    await first.run_window(clock.now())
    await second.run_window(clock.now())
    # The first took both before the second announced itself; now it gives one back.
    reports = [await first.run_window(await later(clock, 2)), await second.run_window(clock.now())]
    assert {len(report.owned) for report in reports} == {1}
    assert set(reports[0].owned) | set(reports[1].owned) == {TIMES_SQUARE_REGION, JFK_REGION}
    assert await live_offers(session) == sorted(
        [(manhattan.id, in_manhattan), (airport.id, at_airport)]
    )


async def test_a_region_leased_to_another_dispatcher_is_left_to_it(
    session: AsyncSession,
    clock: FrozenClock,
    live: LiveState,
    redis_client: Redis,
    settings: Settings,
    dispatcher: Dispatcher,
) -> None:
    await ride_at(session, clock, redis_client, settings, TIMES_SQUARE)
    await online(session, clock, live, settings, north_of(TIMES_SQUARE, 100))
    await live.acquire_lease(TIMES_SQUARE_REGION, "someone-else", 60)
    report = await dispatcher.run_window(clock.now())
    assert (report.owned, report.offers) == ((), [])


async def test_a_stopped_dispatcher_hands_its_regions_over_at_once(
    session: AsyncSession,
    clock: FrozenClock,
    live: LiveState,
    redis_client: Redis,
    settings: Settings,
    make_dispatcher: Any,
) -> None:
    await ride_at(session, clock, redis_client, settings, TIMES_SQUARE)
    first, second = make_dispatcher("first"), make_dispatcher("second")
    assert (await first.run_window(clock.now())).owned == (TIMES_SQUARE_REGION,)
    assert (await second.run_window(clock.now())).owned == ()
    await first.release_all()
    assert await live.lease_owner(TIMES_SQUARE_REGION) is None
    assert await redis_client.zscore(DISPATCHERS_KEY, "first") is None
    assert (await second.run_window(await later(clock, 2))).owned == (TIMES_SQUARE_REGION,)


async def test_a_region_without_open_rides_is_given_back(
    session: AsyncSession,
    clock: FrozenClock,
    live: LiveState,
    redis_client: Redis,
    settings: Settings,
    dispatcher: Dispatcher,
) -> None:
    ride = await ride_at(session, clock, redis_client, settings, TIMES_SQUARE)
    await dispatcher.run_window(clock.now())
    await RideService(session, clock, EventBuffer(), redis_client).no_driver_found(ride.id)
    await session.commit()
    report = await dispatcher.run_window(await later(clock, 2))
    assert report.released == (TIMES_SQUARE_REGION,)
    assert await redis_client.exists(lease_key(TIMES_SQUARE_REGION)) == 0


async def test_the_fairness_weight_members_voted_for_is_the_one_used(
    session: AsyncSession,
    sessionmaker: async_sessionmaker[AsyncSession],
    clock: FrozenClock,
    live: LiveState,
    redis_client: Redis,
    settings: Settings,
    ride_flows: RideFlows,
) -> None:
    ride = await ride_at(session, clock, redis_client, settings, TIMES_SQUARE)
    just_online = await online(session, clock, live, settings, north_of(TIMES_SQUARE, 500))
    await online(
        session,
        clock,
        live,
        settings,
        north_of(TIMES_SQUARE, 600),
        since=clock.now() - timedelta(minutes=15),
    )
    # The members voted fairness off (weight 0) a minute ago.
    session.add(
        GovernedParameter(
            parameter_key="dispatch.fairness_weight_s",
            value="0",
            version=1,
            effective_at=clock.now() - timedelta(minutes=1),
            created_at=clock.now(),
        )
    )
    await session.commit()
    dispatcher = Dispatcher(
        sessionmaker,
        live,
        clock,
        MatchingParams(fairness_weight_s=60.0),
        "governed",
        no_driver=ride_flows,
        fairness_weight=governed_fairness_weight(sessionmaker),
    )
    report = await dispatcher.run_window(clock.now())
    assert offered(report) == {ride.id: just_online}
    decision = await session.get(MatchDecision, report.offers[0].offer.decision_id)
    assert decision is not None
    assert decision.params["fairness_weight_s"] == 0
