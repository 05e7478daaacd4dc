"""Governance over HTTP, as members, admins and everyone else use it: who may call what,
problems with the bound they break, a vote from draft to publication, and the notices."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.state import Resources
from governance.service import GovernanceService
from governance.tasks import GovernanceTasks
from governance.verify import verify_publication
from infra.clock import FrozenClock
from infra.pubsub import Subscription, user_channel
from infra.settings import Settings
from tests.factories import Account, make_account, make_admin
from tests.governance.factories import FedTrips

PROPOSALS = "/v1/governance/proposals"
RAISE_BASE_FARE = {
    "kind": "yes_no",
    "title": "Raise the base fare",
    "text": "Costs went up.",
    "changes": [{"key": "fare.base_fare", "new": "300"}],
}


@pytest.fixture
def clock() -> FrozenClock:
    # Real time to begin with: access tokens are checked against the real clock.
    return FrozenClock(datetime.now(UTC))


@pytest.fixture
def resources(resources: Resources, clock: FrozenClock) -> Resources:
    return dataclasses.replace(resources, clock=clock)


@pytest.fixture
def service(session: AsyncSession, clock: FrozenClock, settings: Settings) -> GovernanceService:
    from infra.events import EventBuffer

    return GovernanceService(
        session,
        clock,
        EventBuffer(),
        ballot_secret=settings.governance.ballot_secret,
        trips=FedTrips(),
    )


@pytest.fixture
async def admin(client: httpx.AsyncClient, session: AsyncSession, settings: Settings) -> Account:
    return await make_admin(client, session, settings)


async def _member(client: httpx.AsyncClient, admin: Account) -> Account:
    driver = await make_account(client, "driver")
    admitted = await client.post(
        f"/v1/admin/members/{driver.user_id}/transitions",
        json={
            "to_status": "member",
            "reason": "share paid",
            "share_amount": 10_000,
            "share_currency": "USD",
        },
        headers=admin.headers,
    )
    assert admitted.status_code == 200, admitted.text
    return driver


@pytest.fixture
async def members(client: httpx.AsyncClient, admin: Account) -> list[Account]:
    return [await _member(client, admin) for _ in range(6)]


async def _on_notice(client: httpx.AsyncClient, members: list[Account]) -> dict[str, Any]:
    drafted = await client.post(PROPOSALS, json=RAISE_BASE_FARE, headers=members[0].headers)
    assert drafted.status_code == 201, drafted.text
    proposal_id = drafted.json()["id"]
    for member in members[1:6]:
        cosigned = await client.post(f"{PROPOSALS}/{proposal_id}/cosign", headers=member.headers)
        assert cosigned.status_code == 200, cosigned.text
    submitted = await client.post(f"{PROPOSALS}/{proposal_id}/submit", headers=members[0].headers)
    assert submitted.status_code == 200, submitted.text
    body: dict[str, Any] = submitted.json()
    return body


async def _advance_to(
    service: GovernanceService,
    session: AsyncSession,
    clock: FrozenClock,
    proposal_id: str,
    moment: str,
) -> list[str]:
    clock.set(datetime.fromisoformat(moment))
    steps = await service.advance(uuid.UUID(proposal_id), clock.now())
    await session.commit()
    return steps


ROUTES = [
    ("post", PROPOSALS),
    ("get", PROPOSALS),
    ("get", f"{PROPOSALS}/{{id}}"),
    ("post", f"{PROPOSALS}/{{id}}/cosign"),
    ("post", f"{PROPOSALS}/{{id}}/submit"),
    ("get", f"{PROPOSALS}/{{id}}/eligibility"),
    ("post", f"{PROPOSALS}/{{id}}/ballots"),
    ("get", f"{PROPOSALS}/{{id}}/results"),
    ("get", "/v1/governance/audit"),
    ("post", "/v1/admin/governance/emergency-changes"),
]


async def test_every_route_but_the_public_ones_needs_a_token(client: httpx.AsyncClient) -> None:
    for method, path in ROUTES:
        response = await client.request(method, path.format(id=uuid.uuid4()), json={})
        assert response.status_code == 401, (method, path)


async def test_member_routes_refuse_riders_and_applicants(
    client: httpx.AsyncClient, admin: Account
) -> None:
    rider = await make_account(client, "rider")
    applicant = await make_account(client, "driver")
    member = await _member(client, admin)
    for method, path in ROUTES:
        if path.endswith("/eligibility"):
            continue
        url = path.format(id=uuid.uuid4())
        refused = await client.request(method, url, json={}, headers=rider.headers)
        assert refused.status_code == 403, (method, path)
        if "admin" in path:
            by_member = await client.request(method, url, json={}, headers=member.headers)
            assert by_member.status_code == 403
        elif not path.endswith("/ballots"):
            by_applicant = await client.request(method, url, json={}, headers=applicant.headers)
            assert by_applicant.status_code == 403
            assert by_applicant.json()["type"].endswith("/not-a-member"), (method, path)


async def test_upcoming_fares_and_publications_are_public(
    client: httpx.AsyncClient, members: list[Account]
) -> None:
    upcoming = await client.get("/v1/fares/upcoming")
    assert upcoming.status_code == 200
    assert upcoming.json() == []
    missing = await client.get(f"{PROPOSALS}/{uuid.uuid4()}/publication")
    assert missing.status_code == 404
    assert missing.json()["type"].endswith("/proposal-not-found")
    noticed = await _on_notice(client, members)
    early = await client.get(f"{PROPOSALS}/{noticed['id']}/publication")
    assert early.status_code == 409
    assert early.json()["type"].endswith("/proposal-not-closed")


async def test_bad_values_are_422_naming_the_bound(
    client: httpx.AsyncClient, members: list[Account]
) -> None:
    too_high = {**RAISE_BASE_FARE, "changes": [{"key": "fare.commission_rate", "new": "0.5"}]}
    response = await client.post(PROPOSALS, json=too_high, headers=members[0].headers)
    assert response.status_code == 422
    problem = response.json()
    assert problem["type"].endswith("/parameter-out-of-bounds")
    assert (problem["bound"], problem["maximum"], problem["key"]) == (
        "maximum",
        "0.3",
        "fare.commission_rate",
    )
    too_far = {**RAISE_BASE_FARE, "changes": [{"key": "fare.base_fare", "new": "500"}]}
    response = await client.post(PROPOSALS, json=too_far, headers=members[0].headers)
    assert response.status_code == 422
    assert (response.json()["bound"], response.json()["max_step"]) == ("max_step", "100")
    unknown = {**RAISE_BASE_FARE, "changes": [{"key": "fare.tip_jar", "new": "1"}]}
    response = await client.post(PROPOSALS, json=unknown, headers=members[0].headers)
    assert response.json()["type"].endswith("/unknown-parameter")
    wrong_shape = {**RAISE_BASE_FARE, "key": "fare.base_fare"}
    response = await client.post(PROPOSALS, json=wrong_shape, headers=members[0].headers)
    assert response.status_code == 422


async def test_a_second_open_proposal_on_a_parameter_is_409(
    client: httpx.AsyncClient, members: list[Account]
) -> None:
    await _on_notice(client, members)
    again = await client.post(PROPOSALS, json=RAISE_BASE_FARE, headers=members[1].headers)
    assert again.status_code == 409
    assert again.json()["type"].endswith("/parameter-already-proposed")


async def test_a_vote_from_draft_to_publication(
    client: httpx.AsyncClient,
    members: list[Account],
    service: GovernanceService,
    session: AsyncSession,
    clock: FrozenClock,
) -> None:
    noticed = await _on_notice(client, members)
    pid = noticed["id"]
    assert noticed["status"] == "notice"
    eligibility = await client.get(f"{PROPOSALS}/{pid}/eligibility", headers=members[0].headers)
    assert eligibility.json()["reason"] == "voting_not_open"
    early = await client.post(
        f"{PROPOSALS}/{pid}/ballots", json={"vote": "yes"}, headers=members[0].headers
    )
    assert early.status_code == 409

    assert await _advance_to(service, session, clock, pid, noticed["voting_opens_at"]) == [
        "open_voting"
    ]
    receipts = []
    for member in members[:4]:
        cast = await client.post(
            f"{PROPOSALS}/{pid}/ballots", json={"vote": "yes"}, headers=member.headers
        )
        assert cast.status_code == 201, cast.text
        receipts.append(cast.json()["receipt"])
    invalid = await client.post(
        f"{PROPOSALS}/{pid}/ballots", json={"ranking": ["a"]}, headers=members[4].headers
    )
    assert invalid.status_code == 422
    assert invalid.json()["type"].endswith("/ballot-invalid")
    pending = await client.get(f"{PROPOSALS}/{pid}/results", headers=members[0].headers)
    assert pending.status_code == 409

    assert await _advance_to(service, session, clock, pid, noticed["voting_closes_at"]) == [
        "close",
        "schedule",
    ]
    late = await client.post(
        f"{PROPOSALS}/{pid}/ballots", json={"vote": "no"}, headers=members[5].headers
    )
    assert late.status_code == 409
    assert late.json()["type"].endswith("/proposal-closed")
    results = await client.get(f"{PROPOSALS}/{pid}/results", headers=members[0].headers)
    assert results.status_code == 200
    assert (results.json()["result"]["yes"], results.json()["voters"]) == (4, 4)
    publication = (await client.get(f"{PROPOSALS}/{pid}/publication")).json()
    assert verify_publication(publication).ok
    assert {b["hash"] for b in publication["ballots"]} == set(receipts)

    upcoming = (await client.get("/v1/fares/upcoming")).json()
    assert [(u["proposal_id"], u["effective_at"]) for u in upcoming] == [
        (pid, results.json()["effective_at"])
    ]
    assert upcoming[0]["changes"] == [{"key": "fare.base_fare", "old": "250", "new": "300"}]
    audit = await client.get(
        "/v1/governance/audit", params={"proposal_id": pid}, headers=members[1].headers
    )
    assert audit.status_code == 200
    assert [e["action"] for e in audit.json()][-2:] == ["voting_closed", "proposal_scheduled"]
    listed = await client.get(PROPOSALS, params={"status": "scheduled"}, headers=members[2].headers)
    assert [p["id"] for p in listed.json()] == [pid]


async def test_an_admin_enacts_an_emergency_change(
    client: httpx.AsyncClient, admin: Account, members: list[Account]
) -> None:
    body = {
        "changes": [{"key": "fare.surge_cap", "new": "1.5"}],
        "reason": "Flooding downtown: surge held at 1.5",
        "lapse_days": 2,
    }
    enacted = await client.post(
        "/v1/admin/governance/emergency-changes", json=body, headers=admin.headers
    )
    assert enacted.status_code == 201, enacted.text
    change = enacted.json()
    assert change["status"] == "active"
    assert change["changes"] == [{"key": "fare.surge_cap", "old": "2", "new": "1.5"}]
    upcoming = (await client.get("/v1/fares/upcoming")).json()
    assert [(u["source"], u["conditional"]) for u in upcoming] == [("emergency_lapse", True)]
    ratification = await client.get(
        f"{PROPOSALS}/{change['ratification_proposal_id']}", headers=members[0].headers
    )
    assert ratification.json()["status"] == "voting"
    raising = {**body, "changes": [{"key": "fare.surge_cap", "new": "2.5"}]}
    refused = await client.post(
        "/v1/admin/governance/emergency-changes", json=raising, headers=admin.headers
    )
    assert refused.status_code == 422
    assert refused.json()["type"].endswith("/emergency-change-invalid")
    lower = {**body, "changes": [{"key": "fare.surge_cap", "new": "1.25"}]}
    held = await client.post(
        "/v1/admin/governance/emergency-changes", json=lower, headers=admin.headers
    )
    # The surge cap is held by the ratification vote of the first.
    assert held.status_code == 409
    assert held.json()["type"].endswith("/parameter-already-proposed")


async def test_members_are_told_when_voting_opens(
    client: httpx.AsyncClient,
    members: list[Account],
    sessionmaker: async_sessionmaker[AsyncSession],
    redis_client: Redis,
    settings: Settings,
    clock: FrozenClock,
) -> None:
    noticed = await _on_notice(client, members)
    tasks = GovernanceTasks(sessionmaker, redis_client, clock, settings.governance)
    async with Subscription(redis_client, user_channel(members[3].user_id)) as subscription:
        opens_at = datetime.fromisoformat(noticed["voting_opens_at"])
        assert await tasks.advance(opens_at) >= 1
        message = await asyncio.wait_for(anext(aiter(subscription.messages())), 5)
    assert message["event"] == "VotingOpened"
    assert message["data"]["proposal_id"] == noticed["id"]
    assert "notify" not in message["data"]
