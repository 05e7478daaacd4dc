"""Dispatch's rules: zones and the service area, quotes, and the trip state machine.

Services flush, never commit. Every transition of a ride reads it, checks who may do it
from which state (for a precise error), then writes it with a compare-and-set on the
status and version it read, with the same guard in the UPDATE's WHERE; a ride that moved
meanwhile is read again and checked again. Each transition appends a ``ride_events`` row
and records a domain event for the rider and the driver, sent after the commit.

Thresholds (module constants):

- arrival counts only within ``ARRIVAL_RADIUS_M`` (150 m) of the pickup;
- ``PIN_ATTEMPTS`` (5) wrong PINs per ride, then the trip cannot be started;
- a no-show may be declared once the driver has waited the policy's ``waiting_grace_s``
  (the same grace after which the no-show fee is due);
- a trip's distance is the length (on the spheroid) of the line through its breadcrumbs
  in time order, when there are at least ``MIN_TRACK_POINTS`` (3) of them spanning at
  least ``MIN_TRACK_COVERAGE`` (half) of the trip's time; otherwise the quote's
  estimate. Its time is the server's, from start to completion;
- surge is 1 until demand pricing exists.
"""

from __future__ import annotations

import math
import secrets
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Literal, Protocol, cast, get_args

import shapely
from redis.asyncio import Redis
from shapely.geometry import MultiPolygon, Polygon, shape
from shapely.validation import explain_validity
from sqlalchemy.ext.asyncio import AsyncSession

from dispatch.errors import (
    CancellationFeeChanged,
    DriverExcluded,
    DriverNotAtPickup,
    NoShowTooEarly,
    NotRideDriver,
    PinAttemptsExhausted,
    QuoteAlreadyUsed,
    QuoteExpired,
    QuoteNotFound,
    RideAlreadyOpen,
    RideAlreadyRated,
    RideNotFound,
    RideOutsideServiceArea,
    RideRequestKeyReused,
    RideStateConflict,
    WrongPin,
    ZoneGeometryInvalid,
)
from dispatch.events import (
    DriverArrived,
    DriverAssigned,
    DriverCancelled,
    MatchingStarted,
    NoDriverFound,
    RideCancelled,
    RideDomainEvent,
    RidePaymentFailed,
    RideRated,
    RideRequested,
    RiderNoShow,
    TripCompleted,
    TripStarted,
)
from dispatch.locations import haversine_m
from dispatch.matching import OpenRequest, StraightLineEta
from dispatch.models import Quote, Ride, RideEvent, RideStatus, Zone
from dispatch.regions import region_of, regions_near
from dispatch.repository import (
    QuoteRepository,
    RideGuard,
    RideRepository,
    ZoneRepository,
    area_value,
    coordinates,
    point_value,
)
from dispatch.schemas import (
    CancellationPreview,
    Point,
    QuoteCreate,
    QuoteFare,
    QuoteRead,
    RideRead,
    RideStatusName,
    ZoneCreate,
    ZoneRead,
)
from infra import ratelimit
from infra.clock import Clock
from infra.events import EventBuffer
from infra.ids import new_id
from payments import pricing
from payments.money import Money
from payments.policies import FarePolicyService
from payments.policy import FarePolicy
from payments.pricing import Fare, FareSplit, LineItem, TripEstimate, TripMeasurement
from payments.schemas import FareRead, LineItemRead

R = RideStatus

ARRIVAL_RADIUS_M = 150.0
PIN_ATTEMPTS = 5
# Long enough to outlast any pickup: the count must not reset while the ride can start.
PIN_ATTEMPTS_WINDOW_S = 6 * 3600
# Until demand pricing exists, every quote is at the base price.
SURGE = Decimal(1)
# Where a quote looks for available drivers to tell the pickup ETA.
QUOTE_DRIVER_RADIUS_M = 5_000.0
QUOTE_DRIVER_COUNT = 3
# A trip's distance comes from its breadcrumbs only when there are enough of them and
# they span enough of the trip; otherwise (app offline, GPS lost) from the estimate.
MIN_TRACK_POINTS = 3
MIN_TRACK_COVERAGE = 0.5
# A transition that keeps losing races gives up with a conflict instead of spinning.
TRANSITION_ATTEMPTS = 3

CANCELLABLE_BY_RIDER = (R.requested, R.matching, R.driver_assigned, R.driver_arrived)
CANCELLABLE_BY_DRIVER = (R.driver_assigned, R.driver_arrived)

ActorRole = Literal["rider", "driver", "system"]


# Routing.


class RouteModel(Protocol):
    """Road distances and times. ``StraightLineRoutes`` stands in until a routing engine
    is configured; an engine would also want the drivers' positions for pickup ETAs."""

    def trip(self, pickup: Point, dropoff: Point) -> TripEstimate: ...

    def pickup_eta_s(self, straight_line_m: float) -> int: ...


