"""All of dispatch's SQL: zones, quotes, rides and their events, trip breadcrumbs."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from geoalchemy2 import WKTElement
from geoalchemy2.shape import to_shape
from shapely.geometry import Point as ShapelyPoint
from sqlalchemy import (
    ColumnElement,
    Uuid,
    any_,
    exists,
    func,
    literal,
    not_,
    select,
    text,
    update,
)
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from dispatch.errors import DriverBusy, ZoneCodeTaken
from dispatch.models import Offer, Quote, Ride, RideEvent, RideStatus, Zone

SERVICE_AREA = "service_area"


def point_value(lat: float, lng: float) -> WKTElement:
    """A point as the geography columns store it (WKT is longitude first)."""
    return WKTElement(f"SRID=4326;POINT({lng:.9f} {lat:.9f})", extended=True)


def area_value(wkt: str) -> WKTElement:
    return WKTElement(f"SRID=4326;{wkt}", extended=True)


def coordinates(value: Any) -> tuple[float, float]:
    """(lat, lng) of a stored geography point."""
    point = to_shape(value)
    assert isinstance(point, ShapelyPoint)
    return float(point.y), float(point.x)


def _point_sql(lat: float, lng: float) -> ColumnElement[Any]:
    return func.ST_GeogFromText(f"SRID=4326;POINT({lng:.9f} {lat:.9f})")


def constraint_name(exc: DBAPIError) -> str | None:
    # SQLAlchemy wraps asyncpg's exception, which names the constraint that refused.
    name = getattr(exc.orig.__cause__, "constraint_name", None) if exc.orig else None
    return name if isinstance(name, str) else None


class ZoneRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, zone: Zone) -> Zone:
        """Inserts the zone; a taken code (even by a concurrent request) is a 409."""
        try:
            async with self.session.begin_nested():
                self.session.add(zone)
                await self.session.flush()
        except IntegrityError as exc:
            if constraint_name(exc) == "uq_zones_code":
                raise ZoneCodeTaken(f"a zone named {zone.code!r} exists") from exc
            raise
        return zone

    async def with_geojson(
        self, kind: str | None = None, zone_id: uuid.UUID | None = None
    ) -> list[tuple[Zone, dict[str, Any]]]:
        query = select(Zone, func.ST_AsGeoJSON(Zone.area)).order_by(Zone.kind, Zone.code)
        if kind is not None:
            query = query.where(Zone.kind == kind)
        if zone_id is not None:
            query = query.where(Zone.id == zone_id)
        rows = (await self.session.execute(query)).all()
        return [(zone, json.loads(geojson)) for zone, geojson in rows]

    async def covers_service_area(self, lat: float, lng: float) -> bool:
        query = select(
            exists().where(
                Zone.kind == SERVICE_AREA,
                Zone.active.is_(True),
                func.ST_Covers(Zone.area, _point_sql(lat, lng)),
            )
        )
        return bool((await self.session.execute(query)).scalar_one())

    async def codes_at(self, lat: float, lng: float) -> frozenset[str]:
        """The codes of the active zones, other than the service area, that hold the point."""
        query = select(Zone.code).where(
            Zone.kind != SERVICE_AREA,
            Zone.active.is_(True),
            func.ST_Covers(Zone.area, _point_sql(lat, lng)),
        )
        return frozenset((await self.session.execute(query)).scalars())


class QuoteRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, quote: Quote) -> Quote:
        self.session.add(quote)
        await self.session.flush()
        return quote

    async def get(self, quote_id: uuid.UUID) -> Quote | None:
        return await self.session.get(Quote, quote_id)


@dataclass(frozen=True, slots=True)
class RideGuard:
    """Conditions a transition's UPDATE checks besides the ride's status and version."""

    rider_id: uuid.UUID | None = None
    driver_id: uuid.UUID | None = None
    # The driver may not be one the ride already excludes.
    not_excluded: uuid.UUID | None = None
    # (lat, lng, metres): that position must be within the distance of the pickup.
    near_pickup: tuple[float, float, float] | None = None
    arrived_before: datetime | None = None
    pin: str | None = None
    unrated: bool = False

    def clauses(self) -> list[ColumnElement[bool]]:
        clauses: list[ColumnElement[bool]] = []
        if self.rider_id is not None:
            clauses.append(Ride.rider_id == self.rider_id)
        if self.driver_id is not None:
            clauses.append(Ride.driver_id == self.driver_id)
        if self.not_excluded is not None:
            clauses.append(not_(literal(self.not_excluded, Uuid) == any_(Ride.excluded_driver_ids)))
        if self.near_pickup is not None:
            lat, lng, metres = self.near_pickup
            clauses.append(func.ST_DWithin(Ride.pickup, _point_sql(lat, lng), metres))
        if self.arrived_before is not None:
            clauses.append(Ride.driver_arrived_at < self.arrived_before)
        if self.pin is not None:
            clauses.append(Ride.pin == self.pin)
        if self.unrated:
            clauses.append(Ride.rating.is_(None))
        return clauses


@dataclass(frozen=True, slots=True)
class Track:
    """What the breadcrumbs of a trip say: how many, the length of the line through them
    in time order, and the time they span."""

    points: int
    length_m: float
    first_at: datetime | None
    last_at: datetime | None

    @property
    def span_s(self) -> float:
        if self.first_at is None or self.last_at is None:
            return 0.0
        return (self.last_at - self.first_at).total_seconds()


_TRACK = text(
    """
