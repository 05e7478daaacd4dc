from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, status

from api.deps import (
    AdminOnly,
    CurrentDriver,
    CurrentPrincipal,
    CurrentRider,
    CurrentUser,
    Flows,
    Payments,
)
from api.problems import problem_responses
from payments.errors import RidePaymentNotFound, UnsupportedCurrency
from payments.money import MINOR_UNIT_EXPONENT, Money
from payments.schemas import (
    CardSetup,
    MoneyRead,
    OnboardingLink,
    PaymentMethodRead,
    PayoutAccountRead,
    RefundRequest,
    RidePaymentRead,
    RiderBalance,
    SavePaymentMethod,
    TipRequest,
)

router = APIRouter(tags=["payments"])

Currency = Annotated[str, Query(pattern="^[A-Z]{3}$", description="ISO 4217 code")]


def _supported(currency: str) -> str:
    if currency not in MINOR_UNIT_EXPONENT:
        raise UnsupportedCurrency(f"{currency} is not one of {sorted(MINOR_UNIT_EXPONENT)}")
    return currency


@router.post(
    "/v1/riders/me/cards/setup",
    responses=problem_responses(401, 403, 404, 503),
    summary="Start saving a card: confirm the returned client secret with Stripe in the app",
)
async def start_card_setup(rider: CurrentRider, user: CurrentUser, flows: Flows) -> CardSetup:
    return await flows.start_card_setup(rider.user_id, user.email, user.full_name)


@router.post(
    "/v1/riders/me/cards",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=problem_responses(401, 403, 409, 422, 503),
    summary="Save a card the app confirmed, as the one rides are charged to",
)
async def save_card(body: SavePaymentMethod, rider: CurrentRider, flows: Flows) -> None:
    await flows.save_card(rider.user_id, body.payment_method_id)


@router.get(
    "/v1/riders/me/cards",
    responses=problem_responses(401, 403, 503),
    summary="The rider's saved cards",
)
async def list_cards(rider: CurrentRider, flows: Flows) -> list[PaymentMethodRead]:
    return await flows.cards(rider.user_id)


@router.get(
    "/v1/riders/me/balance",
    responses=problem_responses(401, 403, 422),
    summary="What the rider still owes (unpaid fares block new rides)",
)
async def rider_balance(
    rider: CurrentRider, payments: Payments, currency: Currency = "USD"
) -> RiderBalance:
    owed = await payments.unpaid(rider.user_id, [_supported(currency)])
    return RiderBalance(owed=[MoneyRead.of(m) for m in owed], can_request_rides=not owed)


@router.post(
    "/v1/riders/me/debts/settle",
    responses=problem_responses(401, 402, 403, 409, 422, 503),
    summary="Charge the saved card for every unpaid fare",
)
async def settle_debts(
    rider: CurrentRider, flows: Flows, currency: Currency = "USD"
) -> list[RidePaymentRead]:
    return await flows.settle_debts(rider.user_id, _supported(currency))


@router.get(
    "/v1/rides/{ride_id}/payment",
    responses=problem_responses(401, 404, 422),
    summary="The money side of a ride, for its rider or its driver",
)
async def ride_payment(
    ride_id: uuid.UUID, principal: CurrentPrincipal, payments: Payments
) -> RidePaymentRead:
    payment = await payments.read(ride_id)
    if principal.user_id not in (payment.rider_id, payment.driver_id):
        # Never tell a stranger that the ride exists.
        raise RidePaymentNotFound
    return payment


@router.post(
    "/v1/rides/{ride_id}/tip",
    responses=problem_responses(401, 402, 403, 404, 409, 422, 503),
    summary="Tip the driver after a completed ride: a charge of its own, all to the driver",
)
async def tip(
    ride_id: uuid.UUID, body: TipRequest, rider: CurrentRider, flows: Flows
) -> RidePaymentRead:
    payment = await flows.read(ride_id)
    if payment.rider_id != rider.user_id:
        raise RidePaymentNotFound
    return await flows.tip(ride_id, rider.user_id, Money(body.amount, payment.currency))


@router.post(
    "/v1/drivers/me/payout-account/onboarding",
    responses=problem_responses(401, 403, 404, 422, 503),
    summary="A link to Stripe's onboarding, where the driver sets up how they are paid",
)
async def payout_onboarding(
    driver: CurrentDriver,
    user: CurrentUser,
    flows: Flows,
    country: Annotated[str, Query(pattern="^[A-Z]{2}$")] = "US",
) -> OnboardingLink:
    return await flows.onboarding_link(driver.user_id, user.email, country)


@router.get(
    "/v1/drivers/me/payout-account",
    responses=problem_responses(401, 403, 404, 503),
    summary="Whether the driver can receive their earnings (checked with Stripe)",
)
async def payout_account(driver: CurrentDriver, flows: Flows) -> PayoutAccountRead:
    return await flows.refresh_payout_account(driver.user_id)


@router.post(
    "/v1/admin/rides/{ride_id}/refunds",
    responses=problem_responses(401, 403, 404, 409, 422, 503),
    summary="Refund (part of) a fare; the driver's share comes back by policy",
)
async def refund(
    ride_id: uuid.UUID, body: RefundRequest, admin: AdminOnly, flows: Flows
) -> RidePaymentRead:
    payment = await flows.read(ride_id)
    amount = Money(body.amount, payment.currency) if body.amount is not None else None
    return await flows.refund(
        ride_id,
        amount,
        body.request_id,
        from_driver=body.clawback == "from_driver",
        reason=body.reason,
    )