@dataclass(frozen=True, slots=True)
class StraightLineRoutes:
    """The matcher's city figures (``dispatch.matching.StraightLineEta``): road distance
    is the great-circle distance times the detour factor, driven at the average speed."""

    eta: StraightLineEta = field(default_factory=StraightLineEta)

    def trip(self, pickup: Point, dropoff: Point) -> TripEstimate:
        road_m = self._road_m(haversine_m(pickup.lat, pickup.lng, dropoff.lat, dropoff.lng))
        return TripEstimate(distance_m=round(road_m), duration_s=self._seconds(road_m))

    def pickup_eta_s(self, straight_line_m: float) -> int:
        return self._seconds(self._road_m(straight_line_m))

    def _road_m(self, straight_line_m: float) -> float:
        return straight_line_m * self.eta.detour_factor

    def _seconds(self, road_m: float) -> int:
        return math.ceil(road_m / (self.eta.speed_kmh / 3.6))


class NearbyDriver(Protocol):
    @property
    def distance_m(self) -> float: ...


class NearbyDrivers(Protocol):
    """The live index of available drivers (``dispatch.live.LiveState``)."""

    async def nearest_available(
        self,
        regions: Iterable[str],
        lat: float,
        lng: float,
        radius_m: float,
        k: int,
        now: datetime,
    ) -> Sequence[NearbyDriver]: ...


# Conversions between what is stored and what is read.


def quote_fare(quote: pricing.Quote) -> QuoteFare:
    return QuoteFare(
        policy_id=quote.policy_id,
        policy_version=quote.policy_version,
        basis="upfront",
        currency=quote.currency,
        total=quote.total.amount,
        line_items=[_line_item_read(item) for item in quote.line_items],
        surge_multiplier=quote.surge_multiplier,
        zones=sorted(quote.zones),
    )


def priced_quote(row: Quote) -> pricing.Quote:
    """The pricing core's quote, as the row stored it: what a final fare is priced from."""
    stored = QuoteFare.model_validate(row.fare)
    return pricing.Quote(
        policy_id=stored.policy_id,
        policy_version=stored.policy_version,
        currency=stored.currency,
        line_items=_line_items(stored),
        total=Money(stored.total, stored.currency),
        surge_multiplier=stored.surge_multiplier,
        zones=frozenset(stored.zones),
        estimate=TripEstimate(row.estimated_distance_m, row.estimated_duration_s),
        quoted_at=row.created_at,
        expires_at=row.expires_at,
    )


def fare_json(fare: Fare) -> dict[str, Any]:
    return FareRead.of(fare).model_dump(mode="json")


def stored_fare(data: dict[str, Any]) -> Fare:
    stored = FareRead.model_validate(data)
    if stored.basis not in get_args(pricing.FareBasis):
        raise ValueError(f"a stored fare has an unknown basis {stored.basis!r}")
    return Fare(
        policy_id=stored.policy_id,
        policy_version=stored.policy_version,
        currency=stored.currency,
        basis=cast("pricing.FareBasis", stored.basis),
        line_items=_line_items(stored),
        total=Money(stored.total, stored.currency),
    )


def _line_item_read(item: LineItem) -> LineItemRead:
    return LineItemRead(code=item.code, description=item.description, amount=item.amount.amount)


def _line_items(fare: FareRead) -> tuple[LineItem, ...]:
    return tuple(
        LineItem(i.code, i.description, Money(i.amount, fare.currency)) for i in fare.line_items
    )


def _status_name(status: str) -> RideStatusName:
    return R(status).value


def _point(value: Any) -> Point:
    lat, lng = coordinates(value)
    return Point(lat=lat, lng=lng)


def ride_read(ride: Ride, quote: Quote, *, show_pin: bool) -> RideRead:
    return RideRead(
        id=ride.id,
        status=_status_name(ride.status),
        rider_id=ride.rider_id,
        driver_id=ride.driver_id,
        quote_id=ride.quote_id,
        region=ride.region,
        pickup=_point(ride.pickup),
        dropoff=_point(ride.dropoff),
        pin=ride.pin if show_pin else None,
        upfront_fare=QuoteFare.model_validate(quote.fare),
        final_fare=FareRead.model_validate(ride.final_fare) if ride.final_fare else None,
        distance_m=ride.distance_m,
        duration_s=ride.duration_s,
        requested_at=ride.requested_at,
        driver_assigned_at=ride.driver_assigned_at,
        driver_arrived_at=ride.driver_arrived_at,
        started_at=ride.started_at,
        ended_at=ride.ended_at,
        cancellation_reason=ride.cancellation_reason,
        rating=ride.rating,
    )


def quote_read(row: Quote) -> QuoteRead:
    return QuoteRead(
        id=row.id,
        pickup=_point(row.pickup),
        dropoff=_point(row.dropoff),
        fare=QuoteFare.model_validate(row.fare),
        estimated_distance_m=row.estimated_distance_m,
        estimated_duration_s=row.estimated_duration_s,
        pickup_eta_s=row.pickup_eta_s,
        created_at=row.created_at,
        expires_at=row.expires_at,
    )


# Zones.


