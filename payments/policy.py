"""A fare policy version: every price parameter in force from ``effective_at``.

Policies are versioned rows (payments.models.FarePolicyVersion); governance creates new
versions by vote. A quote records the version it used, and the final fare of that ride is
computed with the same version, whatever is in force by then.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from payments.money import Money, check_currency


@dataclass(frozen=True, slots=True)
class FarePolicy:
    id: uuid.UUID
    version: int
    effective_at: datetime
    currency: str
    # Amounts in minor units of ``currency``.
    base_fare: int
    per_km: int
    per_minute: int
    booking_fee: int
    minimum_fare: int
    waiting_per_minute: int
    cancellation_fee: int
    no_show_fee: int
    # Seconds.
    waiting_grace_s: int
    cancellation_grace_s: int
    quote_ttl_s: int
    # Rates.
    surge_cap: Decimal
    commission_rate: Decimal
    reserve_rate: Decimal
    deviation_tolerance: Decimal
    # Zone code (e.g. "airport") -> surcharge in minor units, added when a trip starts or
    # ends in that zone.
    zone_surcharges: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_currency(self.currency)
        amounts = (
            self.base_fare,
            self.per_km,
            self.per_minute,
            self.booking_fee,
            self.minimum_fare,
            self.waiting_per_minute,
            self.cancellation_fee,
            self.no_show_fee,
            *self.zone_surcharges.values(),
        )
        if any(type(a) is not int or a < 0 for a in amounts):
            raise ValueError("fare amounts are non-negative integers of minor units")
        if min(self.waiting_grace_s, self.cancellation_grace_s) < 0 or self.quote_ttl_s <= 0:
            raise ValueError("grace periods are >= 0 s and quotes live > 0 s")
        for name in ("surge_cap", "commission_rate", "reserve_rate", "deviation_tolerance"):
            if not isinstance(getattr(self, name), Decimal):
                raise TypeError(f"{name} must be a Decimal")
        if self.surge_cap < 1:
            raise ValueError("surge_cap is at least 1")
        if self.commission_rate < 0 or self.reserve_rate < 0:
            raise ValueError("commission and reserve rates are >= 0")
        if self.commission_rate + self.reserve_rate > 1:
            raise ValueError("commission and reserve cannot exceed the whole fare")
        if self.deviation_tolerance < 0:
            raise ValueError("deviation_tolerance is >= 0")

    def money(self, amount: int) -> Money:
        return Money(amount, self.currency)
