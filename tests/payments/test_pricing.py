from __future__ import annotations

import dataclasses
import math
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from payments.errors import FarePolicyMismatch
from payments.money import Money
from payments.policy import FarePolicy
from payments.pricing import (
    BOOKING_FEE,
    SURGE,
    WAITING,
    ZONE_SURCHARGE_PREFIX,
    Fare,
    LineItem,
    Quote,
    TripEstimate,
    TripMeasurement,
    cancellation_charge,
    deviates,
    final_fare,
    no_show_charge,
    quote,
    split,
)
from tests.payments.factories import make_policy

NOW = datetime(2025, 6, 1, 8, 30, tzinfo=UTC)
ZONES = ("airport", "stadium", "old_town")
# 8.2 km in 17 min, the worked example.
ESTIMATE = TripEstimate(distance_m=8200, duration_s=1020)


def usd(amount: int) -> Money:
    return Money(amount, "USD")


def amounts_by_code(items: tuple[LineItem, ...]) -> dict[str, int]:
    return {item.code: item.amount.amount for item in items}


def ride_part(items: tuple[LineItem, ...]) -> int:
    return sum(
        item.amount.amount
        for item in items
        if item.code not in (BOOKING_FEE, WAITING)
        and not item.code.startswith(ZONE_SURCHARGE_PREFIX)
    )


def worked_quote(policy: FarePolicy, **overrides: object) -> Quote:
    arguments: dict[str, object] = {
        "surge": Decimal("1.3"),
        "zones": frozenset({"airport"}),
        "now": NOW,
    }
    arguments.update(overrides)
    return quote(policy, ESTIMATE, **arguments)  # type: ignore[arg-type]


def no_waiting(distance_m: int = 8200, duration_s: int = 1020) -> TripMeasurement:
    return TripMeasurement(distance_m=distance_m, duration_s=duration_s, waiting_s=0)


# Worked examples; every number checked by hand against make_policy():
# base 2.50, 1.20/km, 0.30/min, booking 2.00, minimum 7.00, waiting 0.40/min after 120 s,
# airport 4.50, surge cap 2.5, commission 15 %, reserve 5 %, tolerance 25 %.


def test_quote_prices_8_2_km_in_17_min_at_surge_1_3_to_the_airport() -> None:
    # base 250; distance 120 * 8.2 = 984; time 30 * 17 = 510; surge 0.3 * 1744 = 523.2
    # -> 523; ride 2267; booking 200; airport 450; total 2917.
    offer = worked_quote(make_policy())
    assert amounts_by_code(offer.line_items) == {
        "base_fare": 250,
        "distance": 984,
        "time": 510,
        "surge": 523,
        "booking_fee": 200,
        "zone_surcharge:airport": 450,
    }
    assert offer.total == usd(2917)


def test_quote_lists_line_items_in_receipt_order() -> None:
    offer = worked_quote(make_policy())
    assert [item.code for item in offer.line_items] == [
        "base_fare",
        "distance",
        "time",
        "surge",
        "booking_fee",
        "zone_surcharge:airport",
    ]


def test_quote_describes_quantities() -> None:
    offer = worked_quote(make_policy())
    assert [item.description for item in offer.line_items] == [
        "Base fare",
        "Distance (8.2 km)",
        "Time (17 min)",
        "Surge (x1.3)",
        "Booking fee",
        "Airport surcharge",
    ]


def test_quote_carries_its_policy_version() -> None:
    policy = make_policy(version=7)
    offer = worked_quote(policy)
    assert (offer.policy_id, offer.policy_version, offer.currency) == (policy.id, 7, "USD")


def test_quote_expires_after_the_policy_ttl() -> None:
    offer = worked_quote(make_policy(quote_ttl_s=300))
    assert (offer.quoted_at, offer.expires_at) == (NOW, NOW + timedelta(seconds=300))


def test_quote_rounds_the_time_charge_half_to_even() -> None:
    # 25 * 90 s / 60 = 37.5 -> 38; 25 * 150 s / 60 = 62.5 -> 62.
    policy = make_policy(per_minute=25)
    times = [
        amounts_by_code(
            quote(
                policy, TripEstimate(0, seconds), surge=Decimal(1), zones=frozenset(), now=NOW
            ).line_items
        )["time"]
        for seconds in (90, 150)
    ]
    assert times == [38, 62]


