"""POST /v1/webhooks/stripe: signed deliveries are stored once and queued; others refused."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from infra.settings import Settings
from payments.models import StripeEvent
from payments.webhooks import STRIPE_EVENT_JOB
from tests.payments.webhook_signing import event_payload, stripe_signature

URL = "/v1/webhooks/stripe"
INTENT = {
    "id": "pi_route_1",
    "object": "payment_intent",
    "amount": 2500,
    "amount_capturable": 2500,
    "currency": "usd",
    "status": "requires_capture",
    "metadata": {"ride_id": "6c1f1cde-3f1b-4c1e-9b1a-0d6f3d0b9a11", "kind": "fare"},
}


def body(event_id: str = "evt_route_1", **extra: Any) -> bytes:
    payload = event_payload("payment_intent.amount_capturable_updated", INTENT, event_id=event_id)
    if not extra:
        return payload
    return json.dumps({**json.loads(payload), **extra}).encode()


async def deliver(
    client: httpx.AsyncClient, payload: bytes, signature: str | None
) -> httpx.Response:
    headers = {"Content-Type": "application/json"}
    if signature is not None:
        headers["Stripe-Signature"] = signature
    return await client.post(URL, content=payload, headers=headers)


async def queued_jobs(redis: Redis) -> list[tuple[str, Any]]:
    """The jobs in the queue, as (kind, payload)."""
    entries = await redis.xrange("jobs") or []
    return [(str(f["kind"]), json.loads(f["payload"])) for _, f in entries if f is not None]


async def stored(session: AsyncSession) -> list[StripeEvent]:
    return list((await session.execute(select(StripeEvent))).scalars())


async def test_a_signed_event_is_stored_and_answered_at_once(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    payload = body()
    response = await deliver(
        client, payload, stripe_signature(payload, settings.stripe.webhook_secret)
    )

    assert response.status_code == 200
    assert response.json() == {"received": True, "duplicate": False}
    [event] = await stored(session)
    assert (event.id, event.type) == ("evt_route_1", "payment_intent.amount_capturable_updated")
    assert event.payload == INTENT
    assert event.account_id is None
    assert event.processed_at is None


async def test_a_stored_event_is_queued_for_the_worker(
    client: httpx.AsyncClient, redis_client: Redis, settings: Settings
) -> None:
    payload = body()
    await deliver(client, payload, stripe_signature(payload, settings.stripe.webhook_secret))

    assert await queued_jobs(redis_client) == [(STRIPE_EVENT_JOB, {"id": "evt_route_1"})]


async def test_a_redelivered_event_is_stored_once(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    payload = body()
    first = await deliver(
        client, payload, stripe_signature(payload, settings.stripe.webhook_secret)
    )
    again = await deliver(
        client, payload, stripe_signature(payload, settings.stripe.webhook_secret)
    )

    assert first.json() == {"received": True, "duplicate": False}
    assert again.status_code == 200
    assert again.json() == {"received": True, "duplicate": True}
    assert len(await stored(session)) == 1


async def test_a_connect_event_keeps_its_connected_account(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    payload = body(account="acct_route_1")
    await deliver(client, payload, stripe_signature(payload, settings.stripe.webhook_secret))

    [event] = await stored(session)
    assert event.account_id == "acct_route_1"


def _forged(payload: bytes, secret: str) -> tuple[bytes, str | None]:
    return payload, stripe_signature(payload, "whsec_someone_else_0123456789abcdef")


def _stale(payload: bytes, secret: str) -> tuple[bytes, str | None]:
    return payload, stripe_signature(payload, secret, timestamp=int(time.time()) - 600)


def _tampered(payload: bytes, secret: str) -> tuple[bytes, str | None]:
    signature = stripe_signature(payload, secret)
    tampered = payload.replace(b'"amount": 2500', b'"amount": 2', 1)
    assert tampered != payload
    return tampered, signature


def _missing(payload: bytes, secret: str) -> tuple[bytes, str | None]:
    return payload, None


@pytest.mark.parametrize("delivery", [_forged, _stale, _tampered, _missing])
async def test_a_bad_signature_is_refused_and_nothing_is_stored(
    client: httpx.AsyncClient,
    session: AsyncSession,
    redis_client: Redis,
    settings: Settings,
    delivery: Any,
) -> None:
    payload, signature = delivery(body(), settings.stripe.webhook_secret)

    response = await deliver(client, payload, signature)

    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"].endswith("/webhook-signature-invalid")
    assert await stored(session) == []
    assert await redis_client.xlen("jobs") == 0


async def test_a_signed_body_that_is_not_an_event_is_refused(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    payload = json.dumps({"id": "evt_x", "object": "charge"}).encode()
    response = await deliver(
        client, payload, stripe_signature(payload, settings.stripe.webhook_secret)
    )

    assert response.status_code == 400
    assert response.json()["type"].endswith("/webhook-payload-invalid")
    assert await stored(session) == []


async def test_a_body_over_the_size_limit_is_refused(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    padding = "x" * (settings.api.max_body_bytes + 1)
    payload = body(padding=padding)
    response = await deliver(
        client, payload, stripe_signature(payload, settings.stripe.webhook_secret)
    )

    assert response.status_code == 413
    assert response.headers["content-type"] == "application/problem+json"
    assert await stored(session) == []


async def test_the_route_documents_its_problems_and_needs_no_token(
    client: httpx.AsyncClient,
) -> None:
    operation = (await client.get("/openapi.json")).json()["paths"][URL]["post"]

    assert set(operation["responses"]) >= {"200", "400", "413", "422", "500"}
    assert "security" not in operation
    assert "Stripe-Signature" in operation["description"]
