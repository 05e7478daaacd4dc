"""All of dispatch's SQL: zones, quotes, rides and their events, trip breadcrumbs."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from geoalchemy2 import Geometry, WKTElement
from geoalchemy2.shape import to_shape
from shapely.geometry import Point as ShapelyPoint
from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Uuid,
    any_,
    cast,
    exists,
    func,
    insert,
    literal,
    not_,
    select,
    text,
    update,
)
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from dispatch.errors import DriverBusy, ZoneCodeTaken
from dispatch.models import (
    DriverShift,
    MatchDecision,
    Offer,
    Quote,
    Ride,
    RideEvent,
    RideStatus,
    Zone,
)
from infra.db import driver_connection

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


# Offers, match decisions and the inputs of fairness: the dispatcher's and the offers' SQL.
#
# Lock order: whatever changes both a ride and its offers locks the ride row first (as the
# ride's own transitions do, before withdrawing its offers), so an accept, a decline, an
# expiry and a cancellation of the same ride queue up instead of deadlocking.

# Rides are matched only while in matching; a ride in requested still waits for its payment.
_MATCHING = RideStatus.matching.value
OFFERED = "offered"


@dataclass(frozen=True, slots=True)
class OfferDetails:
    """What a driver needs to judge an offer: where, how far, and the upfront fare."""

    ride_id: uuid.UUID
    pickup: tuple[float, float]
    dropoff: tuple[float, float]
    fare_amount: int
    currency: str
    trip_distance_m: int
    trip_duration_s: int


@dataclass(frozen=True, slots=True)
class NewOffer:
    """An offer a window wants to make (``OfferRepository.insert_live``)."""

    id: uuid.UUID
    ride_id: uuid.UUID
    driver_id: uuid.UUID
    decision_id: uuid.UUID
    pickup_eta_s: int


# The rides locked FOR SHARE in id order before anything is inserted (MATERIALIZED: the
# lock is taken once, by the CTE, whatever plan the insert gets).
_INSERT_LIVE_OFFERS = """
WITH open_rides AS MATERIALIZED (
    SELECT r.id, r.excluded_driver_ids
      FROM rides AS r
     WHERE r.id = ANY(CAST($2 AS uuid[])) AND r.status = 'matching'
     ORDER BY r.id
       FOR SHARE
)
INSERT INTO offers (id, ride_id, driver_id, decision_id, status, pickup_eta_s,
                    offered_at, expires_at)
SELECT o.id, o.ride_id, o.driver_id, o.decision_id, 'offered', o.pickup_eta_s, $6, $7
  FROM unnest(CAST($1 AS uuid[]), CAST($2 AS uuid[]), CAST($3 AS uuid[]),
              CAST($4 AS uuid[]), CAST($5 AS integer[]))
       AS o(id, ride_id, driver_id, decision_id, pickup_eta_s)
  JOIN open_rides AS r ON r.id = o.ride_id
 WHERE o.driver_id <> ALL(COALESCE(r.excluded_driver_ids, '{}'))
   AND NOT EXISTS (
        SELECT 1 FROM rides AS busy
         WHERE busy.driver_id = o.driver_id
           AND busy.status IN ('driver_assigned', 'driver_arrived', 'in_progress'))
    ON CONFLICT DO NOTHING
