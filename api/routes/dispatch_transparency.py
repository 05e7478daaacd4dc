"""Offers answered over HTTP (the fallback of the driver websocket's frames), why an offer
went elsewhere, and how evenly work is spread, for members."""

from __future__ import annotations

import uuid
from datetime import date
from typing import Annotated

from fastapi import APIRouter, Depends, Query

from api.deps import CurrentDriver, CurrentMember, ResourcesDep, Uow
from api.problems import problem_responses
from dispatch.live import LiveState
from dispatch.offers import OfferFlows
from dispatch.schemas import FairnessRead, MatchExplanationRead, OfferAcceptance, OfferRead
from dispatch.transparency import MAX_EXPLANATIONS, TransparencyService

router = APIRouter(tags=["dispatch"])


def get_offer_flows(resources: ResourcesDep) -> OfferFlows:
    live = LiveState(
        resources.redis,
        liveness_s=resources.settings.dispatch.liveness_s,
        offer_ttl_s=resources.settings.dispatch.offer_ttl_s,
    )
    # The flows commit on their own: the rider hears of the assignment only after it.
    return OfferFlows(resources.sessionmaker, resources.clock, live)


def get_transparency(resources: ResourcesDep, uow: Uow) -> TransparencyService:
    return TransparencyService(uow.session, resources.clock)


Offers = Annotated[OfferFlows, Depends(get_offer_flows)]
Transparency = Annotated[TransparencyService, Depends(get_transparency)]


@router.post(
    "/v1/drivers/me/offers/{offer_id}/accept",
    responses=problem_responses(401, 403, 404, 409, 422),
    summary="Accept an offer made to you; exactly one driver gets a ride. Accepting "
    "again answers the same",
)
async def accept_offer(
    offer_id: uuid.UUID, driver: CurrentDriver, offers: Offers
) -> OfferAcceptance:
    return await offers.accept(offer_id, driver.user_id)


@router.post(
    "/v1/drivers/me/offers/{offer_id}/decline",
    responses=problem_responses(401, 403, 404, 409, 422),
    summary="Decline an offer made to you; the ride is offered to someone else",
)
async def decline_offer(offer_id: uuid.UUID, driver: CurrentDriver, offers: Offers) -> OfferRead:
    return await offers.decline(offer_id, driver.user_id)


@router.get(
    "/v1/drivers/me/decisions",
    responses=problem_responses(401, 403, 422),
    summary="The matching decisions of the last 7 days you were a candidate in, newest "
    "first: your cost against the winner's",
)
async def my_decisions(
    driver: CurrentDriver,
    transparency: Transparency,
    ride_id: uuid.UUID | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_EXPLANATIONS)] = 20,
) -> list[MatchExplanationRead]:
    return await transparency.explanations(driver.user_id, ride_id, limit)


@router.get(
    "/v1/drivers/me/decisions/{decision_id}",
    responses=problem_responses(401, 403, 404, 422),
    summary="Why one offer went where it went: your cost against the winner's (never "
    "who the winner is)",
)
async def my_decision(
    decision_id: uuid.UUID, driver: CurrentDriver, transparency: Transparency
) -> MatchExplanationRead:
    return await transparency.explanation(driver.user_id, decision_id)


@router.get(
    "/v1/members/dispatch/fairness",
    responses=problem_responses(401, 403, 422),
    summary="How evenly earnings and offers per hour online were spread on a day (UTC)",
)
async def fairness(
    member: CurrentMember,
    transparency: Transparency,
    day: Annotated[
        date | None, Query(alias="date", description="UTC day; today if omitted")
    ] = None,
) -> FairnessRead:
    return await transparency.fairness_of(day or transparency.clock.now().date())
