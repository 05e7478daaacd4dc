from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from payments.schemas import FareRead

ZoneKind = Literal["service_area", "airport", "pickup_area", "surcharge"]
RideStatusName = Literal[
    "requested",
    "matching",
    "driver_assigned",
    "driver_arrived",
    "in_progress",
    "completed",
    "cancelled_by_rider",
    "cancelled_by_driver",
    "no_driver_found",
    "no_show",
    "payment_failed",
]


class Point(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    lat: float = Field(ge=-90, le=90, allow_inf_nan=False, description="Degrees (WGS 84)")
    lng: float = Field(ge=-180, le=180, allow_inf_nan=False, description="Degrees (WGS 84)")


# Zones.


class ZoneCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: str = Field(
        pattern="^[a-z0-9][a-z0-9_-]{0,63}$",
        description="Stable name; a fare policy's zone surcharges are keyed by it",
    )
    kind: ZoneKind
    name: str = Field(min_length=1, max_length=200)
    area: dict[str, Any] = Field(
        description="A GeoJSON Polygon or MultiPolygon, longitude first (RFC 7946)"
    )


class ZoneRead(BaseModel):
    id: uuid.UUID
    code: str
    kind: ZoneKind
    name: str
    active: bool
    area: dict[str, Any] = Field(description="GeoJSON MultiPolygon")
    created_at: datetime


# Quotes.


class QuoteCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pickup: Point
    dropoff: Point


class QuoteFare(FareRead):
    """An upfront fare as a quote stores it: the fare, and what the final fare needs to be
    priced again the same way (the surge applied and the zones of the trip)."""

    surge_multiplier: Decimal
    zones: list[str]


class QuoteRead(BaseModel):
    id: uuid.UUID
    pickup: Point
    dropoff: Point
    fare: QuoteFare
    estimated_distance_m: int
    estimated_duration_s: int
    pickup_eta_s: int | None = Field(
        description="Seconds for the nearest available driver to reach the pickup; null "
        "when no driver is available nearby"
    )
    created_at: datetime
    expires_at: datetime = Field(description="Request a ride with this quote before then")


# Rides.


class RideCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    quote_id: uuid.UUID


class RideRead(BaseModel):
    id: uuid.UUID
    status: RideStatusName
    rider_id: uuid.UUID
    driver_id: uuid.UUID | None
    quote_id: uuid.UUID
    region: str
    pickup: Point
    dropoff: Point
    pin: str | None = Field(
        description="The rider tells it to the driver to start the trip; shown to the rider only"
    )
    upfront_fare: QuoteFare
    final_fare: FareRead | None = Field(
        description="What was charged: the trip's fare, or a cancellation or no-show fee"
    )
    distance_m: int | None
    duration_s: int | None
    requested_at: datetime
    driver_assigned_at: datetime | None
    driver_arrived_at: datetime | None
    started_at: datetime | None
    ended_at: datetime | None
    cancellation_reason: str | None
    rating: int | None


class CancellationPreview(BaseModel):
    ride_id: uuid.UUID
    status: RideStatusName
    fee: FareRead | None = Field(description="What cancelling now costs; null when free")
    free_until: datetime | None = Field(
        description="While free with a driver assigned: when cancelling starts to cost "
        "(null before a driver is assigned, and when it stays free)"
    )


class RideCancel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str | None = Field(default=None, max_length=500)
    accept_fee_amount: int | None = Field(
        default=None,
        ge=0,
        description="The largest fee (minor units) the rider agreed to, as previewed; a "
        "larger fee refuses the cancellation with cancellation-fee-changed",
    )


class DriverCancel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str | None = Field(default=None, max_length=500)


class TripStart(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pin: str = Field(pattern="^[0-9]{4}$")


class RatingCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rating: int = Field(ge=1, le=5)
    comment: str | None = Field(default=None, max_length=1000)