RETURNING id
"""


class OfferRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def insert_live(
        self, offers: Sequence[NewOffer], offered_at: datetime, expires_at: datetime
    ) -> set[uuid.UUID]:
        """Inserts live offers in one statement and returns the ids of those stored. An
        offer is skipped when its ride or its driver already holds a live one (a
        concurrent dispatcher got there first: the partial unique indexes decide), when
        its ride left matching or excludes the driver, or when its driver took a ride
        meanwhile.

        The unique indexes alone would not do: an offer accepted just after the window
        read its rides is no longer live, so a second offer for the now assigned ride
        would pass them. The statement locks the rides first (shared, in id order) and
        reads them again; an accept, a decline or a cancellation of one of them, which
        lock the ride's row too, either committed before (and is seen) or waits for this
        transaction. A driver who accepts another ride at the same moment can still be
        offered one; their accept of it is refused (``DriverBusy``) and it expires.

        One statement, because it stands between a window's decision and its offers
        reaching the drivers: one round trip, no ORM objects, straight to asyncpg."""
        if not offers:
            return set()
        connection = await driver_connection(self.session)
        rows = await connection.fetch(
            _INSERT_LIVE_OFFERS,
            [offer.id for offer in offers],
            [offer.ride_id for offer in offers],
            [offer.driver_id for offer in offers],
            [offer.decision_id for offer in offers],
            [offer.pickup_eta_s for offer in offers],
            offered_at,
            expires_at,
        )
        return {row["id"] for row in rows}

    async def get(self, offer_id: uuid.UUID) -> Offer | None:
        result = await self.session.execute(
            select(Offer).where(Offer.id == offer_id).execution_options(populate_existing=True)
        )
        return result.scalar_one_or_none()

    async def respond(
        self,
        offer_id: uuid.UUID,
        driver_id: uuid.UUID,
        status: str,
        now: datetime,
        *,
        unexpired: bool,
    ) -> Offer | None:
        """Compare-and-set from ``offered`` to ``status``, only for the offer's own driver
        (and, with ``unexpired``, only before it expires). None if that did not hold."""
        statement = update(Offer).where(
            Offer.id == offer_id, Offer.driver_id == driver_id, Offer.status == OFFERED
        )
        if unexpired:
            statement = statement.where(Offer.expires_at > now)
        result = await self.session.execute(
            statement.values(status=status, responded_at=now)
            .returning(Offer)
            .execution_options(synchronize_session=False, populate_existing=True)
        )
        return result.scalar_one_or_none()

    async def expire_due(self, now: datetime, regions: Sequence[str]) -> list[Offer]:
        """Marks the live offers of rides in ``regions`` that expired by ``now`` as
        expired and returns them; each offer is expired by one caller only."""
        due_rides = (
            select(Ride.id)
            .where(
                Ride.region.in_(list(regions)),
                Ride.id.in_(
                    select(Offer.ride_id).where(Offer.status == OFFERED, Offer.expires_at <= now)
                ),
            )
            .order_by(Ride.id)
            .with_for_update(key_share=True)
        )
        locked = list((await self.session.execute(due_rides)).scalars())
        if not locked:
            return []
        result = await self.session.execute(
            update(Offer)
            .where(Offer.ride_id.in_(locked), Offer.status == OFFERED, Offer.expires_at <= now)
            .values(status="expired", responded_at=now)
            .returning(Offer)
            .execution_options(synchronize_session=False)
        )
        return list(result.scalars())

    async def lock_ride(self, ride_id: uuid.UUID) -> bool:
        """Locks the ride's row until the transaction ends; False if there is no ride."""
        result = await self.session.execute(
            select(Ride.id).where(Ride.id == ride_id).with_for_update(key_share=True)
        )
        return result.scalar_one_or_none() is not None

    async def exclude_driver(self, ride_id: uuid.UUID, driver_id: uuid.UUID) -> bool:
        """Adds the driver to the ride's excluded drivers while it is in matching (once);
        the version moves, so a transition that read the ride before sees the change."""
        result = await self.session.execute(
            update(Ride)
            .where(
                Ride.id == ride_id,
                Ride.status == _MATCHING,
                not_(literal(driver_id, Uuid) == any_(Ride.excluded_driver_ids)),
            )
            .values(
                excluded_driver_ids=func.array_append(Ride.excluded_driver_ids, driver_id),
                version=Ride.version + 1,
            )
            .returning(Ride.id)
            .execution_options(synchronize_session=False)
        )
        return result.scalar_one_or_none() is not None

    async def rides_holding_offers(self, ride_ids: Sequence[uuid.UUID]) -> set[uuid.UUID]:
        if not ride_ids:
            return set()
        result = await self.session.execute(
            select(Offer.ride_id).where(Offer.status == OFFERED, Offer.ride_id.in_(list(ride_ids)))
        )
        return set(result.scalars())

    async def drivers_holding_offers(self, driver_ids: Sequence[uuid.UUID]) -> set[uuid.UUID]:
        if not driver_ids:
            return set()
        result = await self.session.execute(
            select(Offer.driver_id).where(
                Offer.status == OFFERED, Offer.driver_id.in_(list(driver_ids))
            )
        )
        return set(result.scalars())

    async def drivers_with_rides_under_way(self, driver_ids: Sequence[uuid.UUID]) -> set[uuid.UUID]:
        if not driver_ids:
            return set()
        result = await self.session.execute(
            select(Ride.driver_id).where(
                Ride.driver_id.in_(list(driver_ids)),
                Ride.status.in_(("driver_assigned", "driver_arrived", "in_progress")),
            )
        )
        return {driver_id for driver_id in result.scalars() if driver_id is not None}

    async def offers_by_driver(self, since: datetime, until: datetime) -> dict[uuid.UUID, int]:
        """How many offers each driver was made in [since, until)."""
        result = await self.session.execute(
            select(Offer.driver_id, func.count())
            .where(Offer.offered_at >= since, Offer.offered_at < until)
            .group_by(Offer.driver_id)
        )
        return {driver_id: int(count) for driver_id, count in result.all()}

    async def open_regions(self) -> list[str]:
        """The regions with rides in matching."""
        result = await self.session.execute(
            select(Ride.region).where(Ride.status == _MATCHING).distinct().order_by(Ride.region)
        )
        return list(result.scalars())

    async def details(self, ride_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, OfferDetails]:
        if not ride_ids:
            return {}
        pickup = cast(Ride.pickup, Geometry)
        dropoff = cast(Ride.dropoff, Geometry)
        result = await self.session.execute(
            select(
                Ride.id,
                func.ST_Y(pickup),
                func.ST_X(pickup),
                func.ST_Y(dropoff),
                func.ST_X(dropoff),
                Quote.total_amount,
                Quote.currency,
                Quote.estimated_distance_m,
                Quote.estimated_duration_s,
            )
            .join(Quote, Quote.id == Ride.quote_id)
            .where(Ride.id.in_(list(ride_ids)))
        )
        return {
            ride_id: OfferDetails(
                ride_id=ride_id,
                pickup=(float(pickup_lat), float(pickup_lng)),
                dropoff=(float(dropoff_lat), float(dropoff_lng)),
                fare_amount=int(amount),
                currency=currency,
                trip_distance_m=int(distance),
                trip_duration_s=int(duration),
            )
            for (
                ride_id,
                pickup_lat,
                pickup_lng,
                dropoff_lat,
                dropoff_lng,
                amount,
                currency,
                distance,
                duration,
            ) in result.all()
        }


