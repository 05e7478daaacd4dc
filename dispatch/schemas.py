from __future__ import annotations

import uuid
from datetime import date, datetime
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


# Offers and the transparency of matching.

OfferStatusName = Literal["offered", "accepted", "declined", "expired", "withdrawn"]
ExplanationOutcomeName = Literal["offered", "lost_on_cost", "needed_elsewhere", "not_a_candidate"]


class OfferRead(BaseModel):
    id: uuid.UUID
    ride_id: uuid.UUID
    driver_id: uuid.UUID
    decision_id: uuid.UUID
    status: OfferStatusName
    pickup_eta_s: int = Field(description="Seconds from the driver to the pickup, as matched")
    offered_at: datetime
    expires_at: datetime = Field(description="Accept before then; afterwards it is 409")
    responded_at: datetime | None


class OfferAcceptance(BaseModel):
    offer: OfferRead
    ride: RideRead = Field(description="The ride, now assigned to you (without the PIN)")


class CostRead(BaseModel):
    eta_s: float = Field(description="Estimated seconds to the pickup")
    fairness_bonus_s: float = Field(
        description="Seconds taken off for fairness (idle time, low earnings today)"
    )
    cost: float = Field(description="eta_s - fairness_bonus_s: the lowest total wins")


class MatchExplanationRead(BaseModel):
    """Why an offer went where it went, told to one driver: their own cost against the
    winner's, never who the winner is."""

    decision_id: uuid.UUID
    ride_id: uuid.UUID
    decided_at: datetime
    policy: str
    outcome: ExplanationOutcomeName = Field(
        description="offered: you got it; lost_on_cost: the winner cost no more than you; "
        "needed_elsewhere: you cost less, but serving every request of the window needed "
        "you for another one (or an older request took you first)"
    )
    waited_s: float = Field(description="How long the request had waited at the decision")
    radius_m: float = Field(description="How far the request looked for drivers")
    candidates: int = Field(description="How many drivers were considered")
    own: CostRead | None
    winner: CostRead | None = Field(description="Null when nobody got the offer")


class FairnessRead(BaseModel):
    """How evenly work and pay were spread on one day (UTC), across drivers online."""

    day: date
    drivers: int = Field(description="Drivers with time online that day")
    hours_online: float
    offers: int
    earnings_amount: int = Field(
        description="Fares of the rides completed that day, in minor units of currency"
    )
    currency: str | None = Field(
        description="The currency most of the day's fares were in (the only one counted); "
        "null when nothing was earned"
    )
    earnings_per_hour_gini: float = Field(
        description="Gini of fares earned per hour online: 0 is perfectly even, 1 is one "
        "driver earning everything"
    )
    offers_per_hour_gini: float = Field(description="Gini of offers per hour online")
    earnings_per_hour_lorenz: list[float] = Field(
        description="Share of the day's earnings per hour held by the lowest 10 %, 20 %, "
        "... 100 % of drivers: the Lorenz curve, for a chart"
    )


# The driver's positions (the driver channel and its HTTP fallback).

LOCATION_BATCH_MAX = 500


class LocationIn(BaseModel):
    """A position as the driver's device measured it. Ranges are checked with a reason
    code per position (see ``dispatch.locations``), not refused as a whole."""

    model_config = ConfigDict(extra="forbid")

    lat: float = Field(description="Degrees (WGS 84)")
    lng: float = Field(description="Degrees (WGS 84)")
    heading: float | None = Field(default=None, description="Degrees clockwise from north")
    speed: float | None = Field(default=None, description="Metres per second")
    accuracy: float | None = Field(default=None, description="Metres (radius, 68 %)")
    recorded_at: datetime = Field(description="The device's time of the fix, with its offset")


class LocationBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    locations: list[LocationIn] = Field(
        min_length=1,
        max_length=LOCATION_BATCH_MAX,
        description="Oldest first, as recorded while the app was offline",
    )


class LocationResult(BaseModel):
    index: int
    accepted: bool
    reason_code: str | None = Field(description="Why it was rejected (docs/api.md)")
    detail: str | None


class LocationBatchRead(BaseModel):
    accepted: int
    rejected: int
    results: list[LocationResult]
    live_position_updated: bool = Field(
        description="Whether the newest accepted position became the live one: only when "
        "the driver is online and it is newer and fresh enough"
    )
    ride_id: uuid.UUID | None = Field(description="The ride whose trip the positions joined")
    breadcrumbs: int = Field(description="Positions queued as the ride's breadcrumbs")
