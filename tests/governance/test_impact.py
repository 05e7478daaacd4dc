"""The impact simulation: priced exactly as payments prices a trip, the figures it shows,
and frozen with the proposal."""

from __future__ import annotations

import dataclasses
import random
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from governance.impact import Trip, nearest_rank, price_trips, simulate, trip_arrays
from infra.clock import FrozenClock
from infra.settings import Settings
from payments import pricing
from payments.policy import FarePolicy
from tests.governance.factories import START, FedTrips, governance, make_members, on_notice, yes_no
from tests.payments.factories import make_policy

DRIVER_A, DRIVER_B = uuid.uuid4(), uuid.uuid4()
RIDER = uuid.uuid4()


def _random_trips(count: int, seed: int) -> list[Trip]:
    rng = random.Random(seed)
    drivers = [uuid.uuid4() for _ in range(20)]
    riders = [uuid.uuid4() for _ in range(60)]
    trips = []
    for _ in range(count):
        estimated_m, estimated_s = rng.randint(0, 40_000), rng.randint(0, 4_000)
        trips.append(
            Trip(
                rider_id=rng.choice(riders),
                driver_id=rng.choice(drivers),
                # Some trips deviate beyond the tolerance (metered), most do not.
                distance_m=max(0, round(estimated_m * rng.uniform(0.6, 1.5))),
                duration_s=max(0, round(estimated_s * rng.uniform(0.7, 1.4))),
                waiting_s=rng.choice([0, 60, 150, 600]),
                estimated_distance_m=estimated_m,
                estimated_duration_s=estimated_s,
                surge=Decimal(rng.choice(["1", "1.2", "1.75", "3.1", "0.9"])),
                zones=frozenset(rng.sample(["airport", "stadium", "downtown"], rng.randint(0, 2))),
            )
        )
    return trips


def _reference(policy: FarePolicy, trip: Trip) -> tuple[int, ...]:
    quote = pricing.quote(
        policy,
        pricing.TripEstimate(trip.estimated_distance_m, trip.estimated_duration_s),
        surge=trip.surge,
        zones=trip.zones,
        now=datetime(2030, 1, 1, tzinfo=UTC),
    )
    measured = pricing.TripMeasurement(trip.distance_m, trip.duration_s, trip.waiting_s)
    fare = pricing.final_fare(policy, quote, measured)
    split = pricing.split(policy, fare)
    return (
        fare.total.amount,
        split.driver.amount,
        split.commission.amount,
        split.reserve.amount,
        split.booking_fee.amount,
        split.pass_through.amount,
    )


@pytest.mark.parametrize(
    "policy",
    [
        make_policy(zone_surcharges={"airport": 450, "stadium": 125}),
        make_policy(
            surge_cap=Decimal("1.85"),
            commission_rate=Decimal("0.137"),
            reserve_rate=Decimal("0.021"),
            deviation_tolerance=Decimal("0.1"),
            minimum_fare=1_500,
        ),
        # More decimals than the integer path scales: priced one trip at a time.
        make_policy(commission_rate=Decimal("0.1234567")),
    ],
)
def test_trips_are_priced_as_payments_prices_them(policy: FarePolicy) -> None:
    trips = _random_trips(2_000, seed=7)
    priced = price_trips(policy, trip_arrays(trips))
    columns = (
        priced.total,
        priced.driver,
        priced.commission,
        priced.reserve,
        priced.booking_fee,
        priced.pass_through,
    )
    for i, trip in enumerate(trips):
        assert tuple(int(column[i]) for column in columns) == _reference(policy, trip), trip


def _trip(driver: uuid.UUID, distance_m: int, duration_s: int, **fields: object) -> Trip:
    values: dict[str, object] = {
        "rider_id": RIDER,
        "driver_id": driver,
        "distance_m": distance_m,
        "duration_s": duration_s,
        "waiting_s": 0,
        "estimated_distance_m": distance_m,
        "estimated_duration_s": duration_s,
    }
    values.update(fields)
    return Trip(**values)  # type: ignore[arg-type]