@dataclass(frozen=True, slots=True)
class NewDecision:
    """A window's decision for one request, as ``match_decisions`` stores it; each
    candidate names its ``driver_id``."""

    id: uuid.UUID
    ride_id: uuid.UUID
    region: str
    policy: str
    window_at: datetime
    chosen_driver_id: uuid.UUID | None
    candidates: list[dict[str, Any]]
    params: dict[str, Any]


_ADD_DECISIONS = """
INSERT INTO match_decisions (id, ride_id, region, policy, window_at, chosen_driver_id,
                             candidates, candidate_driver_ids, params)
SELECT d.id, d.ride_id, d.region, d.policy, d.window_at, d.chosen_driver_id,
       CAST(d.candidates AS jsonb), CAST(d.candidate_driver_ids AS uuid[]),
       CAST(d.params AS jsonb)
  FROM unnest(CAST($1 AS uuid[]), CAST($2 AS uuid[]), CAST($3 AS text[]),
              CAST($4 AS text[]), CAST($5 AS timestamptz[]), CAST($6 AS uuid[]),
              CAST($7 AS text[]), CAST($8 AS text[]), CAST($9 AS text[]))
       AS d(id, ride_id, region, policy, window_at, chosen_driver_id, candidates,
            candidate_driver_ids, params)
"""


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


class MatchDecisionRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add_many(self, decisions: Sequence[NewDecision]) -> None:
        """Inserts the decisions in one statement, straight to asyncpg: a window's, on
        the way to its offers."""
        if not decisions:
            return
        connection = await driver_connection(self.session)
        await connection.execute(
            _ADD_DECISIONS,
            [d.id for d in decisions],
            [d.ride_id for d in decisions],
            [d.region for d in decisions],
            [d.policy for d in decisions],
            [d.window_at for d in decisions],
            [d.chosen_driver_id for d in decisions],
            [_json(d.candidates) for d in decisions],
            # Each an array literal: one text per row, as unnest takes them.
            ["{" + ",".join(str(c["driver_id"]) for c in d.candidates) + "}" for d in decisions],
            [_json(d.params) for d in decisions],
        )

    async def get(self, decision_id: uuid.UUID) -> MatchDecision | None:
        return await self.session.get(MatchDecision, decision_id)

    async def with_candidate(
        self,
        driver_id: uuid.UUID,
        *,
        ride_id: uuid.UUID | None,
        since: datetime,
        limit: int,
    ) -> list[MatchDecision]:
        """Decisions since ``since`` in which the driver was a candidate, newest first."""
        query = select(MatchDecision).where(
            MatchDecision.candidate_driver_ids.contains([driver_id]),
            MatchDecision.window_at >= since,
        )
        if ride_id is not None:
            query = query.where(MatchDecision.ride_id == ride_id)
        query = query.order_by(MatchDecision.window_at.desc(), MatchDecision.id.desc()).limit(limit)
        return list((await self.session.execute(query)).scalars())


