"""Dispatch regions: H3 cells at a coarse resolution. Pure.

Each region is matched by exactly one dispatcher at a time (under a lease), so the
resolution trades parallelism against borders: a request near a border still needs the
drivers across it. At resolution 4 a cell is about 1,770 km² (edges about 26 km), so a
city is a handful of regions, a region's window at peak is well within the solver's
budget (10k requests x 20k drivers in well under a second), and few requests lie within a
matching radius of a border. :func:`regions_near` names the regions a search reaches.
"""

from __future__ import annotations

import math
from collections import deque

import h3

from dispatch.matching import EARTH_RADIUS_M, require_coordinates

REGION_RESOLUTION = 4


def region_of(lat: float, lng: float, resolution: int = REGION_RESOLUTION) -> str:
    """The H3 cell (hex string) at ``resolution`` that contains the point.

    Raises ``ValueError`` for coordinates out of range or a resolution outside 0..15.
    """
    require_coordinates(lat, lng)
    if not 0 <= resolution <= 15:
        raise ValueError("H3 resolutions are 0..15")
    return str(h3.latlng_to_cell(lat, lng, resolution))


def is_region(value: str, resolution: int = REGION_RESOLUTION) -> bool:
    """Whether ``value`` is a valid H3 cell at ``resolution`` (e.g. a region lease key)."""
    return bool(h3.is_valid_cell(value)) and int(h3.get_resolution(value)) == resolution


def region_centre(region: str) -> tuple[float, float]:
    """The (lat, lng) of the region's centre. Raises ``ValueError`` for an invalid cell."""
    if not h3.is_valid_cell(region):
        raise ValueError(f"{region!r} is not an H3 cell")
    lat, lng = h3.cell_to_latlng(region)
    return float(lat), float(lng)


def regions_near(
    lat: float, lng: float, radius_m: float, resolution: int = REGION_RESOLUTION
) -> frozenset[str]:
    """Every region with some point within ``radius_m`` of the given point (its own
    region included): where a dispatcher must look for drivers of a request there.

    Cells are walked outwards from the point's own and kept while their boundary comes
    within the radius. Distances use a local plane around the point, whose error grows
    with latitude and distance (about 1.7 % at 40 km and 70 degrees); a 3 % margin keeps
    it from ever dropping a region, at the price of sometimes one region too many.
    """
    if not (math.isfinite(radius_m) and radius_m >= 0):
        raise ValueError("radius_m must be a finite number >= 0")
    origin = region_of(lat, lng, resolution)
    reach = radius_m * 1.03 + 10.0
    found = {origin}
    pending = deque([origin])
    while pending:
        cell = pending.popleft()
        # grid_disk, unlike grid_ring, also works next to H3's twelve pentagons.
        for neighbour in h3.grid_disk(cell, 1):
            if neighbour in found:
                continue
            if _distance_to_cell_m(lat, lng, neighbour) <= reach:
                found.add(neighbour)
                pending.append(neighbour)
    return frozenset(str(cell) for cell in found)


def _distance_to_cell_m(lat: float, lng: float, cell: str) -> float:
    # Planar distance from the point to the cell's boundary polygon (0 inside it).
    cos_lat = math.cos(math.radians(lat))
    corners = [
        (
            EARTH_RADIUS_M * math.radians(((c_lng - lng + 180.0) % 360.0) - 180.0) * cos_lat,
            EARTH_RADIUS_M * math.radians(c_lat - lat),
        )
        for c_lat, c_lng in h3.cell_to_boundary(cell)
    ]
    edges = list(zip(corners, corners[1:] + corners[:1], strict=True))
    if _contains_origin(edges):
        return 0.0
    return min(_distance_to_segment(a, b) for a, b in edges)


def _contains_origin(edges: list[tuple[tuple[float, float], tuple[float, float]]]) -> bool:
    inside = False
    for (x1, y1), (x2, y2) in edges:
        if (y1 > 0) != (y2 > 0) and x1 - y1 * (x2 - x1) / (y2 - y1) > 0:
            inside = not inside
    return inside


def _distance_to_segment(a: tuple[float, float], b: tuple[float, float]) -> float:
    (ax, ay), (bx, by) = a, b
    dx, dy = bx - ax, by - ay
    length_sq = dx * dx + dy * dy
    t = 0.0 if length_sq == 0 else max(0.0, min(1.0, -(ax * dx + ay * dy) / length_sq))
    return math.hypot(ax + t * dx, ay + t * dy)
