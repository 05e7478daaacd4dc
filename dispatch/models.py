from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from geoalchemy2 import Geography
from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    Uuid,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Mapped, mapped_column

from infra.db import Base
from infra.ids import new_id


class RideStatus(StrEnum):
    requested = "requested"
    matching = "matching"
    driver_assigned = "driver_assigned"
    driver_arrived = "driver_arrived"
    in_progress = "in_progress"
    completed = "completed"
    cancelled_by_rider = "cancelled_by_rider"
    cancelled_by_driver = "cancelled_by_driver"
    no_driver_found = "no_driver_found"
    no_show = "no_show"
    payment_failed = "payment_failed"


TERMINAL_STATUSES = frozenset(
    {
        RideStatus.completed,
        RideStatus.cancelled_by_rider,
        RideStatus.no_driver_found,
        RideStatus.no_show,
        RideStatus.payment_failed,
    }
)

_STATUS_LIST = ", ".join(f"'{s.value}'" for s in RideStatus)


class Zone(Base):
    """The service area and special zones (airport, pickup areas), as PostGIS polygons."""

    __tablename__ = "zones"
    __table_args__ = (
        CheckConstraint(
            "kind IN ('service_area', 'airport', 'pickup_area', 'surcharge')", name="kind_known"
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    code: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(200))
    area: Mapped[Any] = mapped_column(Geography("MULTIPOLYGON", srid=4326, spatial_index=True))
    active: Mapped[bool] = mapped_column(server_default=text("true"))
    created_at: Mapped[datetime] = mapped_column(server_default=text("now()"))


class Quote(Base):
    """An upfront price for one trip, valid until ``expires_at``; a ride keeps it."""

    __tablename__ = "quotes"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    rider_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"), index=True)
    pickup: Mapped[Any] = mapped_column(Geography("POINT", srid=4326, spatial_index=False))
    dropoff: Mapped[Any] = mapped_column(Geography("POINT", srid=4326, spatial_index=False))
    policy_version_id: Mapped[uuid.UUID]
    total_amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    fare: Mapped[dict[str, Any]] = mapped_column(JSONB)
    estimated_distance_m: Mapped[int] = mapped_column(Integer)
    estimated_duration_s: Mapped[int] = mapped_column(Integer)
    pickup_eta_s: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]


class Ride(Base):
    __tablename__ = "rides"
    __table_args__ = (
        CheckConstraint(f"status IN ({_STATUS_LIST})", name="status_known"),
        CheckConstraint("pin ~ '^[0-9]{4}$'", name="pin_four_digits"),
        CheckConstraint("rating IS NULL OR rating BETWEEN 1 AND 5", name="rating_range"),
        # A ride that has a driver in any active state names that driver.
        CheckConstraint(
            "status NOT IN ('driver_assigned', 'driver_arrived', 'in_progress', 'completed') "
            "OR driver_id IS NOT NULL",
            name="assigned_has_driver",
        ),
        UniqueConstraint("rider_id", "idempotency_key", name="uq_rides_rider_idempotency"),
        UniqueConstraint("quote_id", name="uq_rides_quote_id"),
        Index(
            "ix_rides_open_by_region",
            "region",
            "status",
            postgresql_where=text("status IN ('requested', 'matching')"),
        ),
        # One open ride per rider and per driver at a time.
        Index(
            "uq_rides_one_open_per_rider",
            "rider_id",
            unique=True,
            postgresql_where=text(
                "status IN ('requested', 'matching', 'driver_assigned', 'driver_arrived', "
                "'in_progress')"
            ),
        ),
        Index(
            "uq_rides_one_active_per_driver",
            "driver_id",
            unique=True,
            postgresql_where=text("status IN ('driver_assigned', 'driver_arrived', 'in_progress')"),
        ),
        # Completed trips by when they ended: earnings (fairness), the impact of a
        # proposed policy (governance), statements.
        Index(
            "ix_rides_completed_ended_at",
            "ended_at",
            postgresql_where=text("status = 'completed'"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    rider_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"), index=True)
    driver_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id"), index=True)
    quote_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("quotes.id"))
    idempotency_key: Mapped[str] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(32))
    region: Mapped[str] = mapped_column(String(20))
    pickup: Mapped[Any] = mapped_column(Geography("POINT", srid=4326, spatial_index=False))
    dropoff: Mapped[Any] = mapped_column(Geography("POINT", srid=4326, spatial_index=False))
    pin: Mapped[str] = mapped_column(String(4))
    # Drivers who declined or let an offer lapse: never offered this ride again.
    excluded_driver_ids: Mapped[list[uuid.UUID]] = mapped_column(
        ARRAY(Uuid(as_uuid=True)), server_default=text("'{}'")
    )
    requested_at: Mapped[datetime]
    driver_assigned_at: Mapped[datetime | None]
    driver_arrived_at: Mapped[datetime | None]
    started_at: Mapped[datetime | None]
    ended_at: Mapped[datetime | None]
    cancelled_by: Mapped[uuid.UUID | None]
    cancellation_reason: Mapped[str | None] = mapped_column(Text)
    distance_m: Mapped[int | None] = mapped_column(Integer)
    duration_s: Mapped[int | None] = mapped_column(Integer)
    final_fare: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    rating: Mapped[int | None] = mapped_column(SmallInteger)
    rating_comment: Mapped[str | None] = mapped_column(Text)
    version: Mapped[int] = mapped_column(Integer, server_default=text("1"))


class RideEvent(Base):
    """Every transition of a ride: from, to, who, when. Append-only."""

    __tablename__ = "ride_events"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    ride_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("rides.id"), index=True)
    from_status: Mapped[str | None] = mapped_column(String(32))
    to_status: Mapped[str] = mapped_column(String(32))
    actor_id: Mapped[uuid.UUID | None]
    actor_role: Mapped[str] = mapped_column(String(16))
    occurred_at: Mapped[datetime]
    data: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'"))


