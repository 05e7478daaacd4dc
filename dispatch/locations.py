"""Driver location updates and the checks each one passes before it reaches live state.

Pure: an update, the last accepted update of the same driver, ``now`` and limits in; a
decision out. Called for every ping (about 10k a second at city scale), so it uses plain
float arithmetic and no numpy.

The checks, in order, each with the ``reason_code`` of its rejection:

- ``coordinates-out-of-range``: latitude outside +-85.05112878 degrees (the poles cannot
  be stored in Redis' geo index; no road-going driver is there) or longitude outside
  [-180, 180], or either not a finite number.
- ``heading-out-of-range`` (not in [0, 360]), ``speed-out-of-range`` (negative or not
  finite), ``accuracy-out-of-range`` (negative or not finite): a device that has no
  value sends none rather than a sentinel such as -1.
- ``timestamp-without-timezone``: ``recorded_at`` must be timezone-aware.
- ``timestamp-in-future``: recorded more than ``max_clock_skew_s`` after ``now``.
- ``timestamp-stale``: recorded more than ``max_age_s`` before ``now``.
- ``impossible-speed``: the reported speed is above ``max_speed_mps``.
- ``out-of-order``: not recorded after the previous accepted update.
- ``impossible-speed``: the speed implied by the distance from the previous accepted
  update is above ``max_speed_mps``. Both fixes may be off by their accuracy radius, so
  the distance is first shortened by the two radii (a missing radius counts as
  ``default_accuracy_m``; together at most ``max_accuracy_slack_m``, so that a
  claimed accuracy of kilometres cannot excuse a teleport).

The jump check only compares with a previous update recorded at most
``jump_check_window_s`` earlier. Without that bound one wrong fix, once accepted, would
make every true position after it look like a jump for hours; with it, a driver is
locked out for at most that window.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from dispatch.matching import EARTH_RADIUS_M

# Redis stores geo points as web-mercator geohashes, which stop at this latitude.
MAX_ABS_LATITUDE = 85.05112878

RejectionCode = Literal[
    "coordinates-out-of-range",
    "heading-out-of-range",
    "speed-out-of-range",
    "accuracy-out-of-range",
    "timestamp-without-timezone",
    "timestamp-in-future",
    "timestamp-stale",
    "out-of-order",
    "impossible-speed",
]


@dataclass(frozen=True, slots=True)
class LocationUpdate:
    lat: float
    lng: float
    heading_deg: float | None
    speed_mps: float | None
    accuracy_m: float | None
    recorded_at: datetime


@dataclass(frozen=True, slots=True)
class LocationLimits:
    # Phones keep their clocks within a second or two of true time; a fix is stamped by
    # the GPS chip, so a few seconds ahead of the server means a wrong clock.
    max_clock_skew_s: float = 5.0
    # A position older than the liveness window says nothing about where the driver is.
    max_age_s: float = 30.0
    # 252 km/h: above any road vehicle a driver may use, below a GPS jump across a city.
    max_speed_mps: float = 70.0
    default_accuracy_m: float = 20.0
    max_accuracy_slack_m: float = 200.0
    jump_check_window_s: float = 120.0

    def __post_init__(self) -> None:
        for name in (
            "max_clock_skew_s",
            "max_age_s",
            "max_speed_mps",
            "default_accuracy_m",
            "max_accuracy_slack_m",
            "jump_check_window_s",
        ):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0")


DEFAULT_LIMITS = LocationLimits()


@dataclass(frozen=True, slots=True)
class Accepted:
    update: LocationUpdate


@dataclass(frozen=True, slots=True)
class Rejected:
    reason_code: RejectionCode
    detail: str


def haversine_m(lat1: float, lng1: float, lat2: float, lng2: float) -> float:
    """Great-circle metres between two (lat, lng) points in degrees.

    The scalar twin of :func:`dispatch.matching.haversine_m`, which works on arrays: for
    one pair, numpy's call overhead costs more than the arithmetic.
    """
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    half_chord = (
        math.sin((phi2 - phi1) / 2) ** 2
        + math.cos(phi1) * math.cos(phi2) * math.sin(math.radians(lng2 - lng1) / 2) ** 2
    )
    return 2 * EARTH_RADIUS_M * math.asin(math.sqrt(min(1.0, half_chord)))


def storable_coordinates(lat: float, lng: float) -> bool:
    """Whether (lat, lng) is a real point that Redis' geo index can hold."""
    return (
        math.isfinite(lat)
        and math.isfinite(lng)
        and -MAX_ABS_LATITUDE <= lat <= MAX_ABS_LATITUDE
        and -180.0 <= lng <= 180.0
    )


