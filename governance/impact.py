"""The impact of a pricing proposal: the last 30 days of completed trips replayed under the
fare policy in force and under the proposed one. Pure: trips and policies in, figures out.

The replay prices every trip exactly as ``payments.pricing`` would have (a quote on the
trip's estimate with its surge and zones, then the final fare on what was measured,
upfront unless the trip deviated beyond the policy's tolerance, plus waiting; then the
split), in integer arrays, so 200,000 trips take well under a second. A test holds it
equal to ``pricing.final_fare`` and ``pricing.split`` trip by trip.

What the figures mean (``simulate``):

- **The same trips, both ways.** Both sides are repriced, the current one too, so the
  difference is the proposal's alone (the trips' own fares may come from older versions).
  Demand does not respond to prices: it is a static replay, not a forecast.
- **Riders' price change** per trip, proposed minus current, in minor units and in basis
  points of the current price: median and 90th percentile (nearest rank: the smallest
  value at least ``p`` % of trips do not exceed; every figure is an actual trip's).
- **Drivers' net earnings per hour**: each driver's share of the fares (after commission
  and reserve; tips are not fares) divided by their hours. The hours are the driver's
  time online in the window when dispatch knows it; otherwise the time spent on their
  trips (waiting at pickup plus the ride), which overstates the hourly figure of a driver
  who also waits between trips. ``hours_basis`` says which was used. Drivers without any
  time are left out. p10 / p50 / p90 across drivers, current and proposed, and the same
  percentiles of each driver's own change.
- **The co-op's revenue**: commission, reserve and booking fees (zone surcharges pass
  through to third parties and are nobody's revenue).
- **Each member's own change** (``personal``): as a driver, their earnings and hourly
  figure both ways; as a rider, what they paid both ways.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from fractions import Fraction
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt

from payments import pricing
from payments.policy import FarePolicy

IMPACT_FORMAT = "ridecoop-impact/1"
WINDOW_DAYS = 30
# Rates and surges are scaled to integers by 10**k; beyond this the products could leave
# int64, and the trips are priced one by one with exact fractions instead.
MAX_DECIMAL_PLACES = 6

Int64Array = npt.NDArray[np.int64]
HoursBasis = Literal["online", "trip_time", "mixed", "none"]


class TripRecord(Protocol):
    """A completed trip as the replay needs it (dispatch.history.CompletedTrip is one)."""

    @property
    def rider_id(self) -> uuid.UUID: ...
    @property
    def driver_id(self) -> uuid.UUID: ...
    @property
    def distance_m(self) -> int: ...
    @property
    def duration_s(self) -> int: ...
    @property
    def waiting_s(self) -> int: ...
    @property
    def estimated_distance_m(self) -> int: ...
    @property
    def estimated_duration_s(self) -> int: ...
    @property
    def surge(self) -> Decimal: ...
    @property
    def zones(self) -> frozenset[str]: ...


@dataclass(frozen=True, slots=True)
class Trip:
    rider_id: uuid.UUID
    driver_id: uuid.UUID
    distance_m: int
    duration_s: int
    waiting_s: int
    estimated_distance_m: int
    estimated_duration_s: int
    surge: Decimal = Decimal(1)
    zones: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class TripArrays:
    """Trips as columns. ``zone_set`` indexes ``zone_sets``; ``driver``/``rider`` index
    ``drivers``/``riders``; ``surge`` is the raw multiplier (clamped per policy)."""

    distance_m: Int64Array
    duration_s: Int64Array
    waiting_s: Int64Array
    estimated_distance_m: Int64Array
    estimated_duration_s: Int64Array
    surge: tuple[Decimal, ...]
    zone_set: Int64Array
    zone_sets: tuple[frozenset[str], ...]
    driver: Int64Array
    drivers: tuple[uuid.UUID, ...]
    rider: Int64Array
    riders: tuple[uuid.UUID, ...]

    @property
    def count(self) -> int:
        return len(self.distance_m)


def trip_arrays(trips: Sequence[TripRecord]) -> TripArrays:
    """The trips as columns, for ``price_trips``."""
    zone_index: dict[frozenset[str], int] = {}
    driver_index: dict[uuid.UUID, int] = {}
    rider_index: dict[uuid.UUID, int] = {}
    n = len(trips)
    columns = np.zeros((5, n), dtype=np.int64)
    zone_set = np.zeros(n, dtype=np.int64)
    driver = np.zeros(n, dtype=np.int64)
    rider = np.zeros(n, dtype=np.int64)
    surges: list[Decimal] = []
    for i, trip in enumerate(trips):
        columns[0, i] = trip.distance_m
        columns[1, i] = trip.duration_s
        columns[2, i] = trip.waiting_s
        columns[3, i] = trip.estimated_distance_m
        columns[4, i] = trip.estimated_duration_s
        surges.append(trip.surge)
        zone_set[i] = zone_index.setdefault(trip.zones, len(zone_index))
        driver[i] = driver_index.setdefault(trip.driver_id, len(driver_index))
        rider[i] = rider_index.setdefault(trip.rider_id, len(rider_index))
    if n and (columns.min() < 0):
        raise ValueError("distances, durations and waiting are >= 0")
    return TripArrays(
        distance_m=columns[0],
        duration_s=columns[1],
        waiting_s=columns[2],
        estimated_distance_m=columns[3],
        estimated_duration_s=columns[4],
        surge=tuple(surges),
        zone_set=zone_set,
        zone_sets=tuple(zone_index),
        driver=driver,
        drivers=tuple(driver_index),
        rider=rider,
        riders=tuple(rider_index),
    )


@dataclass(frozen=True, slots=True)
class PricedTrips:
    """Per trip, in minor units: the final fare and its split (the parts sum to it)."""

    total: Int64Array
    driver: Int64Array
    commission: Int64Array
    reserve: Int64Array
    booking_fee: Int64Array
    pass_through: Int64Array

    @property
    def coop(self) -> Int64Array:
        return self.commission + self.reserve + self.booking_fee


def _round_half_even(numerator: Int64Array, denominator: int | Int64Array) -> Int64Array:
    """Element-wise ``round(numerator / denominator)`` exactly, ties to even, as Python's
    ``round`` of a Fraction does; denominators > 0."""
    quotient = numerator // denominator
    twice_remainder = 2 * (numerator - quotient * denominator)
    up = (twice_remainder > denominator) | ((twice_remainder == denominator) & (quotient % 2 == 1))
    rounded: Int64Array = quotient + up.astype(np.int64)
    return rounded


def _places(value: Decimal) -> int:
    exponent = value.as_tuple().exponent
    assert isinstance(exponent, int)
    return max(0, -exponent)


def _scaled(value: Decimal, scale: int) -> int:
    scaled = value * scale
    assert scaled == scaled.to_integral_value()
    return int(scaled)


def price_trips(policy: FarePolicy, trips: TripArrays) -> PricedTrips:
    """Every trip priced under ``policy`` as ``payments.pricing`` prices it: ``quote`` on
    the estimate, ``final_fare`` on the measurement, ``split`` of the fare."""
    if any(not s.is_finite() for s in trips.surge):
        raise ValueError("a surge multiplier is finite")
    rates = (policy.surge_cap, policy.commission_rate, policy.reserve_rate)
    places = max(
        _places(policy.deviation_tolerance),
        *(_places(rate) for rate in rates),
        *(_places(s) for s in set(trips.surge)),
    )
    if places > MAX_DECIMAL_PLACES:
        return _price_exactly(policy, trips)
    scale = 10**places
    multiplier = np.array(
        [_scaled(min(max(s, Decimal(1)), policy.surge_cap), scale) for s in trips.surge],
        dtype=np.int64,
    ).reshape(trips.count)

    def ride_part(distance_m: Int64Array, duration_s: Int64Array) -> Int64Array:
        distance = _round_half_even(policy.per_km * distance_m, 1000)
        time = _round_half_even(policy.per_minute * duration_s, 60)
        subtotal = policy.base_fare + distance + time
        surge = _round_half_even(subtotal * (multiplier - scale), scale)
        ride: Int64Array = np.maximum(subtotal + surge, policy.minimum_fare)
        return ride

    tolerance = _scaled(policy.deviation_tolerance, scale)

    def deviates(estimated: Int64Array, measured: Int64Array) -> npt.NDArray[np.bool_]:
        beyond: npt.NDArray[np.bool_] = np.abs(measured - estimated) * scale > tolerance * estimated
        return beyond

    metered = deviates(trips.estimated_distance_m, trips.distance_m) | deviates(
        trips.estimated_duration_s, trips.duration_s
    )
    ride = np.where(
        metered,
        ride_part(trips.distance_m, trips.duration_s),
        ride_part(trips.estimated_distance_m, trips.estimated_duration_s),
    )
    chargeable_s = np.maximum(trips.waiting_s - policy.waiting_grace_s, 0)
    waiting = _round_half_even(policy.waiting_per_minute * chargeable_s, 60)
    surcharges = np.array(
        [sum(policy.zone_surcharges.get(zone, 0) for zone in zones) for zones in trips.zone_sets],
        dtype=np.int64,
    )
    pass_through = surcharges[trips.zone_set] if trips.count else np.zeros(0, dtype=np.int64)
    booking_fee = np.full(trips.count, policy.booking_fee, dtype=np.int64)
    shared = ride + waiting
    commission_w = _scaled(policy.commission_rate, scale)
    reserve_w = _scaled(policy.reserve_rate, scale)
    weights = (scale - commission_w - reserve_w, commission_w, reserve_w)
    floors = [shared * w // scale for w in weights]
    remainders = [shared * w - f * scale for w, f in zip(weights, floors, strict=True)]
    leftover = shared - floors[0] - floors[1] - floors[2]
    # Largest remainder, ties to the earlier weight (the driver): each part's rank is the
    # number of parts served before it; the first ``leftover`` ranks get one unit more.
    r0, r1, r2 = remainders
    ranks = (
        (r1 > r0).astype(np.int64) + (r2 > r0),
        (r0 >= r1).astype(np.int64) + (r2 > r1),
        (r0 >= r2).astype(np.int64) + (r1 >= r2),
    )
    driver, commission, reserve = (
        f + (rank < leftover).astype(np.int64) for f, rank in zip(floors, ranks, strict=True)
    )
    return PricedTrips(
        total=shared + booking_fee + pass_through,
        driver=driver,
        commission=commission,
        reserve=reserve,
        booking_fee=booking_fee,
        pass_through=pass_through,
    )


def _price_exactly(policy: FarePolicy, trips: TripArrays) -> PricedTrips:
    # Rare: rates with more decimals than the integer path can scale. One trip at a time.
    quoted_at = datetime(2000, 1, 1, tzinfo=UTC)
    parts: list[list[int]] = []
    for i in range(trips.count):
        quote = pricing.quote(
            policy,
            pricing.TripEstimate(
                int(trips.estimated_distance_m[i]), int(trips.estimated_duration_s[i])
            ),
            surge=trips.surge[i],
            zones=trips.zone_sets[int(trips.zone_set[i])],
            now=quoted_at,
        )
        fare = pricing.final_fare(
            policy,
            quote,
            pricing.TripMeasurement(
                int(trips.distance_m[i]), int(trips.duration_s[i]), int(trips.waiting_s[i])
            ),
        )
        split = pricing.split(policy, fare)
        parts.append(
            [
                fare.total.amount,
                split.driver.amount,
                split.commission.amount,
                split.reserve.amount,
                split.booking_fee.amount,
                split.pass_through.amount,
            ]
        )
    table = np.array(parts, dtype=np.int64).reshape(trips.count, 6).T
    return PricedTrips(*(np.ascontiguousarray(column) for column in table))


# -- Figures -----------------------------------------------------------------------------


def nearest_rank(sorted_values: Int64Array, percent: int) -> int:
    """The ``percent``-th percentile by nearest rank of ascending ``sorted_values``."""
    if len(sorted_values) == 0:
        raise ValueError("no values")
    rank = max(1, math.ceil(percent * len(sorted_values) / 100))
    return int(sorted_values[rank - 1])


def _percentiles(values: Int64Array, percents: Sequence[int]) -> dict[str, int | None]:
    if len(values) == 0:
        return {f"p{p}": None for p in percents}
    ordered = np.sort(values)
    return {f"p{p}": nearest_rank(ordered, p) for p in percents}


def _group_sum(index: Int64Array, values: Int64Array, groups: int) -> Int64Array:
    sums = np.zeros(groups, dtype=np.int64)
    np.add.at(sums, index, values)
    return sums


@dataclass(frozen=True, slots=True)
class Impact:
    """``figures`` is what every voter sees; ``personal`` maps a user to their own."""

    figures: dict[str, Any]
    personal: dict[uuid.UUID, dict[str, Any]]


def simulate(
    trips: Sequence[TripRecord],
    current: FarePolicy,
    proposed: FarePolicy,
    *,
    online_seconds: Mapping[uuid.UUID, int] | None = None,
) -> Impact:
    """The impact of moving from ``current`` to ``proposed`` on ``trips`` (module
    docstring). ``online_seconds`` is each driver's time online in the trips' window, when
    known. Amounts are ints of minor units of the policies' currency; rates of change in
    basis points (1/100 of a percent), rounded half-even."""
    if current.currency != proposed.currency:
        raise ValueError("the policies price in different currencies")
    arrays = trip_arrays(trips)
    before = price_trips(current, arrays)
    after = price_trips(proposed, arrays)
    online = online_seconds or {}

    change = after.total - before.total
    priced = before.total > 0
    # Trips that cost nothing now have no rate of change.
    bp = _round_half_even(change[priced] * 10_000, before.total[priced])

    n_drivers = len(arrays.drivers)
    earned_before = _group_sum(arrays.driver, before.driver, n_drivers)
    earned_after = _group_sum(arrays.driver, after.driver, n_drivers)
    trip_time = _group_sum(arrays.driver, arrays.duration_s + arrays.waiting_s, n_drivers)
    driver_trips = np.bincount(arrays.driver, minlength=n_drivers).astype(np.int64)
    online_known = np.array([online.get(d, 0) > 0 for d in arrays.drivers], dtype=bool)
    seconds = np.where(
        online_known,
        np.array([online.get(d, 0) for d in arrays.drivers], dtype=np.int64),
        trip_time,
    ).astype(np.int64)
    timed = seconds > 0
    hourly_before = _round_half_even(earned_before[timed] * 3600, seconds[timed])
    hourly_after = _round_half_even(earned_after[timed] * 3600, seconds[timed])

    n_riders = len(arrays.riders)
    paid_before = _group_sum(arrays.rider, before.total, n_riders)
    paid_after = _group_sum(arrays.rider, after.total, n_riders)
    rider_trips = np.bincount(arrays.rider, minlength=n_riders).astype(np.int64)

    revenue = {
        name: {
            "current": int(getattr(before, name).sum()),
            "proposed": int(getattr(after, name).sum()),
        }
        for name in ("commission", "reserve", "booking_fee")
    }
    coop_before = sum(part["current"] for part in revenue.values())
    coop_after = sum(part["proposed"] for part in revenue.values())
    basis: HoursBasis
    if not n_drivers:
        basis = "none"
    elif online_known.all():
        basis = "online"
    elif not online_known.any():
        basis = "trip_time"
    else:
        basis = "mixed"
    figures: dict[str, Any] = {
        "format": IMPACT_FORMAT,
        "currency": current.currency,
        "current_policy": {"id": str(current.id), "version": current.version},
        "trips": arrays.count,
        "drivers": n_drivers,
        "riders": n_riders,
        "riders_price_change": {
            "amount": _percentiles(change, (50, 90)),
            "basis_points": _percentiles(bp, (50, 90)),
            "paid_current": int(before.total.sum()),
            "paid_proposed": int(after.total.sum()),
        },
        "drivers_earnings_per_hour": {
            "hours_basis": basis,
            "drivers_counted": int(timed.sum()),
            "current": _percentiles(hourly_before, (10, 50, 90)),
            "proposed": _percentiles(hourly_after, (10, 50, 90)),
            "change": _percentiles(hourly_after - hourly_before, (10, 50, 90)),
        },
        "coop_revenue": {
            "current": coop_before,
            "proposed": coop_after,
            "change": coop_after - coop_before,
            "parts": revenue,
        },
    }
    personal: dict[uuid.UUID, dict[str, Any]] = {}
    for i, driver_id in enumerate(arrays.drivers):
        per_hour: dict[str, int | None] = {"current": None, "proposed": None}
        if seconds[i] > 0:
            per_hour = {
                "current": round(Fraction(int(earned_before[i]) * 3600, int(seconds[i]))),
                "proposed": round(Fraction(int(earned_after[i]) * 3600, int(seconds[i]))),
            }
        personal.setdefault(driver_id, {})["as_driver"] = {
            "trips": int(driver_trips[i]),
            "earnings_current": int(earned_before[i]),
            "earnings_proposed": int(earned_after[i]),
            "change": int(earned_after[i] - earned_before[i]),
            "per_hour_current": per_hour["current"],
            "per_hour_proposed": per_hour["proposed"],
        }
    for i, rider_id in enumerate(arrays.riders):
        personal.setdefault(rider_id, {})["as_rider"] = {
            "trips": int(rider_trips[i]),
            "paid_current": int(paid_before[i]),
            "paid_proposed": int(paid_after[i]),
            "change": int(paid_after[i] - paid_before[i]),
        }
    return Impact(figures=figures, personal=personal)