class Offer(Base):
    __tablename__ = "offers"
    __table_args__ = (
        CheckConstraint(
            "status IN ('offered', 'accepted', 'declined', 'expired', 'withdrawn')",
            name="status_known",
        ),
        # The heart of "exactly one": at most one live offer per ride and per driver.
        Index(
            "uq_offers_live_per_ride",
            "ride_id",
            unique=True,
            postgresql_where=text("status = 'offered'"),
        ),
        Index(
            "uq_offers_live_per_driver",
            "driver_id",
            unique=True,
            postgresql_where=text("status = 'offered'"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    ride_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("rides.id"), index=True)
    driver_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"), index=True)
    # The decision behind the offer (``match_decisions.id``). No foreign key: the offer
    # is committed and pushed first, the decision stored just after (migration 0010).
    decision_id: Mapped[uuid.UUID]
    status: Mapped[str] = mapped_column(String(16))
    pickup_eta_s: Mapped[int] = mapped_column(Integer)
    offered_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    responded_at: Mapped[datetime | None]


class MatchDecision(Base):
    """One request's outcome in one matching window, with every candidate's cost, so a
    driver can be told why an offer went elsewhere."""

    __tablename__ = "match_decisions"
    __table_args__ = (
        # "The decisions I was a candidate in": candidate_driver_ids @> ARRAY[...]. Its
        # ids only, and no pending list: written inside the matching window, before
        # the offers go out (migration 0009).
        Index(
            "ix_match_decisions_candidate_driver_ids",
            "candidate_driver_ids",
            postgresql_using="gin",
            postgresql_with={"fastupdate": "off"},
        ),
        Index("ix_match_decisions_window_at", "window_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    ride_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("rides.id"), index=True)
    region: Mapped[str] = mapped_column(String(20))
    policy: Mapped[str] = mapped_column(String(16))
    window_at: Mapped[datetime]
    chosen_driver_id: Mapped[uuid.UUID | None]
    candidates: Mapped[list[dict[str, Any]]] = mapped_column(JSONB)
    # The candidates' driver ids, in the candidates' order: what the index looks up.
    candidate_driver_ids: Mapped[list[uuid.UUID]] = mapped_column(
        ARRAY(Uuid(as_uuid=True)), server_default=text("'{}'")
    )
    params: Mapped[dict[str, Any]] = mapped_column(JSONB)


class Breadcrumb(Base):
    """Sampled positions of a driver during a ride; inserted in batches."""

    __tablename__ = "breadcrumbs"
    __table_args__ = (Index("ix_breadcrumbs_ride_time", "ride_id", "recorded_at"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    ride_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("rides.id"))
    driver_id: Mapped[uuid.UUID]
    point: Mapped[Any] = mapped_column(Geography("POINT", srid=4326, spatial_index=False))
    recorded_at: Mapped[datetime]
    speed_mps: Mapped[float | None]
    heading_deg: Mapped[float | None]
    accuracy_m: Mapped[float | None]


class DriverShift(Base):
    """A period online of one connection of a driver's, for earnings per hour online. A
    driver's time online is the union of their shifts: two connections at once (a
    reconnect before the old one is noticed gone) count once."""

    __tablename__ = "driver_shifts"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    driver_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"), index=True)
    started_at: Mapped[datetime]
    ended_at: Mapped[datetime | None]
