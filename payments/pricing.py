"""The fare engine: upfront quotes, final fares, cancellation and no-show charges, and the
split of a fare between the driver and the co-op. Pure: data and ``now`` in, values out.

Rules (every price parameter comes from one ``FarePolicy`` version):

- Rounding: each line item is computed exactly (int minor units, Decimal rates, exact
  ratios) and rounded once, half-even, to a whole minor unit. A total is the sum of its
  rounded line items, so every receipt adds up.
- Ride part = base fare + distance (``per_km`` * m / 1000) + time (``per_minute`` * s / 60)
  + surge ((base + distance + time) * (multiplier - 1)). The multiplier is clamped to
  [1, ``surge_cap``]. If the ride part is below ``minimum_fare``, a
  ``minimum_fare_adjustment`` tops it up to exactly the minimum.
- On top of the ride part, never surged and not counted towards the minimum: the booking
  fee, one surcharge per zone of the trip that the policy prices (other zones add
  nothing), and, on a final fare, waiting.
- Waiting is pro-rata to the second: ``waiting_per_minute`` * (waiting - grace) / 60.
- Line items with a zero amount are left out, except base fare, distance and time.
- Every fare and quote carries its line items and the id and version of its policy.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from itertools import pairwise
from typing import Literal

from payments.errors import FarePolicyMismatch
from payments.money import Money
from payments.policy import FarePolicy

BASE_FARE = "base_fare"
DISTANCE = "distance"
TIME = "time"
SURGE = "surge"
MINIMUM_FARE_ADJUSTMENT = "minimum_fare_adjustment"
BOOKING_FEE = "booking_fee"
ZONE_SURCHARGE_PREFIX = "zone_surcharge:"
WAITING = "waiting"
CANCELLATION_FEE = "cancellation_fee"
NO_SHOW_FEE = "no_show_fee"

FareBasis = Literal["upfront", "metered", "cancellation", "no_show"]


@dataclass(frozen=True, slots=True)
class LineItem:
    code: str
    description: str
    amount: Money


@dataclass(frozen=True, slots=True)
class TripEstimate:
    distance_m: int
    duration_s: int

    def __post_init__(self) -> None:
        _require_counts(distance_m=self.distance_m, duration_s=self.duration_s)


@dataclass(frozen=True, slots=True)
class TripMeasurement:
    distance_m: int
    duration_s: int
    # Time the driver waited at pickup after arriving.
    waiting_s: int

    def __post_init__(self) -> None:
        _require_counts(
            distance_m=self.distance_m, duration_s=self.duration_s, waiting_s=self.waiting_s
        )


@dataclass(frozen=True, slots=True)
class Quote:
    policy_id: uuid.UUID
    policy_version: int
    currency: str
    line_items: tuple[LineItem, ...]
    total: Money
    surge_multiplier: Decimal
    zones: frozenset[str]
    estimate: TripEstimate
    quoted_at: datetime
    expires_at: datetime

    def __post_init__(self) -> None:
        _require_sum(self.currency, self.line_items, self.total)
        _require_aware(quoted_at=self.quoted_at, expires_at=self.expires_at)


@dataclass(frozen=True, slots=True)
class Fare:
    policy_id: uuid.UUID
    policy_version: int
    currency: str
    basis: FareBasis
    line_items: tuple[LineItem, ...]
    total: Money

    def __post_init__(self) -> None:
        _require_sum(self.currency, self.line_items, self.total)


@dataclass(frozen=True, slots=True)
class FareSplit:
    """Where the money of one fare goes; the five parts sum exactly to the fare's total.

    ``pass_through`` (zone surcharges) is owed to third parties such as an airport and is
    nobody's revenue; ``booking_fee`` is the co-op's; ``commission`` and ``reserve`` are
    the co-op's shares of the rest, and the driver gets what remains of it.
    """

    driver: Money
    commission: Money
    reserve: Money
    booking_fee: Money
    pass_through: Money

    @property
    def total(self) -> Money:
        return self.driver + self.commission + self.reserve + self.booking_fee + self.pass_through


def quote(
    policy: FarePolicy,
    estimate: TripEstimate,
    *,
    surge: Decimal,
    zones: frozenset[str],
    now: datetime,
) -> Quote:
    """The upfront price of a trip as estimated, valid until ``now + quote_ttl_s``.

    ``surge`` is clamped to [1, ``policy.surge_cap``] and the clamped value is recorded;
    ``zones`` are the zones the trip starts or ends in. See the module docstring for the
    rules.
    """
    _require_aware(now=now)
    multiplier = _clamp_surge(policy, surge)
    items = (
        *_ride_items(policy, estimate.distance_m, estimate.duration_s, multiplier),
        *_extra_items(policy, zones),
    )
    return Quote(
        policy_id=policy.id,
        policy_version=policy.version,
        currency=policy.currency,
        line_items=items,
        total=_sum(policy.currency, items),
        surge_multiplier=multiplier,
        zones=frozenset(zones),
        estimate=estimate,
        quoted_at=now,
        expires_at=now + timedelta(seconds=policy.quote_ttl_s),
    )


def deviates(estimated: int, measured: int, tolerance: Decimal) -> bool:
    """Whether ``|measured - estimated| / estimated > tolerance``, exactly.

    Evaluated as ``|measured - estimated| > tolerance * estimated``, so an estimate of 0
    is deviated from by any measured value above 0 (whatever the tolerance) and not by 0.
    A deviation of exactly the tolerance is within it.
    """
    return Fraction(abs(measured - estimated)) > Fraction(tolerance) * estimated


def final_fare(policy: FarePolicy, quote: Quote, measured: TripMeasurement) -> Fare:
    """The fare of a completed trip, priced with the quote's policy version and surge.

    Upfront (the quote's line items as they are) unless the measured distance or the
    measured duration ``deviates`` from the estimate beyond ``deviation_tolerance``; then
    metered: the ride part, booking fee and zone surcharges priced again on the measured
    distance and duration. Either way, waiting beyond ``waiting_grace_s`` is added.

    Raises FarePolicyMismatch unless ``policy`` is the version the quote was made with.
    """
    _require_version(policy, quote.policy_id, quote.policy_version)
    estimate = quote.estimate
    tolerance = policy.deviation_tolerance
    metered = deviates(estimate.distance_m, measured.distance_m, tolerance) or deviates(
        estimate.duration_s, measured.duration_s, tolerance
    )
    if metered:
        priced: tuple[LineItem, ...] = (
            *_ride_items(policy, measured.distance_m, measured.duration_s, quote.surge_multiplier),
            *_extra_items(policy, quote.zones),
        )
    else:
        priced = quote.line_items
    items = (*priced, *_waiting_items(policy, measured.waiting_s))
    return Fare(
        policy_id=policy.id,
        policy_version=policy.version,
        currency=policy.currency,
        basis="metered" if metered else "upfront",
        line_items=items,
        total=_sum(policy.currency, items),
    )


def cancellation_charge(
    policy: FarePolicy,
    *,
    requested_at: datetime,
    driver_assigned_at: datetime | None,
    cancelled_at: datetime,
    by: Literal["rider", "driver"],
) -> Fare | None:
    """The fee for cancelling a ride, or None when cancelling is free.

    Free when the driver cancels, when no driver was assigned yet, when the rider cancels
    no more than ``cancellation_grace_s`` after the assignment, and when the policy's
    fee is 0. Otherwise the fare is the policy's ``cancellation_fee``.
    Raises ValueError unless requested_at <= driver_assigned_at <= cancelled_at.
    """
    _require_aware(requested_at=requested_at, cancelled_at=cancelled_at)
    if driver_assigned_at is None:
        _require_order(requested_at=requested_at, cancelled_at=cancelled_at)
        return None
    _require_aware(driver_assigned_at=driver_assigned_at)
    _require_order(
        requested_at=requested_at,
        driver_assigned_at=driver_assigned_at,
        cancelled_at=cancelled_at,
    )
    if by == "driver":
        return None
    if cancelled_at - driver_assigned_at <= timedelta(seconds=policy.cancellation_grace_s):
        return None
    return _fee_fare(
        policy, "cancellation", CANCELLATION_FEE, "Cancellation fee", policy.cancellation_fee
    )


def no_show_charge(
    policy: FarePolicy, *, driver_arrived_at: datetime, cancelled_at: datetime
) -> Fare | None:
    """The fee when the driver gives up on a rider who did not come, or None when free.

    The rider has the same grace as before waiting is charged: the fee is due only when
    the driver waited more than ``waiting_grace_s`` after arriving, and the policy's
    ``no_show_fee`` is above 0. Raises ValueError if cancelled_at < driver_arrived_at.
    """
    _require_aware(driver_arrived_at=driver_arrived_at, cancelled_at=cancelled_at)
    _require_order(driver_arrived_at=driver_arrived_at, cancelled_at=cancelled_at)
    if cancelled_at - driver_arrived_at <= timedelta(seconds=policy.waiting_grace_s):
        return None
    return _fee_fare(policy, "no_show", NO_SHOW_FEE, "No-show fee", policy.no_show_fee)


def split(policy: FarePolicy, fare: Fare) -> FareSplit:
    """How ``fare`` divides; the parts sum exactly to ``fare.total``.

    The booking fee goes to the co-op and zone surcharges pass through. Everything else
    (the ride part, waiting, cancellation and no-show fees, which all pay for a driver's
    time) is divided in proportion (1 - commission - reserve : commission : reserve)
    by the largest-remainder method, ties going to the driver.

    Raises FarePolicyMismatch unless ``policy`` is the version the fare was priced with.
    """
    _require_version(policy, fare.policy_id, fare.policy_version)
    zero = Money.zero(fare.currency)
    booking_fee = pass_through = shared = zero
    for item in fare.line_items:
        if item.code == BOOKING_FEE:
            booking_fee += item.amount
        elif item.code.startswith(ZONE_SURCHARGE_PREFIX):
            pass_through += item.amount
        else:
            shared += item.amount
    commission_rate, reserve_rate = policy.commission_rate, policy.reserve_rate
    driver, commission, reserve = shared.allocate(
        [1 - commission_rate - reserve_rate, commission_rate, reserve_rate]
    )
    return FareSplit(
        driver=driver,
        commission=commission,
        reserve=reserve,
        booking_fee=booking_fee,
        pass_through=pass_through,
    )


def _clamp_surge(policy: FarePolicy, surge: Decimal) -> Decimal:
    if not isinstance(surge, Decimal):
        raise TypeError("a surge multiplier is a Decimal")
    if not surge.is_finite():
        raise ValueError(f"a surge multiplier is finite, not {surge}")
    return min(max(surge, Decimal(1)), policy.surge_cap)


def _ride_items(
    policy: FarePolicy, distance_m: int, duration_s: int, multiplier: Decimal
) -> list[LineItem]:
    base = policy.money(policy.base_fare)
    distance = policy.money(policy.per_km).times_ratio(distance_m, 1000)
    time = policy.money(policy.per_minute).times_ratio(duration_s, 60)
    items = [
        LineItem(BASE_FARE, "Base fare", base),
        LineItem(DISTANCE, f"Distance ({Decimal(distance_m) / 1000:f} km)", distance),
        LineItem(TIME, f"Time ({_duration_text(duration_s)})", time),
    ]
    surge = (base + distance + time).times(multiplier - 1)
    if not surge.is_zero():
        items.append(LineItem(SURGE, f"Surge (x{multiplier.normalize():f})", surge))
    ride = _sum(policy.currency, items)
    minimum = policy.money(policy.minimum_fare)
    if ride < minimum:
        items.append(LineItem(MINIMUM_FARE_ADJUSTMENT, "Minimum fare adjustment", minimum - ride))
    return items


def _extra_items(policy: FarePolicy, zones: Iterable[str]) -> list[LineItem]:
    items = []
    if policy.booking_fee:
        items.append(LineItem(BOOKING_FEE, "Booking fee", policy.money(policy.booking_fee)))
    surcharges: Mapping[str, int] = policy.zone_surcharges
    for zone in sorted(zones):
        amount = surcharges.get(zone, 0)
        if amount:
            items.append(
                LineItem(
                    f"{ZONE_SURCHARGE_PREFIX}{zone}",
                    f"{zone.replace('_', ' ').capitalize()} surcharge",
                    policy.money(amount),
                )
            )
    return items


def _waiting_items(policy: FarePolicy, waiting_s: int) -> list[LineItem]:
    chargeable_s = max(0, waiting_s - policy.waiting_grace_s)
    amount = policy.money(policy.waiting_per_minute).times_ratio(chargeable_s, 60)
    if amount.is_zero():
        return []
    return [LineItem(WAITING, f"Waiting ({_duration_text(chargeable_s)})", amount)]


def _fee_fare(
    policy: FarePolicy, basis: FareBasis, code: str, description: str, fee: int
) -> Fare | None:
    if not fee:
        return None
    item = LineItem(code, description, policy.money(fee))
    return Fare(
        policy_id=policy.id,
        policy_version=policy.version,
        currency=policy.currency,
        basis=basis,
        line_items=(item,),
        total=item.amount,
    )


def _sum(currency: str, items: Iterable[LineItem]) -> Money:
    total = Money.zero(currency)
    for item in items:
        total += item.amount
    return total


def _duration_text(seconds: int) -> str:
    minutes, rest = divmod(seconds, 60)
    if not minutes:
        return f"{rest} s"
    return f"{minutes} min" if not rest else f"{minutes} min {rest} s"


def _require_version(policy: FarePolicy, policy_id: uuid.UUID, policy_version: int) -> None:
    if (policy.id, policy.version) != (policy_id, policy_version):
        raise FarePolicyMismatch(
            expected_id=policy_id,
            expected_version=policy_version,
            given_id=policy.id,
            given_version=policy.version,
        )


def _require_sum(currency: str, items: tuple[LineItem, ...], total: Money) -> None:
    if total.currency != currency or _sum(currency, items) != total:
        raise ValueError("a total is the sum of its line items, in its currency")


def _require_counts(**counts: int) -> None:
    for name, value in counts.items():
        if type(value) is not int or value < 0:
            raise ValueError(f"{name} is a non-negative int, not {value!r}")


def _require_aware(**moments: datetime) -> None:
    for name, moment in moments.items():
        if moment.tzinfo is None:
            raise ValueError(f"{name} must be timezone-aware")


def _require_order(**moments: datetime) -> None:
    for (earlier, a), (later, b) in pairwise(moments.items()):
        if b < a:
            raise ValueError(f"{later} is before {earlier}")
