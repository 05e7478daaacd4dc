"""Quotes, rides and zones over HTTP, as the apps use them, with Stripe's loopback fakes."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import uuid
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession

from api.state import Resources
from dispatch.service import RideService
from infra.events import EventBuffer
from infra.pubsub import Subscription, user_channel
from infra.settings import Settings
from payments.stripe_gateway import StripeGateway
from tests.dispatch.test_quotes import (
    JFK,
    JFK_AREA,
    NYC,
    PHILADELPHIA,
    TIMES_SQUARE,
    UPPER_EAST_SIDE,
    north_of,
)
from tests.factories import Account, make_account, make_admin
from tests.payments import conftest as stripe_fakes
from tests.payments.fake_connect import FakeConnect
from tests.payments.test_payment_routes import _onboard, _save_card

localstripe = stripe_fakes.localstripe
fake_stripe = stripe_fakes.fake_stripe
stripe_settings = stripe_fakes.stripe_settings
stripe_gateway = stripe_fakes.stripe_gateway

pytestmark = pytest.mark.slow

AT_PICKUP = north_of(TIMES_SQUARE, 60)
FAR_FROM_PICKUP = north_of(TIMES_SQUARE, 600)


def point(p: Any) -> dict[str, float]:
    return {"lat": p.lat, "lng": p.lng}


@pytest.fixture
def resources(resources: Resources, stripe_gateway: StripeGateway) -> Resources:
    return dataclasses.replace(resources, gateway=stripe_gateway)


@pytest.fixture
async def admin(client: httpx.AsyncClient, session: AsyncSession, settings: Settings) -> Account:
    return await make_admin(client, session, settings)


@pytest.fixture
async def zoned(client: httpx.AsyncClient, admin: Account) -> None:
    for body in (
        {"code": "nyc", "kind": "service_area", "name": "New York City", "area": NYC},
        {"code": "airport", "kind": "airport", "name": "JFK", "area": JFK_AREA},
    ):
        created = await client.post("/v1/admin/zones", json=body, headers=admin.headers)
        assert created.status_code == 201, created.text


@pytest.fixture
async def rider(client: httpx.AsyncClient, fake_stripe: FakeConnect) -> Account:
    rider = await make_account(client, "rider")
    await _save_card(client, fake_stripe, rider)
    return rider


@pytest.fixture
async def driver(client: httpx.AsyncClient) -> Account:
    driver = await make_account(client, "driver")
    await _onboard(client, driver)
    return driver


async def quote(
    client: httpx.AsyncClient, rider: Account, dropoff: Any = UPPER_EAST_SIDE
) -> dict[str, Any]:
    response = await client.post(
        "/v1/quotes",
        json={"pickup": point(TIMES_SQUARE), "dropoff": point(dropoff)},
        headers=rider.headers,
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def request_ride(
    client: httpx.AsyncClient, rider: Account, key: str | None = None
) -> httpx.Response:
    offered = await quote(client, rider)
    return await client.post(
        "/v1/rides",
        json={"quote_id": offered["id"]},
        headers={**rider.headers, "Idempotency-Key": key or uuid.uuid4().hex},
    )


async def assigned(resources: Resources, ride_id: str, driver: Account) -> None:
    # The dispatcher's accepted offer, as the lead's offer flow will call it.
    async with resources.sessionmaker() as session:
        rides = RideService(session, resources.clock, EventBuffer(), resources.redis)
        await rides.assign(uuid.UUID(ride_id), driver.user_id, uuid.uuid4())
        await session.commit()


def problem_type(response: httpx.Response) -> str:
    assert response.headers["content-type"] == "application/problem+json"
    slug: str = response.json()["type"].rsplit("/", 1)[-1]
    return slug


@pytest.mark.usefixtures("zoned")
async def test_a_ride_from_quote_to_rating(
    client: httpx.AsyncClient, rider: Account, driver: Account, resources: Resources
) -> None:
    offered = await quote(client, rider)
    body = {"quote_id": offered["id"]}
    headers = {**rider.headers, "Idempotency-Key": "trip-1"}
    created = await client.post("/v1/rides", json=body, headers=headers)
    assert created.status_code == 201, created.text
    ride = created.json()
    assert ride["status"] == "matching"
    assert ride["upfront_fare"]["total"] == offered["fare"]["total"]
    replayed = await client.post("/v1/rides", json=body, headers=headers)
    assert replayed.status_code == 200
    assert replayed.json()["id"] == ride["id"]

    await assigned(resources, ride["id"], driver)
    url = f"/v1/rides/{ride['id']}"
    arrived = await client.post(f"{url}/arrive", json=point(AT_PICKUP), headers=driver.headers)
    assert arrived.status_code == 200, arrived.text
    assert arrived.json()["pin"] is None
    started = await client.post(f"{url}/start", json={"pin": ride["pin"]}, headers=driver.headers)
    assert started.json()["status"] == "in_progress"
    completed = await client.post(f"{url}/complete", headers=driver.headers)
    assert completed.status_code == 200, completed.text
    assert completed.json()["status"] == "completed"
    fare = completed.json()["final_fare"]
    # Ended at once, far shorter than the estimate: metered, not the upfront price.
    assert fare["basis"] == "metered"
    assert fare["total"] < offered["fare"]["total"]

    payment = await client.get(f"{url}/payment", headers=rider.headers)
    assert payment.json()["status"] == "captured"
    assert payment.json()["captured_amount"] == fare["total"]
    rated = await client.post(f"{url}/rating", json={"rating": 5}, headers=rider.headers)
    assert rated.json()["rating"] == 5
    again = await client.post(f"{url}/rating", json={"rating": 1}, headers=rider.headers)
    assert (again.status_code, problem_type(again)) == (409, "ride-already-rated")
    [seen] = (await client.get("/v1/rides", headers=rider.headers)).json()
    assert (seen["id"], seen["status"]) == (ride["id"], "completed")


@pytest.mark.usefixtures("zoned")
async def test_a_ride_needs_an_idempotency_key(client: httpx.AsyncClient, rider: Account) -> None:
    offered = await quote(client, rider)
    response = await client.post(
        "/v1/rides", json={"quote_id": offered["id"]}, headers=rider.headers
    )
    assert response.status_code == 422
    assert response.json()["invalid_params"][0]["name"] == "header.Idempotency-Key"
    too_long = {**rider.headers, "Idempotency-Key": "k" * 129}
    response = await client.post("/v1/rides", json={"quote_id": offered["id"]}, headers=too_long)
    assert response.status_code == 422


@pytest.mark.usefixtures("zoned")
async def test_a_pickup_outside_the_service_area_is_a_clear_problem(
    client: httpx.AsyncClient, rider: Account
) -> None:
    response = await client.post(
        "/v1/quotes",
        json={"pickup": point(PHILADELPHIA), "dropoff": point(TIMES_SQUARE)},
        headers=rider.headers,
    )
    assert response.status_code == 422
    assert problem_type(response) == "ride-outside-service-area"
    assert response.json()["point"] == "pickup"


@pytest.mark.usefixtures("zoned")
async def test_coordinates_out_of_range_are_refused(
    client: httpx.AsyncClient, rider: Account
) -> None:
    response = await client.post(
        "/v1/quotes",
        json={"pickup": {"lat": 91, "lng": 0}, "dropoff": point(TIMES_SQUARE)},
        headers=rider.headers,
    )
    assert response.status_code == 422
    assert response.json()["invalid_params"][0]["name"] == "body.pickup.lat"


@pytest.mark.usefixtures("zoned")
async def test_an_airport_trip_shows_its_surcharge(
    client: httpx.AsyncClient, rider: Account
) -> None:
    offered = await quote(client, rider, dropoff=JFK)
    codes = {item["code"]: item["amount"] for item in offered["fare"]["line_items"]}
    assert codes["zone_surcharge:airport"] == 400


@pytest.mark.usefixtures("zoned")
async def test_driver_actions_check_who_and_when(
    client: httpx.AsyncClient, rider: Account, driver: Account, resources: Resources
) -> None:
    other_driver = await make_account(client, "driver")
    ride = (await request_ride(client, rider)).json()
    url = f"/v1/rides/{ride['id']}"
    early = await client.post(f"{url}/arrive", json=point(AT_PICKUP), headers=driver.headers)
    assert (early.status_code, problem_type(early)) == (403, "not-ride-driver")
    await assigned(resources, ride["id"], driver)

    by_rider = await client.post(f"{url}/arrive", json=point(AT_PICKUP), headers=rider.headers)
    assert (by_rider.status_code, problem_type(by_rider)) == (403, "role-not-allowed")
    stranger = await client.post(
        f"{url}/arrive", json=point(AT_PICKUP), headers=other_driver.headers
    )
    assert (stranger.status_code, problem_type(stranger)) == (403, "not-ride-driver")
    far = await client.post(f"{url}/arrive", json=point(FAR_FROM_PICKUP), headers=driver.headers)
    assert (far.status_code, problem_type(far)) == (422, "driver-not-at-pickup")
    not_yet = await client.post(f"{url}/start", json={"pin": ride["pin"]}, headers=driver.headers)
    assert (not_yet.status_code, problem_type(not_yet)) == (409, "ride-state-conflict")
    assert not_yet.json()["ride_status"] == "driver_assigned"

    await client.post(f"{url}/arrive", json=point(AT_PICKUP), headers=driver.headers)
    wrong_pin = f"{(int(ride['pin']) + 1) % 10_000:04d}"
    wrong = await client.post(f"{url}/start", json={"pin": wrong_pin}, headers=driver.headers)
    assert (wrong.status_code, problem_type(wrong)) == (422, "wrong-pin")
    assert wrong.json()["attempts_left"] == 4
    malformed = await client.post(f"{url}/start", json={"pin": "12a4"}, headers=driver.headers)
    assert malformed.status_code == 422


@pytest.mark.usefixtures("zoned")
async def test_a_ride_is_visible_to_its_rider_and_driver_only(
    client: httpx.AsyncClient, rider: Account, driver: Account, resources: Resources
) -> None:
    ride = (await request_ride(client, rider)).json()
    await assigned(resources, ride["id"], driver)
    url = f"/v1/rides/{ride['id']}"
    assert (await client.get(url, headers=rider.headers)).json()["pin"] == ride["pin"]
    assert (await client.get(url, headers=driver.headers)).json()["pin"] is None
    for role in ("rider", "driver"):
        stranger = await make_account(client, role)
        hidden = await client.get(url, headers=stranger.headers)
        assert (hidden.status_code, problem_type(hidden)) == (404, "ride-not-found")
        if role == "rider":
            assert (await client.get("/v1/rides", headers=stranger.headers)).json() == []
    [own] = (await client.get("/v1/rides", headers=rider.headers)).json()
    assert own["id"] == ride["id"]
    unknown = await client.get(f"/v1/rides/{uuid.uuid4()}", headers=rider.headers)
    assert unknown.status_code == 404


@pytest.mark.usefixtures("zoned")
async def test_the_cancellation_fee_is_shown_before_cancelling(
    client: httpx.AsyncClient, rider: Account
) -> None:
    ride = (await request_ride(client, rider)).json()
    url = f"/v1/rides/{ride['id']}"
    preview = await client.get(f"{url}/cancellation", headers=rider.headers)
    assert preview.json()["fee"] is None
    cancelled = await client.post(
        f"{url}/cancel",
        json={"reason": "plans changed", "accept_fee_amount": 0},
        headers=rider.headers,
    )
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled_by_rider"
    payment = await client.get(f"{url}/payment", headers=rider.headers)
    assert payment.json()["status"] == "cancelled"
    again = await client.get(f"{url}/cancellation", headers=rider.headers)
    assert (again.status_code, problem_type(again)) == (409, "ride-state-conflict")


@pytest.mark.usefixtures("zoned")
async def test_a_driver_who_cancels_sends_the_ride_back_to_matching(
    client: httpx.AsyncClient, rider: Account, driver: Account, resources: Resources
) -> None:
    ride = (await request_ride(client, rider)).json()
    await assigned(resources, ride["id"], driver)
    url = f"/v1/rides/{ride['id']}"
    cancelled = await client.post(
        f"{url}/driver-cancel", json={"reason": "flat tyre"}, headers=driver.headers
    )
    assert cancelled.status_code == 200, cancelled.text
    assert (cancelled.json()["status"], cancelled.json()["driver_id"]) == ("matching", None)
    seen = await client.get(url, headers=rider.headers)
    assert seen.json()["status"] == "matching"


@pytest.mark.usefixtures("zoned")
async def test_a_second_ride_while_one_is_open_is_refused(
    client: httpx.AsyncClient, rider: Account
) -> None:
    assert (await request_ride(client, rider)).status_code == 201
    second = await request_ride(client, rider)
    assert (second.status_code, problem_type(second)) == (409, "ride-already-open")


@pytest.mark.usefixtures("zoned")
async def test_a_riders_transitions_reach_their_channel(
    client: httpx.AsyncClient,
    rider: Account,
    driver: Account,
    resources: Resources,
    redis_client: Redis,
) -> None:
    ride = (await request_ride(client, rider)).json()
    await assigned(resources, ride["id"], driver)
    async with Subscription(redis_client, user_channel(rider.user_id)) as subscription:
        arrived = await client.post(
            f"/v1/rides/{ride['id']}/arrive", json=point(AT_PICKUP), headers=driver.headers
        )
        assert arrived.status_code == 200
        message = await asyncio.wait_for(anext(aiter(subscription.messages())), 5)
    assert message["event"] == "DriverArrived"
    assert message["data"]["ride_id"] == ride["id"]
    assert "pin" not in json.dumps(message)


async def test_zones_are_for_admins_and_validated(
    client: httpx.AsyncClient, admin: Account, rider: Account
) -> None:
    body = {"code": "jfk", "kind": "airport", "name": "JFK", "area": JFK_AREA}
    refused = await client.post("/v1/admin/zones", json=body, headers=rider.headers)
    assert refused.status_code == 403
    assert (
        await client.post("/v1/admin/zones", json=body, headers=admin.headers)
    ).status_code == 201
    taken = await client.post("/v1/admin/zones", json=body, headers=admin.headers)
    assert (taken.status_code, problem_type(taken)) == (409, "zone-code-taken")
    line = {**body, "code": "line", "area": {"type": "LineString", "coordinates": [[0, 0], [1, 1]]}}
    invalid = await client.post("/v1/admin/zones", json=line, headers=admin.headers)
    assert (invalid.status_code, problem_type(invalid)) == (422, "zone-geometry-invalid")
    listed = await client.get("/v1/admin/zones?kind=airport", headers=admin.headers)
    assert [(z["code"], z["area"]["type"]) for z in listed.json()] == [("jfk", "MultiPolygon")]
