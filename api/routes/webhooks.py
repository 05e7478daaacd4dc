"""Stripe's webhook endpoint: authenticated by the signature on the raw body."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Request
from pydantic import BaseModel, Field
from redis.exceptions import RedisError

from api.deps import ResourcesDep, Uow
from api.problems import problem_responses
from infra.jobs import enqueue
from infra.logging import get_logger
from payments.stripe_gateway import verify_webhook
from payments.webhooks import STRIPE_EVENT_JOB, WebhookService, connected_account_id

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])

log = get_logger(__name__)

# Stripe's own default: a signature older than this is a replay.
SIGNATURE_TOLERANCE_S = 300

DESCRIPTION = """
Stripe sends its events here. There is no bearer token: the request is authenticated by
its `Stripe-Signature` header, an HMAC of the raw body with the endpoint's signing secret
(`RIDECOOP_STRIPE_WEBHOOK_SECRET`), refused when missing, wrong, or older than five
minutes. Each event is stored once by its id and answered at once; the worker processes
it. A redelivered event is answered the same way, with `duplicate: true`, and changes
nothing.
"""


class WebhookReceipt(BaseModel):
    received: bool
    duplicate: bool = Field(description="The event was already stored: Stripe sent it again")


@router.post(
    "/stripe",
    responses=problem_responses(400, 413, 422, 500),
    summary="Stripe events (signed by Stripe; no bearer token)",
    description=DESCRIPTION,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"type": "object"}}},
            "description": "A Stripe event object, exactly as Stripe sent it",
        }
    },
)
async def stripe_webhook(
    request: Request,
    resources: ResourcesDep,
    uow: Uow,
    stripe_signature: Annotated[
        str | None,
        Header(alias="Stripe-Signature", description="t=<unix time>,v1=<HMAC-SHA256>"),
    ] = None,
) -> WebhookReceipt:
    # The signature covers the bytes as sent; parsed and re-serialised JSON would not match.
    payload = await request.body()
    event = verify_webhook(
        payload,
        stripe_signature or "",
        resources.settings.stripe.webhook_secret,
        SIGNATURE_TOLERANCE_S,
    )
    stored = await WebhookService(uow.session, resources.clock).receive(
        event, connected_account_id(payload)
    )
    await uow.commit()
    try:
        await enqueue(resources.redis, STRIPE_EVENT_JOB, {"id": event.id})
    except RedisError:
        # The event is stored, which is what Stripe needs to know; the sweep enqueues it.
        log.warning("stripe_event_not_enqueued", event_id=event.id)
    return WebhookReceipt(received=True, duplicate=not stored)