def validate_update(
    update: LocationUpdate,
    previous: LocationUpdate | None,
    now: datetime,
    limits: LocationLimits = DEFAULT_LIMITS,
) -> Accepted | Rejected:
    """Accepts ``update`` or says why not, by the checks in the module docstring.

    ``previous`` is the driver's last *accepted* update (``None`` for the first one after
    going online); ``now`` is the server's timezone-aware time of receipt. Raises
    ``ValueError`` only for a naive ``now``, which is a programming error.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if not storable_coordinates(update.lat, update.lng):
        return Rejected(
            "coordinates-out-of-range",
            f"({update.lat}, {update.lng}) is not a latitude within +-{MAX_ABS_LATITUDE} "
            "and a longitude within +-180",
        )
    heading = update.heading_deg
    if heading is not None and not (math.isfinite(heading) and 0.0 <= heading <= 360.0):
        return Rejected("heading-out-of-range", f"heading {heading} is not within 0..360 degrees")
    speed = update.speed_mps
    if speed is not None and not (math.isfinite(speed) and speed >= 0.0):
        return Rejected("speed-out-of-range", f"speed {speed} m/s is not a number >= 0")
    accuracy = update.accuracy_m
    if accuracy is not None and not (math.isfinite(accuracy) and accuracy >= 0.0):
        return Rejected("accuracy-out-of-range", f"accuracy {accuracy} m is not a number >= 0")
    if update.recorded_at.tzinfo is None:
        return Rejected("timestamp-without-timezone", "recorded_at needs a UTC offset")

    age_s = (now - update.recorded_at).total_seconds()
    if -age_s > limits.max_clock_skew_s:
        return Rejected(
            "timestamp-in-future",
            f"recorded {-age_s:.1f} s after the server's time "
            f"(allowance {limits.max_clock_skew_s:g} s)",
        )
    if age_s > limits.max_age_s:
        return Rejected(
            "timestamp-stale",
            f"recorded {age_s:.1f} s ago (limit {limits.max_age_s:g} s)",
        )
    if speed is not None and speed > limits.max_speed_mps:
        return Rejected(
            "impossible-speed",
            f"reported speed {speed:.1f} m/s is above {limits.max_speed_mps:g} m/s",
        )
    if previous is None:
        return Accepted(update)

    elapsed_s = (update.recorded_at - previous.recorded_at).total_seconds()
    if elapsed_s <= 0:
        return Rejected(
            "out-of-order",
            f"recorded {-elapsed_s:.1f} s before or at the previous update",
        )
    if elapsed_s > limits.jump_check_window_s:
        return Accepted(update)
    slack_m = min(
        limits.max_accuracy_slack_m,
        (limits.default_accuracy_m if accuracy is None else accuracy)
        + (limits.default_accuracy_m if previous.accuracy_m is None else previous.accuracy_m),
    )
    distance_m = haversine_m(previous.lat, previous.lng, update.lat, update.lng)
    implied_mps = max(0.0, distance_m - slack_m) / elapsed_s
    if implied_mps > limits.max_speed_mps:
        return Rejected(
            "impossible-speed",
            f"moved {distance_m:.0f} m in {elapsed_s:.1f} s ({implied_mps:.1f} m/s beyond "
            f"GPS accuracy; limit {limits.max_speed_mps:g} m/s)",
        )
    return Accepted(update)


def jump_from(
    anchor: LocationUpdate, update: LocationUpdate, limits: LocationLimits = DEFAULT_LIMITS
) -> Rejected | None:
    """Whether getting from ``anchor`` to ``update`` was physically impossible, when the
    two were not stamped by the same clock: ``anchor`` is a position the server stamped
    (where the driver went online) or one an earlier connection stored, ``update`` comes
    from the device or the server. The clock-skew allowance is added to the elapsed time,
    so only a jump impossible whatever the clocks' difference is refused; beyond
    ``jump_check_window_s`` anything goes, as in :func:`validate_update`."""
    elapsed_s = (update.recorded_at - anchor.recorded_at).total_seconds()
    elapsed_s = max(1.0, elapsed_s + limits.max_clock_skew_s)
    if elapsed_s > limits.jump_check_window_s:
        return None
    slack_m = min(
        limits.max_accuracy_slack_m,
        (limits.default_accuracy_m if update.accuracy_m is None else update.accuracy_m)
        + (limits.default_accuracy_m if anchor.accuracy_m is None else anchor.accuracy_m),
    )
    distance_m = haversine_m(anchor.lat, anchor.lng, update.lat, update.lng)
    implied_mps = max(0.0, distance_m - slack_m) / elapsed_s
    if implied_mps <= limits.max_speed_mps:
        return None
    return Rejected(
        "impossible-speed",
        f"{distance_m:.0f} m from the last known position in {elapsed_s:.0f} s "
        f"({implied_mps:.1f} m/s; limit {limits.max_speed_mps:g} m/s)",
    )
