"""Offers answered over HTTP, a driver's explanations of matching decisions, and the
members' view of how evenly work and pay are spread."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession

from api.state import Resources
from dispatch.dispatcher import Dispatcher, WindowReport, matching_params
from dispatch.flows import RideFlows
from dispatch.live import LiveState
from dispatch.models import DriverShift
from dispatch.offers import MadeOffer, OfferService
from dispatch.regions import region_of
from dispatch.service import RideService
from governance.schemas import MembershipTransition
from governance.service import MembershipService
from infra.clock import FrozenClock, SystemClock
from infra.events import EventBuffer
from infra.settings import DispatchSettings, Settings
from payments.flows import PaymentFlows
from tests.dispatch.test_offers import make_offer, ride_in_matching
from tests.dispatch.test_quotes import TIMES_SQUARE, north_of, seed_zones
from tests.factories import Account, make_account

REGION = region_of(TIMES_SQUARE.lat, TIMES_SQUARE.lng)


def problem_type(response: httpx.Response) -> str:
    assert response.headers["content-type"] == "application/problem+json"
    slug: str = response.json()["type"].rsplit("/", 1)[-1]
    return slug


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(datetime.now(UTC))


@pytest.fixture
def live(redis_client: Redis) -> LiveState:
    return LiveState(redis_client)


@pytest.fixture
async def zoned(session: AsyncSession, clock: FrozenClock) -> None:
    await seed_zones(session, clock)


async def driver_at(client: httpx.AsyncClient, live: LiveState, metres_north: float) -> Account:
    driver = await make_account(client, "driver")
    at = north_of(TIMES_SQUARE, metres_north)
    await live.set_online(driver.user_id, REGION, at.lat, at.lng, datetime.now(UTC))
    return driver


async def one_window(resources: Resources, live: LiveState) -> WindowReport:
    flows = RideFlows(
        resources.sessionmaker,
        PaymentFlows(resources.sessionmaker, resources.gateway, resources.clock),
        resources.clock,
        resources.redis,
    )
    dispatcher = Dispatcher(
        resources.sessionmaker,
        live,
        SystemClock(),
        matching_params(DispatchSettings()),
        "api-test",
        no_driver=flows,
    )
    report = await dispatcher.run_window(datetime.now(UTC))
    await dispatcher.release_all()
    return report


async def offered_ride(
    session: AsyncSession,
    client: httpx.AsyncClient,
    live: LiveState,
    redis_client: Redis,
    settings: Settings,
    *,
    offered_at: datetime | None = None,
) -> tuple[Account, MadeOffer]:
    clock = FrozenClock(offered_at or datetime.now(UTC))
    ride = await ride_in_matching(session, clock, redis_client, settings)
    driver = await driver_at(client, live, 100)
    [made] = await make_offer(session, clock, live, ride.id, driver.user_id)
    await session.commit()
    return driver, made


# Offers over HTTP.


@pytest.mark.usefixtures("zoned")
async def test_a_driver_accepts_their_offer_over_http(
    session: AsyncSession,
    client: httpx.AsyncClient,
    live: LiveState,
    redis_client: Redis,
    settings: Settings,
) -> None:
    driver, made = await offered_ride(session, client, live, redis_client, settings)
    url = f"/v1/drivers/me/offers/{made.offer.id}/accept"
    response = await client.post(url, headers=driver.headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["offer"]["status"] == "accepted"
    assert body["ride"]["status"] == "driver_assigned"
    assert body["ride"]["driver_id"] == str(driver.user_id)
    assert body["ride"]["pin"] is None
    again = await client.post(url, headers=driver.headers)
    assert (again.status_code, again.json()["ride"]["id"]) == (200, body["ride"]["id"])


@pytest.mark.usefixtures("zoned")
async def test_acting_on_another_drivers_offer_is_forbidden(
    session: AsyncSession,
    client: httpx.AsyncClient,
    live: LiveState,
    redis_client: Redis,
    settings: Settings,
) -> None:
    _, made = await offered_ride(session, client, live, redis_client, settings)
    intruder = await make_account(client, "driver")
    for action in ("accept", "decline"):
        response = await client.post(
            f"/v1/drivers/me/offers/{made.offer.id}/{action}", headers=intruder.headers
        )
        assert response.status_code == 403
        assert problem_type(response) == "offer-not-yours"


@pytest.mark.usefixtures("zoned")
async def test_accepting_an_expired_offer_is_a_conflict(
    session: AsyncSession,
    client: httpx.AsyncClient,
    live: LiveState,
    redis_client: Redis,
    settings: Settings,
) -> None:
    long_ago = datetime.now(UTC) - timedelta(seconds=20)
    driver, made = await offered_ride(
        session, client, live, redis_client, settings, offered_at=long_ago
    )
    response = await client.post(
        f"/v1/drivers/me/offers/{made.offer.id}/accept", headers=driver.headers
    )
    assert response.status_code == 409
    assert problem_type(response) == "offer-expired"
    assert response.json()["offer_status"] == "expired"


@pytest.mark.usefixtures("zoned")
async def test_a_driver_declines_their_offer_over_http(
    session: AsyncSession,
    client: httpx.AsyncClient,
    live: LiveState,
    redis_client: Redis,
    settings: Settings,
) -> None:
    driver, made = await offered_ride(session, client, live, redis_client, settings)
    response = await client.post(
        f"/v1/drivers/me/offers/{made.offer.id}/decline", headers=driver.headers
    )
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "declined"


async def test_an_unknown_offer_is_not_found(client: httpx.AsyncClient) -> None:
    driver = await make_account(client, "driver")
    response = await client.post(
        f"/v1/drivers/me/offers/{uuid.uuid4()}/accept", headers=driver.headers
    )
    assert response.status_code == 404
    assert problem_type(response) == "offer-not-found"


async def test_riders_cannot_answer_offers(client: httpx.AsyncClient) -> None:
    rider = await make_account(client, "rider")
    response = await client.post(
        f"/v1/drivers/me/offers/{uuid.uuid4()}/accept", headers=rider.headers
    )
    assert response.status_code == 403


# Why an offer went elsewhere.


@pytest.mark.usefixtures("zoned")
async def test_a_losing_driver_sees_their_cost_against_the_winners_but_not_who_won(
    session: AsyncSession,
    client: httpx.AsyncClient,
    live: LiveState,
    redis_client: Redis,
    settings: Settings,
    resources: Resources,
) -> None:
    ride = await ride_in_matching(session, FrozenClock(datetime.now(UTC)), redis_client, settings)
    await session.commit()
    winner = await driver_at(client, live, 100)
    loser = await driver_at(client, live, 800)
    [made] = (await one_window(resources, live)).offers
    assert made.offer.driver_id == winner.user_id

    listed = await client.get(
        "/v1/drivers/me/decisions", params={"ride_id": str(ride.id)}, headers=loser.headers
    )
    assert listed.status_code == 200, listed.text
    [told] = listed.json()
    assert told["decision_id"] == str(made.offer.decision_id)
    assert told["outcome"] == "lost_on_cost"
    assert told["candidates"] == 2
    assert told["winner"]["cost"] < told["own"]["cost"]
    assert told["own"]["eta_s"] == pytest.approx(800 * 1.4 / (30 / 3.6), rel=0.01)
    assert str(winner.user_id) not in listed.text

    one = await client.get(
        f"/v1/drivers/me/decisions/{made.offer.decision_id}", headers=loser.headers
    )
    assert one.status_code == 200
    assert one.json() == told
    assert str(winner.user_id) not in one.text
    mine = await client.get(
        f"/v1/drivers/me/decisions/{made.offer.decision_id}", headers=winner.headers
    )
    assert mine.json()["outcome"] == "offered"


@pytest.mark.usefixtures("zoned")
async def test_a_driver_who_was_not_a_candidate_is_told_nothing(
    session: AsyncSession,
    client: httpx.AsyncClient,
    live: LiveState,
    redis_client: Redis,
    settings: Settings,
    resources: Resources,
) -> None:
    await ride_in_matching(session, FrozenClock(datetime.now(UTC)), redis_client, settings)
    await session.commit()
    await driver_at(client, live, 100)
    [made] = (await one_window(resources, live)).offers
    outsider = await make_account(client, "driver")
    response = await client.get(
        f"/v1/drivers/me/decisions/{made.offer.decision_id}", headers=outsider.headers
    )
    assert response.status_code == 404
    assert problem_type(response) == "match-decision-not-found"
    listed = await client.get("/v1/drivers/me/decisions", headers=outsider.headers)
    assert listed.json() == []


# How evenly work is spread.


async def make_member(session: AsyncSession, account: Account) -> None:
    memberships = MembershipService(session, SystemClock(), EventBuffer())
    if await memberships.get(account.user_id) is None:
        await memberships.open_application(account.user_id, "I drive here")
    await memberships.transition(
        account.user_id,
        MembershipTransition(
            to_status="member", reason="share paid", share_amount=10_000, share_currency="USD"
        ),
        None,
    )
    await session.commit()


async def complete_a_ride(
    session: AsyncSession,
    redis_client: Redis,
    settings: Settings,
    live: LiveState,
    driver: Account,
) -> int:
    """The driver takes an offer and drives the ride to the end; returns its fare."""
    clock = SystemClock()
    ride = await ride_in_matching(session, FrozenClock(clock.now()), redis_client, settings)
    [made] = await make_offer(session, FrozenClock(clock.now()), live, ride.id, driver.user_id)
    await OfferService(session, clock, live).accept(made.offer.id, driver.user_id)
    rides = RideService(session, clock, EventBuffer(), redis_client)
    await rides.arrive(ride.id, driver.user_id, north_of(TIMES_SQUARE, 20))
    assert ride.pin is not None
    await rides.start(ride.id, driver.user_id, ride.pin)
    charge = await rides.complete(ride.id, driver.user_id)
    assert charge.fare is not None
    await session.commit()
    return charge.fare.total.amount


@pytest.mark.usefixtures("zoned")
async def test_members_see_how_evenly_earnings_and_offers_are_spread(
    session: AsyncSession,
    client: httpx.AsyncClient,
    live: LiveState,
    redis_client: Redis,
    settings: Settings,
) -> None:
    earner = await make_account(client, "driver")
    idle = await make_account(client, "driver")
    await make_member(session, idle)
    now = datetime.now(UTC)
    shift_start = max(now - timedelta(hours=1), now.replace(hour=0, minute=0, second=0))
    for account in (earner, idle):
        session.add(DriverShift(driver_id=account.user_id, started_at=shift_start, ended_at=None))
    fare = await complete_a_ride(session, redis_client, settings, live, earner)

    response = await client.get(
        "/v1/members/dispatch/fairness",
        params={"date": now.date().isoformat()},
        headers=idle.headers,
    )
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["day"] == now.date().isoformat()
    assert report["drivers"] == 2
    assert report["offers"] == 1
    assert report["earnings_amount"] == fare
    assert report["currency"] == "USD"
    # One driver of two earns everything: (n - 1) / n.
    assert report["earnings_per_hour_gini"] == pytest.approx(0.5)
    assert report["offers_per_hour_gini"] == pytest.approx(0.5)
    assert report["earnings_per_hour_lorenz"][4] == 0.0
    assert report["earnings_per_hour_lorenz"][-1] == 1.0


async def test_a_day_without_drivers_has_an_empty_report(
    session: AsyncSession, client: httpx.AsyncClient
) -> None:
    member = await make_account(client, "driver")
    await make_member(session, member)
    response = await client.get(
        "/v1/members/dispatch/fairness", params={"date": "2001-01-01"}, headers=member.headers
    )
    assert response.status_code == 200
    assert response.json()["drivers"] == 0
    assert response.json()["earnings_per_hour_gini"] == 0.0


async def test_only_members_see_the_spread(client: httpx.AsyncClient) -> None:
    driver = await make_account(client, "driver")
    response = await client.get("/v1/members/dispatch/fairness", headers=driver.headers)
    assert response.status_code == 403