def zone_area(geojson: dict[str, Any]) -> MultiPolygon:
    """A GeoJSON Polygon or MultiPolygon as a valid, non-empty 2-D MultiPolygon in
    longitude/latitude range; raises ``ZoneGeometryInvalid`` with the reason otherwise."""
    kind = geojson.get("type")
    if kind not in ("Polygon", "MultiPolygon"):
        raise ZoneGeometryInvalid(f"a zone is a Polygon or MultiPolygon, not {kind!r}")
    try:
        geometry = shape(geojson)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
        raise ZoneGeometryInvalid(f"the GeoJSON cannot be read: {exc}") from exc
    if geometry.is_empty:
        raise ZoneGeometryInvalid("the area is empty")
    if geometry.has_z:
        geometry = shapely.force_2d(geometry)
    min_lng, min_lat, max_lng, max_lat = geometry.bounds
    if not (-180 <= min_lng <= max_lng <= 180 and -90 <= min_lat <= max_lat <= 90):
        raise ZoneGeometryInvalid("coordinates are [longitude, latitude] in degrees, in range")
    if not geometry.is_valid:
        raise ZoneGeometryInvalid(f"the area is not a valid polygon: {explain_validity(geometry)}")
    if isinstance(geometry, Polygon):
        return MultiPolygon([geometry])
    if isinstance(geometry, MultiPolygon):
        return geometry
    raise ZoneGeometryInvalid(f"a zone is a Polygon or MultiPolygon, not {geometry.geom_type}")


class ZoneService:
    def __init__(self, session: AsyncSession, clock: Clock) -> None:
        self.repository = ZoneRepository(session)
        self.clock = clock

    async def create(self, body: ZoneCreate) -> ZoneRead:
        area = zone_area(body.area)
        zone = Zone(
            id=new_id(),
            code=body.code,
            kind=body.kind,
            name=body.name,
            area=area_value(area.wkt),
            active=True,
            created_at=self.clock.now(),
        )
        await self.repository.add(zone)
        [read] = await self._read(zone_id=zone.id)
        return read

    async def zones(self, kind: str | None = None) -> list[ZoneRead]:
        return await self._read(kind=kind)

    async def in_service_area(self, point: Point) -> bool:
        return await self.repository.covers_service_area(point.lat, point.lng)

    async def zones_at(self, point: Point) -> frozenset[str]:
        """The codes of the zones (other than the service area) the point lies in; fare
        policies key their zone surcharges by these codes."""
        return await self.repository.codes_at(point.lat, point.lng)

    async def _read(
        self, kind: str | None = None, zone_id: uuid.UUID | None = None
    ) -> list[ZoneRead]:
        return [
            ZoneRead(
                id=zone.id,
                code=zone.code,
                kind=zone.kind,
                name=zone.name,
                active=zone.active,
                area=geojson,
                created_at=zone.created_at,
            )
            for zone, geojson in await self.repository.with_geojson(kind, zone_id)
        ]


# Quotes.


class QuoteService:
    def __init__(
        self,
        session: AsyncSession,
        clock: Clock,
        drivers: NearbyDrivers | None,
        routes: RouteModel | None = None,
    ) -> None:
        self.session = session
        self.quotes = QuoteRepository(session)
        self.zones = ZoneService(session, clock)
        self.policies = FarePolicyService(session)
        self.clock = clock
        self.drivers = drivers
        self.routes = routes or StraightLineRoutes()

    async def create(self, rider_id: uuid.UUID, body: QuoteCreate) -> QuoteRead:
        for name, point in (("pickup", body.pickup), ("dropoff", body.dropoff)):
            if not await self.zones.in_service_area(point):
                raise RideOutsideServiceArea(
                    f"The {name} ({point.lat}, {point.lng}) is outside the service area",
                    point=name,
                )
        now = self.clock.now()
        zones = await self.zones.zones_at(body.pickup) | await self.zones.zones_at(body.dropoff)
        estimate = self.routes.trip(body.pickup, body.dropoff)
        policy = await self.policies.in_force(now)
        priced = pricing.quote(policy, estimate, surge=SURGE, zones=zones, now=now)
        row = Quote(
            id=new_id(),
            rider_id=rider_id,
            pickup=point_value(body.pickup.lat, body.pickup.lng),
            dropoff=point_value(body.dropoff.lat, body.dropoff.lng),
            policy_version_id=policy.id,
            total_amount=priced.total.amount,
            currency=priced.currency,
            fare=quote_fare(priced).model_dump(mode="json"),
            estimated_distance_m=estimate.distance_m,
            estimated_duration_s=estimate.duration_s,
            pickup_eta_s=await self.pickup_eta_s(body.pickup, now),
            created_at=priced.quoted_at,
            expires_at=priced.expires_at,
        )
        await self.quotes.add(row)
        return quote_read(row)

    async def pickup_eta_s(self, pickup: Point, now: datetime) -> int | None:
        """Seconds for the nearest available driver to reach the pickup, or None."""
        if self.drivers is None:
            return None
        nearest = await self.drivers.nearest_available(
            regions_near(pickup.lat, pickup.lng, QUOTE_DRIVER_RADIUS_M),
            pickup.lat,
            pickup.lng,
            QUOTE_DRIVER_RADIUS_M,
            QUOTE_DRIVER_COUNT,
            now,
        )
        if not nearest:
            return None
        return min(self.routes.pickup_eta_s(driver.distance_m) for driver in nearest)

    async def get(self, quote_id: uuid.UUID, rider_id: uuid.UUID) -> QuoteRead:
        row = await self.quotes.get(quote_id)
        if row is None or row.rider_id != rider_id:
            raise QuoteNotFound
        return quote_read(row)


