from __future__ import annotations

import dataclasses
import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dispatch import matching
from dispatch.locations import (
    MAX_ABS_LATITUDE,
    Accepted,
    LocationLimits,
    LocationUpdate,
    Rejected,
    haversine_m,
    validate_update,
)

NOW = datetime(2025, 6, 1, 18, 0, tzinfo=UTC)
TIMES_SQUARE = (40.7580, -73.9855)
# About 111 m of latitude.
ONE_THOUSANDTH_DEGREE_M = 111.2

latitudes = st.floats(min_value=-85, max_value=85)
longitudes = st.floats(min_value=-180, max_value=180)


def update(
    lat: float = TIMES_SQUARE[0],
    lng: float = TIMES_SQUARE[1],
    *,
    seconds_ago: float = 1.0,
    heading_deg: float | None = 90.0,
    speed_mps: float | None = 8.0,
    accuracy_m: float | None = 5.0,
) -> LocationUpdate:
    return LocationUpdate(
        lat=lat,
        lng=lng,
        heading_deg=heading_deg,
        speed_mps=speed_mps,
        accuracy_m=accuracy_m,
        recorded_at=NOW - timedelta(seconds=seconds_ago),
    )


def reason(result: Accepted | Rejected) -> str:
    assert isinstance(result, Rejected), result
    return result.reason_code


def test_a_plausible_first_update_is_accepted() -> None:
    fresh = update()

    assert validate_update(fresh, None, NOW) == Accepted(fresh)


def test_a_plausible_next_update_is_accepted() -> None:
    previous = update(seconds_ago=5)
    # About 40 m in 4 s: 10 m/s.
    following = update(TIMES_SQUARE[0] + 0.00036, seconds_ago=1)

    assert isinstance(validate_update(following, previous, NOW), Accepted)


def test_unknown_optional_fields_are_accepted() -> None:
    bare = update(heading_deg=None, speed_mps=None, accuracy_m=None)

    assert isinstance(validate_update(bare, update(seconds_ago=5), NOW), Accepted)


@pytest.mark.parametrize(
    ("lat", "lng"),
    [
        (90.0, 0.0),
        (-86.0, 0.0),
        (MAX_ABS_LATITUDE + 1e-6, 0.0),
        (0.0, 180.5),
        (0.0, -181.0),
        (math.nan, 0.0),
        (0.0, math.inf),
    ],
)
def test_coordinates_out_of_range_are_rejected(lat: float, lng: float) -> None:
    assert reason(validate_update(update(lat, lng), None, NOW)) == "coordinates-out-of-range"


def test_the_extreme_storable_coordinates_are_accepted() -> None:
    for lat, lng in [(MAX_ABS_LATITUDE, 180.0), (-MAX_ABS_LATITUDE, -180.0)]:
        assert isinstance(validate_update(update(lat, lng), None, NOW), Accepted)


@pytest.mark.parametrize("heading", [-1.0, 360.5, math.nan])
def test_a_heading_outside_a_circle_is_rejected(heading: float) -> None:
    result = validate_update(update(heading_deg=heading), None, NOW)

    assert reason(result) == "heading-out-of-range"


@pytest.mark.parametrize("speed", [-1.0, math.nan, math.inf])
def test_a_negative_or_unreal_speed_is_rejected(speed: float) -> None:
    assert reason(validate_update(update(speed_mps=speed), None, NOW)) == "speed-out-of-range"


@pytest.mark.parametrize("accuracy", [-5.0, math.nan])
def test_a_negative_or_unreal_accuracy_is_rejected(accuracy: float) -> None:
    result = validate_update(update(accuracy_m=accuracy), None, NOW)

    assert reason(result) == "accuracy-out-of-range"


def test_a_naive_timestamp_is_rejected() -> None:
    naive = dataclasses.replace(update(), recorded_at=datetime(2025, 6, 1, 18, 0))  # noqa: DTZ001

    assert reason(validate_update(naive, None, NOW)) == "timestamp-without-timezone"


def test_a_naive_now_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        validate_update(update(), None, datetime(2025, 6, 1, 18, 0))  # noqa: DTZ001


def test_a_timestamp_within_the_clock_skew_allowance_is_accepted() -> None:
    ahead = update(seconds_ago=-LocationLimits().max_clock_skew_s)

    assert isinstance(validate_update(ahead, None, NOW), Accepted)


def test_a_timestamp_beyond_the_clock_skew_allowance_is_rejected() -> None:
    ahead = update(seconds_ago=-(LocationLimits().max_clock_skew_s + 0.5))

    assert reason(validate_update(ahead, None, NOW)) == "timestamp-in-future"


def test_a_timestamp_at_the_age_limit_is_accepted() -> None:
    old = update(seconds_ago=LocationLimits().max_age_s)

    assert isinstance(validate_update(old, None, NOW), Accepted)


def test_a_timestamp_older_than_the_age_limit_is_rejected() -> None:
    old = update(seconds_ago=LocationLimits().max_age_s + 0.5)

    assert reason(validate_update(old, None, NOW)) == "timestamp-stale"


def test_the_limits_are_configurable() -> None:
    limits = LocationLimits(max_age_s=60)

    assert isinstance(validate_update(update(seconds_ago=45), None, NOW, limits), Accepted)


