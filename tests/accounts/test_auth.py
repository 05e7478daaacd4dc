from __future__ import annotations

import uuid
from datetime import timedelta

import httpx
import jwt
import pytest
from fastapi import FastAPI

from accounts.models import Role
from accounts.tokens import issue_access_token
from infra.clock import utcnow
from infra.settings import Settings
from tests.factories import PASSWORD, login, make_account, registration

PROBLEM = "application/problem+json"


def _type(response: httpx.Response) -> str:
    assert response.headers["content-type"].startswith(PROBLEM), response.text
    slug: str = response.json()["type"].rsplit("/", 1)[-1]
    return slug


async def test_register_rider_then_login_and_see_self(client: httpx.AsyncClient) -> None:
    rider = await make_account(client, "rider")
    response = await client.get("/v1/me", headers=rider.headers)
    assert response.status_code == 200
    body = response.json()
    assert body["user"]["id"] == str(rider.user_id)
    assert body["user"]["role"] == "rider"
    assert body["membership"] is None


async def test_driver_registration_opens_a_membership_application(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post("/v1/auth/register", json=registration("driver"))
    assert response.status_code == 201
    assert response.json()["membership"]["status"] == "applicant"


async def test_email_and_phone_are_normalised(client: httpx.AsyncClient) -> None:
    body = registration("rider", email="  Ana.Lopez@Example.ORG ", phone="+1 (202) 555-0199")
    response = await client.post("/v1/auth/register", json=body)
    assert response.status_code == 201, response.text
    user = response.json()["user"]
    assert user["email"] == "ana.lopez@example.org"
    assert user["phone"] == "+12025550199"
    tokens = await login(client, "+1 202 555 0199")
    assert tokens["token_type"] == "bearer"


@pytest.mark.parametrize(
    "clash",
    [
        {"email": "SAME@example.org"},
        {"phone": "+1 202-555-0142"},
    ],
)
async def test_duplicate_registration_is_409(
    client: httpx.AsyncClient, clash: dict[str, str]
) -> None:
    first = registration("rider", email="same@example.org", phone="+12025550142")
    assert (await client.post("/v1/auth/register", json=first)).status_code == 201
    second = registration("driver", **clash)
    response = await client.post("/v1/auth/register", json=second)
    assert response.status_code == 409
    assert _type(response) == "account-already-exists"


async def test_password_is_stored_as_argon2id(client: httpx.AsyncClient, session: object) -> None:
    from sqlalchemy import select
    from sqlalchemy.ext.asyncio import AsyncSession

    from accounts.models import User

    assert isinstance(session, AsyncSession)
    rider = await make_account(client, "rider")
    stored = (
        await session.execute(select(User.password_hash).where(User.id == rider.user_id))
    ).scalar_one()
    assert stored.startswith("$argon2id$")
    assert PASSWORD not in stored


async def test_wrong_password_is_401_and_same_as_unknown_login(
    client: httpx.AsyncClient,
) -> None:
    rider = await make_account(client, "rider")
    wrong = await client.post(
        "/v1/auth/login", json={"login": rider.email, "password": "nope nope nope"}
    )
    unknown = await client.post(
        "/v1/auth/login", json={"login": "nobody@example.org", "password": "nope nope nope"}
    )
    assert wrong.status_code == unknown.status_code == 401
    assert _type(wrong) == _type(unknown) == "invalid-credentials"
    assert wrong.json()["detail"] == unknown.json()["detail"]


async def test_login_attempts_are_rate_limited(client: httpx.AsyncClient) -> None:
    rider = await make_account(client, "rider")
    for _ in range(5):  # the test settings allow 5 per window
        response = await client.post(
            "/v1/auth/login", json={"login": rider.email, "password": "wrong password"}
        )
        assert response.status_code == 401
    response = await client.post(
        "/v1/auth/login", json={"login": rider.email, "password": PASSWORD}
    )
    assert response.status_code == 429
    assert _type(response) == "login-rate-limited"
    assert response.json()["retry_after_s"] > 0


async def test_no_token_is_401(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/me")
    assert response.status_code == 401
    assert _type(response) == "invalid-token"
    assert response.headers["www-authenticate"] == "Bearer"


async def test_expired_token_is_401(client: httpx.AsyncClient, settings: Settings) -> None:
    rider = await make_account(client, "rider")
    token, _ = issue_access_token(
        settings.auth,
        user_id=rider.user_id,
        role=Role.rider,
        session_id=uuid.uuid4(),
        now=utcnow() - timedelta(hours=2),
    )
    response = await client.get("/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401
    assert _type(response) == "token-expired"


async def test_tampered_token_is_401(client: httpx.AsyncClient, settings: Settings) -> None:
    rider = await make_account(client, "rider")
    header, _payload, signature = rider.access_token.split(".")
    claims = jwt.decode(rider.access_token, options={"verify_signature": False})
    claims["role"] = "admin"
    claims["scope"] = "admin"
    forged_payload = jwt.encode(claims, "guess" * 8, algorithm="HS256").split(".")[1]
    for forged in (
        f"{header}.{forged_payload}.{signature}",  # claims changed, old signature
        jwt.encode(claims, "not-the-secret-0123456789abcdef0123", algorithm="HS256"),
        jwt.encode(claims, None, algorithm="none"),  # unsigned
        rider.access_token[:-4] + ("AAAA" if not rider.access_token.endswith("AAAA") else "BBBB"),
    ):
        response = await client.get(
            "/v1/admin/members", headers={"Authorization": f"Bearer {forged}"}
        )
        assert response.status_code == 401, forged
        assert _type(response) == "invalid-token"


async def test_rider_calling_a_driver_route_is_403(client: httpx.AsyncClient) -> None:
    rider = await make_account(client, "rider")
    response = await client.get("/v1/drivers/me", headers=rider.headers)
    assert response.status_code == 403
    assert _type(response) == "role-not-allowed"


async def test_driver_calling_an_admin_route_is_403(client: httpx.AsyncClient) -> None:
    driver = await make_account(client, "driver")
    response = await client.get("/v1/admin/members", headers=driver.headers)
    assert response.status_code == 403


async def test_refresh_rotates_and_old_token_stops_working(client: httpx.AsyncClient) -> None:
    rider = await make_account(client, "rider")
    rotated = await client.post("/v1/auth/refresh", json={"refresh_token": rider.refresh_token})
    assert rotated.status_code == 200
    new = rotated.json()
    assert new["refresh_token"] != rider.refresh_token
    me = await client.get("/v1/me", headers={"Authorization": f"Bearer {new['access_token']}"})
    assert me.status_code == 200


async def test_refresh_token_reuse_revokes_the_whole_family(client: httpx.AsyncClient) -> None:
    rider = await make_account(client, "rider")
    first = await client.post("/v1/auth/refresh", json={"refresh_token": rider.refresh_token})
    assert first.status_code == 200
    descendant = first.json()

    # The old token again: someone copied it. Every token of this login dies.
    replay = await client.post("/v1/auth/refresh", json={"refresh_token": rider.refresh_token})
    assert replay.status_code == 401
    assert _type(replay) == "refresh-token-reused"

    after = await client.post(
        "/v1/auth/refresh", json={"refresh_token": descendant["refresh_token"]}
    )
    assert after.status_code == 401
    assert _type(after) == "invalid-token"
    access = await client.get(
        "/v1/me", headers={"Authorization": f"Bearer {descendant['access_token']}"}
    )
    assert access.status_code == 401


async def test_reuse_does_not_touch_other_logins(client: httpx.AsyncClient) -> None:
    rider = await make_account(client, "rider")
    other_login = await login(client, rider.email)
    await client.post("/v1/auth/refresh", json={"refresh_token": rider.refresh_token})
    await client.post("/v1/auth/refresh", json={"refresh_token": rider.refresh_token})
    still = await client.post(
        "/v1/auth/refresh", json={"refresh_token": other_login["refresh_token"]}
    )
    assert still.status_code == 200


async def test_unknown_refresh_token_is_401(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/auth/refresh", json={"refresh_token": "x" * 43})
    assert response.status_code == 401
    assert _type(response) == "invalid-token"


async def test_logout_revokes_access_and_refresh(client: httpx.AsyncClient) -> None:
    rider = await make_account(client, "rider")
    response = await client.post("/v1/auth/logout", headers=rider.headers)
    assert response.status_code == 204
    assert (await client.get("/v1/me", headers=rider.headers)).status_code == 401
    refreshed = await client.post("/v1/auth/refresh", json={"refresh_token": rider.refresh_token})
    assert refreshed.status_code == 401


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"role": "rider"}, "body.email"),
        (registration("rider", email="not-an-email"), "body.email"),
        (registration("rider", phone="12345"), "body.phone"),
        (registration("rider", password="short"), "body.password"),
        (registration("admin"), "body.role"),
        (registration("rider", extra="field"), "body.extra"),
        (registration("rider", full_name="   "), "body.full_name"),
    ],
)
async def test_malformed_registration_is_a_422_problem(
    client: httpx.AsyncClient, body: dict[str, object], field: str
) -> None:
    response = await client.post("/v1/auth/register", json=body)
    assert response.status_code == 422
    assert _type(response) == "validation-error"
    names = [p["name"] for p in response.json()["invalid_params"]]
    assert field in names


async def test_body_that_is_not_json_is_a_422_problem(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/auth/login", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert _type(response) == "validation-error"


async def test_admin_cannot_register_through_the_api(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/auth/register", json=registration("admin"))
    assert response.status_code == 422


async def test_login_rate_limit_does_not_lock_the_owner_out_elsewhere(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    rider = await make_account(client, "rider")
    for _ in range(6):
        await client.post(
            "/v1/auth/login", json={"login": rider.email, "password": "wrong password"}
        )
    elsewhere = httpx.ASGITransport(app=app, client=("192.0.2.7", 50000))
    async with httpx.AsyncClient(transport=elsewhere, base_url="http://testserver") as owner:
        response = await owner.post(
            "/v1/auth/login", json={"login": rider.email, "password": PASSWORD}
        )
    assert response.status_code == 200
