"""Statements, receipts, the books and reconciliation over HTTP: who may read what."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession

from api.routes import statements
from infra.clock import FrozenClock
from infra.settings import Settings
from tests.factories import Account, make_account, make_admin
from tests.payments.test_reconciliation import DAY, FakeStripeBalance
from tests.payments.test_statements import MONDAY, Facts, Ride, stripe_id

WEEK = {
    "from": (MONDAY - timedelta(days=1)).isoformat(),
    "to": (MONDAY + timedelta(days=6)).isoformat(),
}
SHARE = {"share_amount": 10_000, "share_currency": "USD"}


@pytest.fixture
def facts(session: AsyncSession, settings: Settings) -> Facts:
    return Facts(session, FrozenClock(MONDAY), settings)


@pytest.fixture
async def admin(client: httpx.AsyncClient, session: AsyncSession, settings: Settings) -> Account:
    return await make_admin(client, session, settings)


async def paid_ride(facts: Facts, session: AsyncSession, rider: Account, driver: Account) -> Ride:
    await facts.payments.save_customer(rider.user_id, stripe_id("cus"))
    await facts.payments.set_default_card(rider.user_id, stripe_id("pm"))
    ride = await facts.ride(rider.user_id, driver.user_id, MONDAY)
    await session.commit()
    return ride


def problem_type(response: httpx.Response) -> str:
    body: dict[str, Any] = response.json()
    return str(body["type"]).rsplit("/", 1)[-1]


# Drivers.


async def test_a_driver_reads_their_trips_of_the_period(
    client: httpx.AsyncClient, facts: Facts, session: AsyncSession
) -> None:
    rider, driver = await make_account(client, "rider"), await make_account(client, "driver")
    ride = await paid_ride(facts, session, rider, driver)

    response = await client.get("/v1/drivers/me/statements", params=WEEK, headers=driver.headers)

    assert response.status_code == 200, response.text
    [line] = response.json()
    assert line["ride_id"] == str(ride.ride_id)
    assert (line["fare_amount"], line["driver_share_amount"], line["coop_share_amount"]) == (
        2_850,
        1_760,
        640,
    )


async def test_a_rider_cannot_read_driver_statements(client: httpx.AsyncClient) -> None:
    rider = await make_account(client, "rider")

    response = await client.get("/v1/drivers/me/statements", headers=rider.headers)

    assert response.status_code == 403
    assert problem_type(response) == "role-not-allowed"


async def test_a_period_without_a_time_zone_offset_is_refused(client: httpx.AsyncClient) -> None:
    driver = await make_account(client, "driver")

    response = await client.get(
        "/v1/drivers/me/statements",
        params={"from": "2026-03-01T00:00:00", "to": "2026-03-02T00:00:00"},
        headers=driver.headers,
    )

    assert response.status_code == 422
    assert problem_type(response) == "validation-error"


async def test_a_driver_reads_weekly_earnings_in_their_time_zone(
    client: httpx.AsyncClient, facts: Facts, session: AsyncSession
) -> None:
    rider, driver = await make_account(client, "rider"), await make_account(client, "driver")
    await paid_ride(facts, session, rider, driver)

    response = await client.get(
        "/v1/drivers/me/earnings",
        params={**WEEK, "period": "week", "tz": "Europe/Paris"},
        headers=driver.headers,
    )

    assert response.status_code == 200, response.text
    [week] = response.json()
    assert week["period_start"] == "2026-03-02T00:00:00+01:00"
    assert (week["trips"], week["driver_earnings_amount"]) == (1, 1_760)


async def test_earnings_in_an_unknown_time_zone_are_refused(client: httpx.AsyncClient) -> None:
    driver = await make_account(client, "driver")

    response = await client.get(
        "/v1/drivers/me/earnings", params={"tz": "Atlantis/Capital"}, headers=driver.headers
    )

    assert response.status_code == 422
    assert problem_type(response) == "time-zone-unknown"


async def test_a_driver_reads_their_transfers(
    client: httpx.AsyncClient, facts: Facts, session: AsyncSession
) -> None:
    rider, driver = await make_account(client, "rider"), await make_account(client, "driver")
    ride = await paid_ride(facts, session, rider, driver)
    transfer_id = await facts.transfer(ride, 1_760)
    await session.commit()

    response = await client.get("/v1/drivers/me/payouts", headers=driver.headers)

    assert response.status_code == 200, response.text
    assert [(t["transfer_id"], t["amount"]) for t in response.json()["transfers"]] == [
        (transfer_id, 1_760)
    ]


# Riders.


async def test_a_rider_reads_their_receipts(
    client: httpx.AsyncClient, facts: Facts, session: AsyncSession
) -> None:
    rider, driver = await make_account(client, "rider"), await make_account(client, "driver")
    ride = await paid_ride(facts, session, rider, driver)

    listed = await client.get("/v1/riders/me/receipts", headers=rider.headers)
    one = await client.get(f"/v1/riders/me/receipts/{ride.ride_id}", headers=rider.headers)

    assert listed.status_code == 200, listed.text
    assert [r["ride_id"] for r in listed.json()] == [str(ride.ride_id)]
    assert one.status_code == 200, one.text
    assert (one.json()["fare_amount"], len(one.json()["line_items"])) == (2_850, 5)


async def test_a_rider_cannot_read_another_riders_receipt(
    client: httpx.AsyncClient, facts: Facts, session: AsyncSession
) -> None:
    rider, driver = await make_account(client, "rider"), await make_account(client, "driver")
    ride = await paid_ride(facts, session, rider, driver)
    other = await make_account(client, "rider")

    theirs = await client.get(f"/v1/riders/me/receipts/{ride.ride_id}", headers=other.headers)
    nobodys = await client.get(f"/v1/riders/me/receipts/{uuid.uuid4()}", headers=other.headers)

    assert theirs.status_code == 404
    assert problem_type(theirs) == "ride-payment-not-found"
    # Exactly as for a ride that does not exist: nothing tells the two apart.
    assert (nobodys.status_code, problem_type(nobodys)) == (404, "ride-payment-not-found")
    assert theirs.json()["detail"] == nobodys.json()["detail"]


# Members.


async def test_an_applicant_cannot_read_the_books(client: httpx.AsyncClient) -> None:
    applicant = await make_account(client, "driver")

    response = await client.get("/v1/members/books", headers=applicant.headers)

    assert response.status_code == 403
    assert problem_type(response) == "not-a-member"


async def test_a_member_reads_the_books(
    client: httpx.AsyncClient, facts: Facts, session: AsyncSession, admin: Account
) -> None:
    member = await make_account(client, "driver")
    admitted = await client.post(
        f"/v1/admin/members/{member.user_id}/transitions",
        json={"to_status": "member", "reason": "share paid", **SHARE},
        headers=admin.headers,
    )
    assert admitted.status_code == 200, admitted.text
    await paid_ride(facts, session, await make_account(client, "rider"), member)

    response = await client.get(
        "/v1/members/books", params={**WEEK, "currency": "USD"}, headers=member.headers
    )

    assert response.status_code == 200, response.text
    assert response.json()["income"]["revenue_amount"] == 330 + 200


async def test_books_in_an_unsupported_currency_are_refused(
    client: httpx.AsyncClient, admin: Account
) -> None:
    member = await make_account(client, "driver")
    await client.post(
        f"/v1/admin/members/{member.user_id}/transitions",
        json={"to_status": "member", "reason": "share paid", **SHARE},
        headers=admin.headers,
    )

    response = await client.get(
        "/v1/members/books", params={"currency": "XTS"}, headers=member.headers
    )

    assert response.status_code == 422
    assert problem_type(response) == "unsupported-currency"


# Admins.


async def test_only_admins_reconcile(client: httpx.AsyncClient) -> None:
    driver = await make_account(client, "driver")
    period = {"period_from": DAY[0].isoformat(), "period_to": DAY[1].isoformat()}

    posted = await client.post("/v1/admin/reconciliation", json=period, headers=driver.headers)
    listed = await client.get("/v1/admin/reconciliation", headers=driver.headers)

    assert (posted.status_code, listed.status_code) == (403, 403)


async def test_an_admin_reconciles_a_period_and_finds_the_run_listed(
    client: httpx.AsyncClient, app: FastAPI, admin: Account
) -> None:
    stripe = FakeStripeBalance()
    stripe.add("charge", "ch_unknown9", 1_000, MONDAY)
    app.dependency_overrides[statements.get_balance_transactions] = lambda: stripe
    period = {"period_from": DAY[0].isoformat(), "period_to": DAY[1].isoformat()}

    posted = await client.post("/v1/admin/reconciliation", json=period, headers=admin.headers)
    listed = await client.get("/v1/admin/reconciliation", headers=admin.headers)

    assert posted.status_code == 200, posted.text
    report = posted.json()
    assert [(d["kind"], d["reference"]) for d in report["differences"]] == [
        ("missing_in_ledger", "ch_unknown9")
    ]
    assert listed.status_code == 200, listed.text
    assert [run["id"] for run in listed.json()] == [report["id"]]