def test_limits_refuse_negative_values() -> None:
    with pytest.raises(ValueError, match="max_speed_mps"):
        LocationLimits(max_speed_mps=-1)


def test_an_update_older_than_the_previous_is_out_of_order() -> None:
    previous = update(seconds_ago=2)

    assert reason(validate_update(update(seconds_ago=3), previous, NOW)) == "out-of-order"


def test_a_repeated_timestamp_is_out_of_order() -> None:
    previous = update(seconds_ago=2)

    assert reason(validate_update(update(seconds_ago=2), previous, NOW)) == "out-of-order"


def test_a_reported_speed_above_the_limit_is_impossible() -> None:
    result = validate_update(update(speed_mps=LocationLimits().max_speed_mps + 1), None, NOW)

    assert reason(result) == "impossible-speed"


def test_a_jump_across_the_city_is_impossible() -> None:
    previous = update(seconds_ago=5)
    # About 11 km north in 4 s.
    jumped = update(TIMES_SQUARE[0] + 0.1, seconds_ago=1)

    result = validate_update(jumped, previous, NOW)

    assert reason(result) == "impossible-speed"
    assert isinstance(result, Rejected)
    assert "m/s" in result.detail


def test_gps_accuracy_excuses_a_small_jitter() -> None:
    previous = update(seconds_ago=2, accuracy_m=30)
    # About 100 m in 1 s, within the two fixes' 60 m of combined error plus 70 m/s.
    jittered = update(TIMES_SQUARE[0] + 0.0009, seconds_ago=1, accuracy_m=30)

    assert isinstance(validate_update(jittered, previous, NOW), Accepted)


def test_the_same_jump_without_accuracy_slack_is_impossible() -> None:
    previous = update(seconds_ago=2, accuracy_m=0)
    jumped = update(TIMES_SQUARE[0] + 0.0009, seconds_ago=1, accuracy_m=0)

    assert reason(validate_update(jumped, previous, NOW)) == "impossible-speed"


def test_a_huge_claimed_accuracy_does_not_excuse_a_teleport() -> None:
    previous = update(seconds_ago=5, accuracy_m=50_000)
    jumped = update(TIMES_SQUARE[0] + 0.1, seconds_ago=1, accuracy_m=50_000)

    assert reason(validate_update(jumped, previous, NOW)) == "impossible-speed"


def test_a_missing_accuracy_counts_as_the_default() -> None:
    limits = LocationLimits(default_accuracy_m=60)
    previous = update(seconds_ago=2, accuracy_m=None)
    jittered = update(TIMES_SQUARE[0] + 0.0015, seconds_ago=1, accuracy_m=None)

    assert isinstance(validate_update(jittered, previous, NOW, limits), Accepted)
    assert reason(validate_update(jittered, previous, NOW)) == "impossible-speed"


def test_a_jump_after_the_check_window_is_accepted() -> None:
    limits = LocationLimits(max_age_s=600, jump_check_window_s=120)
    wrong_fix = update(seconds_ago=200)
    true_position = update(TIMES_SQUARE[0] + 0.1, seconds_ago=1)

    assert isinstance(validate_update(true_position, wrong_fix, NOW, limits), Accepted)


@given(latitudes, longitudes, latitudes, longitudes)
def test_haversine_is_symmetric_and_non_negative(
    lat1: float, lng1: float, lat2: float, lng2: float
) -> None:
    there = haversine_m(lat1, lng1, lat2, lng2)

    assert there >= 0
    assert there == pytest.approx(haversine_m(lat2, lng2, lat1, lng1), abs=1e-6)
    assert there <= math.pi * matching.EARTH_RADIUS_M + 1e-6


@given(latitudes, longitudes, latitudes, longitudes, latitudes, longitudes)
def test_haversine_obeys_the_triangle_inequality(
    lat1: float, lng1: float, lat2: float, lng2: float, lat3: float, lng3: float
) -> None:
    direct = haversine_m(lat1, lng1, lat3, lng3)
    detour = haversine_m(lat1, lng1, lat2, lng2) + haversine_m(lat2, lng2, lat3, lng3)

    # Near antipodes arcsin magnifies rounding to a few centimetres.
    assert direct <= detour + 0.1


@given(latitudes, longitudes, latitudes, longitudes)
def test_haversine_agrees_with_the_matchers_vectorised_one(
    lat1: float, lng1: float, lat2: float, lng2: float
) -> None:
    expected = matching.haversine_m(np.array([[lat1, lng1]]), np.array([[lat2, lng2]]))[0]

    assert haversine_m(lat1, lng1, lat2, lng2) == pytest.approx(expected, rel=1e-9, abs=0.1)


def test_haversine_of_a_point_with_itself_is_zero() -> None:
    assert haversine_m(*TIMES_SQUARE, *TIMES_SQUARE) == 0.0


def test_a_thousandth_of_a_degree_of_latitude_is_about_111_metres() -> None:
    distance = haversine_m(0.0, 0.0, 0.001, 0.0)

    assert distance == pytest.approx(ONE_THOUSANDTH_DEGREE_M, rel=1e-3)
