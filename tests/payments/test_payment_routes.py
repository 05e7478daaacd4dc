"""The payment routes as the apps use them, over the real SDK and the loopback fakes."""

from __future__ import annotations

import dataclasses
import uuid

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from api.state import Resources
from infra.settings import Settings
from payments.flows import PaymentFlows, hold_amount
from payments.stripe_gateway import StripeGateway
from tests.factories import Account, make_account, make_admin
from tests.payments.fake_connect import FakeConnect
from tests.payments.test_flows import priced
from tests.payments.test_stripe_gateway import VISA, confirm_setup_intent_in_the_app

pytestmark = pytest.mark.slow


@pytest.fixture
def resources(resources: Resources, stripe_gateway: StripeGateway) -> Resources:
    return dataclasses.replace(resources, gateway=stripe_gateway)


async def _save_card(client: httpx.AsyncClient, fake: FakeConnect, rider: Account) -> None:
    setup = await client.post("/v1/riders/me/cards/setup", headers=rider.headers)
    assert setup.status_code == 200, setup.text
    body = setup.json()
    confirmed = await confirm_setup_intent_in_the_app(
        fake, body["setup_intent_id"], body["client_secret"], VISA
    )
    saved = await client.post(
        "/v1/riders/me/cards",
        json={"payment_method_id": confirmed["payment_method"]},
        headers=rider.headers,
    )
    assert saved.status_code == 204, saved.text


async def _onboard(client: httpx.AsyncClient, driver: Account) -> None:
    link = await client.post("/v1/drivers/me/payout-account/onboarding", headers=driver.headers)
    assert link.status_code == 200, link.text
    async with httpx.AsyncClient() as browser:
        await browser.get(link.json()["url"])


async def test_a_rider_saves_a_card_and_sees_it(
    client: httpx.AsyncClient, fake_stripe: FakeConnect
) -> None:
    rider = await make_account(client, "rider")
    await _save_card(client, fake_stripe, rider)
    cards = (await client.get("/v1/riders/me/cards", headers=rider.headers)).json()
    assert [(c["last4"], c["default"]) for c in cards] == [("4242", True)]


async def test_a_driver_onboards_to_receive_earnings(client: httpx.AsyncClient) -> None:
    driver = await make_account(client, "driver")
    before = await client.get("/v1/drivers/me/payout-account", headers=driver.headers)
    assert before.status_code == 404
    assert before.json()["type"].endswith("/payout-account-missing")
    await _onboard(client, driver)
    after = await client.get("/v1/drivers/me/payout-account", headers=driver.headers)
    assert after.json()["payouts_enabled"] is True


async def test_payment_routes_check_who_is_asking(client: httpx.AsyncClient) -> None:
    rider = await make_account(client, "rider")
    driver = await make_account(client, "driver")
    assert (
        await client.post("/v1/riders/me/cards/setup", headers=driver.headers)
    ).status_code == 403
    onboarding = "/v1/drivers/me/payout-account/onboarding"
    assert (await client.post(onboarding, headers=rider.headers)).status_code == 403
    assert (await client.post("/v1/riders/me/cards/setup")).status_code == 401
    refund = {"reason": "because", "request_id": "r1"}
    response = await client.post(
        f"/v1/admin/rides/{uuid.uuid4()}/refunds", json=refund, headers=rider.headers
    )
    assert response.status_code == 403


async def test_a_ride_payment_is_visible_to_its_rider_and_driver_only(
    client: httpx.AsyncClient,
    fake_stripe: FakeConnect,
    flows_for_api: PaymentFlows,
) -> None:
    rider = await make_account(client, "rider")
    driver = await make_account(client, "driver")
    stranger = await make_account(client, "rider")
    await _save_card(client, fake_stripe, rider)
    await _onboard(client, driver)
    ride_id = uuid.uuid4()
    fare, split = priced()
    await flows_for_api.authorize_ride(ride_id, rider.user_id, hold_amount(fare.total))
    await flows_for_api.settle_ride(ride_id, driver.user_id, fare, split)

    for who in (rider, driver):
        seen = await client.get(f"/v1/rides/{ride_id}/payment", headers=who.headers)
        assert seen.status_code == 200
        assert seen.json()["captured_amount"] == fare.total.amount
    hidden = await client.get(f"/v1/rides/{ride_id}/payment", headers=stranger.headers)
    assert hidden.status_code == 404
    tip = await client.post(
        f"/v1/rides/{ride_id}/tip", json={"amount": 200}, headers=stranger.headers
    )
    assert tip.status_code == 404

    tipped = await client.post(
        f"/v1/rides/{ride_id}/tip", json={"amount": 200}, headers=rider.headers
    )
    assert tipped.status_code == 200, tipped.text
    assert tipped.json()["tip_amount"] == 200


async def test_an_admin_refunds_a_fare(
    client: httpx.AsyncClient,
    fake_stripe: FakeConnect,
    flows_for_api: PaymentFlows,
    session: AsyncSession,
    settings: Settings,
) -> None:
    admin = await make_admin(client, session, settings)
    rider = await make_account(client, "rider")
    driver = await make_account(client, "driver")
    await _save_card(client, fake_stripe, rider)
    ride_id = uuid.uuid4()
    fare, split = priced()
    await flows_for_api.authorize_ride(ride_id, rider.user_id, hold_amount(fare.total))
    await flows_for_api.settle_ride(ride_id, driver.user_id, fare, split)
    body = {"amount": 500, "reason": "detour", "request_id": "complaint-9"}
    url = f"/v1/admin/rides/{ride_id}/refunds"
    first = await client.post(url, json=body, headers=admin.headers)
    again = await client.post(url, json=body, headers=admin.headers)
    assert first.status_code == again.status_code == 200
    assert again.json()["refunded_amount"] == 500
    too_much = {"amount": 10**6, "reason": "oops", "request_id": "complaint-10"}
    refused = await client.post(url, json=too_much, headers=admin.headers)
    assert refused.status_code == 409
    assert refused.json()["type"].endswith("/nothing-to-refund")


async def test_balance_and_currency_checks(client: httpx.AsyncClient) -> None:
    rider = await make_account(client, "rider")
    balance = await client.get("/v1/riders/me/balance", headers=rider.headers)
    assert balance.json() == {"owed": [], "can_request_rides": True}
    odd = await client.get("/v1/riders/me/balance?currency=XTS", headers=rider.headers)
    assert odd.status_code == 422
    assert odd.json()["type"].endswith("/unsupported-currency")


@pytest.fixture
def flows_for_api(resources: Resources) -> PaymentFlows:
    return PaymentFlows(resources.sessionmaker, resources.gateway, resources.clock)
