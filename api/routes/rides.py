"""Quotes, rides and the trip as riders and drivers drive it; zones for admins.

Routes that move money (requesting, completing, cancelling, no-show) go through
RideFlows, which open their own transactions, so no database transaction is held while
Stripe answers. The other transitions run in the request's unit of work.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Header, Query, Response, status
from pydantic import AwareDatetime

from api.deps import (
    AdminOnly,
    CurrentDriver,
    CurrentPrincipal,
    CurrentRider,
    Flows,
    ResourcesDep,
    Uow,
)
from api.problems import problem_responses
from dispatch.flows import RideFlows
from dispatch.live import LiveState
from dispatch.schemas import (
    CancellationPreview,
    DriverCancel,
    Point,
    QuoteCreate,
    QuoteRead,
    RatingCreate,
    RideCancel,
    RideCreate,
    RideRead,
    TripStart,
    ZoneCreate,
    ZoneKind,
    ZoneRead,
)
from dispatch.service import QuoteService, RideService, ZoneService

router = APIRouter(tags=["rides"])


def get_quote_service(resources: ResourcesDep, uow: Uow) -> QuoteService:
    return QuoteService(uow.session, resources.clock, LiveState(resources.redis))


def get_ride_service(resources: ResourcesDep, uow: Uow) -> RideService:
    return RideService(uow.session, resources.clock, uow.events, resources.redis)


def get_ride_flows(resources: ResourcesDep, payments: Flows) -> RideFlows:
    return RideFlows(resources.sessionmaker, payments, resources.clock, resources.redis)


def get_zone_service(resources: ResourcesDep, uow: Uow) -> ZoneService:
    return ZoneService(uow.session, resources.clock)


Quotes = Annotated[QuoteService, Depends(get_quote_service)]
Rides = Annotated[RideService, Depends(get_ride_service)]
RideFlowsDep = Annotated[RideFlows, Depends(get_ride_flows)]
Zones = Annotated[ZoneService, Depends(get_zone_service)]
IdempotencyKey = Annotated[
    str,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=128,
        description="Chosen by the app for this request; sent again on a retry, it "
        "answers the ride the first request made",
    ),
]

_REPLAYED: dict[int | str, dict[str, Any]] = {
    200: {"model": RideRead, "description": "A retry with the same Idempotency-Key"}
}


# Rider.


@router.post(
    "/v1/quotes",
    status_code=status.HTTP_201_CREATED,
    responses=problem_responses(401, 403, 404, 422),
    summary="An upfront fare with its line items, the nearest driver's ETA, and an expiry",
)
async def create_quote(
    body: QuoteCreate, rider: CurrentRider, uow: Uow, quotes: Quotes
) -> QuoteRead:
    quote = await quotes.create(rider.user_id, body)
    await uow.commit()
    return quote


@router.post(
    "/v1/rides",
    status_code=status.HTTP_201_CREATED,
    responses={**_REPLAYED, **problem_responses(401, 402, 403, 404, 409, 422, 503)},
    summary="Request a ride from a quote; the fare is held on the rider's card",
)
async def request_ride(
    body: RideCreate,
    rider: CurrentRider,
    flows: RideFlowsDep,
    idempotency_key: IdempotencyKey,
    response: Response,
) -> RideRead:
    ride, created = await flows.request_ride(rider.user_id, body.quote_id, idempotency_key)
    if not created:
        response.status_code = status.HTTP_200_OK
    return ride


@router.get(
    "/v1/rides",
    responses=problem_responses(401, 403, 422),
    summary="The rider's rides, newest first (pass the last `requested_at` as `before`)",
)
async def ride_history(
    rider: CurrentRider,
    rides: Rides,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    before: AwareDatetime | None = None,
) -> list[RideRead]:
    return await rides.history(rider.user_id, limit, before)


@router.get(
    "/v1/rides/{ride_id}",
    responses=problem_responses(401, 404, 422),
    summary="One ride, for its rider (with the PIN) or its driver",
)
async def get_ride(ride_id: uuid.UUID, principal: CurrentPrincipal, rides: Rides) -> RideRead:
    return await rides.read_for(ride_id, principal.user_id)


@router.get(
    "/v1/rides/{ride_id}/cancellation",
    responses=problem_responses(401, 403, 404, 409, 422),
    summary="What cancelling now would cost, before cancelling",
)
async def cancellation_preview(
    ride_id: uuid.UUID, rider: CurrentRider, rides: Rides
) -> CancellationPreview:
    return await rides.cancellation_preview(ride_id, rider.user_id)


@router.post(
    "/v1/rides/{ride_id}/cancel",
    responses=problem_responses(401, 403, 404, 409, 422, 503),
    summary="Cancel before the trip starts; the hold is released or the fee taken from it",
)
async def cancel_ride(
    ride_id: uuid.UUID,
    rider: CurrentRider,
    flows: RideFlowsDep,
    body: Annotated[RideCancel | None, Body()] = None,
) -> RideRead:
    cancel = body or RideCancel()
    return await flows.cancel(ride_id, rider.user_id, cancel.reason, cancel.accept_fee_amount)


@router.post(
    "/v1/rides/{ride_id}/rating",
    responses=problem_responses(401, 403, 404, 409, 422),
    summary="Rate a completed ride, once (1 to 5)",
)
async def rate_ride(
    ride_id: uuid.UUID, body: RatingCreate, rider: CurrentRider, uow: Uow, rides: Rides
) -> RideRead:
    ride = await rides.rate(ride_id, rider.user_id, body.rating, body.comment)
    await uow.commit()
    return ride


# Driver.


@router.post(
    "/v1/rides/{ride_id}/arrive",
    responses=problem_responses(401, 403, 404, 409, 422),
    summary="The driver is at the pickup (within 150 m of it)",
)
async def arrive(
    ride_id: uuid.UUID, body: Point, driver: CurrentDriver, uow: Uow, rides: Rides
) -> RideRead:
    ride = await rides.arrive(ride_id, driver.user_id, body)
    await uow.commit()
    return _for_driver(ride)


@router.post(
    "/v1/rides/{ride_id}/start",
    responses=problem_responses(401, 403, 404, 409, 422, 429),
    summary="Start the trip with the rider's PIN",
)
async def start_trip(
    ride_id: uuid.UUID, body: TripStart, driver: CurrentDriver, uow: Uow, rides: Rides
) -> RideRead:
    ride = await rides.start(ride_id, driver.user_id, body.pin)
    await uow.commit()
    return _for_driver(ride)


@router.post(
    "/v1/rides/{ride_id}/complete",
    responses=problem_responses(401, 403, 404, 409, 422, 503),
    summary="End the trip: it is priced from its track and the fare is captured",
)
async def complete_trip(ride_id: uuid.UUID, driver: CurrentDriver, flows: RideFlowsDep) -> RideRead:
    return _for_driver(await flows.complete_trip(ride_id, driver.user_id))


@router.post(
    "/v1/rides/{ride_id}/no-show",
    responses=problem_responses(401, 403, 404, 409, 422, 503),
    summary="The rider did not come within the grace period; the no-show fee is charged",
)
async def no_show(ride_id: uuid.UUID, driver: CurrentDriver, flows: RideFlowsDep) -> RideRead:
    return _for_driver(await flows.no_show(ride_id, driver.user_id))


@router.post(
    "/v1/rides/{ride_id}/driver-cancel",
    responses=problem_responses(401, 403, 404, 409, 422),
    summary="Give the ride up before the trip; it goes back to matching without you",
)
async def driver_cancel(
    ride_id: uuid.UUID,
    driver: CurrentDriver,
    uow: Uow,
    rides: Rides,
    body: Annotated[DriverCancel | None, Body()] = None,
) -> RideRead:
    ride = await rides.cancel_by_driver(ride_id, driver.user_id, (body or DriverCancel()).reason)
    await uow.commit()
    return _for_driver(ride)


def _for_driver(ride: RideRead) -> RideRead:
    # The PIN is the rider's to tell, never the driver's to read.
    return ride.model_copy(update={"pin": None})


# Admin.


@router.post(
    "/v1/admin/zones",
    status_code=status.HTTP_201_CREATED,
    responses=problem_responses(401, 403, 409, 422),
    summary="Add the service area or a zone (airport, pickup area) as a GeoJSON polygon",
)
async def create_zone(body: ZoneCreate, admin: AdminOnly, uow: Uow, zones: Zones) -> ZoneRead:
    zone = await zones.create(body)
    await uow.commit()
    return zone


@router.get(
    "/v1/admin/zones",
    responses=problem_responses(401, 403, 422),
    summary="The service area and the zones, with their areas as GeoJSON",
)
async def list_zones(
    admin: AdminOnly, zones: Zones, kind: ZoneKind | None = None
) -> list[ZoneRead]:
    return await zones.zones(kind)
