from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dispatch.matching import EARTH_RADIUS_M, haversine_m
from dispatch.regions import (
    REGION_RESOLUTION,
    is_region,
    region_centre,
    region_of,
    regions_near,
)

TIMES_SQUARE = (40.7580, -73.9855)

latitudes = st.floats(min_value=-70, max_value=70)
longitudes = st.floats(min_value=-180, max_value=180)


def destination(
    lat: float, lng: float, bearing_deg: float, distance_m: float
) -> tuple[float, float]:
    """The point ``distance_m`` from (lat, lng) along ``bearing_deg``, on a sphere."""
    phi, lam, theta = math.radians(lat), math.radians(lng), math.radians(bearing_deg)
    delta = distance_m / EARTH_RADIUS_M
    phi2 = math.asin(
        math.sin(phi) * math.cos(delta) + math.cos(phi) * math.sin(delta) * math.cos(theta)
    )
    lam2 = lam + math.atan2(
        math.sin(theta) * math.sin(delta) * math.cos(phi),
        math.cos(delta) - math.sin(phi) * math.sin(phi2),
    )
    return math.degrees(phi2), (math.degrees(lam2) + 540.0) % 360.0 - 180.0


def test_a_point_falls_in_a_region_at_the_coarse_resolution() -> None:
    region = region_of(*TIMES_SQUARE)

    assert is_region(region)
    assert not is_region(region, REGION_RESOLUTION + 1)


def test_nearby_points_share_a_region() -> None:
    assert region_of(*TIMES_SQUARE) == region_of(40.7585, -73.9850)


def test_a_region_centre_is_within_one_cell_of_its_points() -> None:
    centre = region_centre(region_of(*TIMES_SQUARE))

    distance = haversine_m(np.array([TIMES_SQUARE]), np.array([centre]))[0]

    assert distance < 30_000


def test_a_region_centre_needs_a_real_cell() -> None:
    with pytest.raises(ValueError, match="not an H3 cell"):
        region_centre("not-a-cell")


def test_a_finer_resolution_gives_a_different_cell() -> None:
    assert region_of(*TIMES_SQUARE, resolution=7) != region_of(*TIMES_SQUARE)


@pytest.mark.parametrize(("lat", "lng"), [(91.0, 0.0), (0.0, 181.0), (math.nan, 0.0)])
def test_out_of_range_coordinates_have_no_region(lat: float, lng: float) -> None:
    with pytest.raises(ValueError, match="invalid coordinates"):
        region_of(lat, lng)


def test_a_zero_radius_reaches_only_the_own_region() -> None:
    assert regions_near(*TIMES_SQUARE, 0.0) == {region_of(*TIMES_SQUARE)}


@given(
    lat=latitudes,
    lng=longitudes,
    radius_m=st.floats(min_value=0, max_value=40_000),
    bearing=st.floats(min_value=0, max_value=360),
    fraction=st.floats(min_value=0, max_value=1),
)
def test_regions_near_cover_every_point_within_the_radius(
    lat: float, lng: float, radius_m: float, bearing: float, fraction: float
) -> None:
    reached = regions_near(lat, lng, radius_m)

    assert region_of(*destination(lat, lng, bearing, radius_m * fraction)) in reached


@given(lat=latitudes, lng=longitudes, radius_m=st.floats(min_value=0, max_value=20_000))
def test_regions_near_keep_only_regions_the_radius_reaches(
    lat: float, lng: float, radius_m: float
) -> None:
    # A cell is at most about 60 km across at this resolution, so a region whose centre
    # is farther than radius + 60 km cannot be within the radius.
    reached = regions_near(lat, lng, radius_m)

    centres = np.array([region_centre(region) for region in reached])
    distances = haversine_m(np.repeat([[lat, lng]], len(centres), axis=0), centres)
    assert (distances <= radius_m + 60_000).all()


def test_regions_near_refuse_a_negative_radius() -> None:
    with pytest.raises(ValueError, match="radius_m"):
        regions_near(*TIMES_SQUARE, -1.0)