def test_quote_tops_a_short_ride_up_to_the_minimum_fare() -> None:
    # 250 + 120 + 90 = 460 < 700: +240; the booking fee comes on top.
    offer = quote(
        make_policy(), TripEstimate(1000, 180), surge=Decimal(1), zones=frozenset(), now=NOW
    )
    assert amounts_by_code(offer.line_items)["minimum_fare_adjustment"] == 240
    assert offer.total == usd(900)


def test_quote_applies_the_minimum_after_surge() -> None:
    # (250 + 120 + 90) * 1.5 = 690 < 700: +10.
    offer = quote(
        make_policy(), TripEstimate(1000, 180), surge=Decimal("1.5"), zones=frozenset(), now=NOW
    )
    assert amounts_by_code(offer.line_items)["minimum_fare_adjustment"] == 10


def test_quote_clamps_surge_to_the_cap() -> None:
    offer = worked_quote(make_policy(surge_cap=Decimal("2.5")), surge=Decimal(4))
    assert offer.surge_multiplier == Decimal("2.5")
    assert amounts_by_code(offer.line_items)["surge"] == 2616  # 1744 * 1.5


def test_quote_treats_a_surge_below_one_as_no_surge() -> None:
    offer = worked_quote(make_policy(), surge=Decimal("0.8"))
    assert offer.surge_multiplier == Decimal(1)
    assert SURGE not in amounts_by_code(offer.line_items)


def test_quote_ignores_zones_the_policy_does_not_price() -> None:
    offer = worked_quote(make_policy(), zones=frozenset({"stadium"}))
    assert offer.total == usd(2467)


def test_quote_refuses_a_float_surge() -> None:
    with pytest.raises(TypeError):
        worked_quote(make_policy(), surge=1.3)


def test_quote_refuses_a_naive_now() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        worked_quote(make_policy(), now=datetime(2025, 6, 1))  # noqa: DTZ001


def test_trip_estimate_refuses_a_negative_distance() -> None:
    with pytest.raises(ValueError, match="distance_m"):
        TripEstimate(distance_m=-1, duration_s=60)


def test_final_fare_keeps_the_upfront_price_within_tolerance() -> None:
    policy = make_policy()
    offer = worked_quote(policy)
    fare = final_fare(policy, offer, no_waiting(distance_m=9500, duration_s=900))
    assert (fare.basis, fare.total, fare.line_items) == ("upfront", usd(2917), offer.line_items)


def test_final_fare_meters_a_trip_longer_than_tolerated() -> None:
    # 11 km is 34 % over 8.2 km: base 250 + 1320 + 510 = 2080; surge 624; 2704 + 200 + 450.
    policy = make_policy()
    fare = final_fare(policy, worked_quote(policy), no_waiting(distance_m=11000))
    assert (fare.basis, fare.total) == ("metered", usd(3354))


def test_final_fare_meters_a_trip_shorter_than_tolerated() -> None:
    # 12 min is 29 % under 17: 250 + 984 + 360 = 1594; surge 478.2 -> 478; 2072 + 650.
    policy = make_policy()
    fare = final_fare(policy, worked_quote(policy), no_waiting(duration_s=720))
    assert (fare.basis, fare.total) == ("metered", usd(2722))


def test_final_fare_keeps_the_upfront_price_at_exactly_the_tolerance() -> None:
    policy = make_policy()
    fare = final_fare(policy, worked_quote(policy), no_waiting(distance_m=10250))
    assert fare.basis == "upfront"


def test_final_fare_meters_one_metre_beyond_the_tolerance() -> None:
    policy = make_policy()
    fare = final_fare(policy, worked_quote(policy), no_waiting(distance_m=10251))
    assert fare.basis == "metered"