def test_the_figures_of_a_base_fare_rise() -> None:
    # 250 + 120 x 5 km + 30 x 10 min = 1150, + booking 200 = 1350; the driver gets 80 % of
    # 1150 = 920 for 600 s, 5520 an hour. 50 more base fare: 1400, driver 960, 5760 an hour.
    current = make_policy(zone_surcharges={})
    proposed = dataclasses.replace(current, base_fare=300)
    trips = [_trip(DRIVER_A, 5_000, 600), _trip(DRIVER_A, 5_000, 600), _trip(DRIVER_B, 5_000, 600)]
    impact = simulate(trips, current, proposed)
    figures = impact.figures
    assert figures["trips"] == 3
    assert figures["riders_price_change"]["amount"] == {"p50": 50, "p90": 50}
    # 50 / 1350 = 3.7 %.
    assert figures["riders_price_change"]["basis_points"] == {"p50": 370, "p90": 370}
    hourly = figures["drivers_earnings_per_hour"]
    assert hourly["hours_basis"] == "trip_time"
    assert hourly["current"] == {"p10": 5520, "p50": 5520, "p90": 5520}
    assert hourly["change"] == {"p10": 240, "p50": 240, "p90": 240}
    # The co-op keeps 20 % of 1150 (230) and the booking fee on each trip; 20 % of 1200.
    assert figures["coop_revenue"] == {
        "current": 3 * (230 + 200),
        "proposed": 3 * (240 + 200),
        "change": 30,
        "parts": {
            "commission": {"current": 3 * 173, "proposed": 3 * 180},
            "reserve": {"current": 3 * 57, "proposed": 3 * 60},
            "booking_fee": {"current": 600, "proposed": 600},
        },
    }
    assert impact.personal[DRIVER_A]["as_driver"] == {
        "trips": 2,
        "earnings_current": 1840,
        "earnings_proposed": 1920,
        "change": 80,
        "per_hour_current": 5520,
        "per_hour_proposed": 5760,
    }
    assert impact.personal[RIDER]["as_rider"]["change"] == 150


def test_hours_online_are_used_when_known() -> None:
    current = make_policy(zone_surcharges={})
    trips = [_trip(DRIVER_A, 5_000, 600), _trip(DRIVER_B, 5_000, 600)]
    impact = simulate(trips, current, current, online_seconds={DRIVER_A: 3_600})
    hourly = impact.figures["drivers_earnings_per_hour"]
    assert hourly["hours_basis"] == "mixed"
    # A: 920 in an hour online; B: 920 in the 10 minutes of its trip.
    assert hourly["current"] == {"p10": 920, "p50": 920, "p90": 5520}
    assert impact.personal[DRIVER_A]["as_driver"]["per_hour_current"] == 920


def test_no_trips_gives_empty_figures() -> None:
    impact = simulate([], make_policy(), make_policy(base_fare=300))
    assert impact.figures["trips"] == 0
    assert impact.figures["riders_price_change"]["amount"] == {"p50": None, "p90": None}
    assert impact.personal == {}


def test_percentiles_are_by_nearest_rank() -> None:
    import numpy as np

    values = np.arange(1, 11, dtype=np.int64)
    assert [nearest_rank(values, p) for p in (10, 50, 90, 100)] == [1, 5, 9, 10]


async def test_the_impact_is_frozen_with_the_proposal(
    session: AsyncSession, settings: Settings
) -> None:
    clock = FrozenClock(START)
    members = await make_members(session, settings, clock, 6)
    trips = FedTrips(
        trips=[_trip(members[1], 5_000, 600), _trip(members[1], 8_000, 900), _trip(DRIVER_B, 1, 1)]
    )
    service = governance(session, clock, trips=trips)
    noticed = await on_notice(service, yes_no(("fare.per_km", "130")), members[0], members[1:6])
    assert noticed.impact is not None
    scenario = noticed.impact["scenarios"][0]
    assert scenario["name"] == "proposal"
    assert scenario["trips"] == 3
    assert scenario["changes"] == [{"key": "fare.per_km", "old": "120", "new": "130"}]

    # New trips later change nothing: every voter sees the figures frozen at notice.
    trips.trips = [*trips.trips, *_random_trips(50, seed=1)]
    again = await service.read(noticed.id, members[2])
    assert again.impact == noticed.impact
    assert again.my_impact is None
    mine = await service.read(noticed.id, members[1])
    assert mine.my_impact is not None
    assert mine.my_impact["proposal"]["as_driver"]["trips"] == 2
    assert mine.my_impact["proposal"]["as_driver"]["change"] > 0


async def test_proposals_not_about_fares_have_no_impact(
    session: AsyncSession, settings: Settings
) -> None:
    clock = FrozenClock(START)
    members = await make_members(session, settings, clock, 6)
    service = governance(session, clock, trips=FedTrips(trips=_random_trips(10, seed=2)))
    noticed = await on_notice(
        service, yes_no(("dispatch.fairness_weight_s", "90")), members[0], members[1:6]
    )
    assert noticed.impact is None