# Each driver's shifts cut to [since, until) (an open one runs to :now), merged where
# they overlap, then measured. Two statements, with and without the drivers' filter, so
# that the one with it always plans with the driver_id index.
_ONLINE_SECONDS_SQL = """
    SELECT driver_id, SUM(EXTRACT(EPOCH FROM upper(span) - lower(span))) AS seconds
      FROM (SELECT driver_id, unnest(range_agg(tstzrange(
                       GREATEST(started_at, :since),
                       LEAST(COALESCE(ended_at, :now), :until)))) AS span
              FROM driver_shifts
             WHERE started_at < :until
               AND COALESCE(ended_at, :now) > :since
               AND started_at < :now
               {drivers}
             GROUP BY driver_id) AS merged
     GROUP BY driver_id
"""
_ONLINE_SECONDS = text(_ONLINE_SECONDS_SQL.format(drivers=""))
_ONLINE_SECONDS_OF = text(
    _ONLINE_SECONDS_SQL.format(drivers="AND driver_id = ANY(CAST(:driver_ids AS uuid[]))")
)


class FairnessRepository:
    """Earnings and time online per driver, from dispatch's own rides and shifts."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def fares_by_driver(
        self, since: datetime, until: datetime, driver_ids: Sequence[uuid.UUID] | None = None
    ) -> list[tuple[uuid.UUID, str, int]]:
        """(driver, currency, minor units): the final fares of each driver's rides
        completed in [since, until), per currency."""
        currency = Ride.final_fare["currency"].astext
        total = func.sum(cast(Ride.final_fare["total"].astext, BigInteger))
        query = (
            select(Ride.driver_id, currency, total)
            .where(
                Ride.status == RideStatus.completed.value,
                Ride.ended_at >= since,
                Ride.ended_at < until,
                Ride.driver_id.is_not(None),
            )
            .group_by(Ride.driver_id, currency)
        )
        if driver_ids is not None:
            if not driver_ids:
                return []
            query = query.where(Ride.driver_id.in_(list(driver_ids)))
        result = await self.session.execute(query)
        return [
            (driver_id, str(code), int(amount or 0))
            for driver_id, code, amount in result.all()
            if driver_id is not None
        ]

    async def online_seconds(
        self,
        since: datetime,
        until: datetime,
        now: datetime,
        driver_ids: Sequence[uuid.UUID] | None = None,
    ) -> dict[uuid.UUID, float]:
        """Each driver's seconds online within [since, until): the union of their shifts
        (overlapping connections count once); a shift still open counts until ``now``.
        Drivers with no time online in the period are left out."""
        if driver_ids is not None and not driver_ids:
            return {}
        values: dict[str, Any] = {"since": since, "until": until, "now": now}
        if driver_ids is None:
            result = await self.session.execute(_ONLINE_SECONDS, values)
        else:
            values["driver_ids"] = list(driver_ids)
            result = await self.session.execute(_ONLINE_SECONDS_OF, values)
        return {driver_id: float(total) for driver_id, total in result.all() if total and total > 0}


# The driver channel: shifts online and trip breadcrumbs.


class ShiftRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def open(self, driver_id: uuid.UUID, now: datetime) -> uuid.UUID:
        """Opens a shift for one connection of the driver's; another connection (a second
        device, a reconnect before the old one is noticed gone) has its own, and the
        time online counts their union (``FairnessRepository.online_seconds``)."""
        inserted = await self.session.execute(
            insert(DriverShift)
            .values(driver_id=driver_id, started_at=now)
            .returning(DriverShift.id)
        )
        shift_id: uuid.UUID = inserted.scalar_one()
        return shift_id

    async def close(self, shift_id: uuid.UUID, now: datetime) -> bool:
        """Ends the shift if it is still open; False if it was not."""
        result = await self.session.execute(
            update(DriverShift)
            .where(DriverShift.id == shift_id, DriverShift.ended_at.is_(None))
            .values(ended_at=func.greatest(now, DriverShift.started_at))
            .returning(DriverShift.id)
        )
        return result.scalar_one_or_none() is not None


@dataclass(frozen=True, slots=True)
class BreadcrumbRow:
    ride_id: uuid.UUID
    driver_id: uuid.UUID
    lat: float
    lng: float
    recorded_at: datetime
    speed_mps: float | None
    heading_deg: float | None
    accuracy_m: float | None


# One statement for a whole batch: the rows travel as one array per column. Rows of a
# ride the driver is not (or no longer) driving are dropped, not refused: a batch is not
# lost for one row whose ride was reassigned meanwhile.
_ADD_BREADCRUMBS = text(
    """