def test_final_fare_charges_waiting_beyond_the_grace_pro_rata() -> None:
    # 130 s waited, 120 s free: 40 * 10 / 60 = 6.67 -> 7.
    policy = make_policy()
    measured = TripMeasurement(distance_m=8200, duration_s=1020, waiting_s=130)
    fare = final_fare(policy, worked_quote(policy), measured)
    assert fare.line_items[-1] == LineItem("waiting", "Waiting (10 s)", usd(7))
    assert fare.total == usd(2924)


def test_final_fare_waiting_within_the_grace_is_free() -> None:
    policy = make_policy()
    measured = TripMeasurement(distance_m=8200, duration_s=1020, waiting_s=120)
    fare = final_fare(policy, worked_quote(policy), measured)
    assert WAITING not in amounts_by_code(fare.line_items)


def test_final_fare_refuses_another_policy_version() -> None:
    policy = make_policy()
    offer = worked_quote(policy)
    newer = dataclasses.replace(policy, version=2)
    with pytest.raises(FarePolicyMismatch) as raised:
        final_fare(newer, offer, no_waiting())
    assert raised.value.type == "fare-policy-mismatch"


def test_deviates_from_a_zero_estimate_by_any_distance() -> None:
    assert (deviates(0, 0, Decimal("0.25")), deviates(0, 1, Decimal(10))) == (False, True)


def test_final_fare_meters_a_zero_estimate_that_moved() -> None:
    policy = make_policy()
    offer = quote(policy, TripEstimate(0, 0), surge=Decimal(1), zones=frozenset(), now=NOW)
    fare = final_fare(policy, offer, no_waiting(distance_m=1, duration_s=0))
    assert fare.basis == "metered"


def test_split_of_the_worked_example() -> None:
    # Ride part 2267 at 80/15/5: 1813.6, 340.05, 113.35 -> 1813, 340, 113 + 1 to the
    # largest remainder (the driver's).
    policy = make_policy()
    parts = split(policy, final_fare(policy, worked_quote(policy), no_waiting()))
    assert (parts.driver, parts.commission, parts.reserve) == (usd(1814), usd(340), usd(113))
    assert (parts.booking_fee, parts.pass_through) == (usd(200), usd(450))


def test_split_gives_the_driver_a_cancellation_fee_minus_commission_and_reserve() -> None:
    policy = make_policy()
    fee = cancellation_charge(
        policy,
        requested_at=NOW,
        driver_assigned_at=NOW,
        cancelled_at=NOW + timedelta(minutes=5),
        by="rider",
    )
    assert fee is not None
    parts = split(policy, fee)
    assert (parts.driver, parts.commission, parts.reserve) == (usd(400), usd(75), usd(25))


def test_split_refuses_another_policy_version() -> None:
    policy = make_policy()
    fare = final_fare(policy, worked_quote(policy), no_waiting())
    with pytest.raises(FarePolicyMismatch):
        split(make_policy(), fare)


def cancel(
    policy: FarePolicy, after_assignment_s: int, *, by: str = "rider", assigned: bool = True
) -> Fare | None:
    assigned_at = NOW + timedelta(minutes=3)
    return cancellation_charge(
        policy,
        requested_at=NOW,
        driver_assigned_at=assigned_at if assigned else None,
        cancelled_at=assigned_at + timedelta(seconds=after_assignment_s),
        by=by,  # type: ignore[arg-type]
    )


def test_cancellation_within_the_grace_is_free() -> None:
    assert cancel(make_policy(cancellation_grace_s=120), 120) is None


def test_cancellation_after_the_grace_costs_the_fee() -> None:
    fee = cancel(make_policy(cancellation_grace_s=120, cancellation_fee=500), 121)
    assert fee is not None
    assert (fee.basis, fee.total, [i.code for i in fee.line_items]) == (
        "cancellation",
        usd(500),
        ["cancellation_fee"],
    )


def test_cancellation_before_any_driver_is_free() -> None:
    assert cancel(make_policy(), 3600, assigned=False) is None


def test_cancellation_by_the_driver_is_free() -> None:
    assert cancel(make_policy(), 3600, by="driver") is None


def test_cancellation_is_free_under_a_zero_fee() -> None:
    assert cancel(make_policy(cancellation_fee=0), 3600) is None


def test_cancellation_refuses_an_assignment_after_the_cancellation() -> None:
    with pytest.raises(ValueError, match="cancelled_at is before driver_assigned_at"):
        cancel(make_policy(), -1)