SELECT count(*) AS points,
       coalesce(ST_Length(ST_MakeLine(point::geometry ORDER BY recorded_at, id)::geography), 0)
         AS length_m,
       min(recorded_at) AS first_at,
       max(recorded_at) AS last_at
  FROM breadcrumbs
 WHERE ride_id = :ride_id AND driver_id = :driver_id
   AND recorded_at >= :since AND recorded_at <= :until
"""
)


class RideRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def insert(self, ride: Ride) -> str | None:
        """Inserts the ride; returns None, or the name of the unique constraint that
        refused it (even because of a concurrent insert), leaving the session usable."""
        try:
            async with self.session.begin_nested():
                self.session.add(ride)
                await self.session.flush()
        except IntegrityError as exc:
            name = constraint_name(exc)
            if name is None:
                raise
            return name
        return None

    async def get(self, ride_id: uuid.UUID) -> Ride | None:
        result = await self.session.execute(
            select(Ride).where(Ride.id == ride_id).execution_options(populate_existing=True)
        )
        return result.scalar_one_or_none()

    async def by_key(self, rider_id: uuid.UUID, idempotency_key: str) -> Ride | None:
        result = await self.session.execute(
            select(Ride)
            .where(Ride.rider_id == rider_id, Ride.idempotency_key == idempotency_key)
            .execution_options(populate_existing=True)
        )
        return result.scalar_one_or_none()

    async def transition(
        self,
        ride_id: uuid.UUID,
        *,
        status: str,
        version: int,
        values: dict[str, Any],
        guard: RideGuard,
        exclude_driver: uuid.UUID | None = None,
    ) -> Ride | None:
        """Compare-and-set: applies ``values`` only if the ride is still in ``status`` at
        ``version`` (so nothing changed since it was read) and ``guard`` holds. Returns
        the updated ride, or None when the ride had moved on or the guard failed. A
        driver given a ride while another of theirs is under way is ``DriverBusy``."""
        changes: dict[str, Any] = {**values, "version": Ride.version + 1}
        if exclude_driver is not None:
            changes["excluded_driver_ids"] = func.array_append(
                Ride.excluded_driver_ids, exclude_driver
            )
        statement = (
            update(Ride)
            .where(Ride.id == ride_id, Ride.status == status, Ride.version == version)
            .where(*guard.clauses())
            .values(changes)
            .returning(Ride)
            .execution_options(synchronize_session=False, populate_existing=True)
        )
        try:
            async with self.session.begin_nested():
                return (await self.session.execute(statement)).scalar_one_or_none()
        except IntegrityError as exc:
            if constraint_name(exc) == "uq_rides_one_active_per_driver":
                raise DriverBusy("the driver has another ride under way") from exc
            raise

    async def add_event(self, event: RideEvent) -> None:
        self.session.add(event)
        await self.session.flush()

    async def events(self, ride_id: uuid.UUID) -> Sequence[RideEvent]:
        result = await self.session.execute(
            select(RideEvent)
            .where(RideEvent.ride_id == ride_id)
            .order_by(RideEvent.occurred_at, RideEvent.id)
        )
        return result.scalars().all()

    async def distance_to_pickup_m(self, ride_id: uuid.UUID, lat: float, lng: float) -> float:
        result = await self.session.execute(
            select(func.ST_Distance(Ride.pickup, _point_sql(lat, lng))).where(Ride.id == ride_id)
        )
        return float(result.scalar_one())

    async def track(
        self, ride_id: uuid.UUID, driver_id: uuid.UUID, since: datetime, until: datetime
    ) -> Track:
        row = (
            await self.session.execute(
                _TRACK,
                {"ride_id": ride_id, "driver_id": driver_id, "since": since, "until": until},
            )
        ).one()
        return Track(int(row.points), float(row.length_m), row.first_at, row.last_at)

    async def for_rider(
        self, rider_id: uuid.UUID, limit: int, before: datetime | None
    ) -> Sequence[Ride]:
        query = select(Ride).where(Ride.rider_id == rider_id)
        if before is not None:
            query = query.where(Ride.requested_at < before)
        query = query.order_by(Ride.requested_at.desc(), Ride.id.desc()).limit(limit)
        return (await self.session.execute(query)).scalars().all()

    async def in_status(self, status: RideStatus, limit: int) -> Sequence[Ride]:
        """Rides in ``status``, oldest request first."""
        result = await self.session.execute(
            select(Ride)
            .where(Ride.status == status.value)
            .order_by(Ride.requested_at, Ride.id)
            .limit(limit)
        )
        return result.scalars().all()

    async def open_in_region(self, region: str, limit: int) -> list[tuple[Ride, datetime]]:
        """The region's rides in matching, each with when it (last) entered matching:
        a ride a driver gave up waits from then, not from its first request."""
        entered = (
            select(func.max(RideEvent.occurred_at))
            .where(
                RideEvent.ride_id == Ride.id,
                RideEvent.to_status == RideStatus.matching.value,
            )
            .scalar_subquery()
        )
        query = (
            select(Ride, func.coalesce(entered, Ride.requested_at))
            .where(Ride.region == region, Ride.status == RideStatus.matching.value)
            .order_by(Ride.requested_at, Ride.id)
            .limit(limit)
        )
        return [(ride, since) for ride, since in (await self.session.execute(query)).all()]

    async def withdraw_offers(self, ride_id: uuid.UUID, now: datetime) -> int:
        """Withdraws the ride's live offer, if any: the ride is no longer to be had."""
        result = await self.session.execute(
            update(Offer)
            .where(Offer.ride_id == ride_id, Offer.status == "offered")
            .values(status="withdrawn", responded_at=now)
            .returning(Offer.id)
        )
        return len(result.scalars().all())
