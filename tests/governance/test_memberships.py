from __future__ import annotations

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from infra.settings import Settings
from tests.factories import Account, make_account, make_admin

SHARE = {"share_amount": 10_000, "share_currency": "USD"}


async def _transition(
    client: httpx.AsyncClient, admin: Account, driver: Account, **body: object
) -> httpx.Response:
    return await client.post(
        f"/v1/admin/members/{driver.user_id}/transitions", json=body, headers=admin.headers
    )


@pytest.fixture
async def admin(client: httpx.AsyncClient, session: AsyncSession, settings: Settings) -> Account:
    return await make_admin(client, session, settings)


async def test_admitting_an_applicant_needs_the_share(
    client: httpx.AsyncClient, admin: Account
) -> None:
    driver = await make_account(client, "driver")
    refused = await _transition(client, admin, driver, to_status="member", reason="joined")
    assert refused.status_code == 422
    assert refused.json()["type"].endswith("/share-not-paid")

    admitted = await _transition(
        client, admin, driver, to_status="member", reason="share paid in cash", **SHARE
    )
    assert admitted.status_code == 200, admitted.text
    body = admitted.json()
    assert body["status"] == "member"
    assert body["share_amount"] == 10_000
    assert body["member_since"] is not None


async def test_only_active_members_reach_member_routes(
    client: httpx.AsyncClient, admin: Account
) -> None:
    driver = await make_account(client, "driver")
    assert (await client.get("/v1/members/me", headers=driver.headers)).status_code == 403

    await _transition(client, admin, driver, to_status="member", reason="share paid", **SHARE)
    assert (await client.get("/v1/members/me", headers=driver.headers)).status_code == 200

    # Suspension bites at once, though the driver's access token is unchanged.
    await _transition(client, admin, driver, to_status="suspended", reason="unpaid dues")
    response = await client.get("/v1/members/me", headers=driver.headers)
    assert response.status_code == 403
    assert response.json()["type"].endswith("/not-a-member")


async def test_transition_not_allowed_is_409(client: httpx.AsyncClient, admin: Account) -> None:
    driver = await make_account(client, "driver")
    response = await _transition(client, admin, driver, to_status="suspended", reason="x" * 5)
    assert response.status_code == 409
    assert response.json()["from_status"] == "applicant"


async def test_history_says_who_changed_what_and_why(
    client: httpx.AsyncClient, admin: Account
) -> None:
    driver = await make_account(client, "driver")
    await _transition(client, admin, driver, to_status="member", reason="share paid", **SHARE)
    await _transition(client, admin, driver, to_status="suspended", reason="safety review")
    await _transition(client, admin, driver, to_status="member", reason="review cleared")
    response = await client.get("/v1/drivers/me/membership/history", headers=driver.headers)
    assert response.status_code == 200
    history = response.json()
    assert [(h["from_status"], h["to_status"]) for h in history] == [
        (None, "applicant"),
        ("applicant", "member"),
        ("member", "suspended"),
        ("suspended", "member"),
    ]
    assert history[2]["reason"] == "safety review"
    assert history[2]["changed_by"] == str(admin.user_id)
    assert history[0]["changed_by"] is None


async def test_unknown_membership_is_404(client: httpx.AsyncClient, admin: Account) -> None:
    rider = await make_account(client, "rider")
    response = await _transition(client, admin, rider, to_status="member", reason="nope", **SHARE)
    assert response.status_code == 404


async def test_admin_lists_members_by_status(client: httpx.AsyncClient, admin: Account) -> None:
    applicant = await make_account(client, "driver")
    member = await make_account(client, "driver")
    await _transition(client, admin, member, to_status="member", reason="share paid", **SHARE)
    response = await client.get("/v1/admin/members?status=member", headers=admin.headers)
    ids = {m["user_id"] for m in response.json()}
    assert str(member.user_id) in ids
    assert str(applicant.user_id) not in ids


async def test_membership_history_is_append_only(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    await make_account(client, "driver")
    with pytest.raises(DBAPIError, match="append-only"):
        async with session.begin_nested():
            await session.execute(text("UPDATE membership_changes SET reason = 'rewritten'"))


async def test_a_member_must_have_a_paid_share_in_the_database(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    driver = await make_account(client, "driver")
    with pytest.raises(DBAPIError, match="member_has_share"):
        async with session.begin_nested():
            await session.execute(
                text("UPDATE memberships SET status = 'member' WHERE user_id = :id"),
                {"id": driver.user_id},
            )
