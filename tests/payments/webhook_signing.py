"""Signing webhook bodies the way Stripe does, so tests can forge (or not) deliveries."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any


def stripe_signature(payload: bytes, secret: str, timestamp: int | None = None) -> str:
    """The ``Stripe-Signature`` header Stripe sends with ``payload``:
    ``t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<payload>" keyed with the secret>``."""
    signed_at = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(
        secret.encode(), str(signed_at).encode() + b"." + payload, hashlib.sha256
    ).hexdigest()
    return f"t={signed_at},v1={digest}"


def event_payload(
    event_type: str, data_object: dict[str, Any], *, event_id: str = "evt_test_1"
) -> bytes:
    """A webhook body as Stripe serialises it (an ``event`` object)."""
    event = {
        "id": event_id,
        "object": "event",
        "api_version": "2026-10-28.endive",
        "created": int(time.time()),
        "data": {"object": data_object},
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": event_type,
    }
    return json.dumps(event, indent=2).encode()