def no_show(policy: FarePolicy, waited_s: int) -> Fare | None:
    return no_show_charge(
        policy, driver_arrived_at=NOW, cancelled_at=NOW + timedelta(seconds=waited_s)
    )


def test_no_show_within_the_waiting_grace_is_free() -> None:
    assert no_show(make_policy(waiting_grace_s=120), 120) is None


def test_no_show_after_the_waiting_grace_costs_the_fee() -> None:
    fee = no_show(make_policy(waiting_grace_s=120, no_show_fee=700), 121)
    assert fee is not None
    assert (fee.basis, fee.total) == ("no_show", usd(700))


def test_fare_refuses_a_total_that_is_not_the_sum_of_its_items() -> None:
    policy = make_policy()
    with pytest.raises(ValueError, match="sum of its line items"):
        Fare(
            policy_id=policy.id,
            policy_version=policy.version,
            currency="USD",
            basis="cancellation",
            line_items=(LineItem("cancellation_fee", "Cancellation fee", usd(500)),),
            total=usd(501),
        )


# Properties.

small_amounts = st.integers(min_value=0, max_value=5_000)
rates = st.decimals(min_value=0, max_value=1, places=4, allow_nan=False, allow_infinity=False)


@st.composite
def policies(draw: st.DrawFn) -> FarePolicy:
    commission = draw(rates)
    reserve = draw(st.decimals(min_value=0, max_value=1 - commission, places=4, allow_nan=False))
    return make_policy(
        version=draw(st.integers(min_value=1, max_value=50)),
        currency=draw(st.sampled_from(["USD", "EUR", "JPY"])),
        base_fare=draw(small_amounts),
        per_km=draw(small_amounts),
        per_minute=draw(small_amounts),
        booking_fee=draw(small_amounts),
        minimum_fare=draw(st.integers(min_value=0, max_value=20_000)),
        waiting_per_minute=draw(small_amounts),
        cancellation_fee=draw(small_amounts),
        no_show_fee=draw(small_amounts),
        waiting_grace_s=draw(st.integers(min_value=0, max_value=900)),
        cancellation_grace_s=draw(st.integers(min_value=0, max_value=900)),
        quote_ttl_s=draw(st.integers(min_value=1, max_value=3600)),
        surge_cap=draw(st.decimals(min_value=1, max_value=5, places=2, allow_nan=False)),
        commission_rate=commission,
        reserve_rate=reserve,
        deviation_tolerance=draw(st.decimals(min_value=0, max_value=1, places=2, allow_nan=False)),
        zone_surcharges=draw(st.dictionaries(st.sampled_from(ZONES), small_amounts)),
    )


estimates = st.builds(
    TripEstimate,
    distance_m=st.integers(min_value=0, max_value=200_000),
    duration_s=st.integers(min_value=0, max_value=14_400),
)
measurements = st.builds(
    TripMeasurement,
    distance_m=st.integers(min_value=0, max_value=200_000),
    duration_s=st.integers(min_value=0, max_value=14_400),
    waiting_s=st.integers(min_value=0, max_value=3_600),
)
surges = st.decimals(min_value=0, max_value=10, places=3, allow_nan=False, allow_infinity=False)
zone_sets = st.frozensets(st.sampled_from((*ZONES, "unpriced")))


@st.composite
def quotes(draw: st.DrawFn) -> tuple[FarePolicy, Quote]:
    policy = draw(policies())
    offer = quote(policy, draw(estimates), surge=draw(surges), zones=draw(zone_sets), now=NOW)
    return policy, offer


@st.composite
def fares(draw: st.DrawFn) -> tuple[FarePolicy, Fare]:
    policy, offer = draw(quotes())
    completed = final_fare(policy, offer, draw(measurements))
    cancelled = cancel(policy, draw(st.integers(min_value=0, max_value=900)))
    not_shown = no_show(policy, draw(st.integers(min_value=0, max_value=900)))
    candidates = [fare for fare in (completed, cancelled, not_shown) if fare is not None]
    return policy, draw(st.sampled_from(candidates))