WITH stored AS (
INSERT INTO breadcrumbs (ride_id, driver_id, point, recorded_at, speed_mps, heading_deg,
                         accuracy_m)
SELECT t.ride_id, t.driver_id, ST_SetSRID(ST_MakePoint(t.lng, t.lat), 4326)::geography,
       t.recorded_at, t.speed_mps, t.heading_deg, t.accuracy_m
  FROM unnest(CAST(:ride_ids AS uuid[]), CAST(:driver_ids AS uuid[]),
              CAST(:lats AS float8[]), CAST(:lngs AS float8[]),
              CAST(:recorded_ats AS timestamptz[]), CAST(:speeds AS float8[]),
              CAST(:headings AS float8[]), CAST(:accuracies AS float8[]))
       AS t(ride_id, driver_id, lat, lng, recorded_at, speed_mps, heading_deg, accuracy_m)
  JOIN rides r ON r.id = t.ride_id AND r.driver_id = t.driver_id
RETURNING 1
)
SELECT count(*) FROM stored
"""
)


class BreadcrumbRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add_many(self, rows: Sequence[BreadcrumbRow]) -> int:
        """Inserts the rows in one statement; returns how many were stored."""
        if not rows:
            return 0
        result = await self.session.execute(
            _ADD_BREADCRUMBS,
            {
                "ride_ids": [row.ride_id for row in rows],
                "driver_ids": [row.driver_id for row in rows],
                "lats": [row.lat for row in rows],
                "lngs": [row.lng for row in rows],
                "recorded_ats": [row.recorded_at for row in rows],
                "speeds": [row.speed_mps for row in rows],
                "headings": [row.heading_deg for row in rows],
                "accuracies": [row.accuracy_m for row in rows],
            },
        )
        return int(result.scalar_one())


# Rides completed in [start, end), with what their quote priced them from (estimate,
# surge, zones) and what payments captured and paid the driver, when it has.
_TRIPS = text(
    """
    SELECT r.id AS ride_id,
           r.rider_id,
           r.driver_id,
           r.ended_at,
           r.distance_m,
           r.duration_s,
           GREATEST(0, COALESCE(
               EXTRACT(EPOCH FROM (r.started_at - r.driver_arrived_at))::bigint, 0
           )) AS waiting_s,
           q.estimated_distance_m,
           q.estimated_duration_s,
           q.currency,
           COALESCE(q.fare ->> 'surge_multiplier', '1') AS surge,
           COALESCE(
               ARRAY(SELECT jsonb_array_elements_text(q.fare -> 'zones')), '{}'
           ) AS zones,
           COALESCE(p.captured_amount, (r.final_fare ->> 'total')::bigint) AS fare_amount,
           (p.split ->> 'driver')::bigint AS driver_amount
      FROM rides r
      JOIN quotes q ON q.id = r.quote_id
      LEFT JOIN ride_payments p ON p.ride_id = r.id
     WHERE r.status = 'completed'
       AND r.ended_at >= :start AND r.ended_at < :end
       AND r.driver_id IS NOT NULL
       AND r.distance_m IS NOT NULL AND r.duration_s IS NOT NULL
     ORDER BY r.ended_at, r.id
    """
)

# Each driver's time online within [start, end): their shifts cut to the period (a shift
# still open counts up to the end of the period), merged where they overlap.
_ONLINE = text(
    """
    SELECT driver_id, SUM(EXTRACT(EPOCH FROM upper(span) - lower(span)))::bigint AS seconds
      FROM (SELECT driver_id, unnest(range_agg(tstzrange(
                       GREATEST(started_at, :start),
                       LEAST(COALESCE(ended_at, :end), :end)))) AS span
              FROM driver_shifts
             WHERE started_at < :end AND COALESCE(ended_at, :end) > :start
             GROUP BY driver_id) AS merged
     GROUP BY driver_id
    """
)


class HistoryRepository:
    """Completed trips of a period and drivers' time online, for replays (governance's
    impact simulation). Read-only; reads payments' ``ride_payments`` beside dispatch's
    own tables, never writes it."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def completed_trips(self, start: datetime, end: datetime) -> Sequence[Any]:
        """The rows of ``_TRIPS``, positional (its columns in order): a month of a city
        is hundreds of thousands of them, not worth an object each here."""
        result = await self.session.execute(_TRIPS, {"start": start, "end": end})
        return result.all()

    async def online_seconds(self, start: datetime, end: datetime) -> dict[uuid.UUID, int]:
        """Each driver's seconds online within ``[start, end)``; drivers without a shift
        in the period are absent."""
        result = await self.session.execute(_ONLINE, {"start": start, "end": end})
        return {row.driver_id: int(row.seconds) for row in result if row.seconds > 0}