# Rides.


class PinAttempts:
    """Wrong PINs per ride, counted in Redis: a refused start is not committed anywhere
    else, and the count only has to live as long as the pickup."""

    def __init__(self, redis: Redis, limit: int = PIN_ATTEMPTS) -> None:
        self.redis = redis
        self.limit = limit

    @staticmethod
    def key(ride_id: uuid.UUID) -> str:
        return f"ride:{ride_id}:wrong-pins"

    async def used(self, ride_id: uuid.UUID) -> int:
        value = await self.redis.get(self.key(ride_id))
        return int(value) if value is not None else 0

    async def wrong(self, ride_id: uuid.UUID) -> int:
        """Counts one wrong PIN; returns how many attempts are left."""
        result = await ratelimit.hit(
            self.redis, self.key(ride_id), self.limit, PIN_ATTEMPTS_WINDOW_S
        )
        return result.remaining


@dataclass(frozen=True, slots=True)
class RideCharge:
    """A ride at its end and what it costs: the final fare of a completed trip, or the
    fee of a cancellation or no-show (None when it is free), with its split."""

    ride: RideRead
    driver_id: uuid.UUID | None
    fare: Fare | None
    split: FareSplit | None


class RideService:
    def __init__(
        self, session: AsyncSession, clock: Clock, events: EventBuffer, redis: Redis
    ) -> None:
        self.session = session
        self.rides = RideRepository(session)
        self.quotes = QuoteRepository(session)
        self.policies = FarePolicyService(session)
        self.clock = clock
        self.events = events
        self.pins = PinAttempts(redis)

    # Requesting.

    async def find_request(
        self, rider_id: uuid.UUID, idempotency_key: str, quote_id: uuid.UUID
    ) -> RideRead | None:
        """The ride this rider already requested with this key, if any (a replay); the
        same key with another quote is a conflict."""
        ride = await self.rides.by_key(rider_id, idempotency_key)
        if ride is None:
            return None
        if ride.quote_id != quote_id:
            raise RideRequestKeyReused(
                f"Idempotency-Key {idempotency_key!r} requested ride {ride.id} with "
                f"quote {ride.quote_id}",
                ride_id=str(ride.id),
            )
        return await self._read(ride)

    async def request(
        self, rider_id: uuid.UUID, quote_id: uuid.UUID, idempotency_key: str
    ) -> tuple[RideRead, bool]:
        """Requests a ride from the rider's unexpired quote; returns it and whether it is
        new. The same key again returns the same ride, even when both requests race."""
        replayed = await self.find_request(rider_id, idempotency_key, quote_id)
        if replayed is not None:
            return replayed, False
        quote = await self.quotes.get(quote_id)
        if quote is None or quote.rider_id != rider_id:
            raise QuoteNotFound
        now = self.clock.now()
        if quote.expires_at <= now:
            raise QuoteExpired(f"The quote expired at {quote.expires_at.isoformat()}")
        lat, lng = coordinates(quote.pickup)
        ride = Ride(
            id=new_id(),
            rider_id=rider_id,
            quote_id=quote.id,
            idempotency_key=idempotency_key,
            status=R.requested.value,
            region=region_of(lat, lng),
            pickup=quote.pickup,
            dropoff=quote.dropoff,
            pin=f"{secrets.randbelow(10_000):04d}",
            excluded_driver_ids=[],
            requested_at=now,
            version=1,
        )
        refused_by = await self.rides.insert(ride)
        if refused_by is not None:
            # A concurrent request with the same key got there first: that is a replay.
            replayed = await self.find_request(rider_id, idempotency_key, quote_id)
            if replayed is not None:
                return replayed, False
            if refused_by == "uq_rides_quote_id":
                raise QuoteAlreadyUsed
            if refused_by == "uq_rides_one_open_per_rider":
                raise RideAlreadyOpen("Finish or cancel the ride under way first")
            raise RideStateConflict(f"the ride was refused by {refused_by}")
        await self._log(ride, None, "rider", rider_id, now, {"quote_id": str(quote.id)})
        read = await self._read(ride)
        self._emit(RideRequested, ride, now)
        return read, True

    # Reading.

    async def get(self, ride_id: uuid.UUID) -> RideRead:
        return await self._read(await self._ride(ride_id))

    async def read_for(self, ride_id: uuid.UUID, user_id: uuid.UUID) -> RideRead:
        """The ride as its rider (with the PIN) or its driver sees it; anyone else is told
        it does not exist."""
        ride = await self.rides.get(ride_id)
        if ride is None or user_id not in (ride.rider_id, ride.driver_id):
            raise RideNotFound
        return await self._read(ride, show_pin=user_id == ride.rider_id)

    async def history(
        self, rider_id: uuid.UUID, limit: int, before: datetime | None
    ) -> list[RideRead]:
        return [await self._read(r) for r in await self.rides.for_rider(rider_id, limit, before)]

    async def waiting_for_payment(self, limit: int) -> list[RideRead]:
        return [await self._read(r) for r in await self.rides.in_status(R.requested, limit)]

    async def open_requests(self, region: str, limit: int) -> list[OpenRequest]:
        """The region's rides in matching as the matcher takes them; each waits from when
        it last entered matching and excludes the drivers who gave it up."""
        requests = []
        for ride, since in await self.rides.open_in_region(region, limit):
            lat, lng = coordinates(ride.pickup)
            requests.append(
                OpenRequest(
                    id=ride.id,
                    lat=lat,
                    lng=lng,
                    requested_at=since,
                    excluded_driver_ids=frozenset(ride.excluded_driver_ids),
                )
            )
        return requests

    # Payment: requested -> matching | payment_failed.

    async def open_for_matching(self, ride_id: uuid.UUID) -> RideRead:
        """The payment is held: the ride goes to the dispatcher. A ride already past
        ``requested`` (moved by a concurrent promotion, or cancelled) is left as it is."""
        for _ in range(TRANSITION_ATTEMPTS):
            ride = await self._ride(ride_id)
            if ride.status != R.requested:
                return await self._read(ride)
            moved = await self._move(ride, R.matching, "system", None)
            if moved is not None:
                self._emit(MatchingStarted, moved, self.clock.now())
                return await self._read(moved)
        raise self._raced(ride_id)

    async def payment_failed(self, ride_id: uuid.UUID, reason: str) -> RideRead:
        for _ in range(TRANSITION_ATTEMPTS):
            ride = await self._ride(ride_id)
            if ride.status == R.payment_failed:
                return await self._read(ride)
            self._require_status(ride, (R.requested,))
            now = self.clock.now()
            moved = await self._move(
                ride,
                R.payment_failed,
                "system",
                None,
                values={"ended_at": now, "cancellation_reason": reason},
                data={"reason": reason},
            )
            if moved is not None:
                self._emit(RidePaymentFailed, moved, now, reason=reason)
                return await self._read(moved)
        raise self._raced(ride_id)

    # Matching: matching -> driver_assigned.

    async def assign(
        self, ride_id: uuid.UUID, driver_id: uuid.UUID, offer_id: uuid.UUID | None
    ) -> RideRead:
        """Gives the ride to the driver who accepted its offer. Exactly one of drivers
        racing for a ride wins; a driver with another ride under way is refused."""
        for _ in range(TRANSITION_ATTEMPTS):
            ride = await self._ride(ride_id)
            if ride.status == R.driver_assigned and ride.driver_id == driver_id:
                return await self._read(ride)
            self._require_status(ride, (R.matching,))
            if driver_id in ride.excluded_driver_ids:
                raise DriverExcluded
            now = self.clock.now()
            moved = await self._move(
                ride,
                R.driver_assigned,
                "driver",
                driver_id,
                guard=RideGuard(not_excluded=driver_id),
                values={"driver_id": driver_id, "driver_assigned_at": now},
                data={"offer_id": str(offer_id) if offer_id else None},
            )
            if moved is not None:
                self._emit(DriverAssigned, moved, now, offer_id=offer_id)
                return await self._read(moved)
        raise self._raced(ride_id)

    # Pickup: driver_assigned -> driver_arrived -> in_progress.

    async def arrive(self, ride_id: uuid.UUID, driver_id: uuid.UUID, position: Point) -> RideRead:
        for _ in range(TRANSITION_ATTEMPTS):
            ride = await self._ride(ride_id)
            self._require_driver(ride, driver_id)
            self._require_status(ride, (R.driver_assigned,))
            distance = await self.rides.distance_to_pickup_m(ride.id, position.lat, position.lng)
            if distance > ARRIVAL_RADIUS_M:
                raise DriverNotAtPickup(
                    f"The driver is {distance:.0f} m from the pickup; arrival counts within "
                    f"{ARRIVAL_RADIUS_M:.0f} m",
                    distance_m=round(distance),
                    max_distance_m=ARRIVAL_RADIUS_M,
                )
            now = self.clock.now()
            moved = await self._move(
                ride,
                R.driver_arrived,
                "driver",
                driver_id,
                guard=RideGuard(
                    driver_id=driver_id,
                    near_pickup=(position.lat, position.lng, ARRIVAL_RADIUS_M),
                ),
                values={"driver_arrived_at": now},
                data={"distance_m": round(distance)},
            )
            if moved is not None:
                self._emit(DriverArrived, moved, now)
                return await self._read(moved)
        raise self._raced(ride_id)

    async def start(self, ride_id: uuid.UUID, driver_id: uuid.UUID, pin: str) -> RideRead:
        """Starts the trip when the driver enters the rider's PIN. Wrong PINs are counted
        per ride; after ``PIN_ATTEMPTS`` the trip cannot be started."""
        for _ in range(TRANSITION_ATTEMPTS):
            ride = await self._ride(ride_id)
            self._require_driver(ride, driver_id)
            self._require_status(ride, (R.driver_arrived,))
            if await self.pins.used(ride.id) >= self.pins.limit:
                raise PinAttemptsExhausted(
                    "Too many wrong PINs: cancel the ride or report a no-show"
                )
            if not secrets.compare_digest(pin, ride.pin):
                left = await self.pins.wrong(ride.id)
                raise WrongPin(f"Wrong PIN; {left} attempt(s) left", attempts_left=left)
            now = self.clock.now()
            moved = await self._move(
                ride,
                R.in_progress,
                "driver",
                driver_id,
                guard=RideGuard(driver_id=driver_id, pin=pin),
                values={"started_at": now},
            )
            if moved is not None:
                self._emit(TripStarted, moved, now)
                return await self._read(moved)
        raise self._raced(ride_id)

    # The trip: in_progress -> completed.

    async def complete(self, ride_id: uuid.UUID, driver_id: uuid.UUID) -> RideCharge:
        """Ends the trip and prices it: distance from the breadcrumbs, time from the
        start to now, the final fare with the quote's policy version. Completing it again
        answers the same charge, so a retried request settles the same fare."""
        for _ in range(TRANSITION_ATTEMPTS):
            ride = await self._ride(ride_id)
            self._require_driver(ride, driver_id)
            if ride.status == R.completed:
                return await self._charge(ride)
            self._require_status(ride, (R.in_progress,))
            assert ride.started_at is not None
            assert ride.driver_arrived_at is not None
            now = max(self.clock.now(), ride.started_at)
            quote = await self._quote(ride)
            duration_s = int((now - ride.started_at).total_seconds())
            distance_m, source = await self._measured_distance(ride, quote, now, duration_s)
            waiting_s = int((ride.started_at - ride.driver_arrived_at).total_seconds())
            priced = priced_quote(quote)
            policy = await self.policies.by_id(priced.policy_id)
            fare = pricing.final_fare(
                policy, priced, TripMeasurement(distance_m, duration_s, max(0, waiting_s))
            )
            moved = await self._move(
                ride,
                R.completed,
                "driver",
                driver_id,
                guard=RideGuard(driver_id=driver_id),
                values={
                    "ended_at": now,
                    "distance_m": distance_m,
                    "duration_s": duration_s,
                    "final_fare": fare_json(fare),
                },
                data={
                    "distance_m": distance_m,
                    "distance_source": source,
                    "duration_s": duration_s,
                    "fare_amount": fare.total.amount,
                    "basis": fare.basis,
                },
            )
            if moved is not None:
                self._emit(
                    TripCompleted,
                    moved,
                    now,
                    fare_amount=fare.total.amount,
                    currency=fare.currency,
                    distance_m=distance_m,
                    duration_s=duration_s,
                )
                return RideCharge(
                    await self._read(moved), driver_id, fare, pricing.split(policy, fare)
                )
        raise self._raced(ride_id)

    async def _measured_distance(
        self, ride: Ride, quote: Quote, now: datetime, duration_s: int
    ) -> tuple[int, Literal["breadcrumbs", "estimate"]]:
        assert ride.driver_id is not None
        assert ride.started_at is not None
        track = await self.rides.track(ride.id, ride.driver_id, ride.started_at, now)
        if track.points >= MIN_TRACK_POINTS and track.span_s >= MIN_TRACK_COVERAGE * duration_s:
            return round(track.length_m), "breadcrumbs"
        return quote.estimated_distance_m, "estimate"

    # Cancelling.

    async def cancellation_preview(
        self, ride_id: uuid.UUID, rider_id: uuid.UUID
    ) -> CancellationPreview:
        """What cancelling now would cost the rider, and until when it stays free."""
        ride = await self._ride_of_rider(ride_id, rider_id)
        self._require_status(ride, CANCELLABLE_BY_RIDER)
        now = self.clock.now()
        policy = await self._policy(ride)
        fee = self._rider_fee(policy, ride, now)
        free_until = None
        if fee is None and ride.driver_assigned_at is not None and policy.cancellation_fee:
            free_until = ride.driver_assigned_at + timedelta(seconds=policy.cancellation_grace_s)
        return CancellationPreview(
            ride_id=ride.id,
            status=_status_name(ride.status),
            fee=FareRead.of(fee) if fee else None,
            free_until=free_until,
        )

    async def cancel_by_rider(
        self,
        ride_id: uuid.UUID,
        rider_id: uuid.UUID,
        reason: str | None,
        accept_fee_amount: int | None = None,
    ) -> RideCharge:
        """Cancels before the trip starts; free before a driver is assigned and within
        the grace after, else the policy's fee. ``accept_fee_amount`` refuses a fee above
        what the rider was shown. Cancelling again answers the same charge."""
        for _ in range(TRANSITION_ATTEMPTS):
            ride = await self._ride_of_rider(ride_id, rider_id)
            if ride.status == R.cancelled_by_rider:
                return await self._charge(ride)
            self._require_status(ride, CANCELLABLE_BY_RIDER)
            now = self.clock.now()
            policy = await self._policy(ride)
            fee = self._rider_fee(policy, ride, now)
            fee_amount = fee.total.amount if fee else 0
            if accept_fee_amount is not None and fee_amount > accept_fee_amount:
                raise CancellationFeeChanged(
                    f"Cancelling now costs {fee_amount}, more than the {accept_fee_amount} "
                    "accepted",
                    fee_amount=fee_amount,
                )
            moved = await self._move(
                ride,
                R.cancelled_by_rider,
                "rider",
                rider_id,
                guard=RideGuard(rider_id=rider_id),
                values={
                    "ended_at": now,
                    "cancelled_by": rider_id,
                    "cancellation_reason": reason,
                    "final_fare": fare_json(fee) if fee else None,
                },
                data={"fee_amount": fee_amount, "reason": reason},
            )
            if moved is not None:
                await self.rides.withdraw_offers(ride.id, now)
                self._emit(
                    RideCancelled, moved, now, fee_amount=fee_amount, currency=policy.currency
                )
                return RideCharge(
                    await self._read(moved),
                    moved.driver_id,
                    fee,
                    pricing.split(policy, fee) if fee else None,
                )
        raise self._raced(ride_id)

    async def cancel_by_driver(
        self, ride_id: uuid.UUID, driver_id: uuid.UUID, reason: str | None
    ) -> RideRead:
        """The driver gives the ride up before the trip: it goes back to matching, and
        that driver is never offered it again. Free for both."""
        for _ in range(TRANSITION_ATTEMPTS):
            ride = await self._ride(ride_id)
            if ride.status == R.matching and driver_id in ride.excluded_driver_ids:
                raise RideStateConflict("You already gave this ride up", ride_status=ride.status)
            self._require_driver(ride, driver_id)
            self._require_status(ride, CANCELLABLE_BY_DRIVER)
            now = self.clock.now()
            moved = await self._move(
                ride,
                R.matching,
                "driver",
                driver_id,
                guard=RideGuard(driver_id=driver_id),
                values={"driver_id": None, "driver_assigned_at": None, "driver_arrived_at": None},
                exclude_driver=driver_id,
                data={"cancelled_by_driver": str(driver_id), "reason": reason},
            )
            if moved is not None:
                event = DriverCancelled(
                    occurred_at=now,
                    ride_id=moved.id,
                    rider_id=moved.rider_id,
                    driver_id=driver_id,
                    status=moved.status,
                )
                self.events.record(event)
                return await self._read(moved)
        raise self._raced(ride_id)

    async def no_show(self, ride_id: uuid.UUID, driver_id: uuid.UUID) -> RideCharge:
        """The driver waited the grace period at the pickup and the rider did not come:
        the ride ends with the policy's no-show fee."""
        for _ in range(TRANSITION_ATTEMPTS):
            ride = await self._ride(ride_id)
            self._require_driver(ride, driver_id)
            if ride.status == R.no_show:
                return await self._charge(ride)
            self._require_status(ride, (R.driver_arrived,))
            assert ride.driver_arrived_at is not None
            now = self.clock.now()
            policy = await self._policy(ride)
            allowed_at = ride.driver_arrived_at + timedelta(seconds=policy.waiting_grace_s)
            if now <= allowed_at:
                raise NoShowTooEarly(
                    f"The rider has until {allowed_at.isoformat()} to come",
                    allowed_at=allowed_at.isoformat(),
                )
            fee = pricing.no_show_charge(
                policy, driver_arrived_at=ride.driver_arrived_at, cancelled_at=now
            )
            moved = await self._move(
                ride,
                R.no_show,
                "driver",
                driver_id,
                guard=RideGuard(
                    driver_id=driver_id,
                    arrived_before=now - timedelta(seconds=policy.waiting_grace_s),
                ),
                values={
                    "ended_at": now,
                    "cancelled_by": driver_id,
                    "cancellation_reason": "no_show",
                    "final_fare": fare_json(fee) if fee else None,
                },
                data={"fee_amount": fee.total.amount if fee else 0},
            )
            if moved is not None:
                self._emit(
                    RiderNoShow,
                    moved,
                    now,
                    fee_amount=fee.total.amount if fee else 0,
                    currency=policy.currency,
                )
                return RideCharge(
                    await self._read(moved),
                    driver_id,
                    fee,
                    pricing.split(policy, fee) if fee else None,
                )
        raise self._raced(ride_id)

    async def no_driver_found(self, ride_id: uuid.UUID) -> RideRead:
        """The dispatcher gave up finding a driver (after its timeout)."""
        for _ in range(TRANSITION_ATTEMPTS):
            ride = await self._ride(ride_id)
            if ride.status == R.no_driver_found:
                return await self._read(ride)
            self._require_status(ride, (R.requested, R.matching))
            now = self.clock.now()
            moved = await self._move(
                ride, R.no_driver_found, "system", None, values={"ended_at": now}
            )
            if moved is not None:
                await self.rides.withdraw_offers(ride.id, now)
                self._emit(NoDriverFound, moved, now)
                return await self._read(moved)
        raise self._raced(ride_id)

    # After the trip.

    async def rate(
        self, ride_id: uuid.UUID, rider_id: uuid.UUID, rating: int, comment: str | None
    ) -> RideRead:
        """The rider rates a completed ride, once."""
        ride = await self._ride_of_rider(ride_id, rider_id)
        self._require_status(ride, (R.completed,))
        if ride.rating is not None:
            raise RideAlreadyRated
        rated = await self.rides.transition(
            ride.id,
            status=ride.status,
            version=ride.version,
            values={"rating": rating, "rating_comment": comment},
            guard=RideGuard(rider_id=rider_id, unrated=True),
        )
        if rated is None:
            raise RideAlreadyRated
        self._emit(RideRated, rated, self.clock.now(), rating=rating)
        return await self._read(rated)

    # Internals.

    async def _move(
        self,
        ride: Ride,
        target: RideStatus,
        actor_role: ActorRole,
        actor_id: uuid.UUID | None,
        *,
        guard: RideGuard | None = None,
        values: dict[str, Any] | None = None,
        exclude_driver: uuid.UUID | None = None,
        data: dict[str, Any] | None = None,
    ) -> Ride | None:
        """One compare-and-set from the status and version ``ride`` was read at, with its
        ``ride_events`` row; None if the ride moved meanwhile or the guard failed."""
        source = ride.status
        moved = await self.rides.transition(
            ride.id,
            status=source,
            version=ride.version,
            values={"status": target.value, **(values or {})},
            guard=guard or RideGuard(),
            exclude_driver=exclude_driver,
        )
        if moved is not None:
            await self._log(moved, source, actor_role, actor_id, self.clock.now(), data or {})
        return moved

    async def _log(
        self,
        ride: Ride,
        source: str | None,
        actor_role: ActorRole,
        actor_id: uuid.UUID | None,
        at: datetime,
        data: dict[str, Any],
    ) -> None:
        await self.rides.add_event(
            RideEvent(
                id=new_id(),
                ride_id=ride.id,
                from_status=source,
                to_status=ride.status,
                actor_id=actor_id,
                actor_role=actor_role,
                occurred_at=at,
                data={k: v for k, v in data.items() if v is not None},
            )
        )

    def _emit(self, kind: type[RideDomainEvent], ride: Ride, at: datetime, **fields: Any) -> None:
        self.events.record(
            kind(
                occurred_at=at,
                ride_id=ride.id,
                rider_id=ride.rider_id,
                driver_id=ride.driver_id,
                status=ride.status,
                **fields,
            )
        )

    async def _ride(self, ride_id: uuid.UUID) -> Ride:
        ride = await self.rides.get(ride_id)
        if ride is None:
            raise RideNotFound
        return ride

    async def _ride_of_rider(self, ride_id: uuid.UUID, rider_id: uuid.UUID) -> Ride:
        ride = await self.rides.get(ride_id)
        if ride is None or ride.rider_id != rider_id:
            raise RideNotFound
        return ride

    @staticmethod
    def _require_driver(ride: Ride, driver_id: uuid.UUID) -> None:
        if ride.driver_id != driver_id:
            raise NotRideDriver("You are not this ride's driver")

    @staticmethod
    def _require_status(ride: Ride, allowed: Sequence[RideStatus]) -> None:
        if ride.status not in allowed:
            names = ", ".join(s.value for s in allowed)
            raise RideStateConflict(
                f"The ride is {ride.status}; this needs it {names}", ride_status=ride.status
            )

    @staticmethod
    def _raced(ride_id: uuid.UUID) -> RideStateConflict:
        return RideStateConflict(f"Ride {ride_id} kept changing meanwhile; try again")

    async def _quote(self, ride: Ride) -> Quote:
        quote = await self.quotes.get(ride.quote_id)
        assert quote is not None  # a foreign key
        return quote

    async def _policy(self, ride: Ride) -> FarePolicy:
        """The fare policy version the ride was quoted with: its fees apply, whatever is
        in force now."""
        return await self.policies.by_id((await self._quote(ride)).policy_version_id)

    @staticmethod
    def _rider_fee(policy: FarePolicy, ride: Ride, now: datetime) -> Fare | None:
        return pricing.cancellation_charge(
            policy,
            requested_at=ride.requested_at,
            driver_assigned_at=ride.driver_assigned_at,
            cancelled_at=max(now, ride.driver_assigned_at or ride.requested_at),
            by="rider",
        )

    async def _charge(self, ride: Ride) -> RideCharge:
        """The charge an ended ride recorded, for a repeated request to settle again."""
        fare = stored_fare(ride.final_fare) if ride.final_fare else None
        split = None
        if fare is not None:
            split = pricing.split(await self.policies.by_id(fare.policy_id), fare)
        return RideCharge(await self._read(ride), ride.driver_id, fare, split)

    async def _read(self, ride: Ride, *, show_pin: bool = True) -> RideRead:
        return ride_read(ride, await self._quote(ride), show_pin=show_pin)