@st.composite
def within_tolerance(draw: st.DrawFn, estimated: int, tolerance: Decimal) -> int:
    slack = math.floor(Fraction(tolerance) * estimated)
    return draw(st.integers(min_value=max(0, estimated - slack), max_value=estimated + slack))


@given(fares())
def test_split_parts_sum_exactly_to_the_fare(policy_and_fare: tuple[FarePolicy, Fare]) -> None:
    policy, fare = policy_and_fare
    assert split(policy, fare).total == fare.total


@given(fares())
def test_split_parts_are_never_negative(policy_and_fare: tuple[FarePolicy, Fare]) -> None:
    policy, fare = policy_and_fare
    parts = split(policy, fare)
    assert all(
        part.amount >= 0
        for part in (
            parts.driver,
            parts.commission,
            parts.reserve,
            parts.booking_fee,
            parts.pass_through,
        )
    )


@given(fares())
def test_split_commission_is_within_one_unit_of_its_rate(
    policy_and_fare: tuple[FarePolicy, Fare],
) -> None:
    policy, fare = policy_and_fare
    parts = split(policy, fare)
    shared = parts.driver + parts.commission + parts.reserve
    exact = Fraction(shared.amount) * Fraction(policy.commission_rate)
    assert abs(parts.commission.amount - exact) < 1


@given(fares())
def test_fares_and_their_line_items_are_never_negative(
    policy_and_fare: tuple[FarePolicy, Fare],
) -> None:
    _, fare = policy_and_fare
    assert fare.total.amount >= 0
    assert all(item.amount.amount >= 0 for item in fare.line_items)


@given(quotes())
def test_quote_ride_part_is_at_least_the_minimum_fare(
    policy_and_quote: tuple[FarePolicy, Quote],
) -> None:
    policy, offer = policy_and_quote
    assert ride_part(offer.line_items) >= policy.minimum_fare


@given(quotes(), measurements)
def test_final_fare_ride_part_is_at_least_the_minimum_fare(
    policy_and_quote: tuple[FarePolicy, Quote], measured: TripMeasurement
) -> None:
    policy, offer = policy_and_quote
    assert ride_part(final_fare(policy, offer, measured).line_items) >= policy.minimum_fare


@given(quotes())
def test_quote_surge_never_exceeds_the_cap(policy_and_quote: tuple[FarePolicy, Quote]) -> None:
    policy, offer = policy_and_quote
    assert 1 <= offer.surge_multiplier <= policy.surge_cap
    unsurged = sum(amounts_by_code(offer.line_items)[c] for c in ("base_fare", "distance", "time"))
    surge = amounts_by_code(offer.line_items).get(SURGE, 0)
    assert surge <= round(unsurged * Fraction(policy.surge_cap - 1))


@given(st.data(), quotes())
def test_final_fare_is_the_quote_within_tolerance(
    data: st.DataObject, policy_and_quote: tuple[FarePolicy, Quote]
) -> None:
    policy, offer = policy_and_quote
    tolerance = policy.deviation_tolerance
    measured = TripMeasurement(
        distance_m=data.draw(within_tolerance(offer.estimate.distance_m, tolerance)),
        duration_s=data.draw(within_tolerance(offer.estimate.duration_s, tolerance)),
        waiting_s=data.draw(st.integers(min_value=0, max_value=policy.waiting_grace_s)),
    )
    fare = final_fare(policy, offer, measured)
    assert (fare.basis, fare.total) == ("upfront", offer.total)


@given(quotes(), measurements)
def test_final_fare_is_the_quote_of_the_trip_it_priced_plus_waiting(
    policy_and_quote: tuple[FarePolicy, Quote], measured: TripMeasurement
) -> None:
    policy, offer = policy_and_quote
    fare = final_fare(policy, offer, measured)
    waiting = amounts_by_code(fare.line_items).get(WAITING, 0)
    priced = offer
    if fare.basis == "metered":
        trip = TripEstimate(measured.distance_m, measured.duration_s)
        priced = quote(policy, trip, surge=offer.surge_multiplier, zones=offer.zones, now=NOW)
    assert fare.total.amount == priced.total.amount + waiting
