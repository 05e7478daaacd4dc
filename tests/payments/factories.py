"""Typed factories for the payments domain's pure cores."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from payments.policy import FarePolicy

EFFECTIVE_AT = datetime(2025, 1, 1, tzinfo=UTC)


def make_policy(**overrides: Any) -> FarePolicy:
    """A plausible city policy in USD; every number is easy to check by hand."""
    fields: dict[str, Any] = {
        "id": uuid.uuid4(),
        "version": 1,
        "effective_at": EFFECTIVE_AT,
        "currency": "USD",
        "base_fare": 250,
        "per_km": 120,
        "per_minute": 30,
        "booking_fee": 200,
        "minimum_fare": 700,
        "waiting_per_minute": 40,
        "cancellation_fee": 500,
        "no_show_fee": 700,
        "waiting_grace_s": 120,
        "cancellation_grace_s": 120,
        "quote_ttl_s": 300,
        "surge_cap": Decimal("2.5"),
        "commission_rate": Decimal("0.15"),
        "reserve_rate": Decimal("0.05"),
        "deviation_tolerance": Decimal("0.25"),
        "zone_surcharges": {"airport": 450},
    }
    fields.update(overrides)
    return FarePolicy(**fields)
