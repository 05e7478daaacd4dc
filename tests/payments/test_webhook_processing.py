"""Processing stored Stripe events: every handled type, in order, repeated, shuffled.

The scenario puts ride payments in the states Stripe's events follow (a step made at
Stripe whose answer the flow never recorded, or already recorded) with PaymentService,
then delivers realistic events (Stripe's JSON shapes, consistent ids). Delivering each
once in order and delivering each three times in a shuffled order must leave the same
ledger, ride payments, payout accounts and driver payouts.
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from infra.clock import FrozenClock
from payments import ledger, pricing
from payments.ledger import AccountKind, Clawback
from payments.ledger_service import LedgerService
from payments.models import (
    DriverPayout,
    DriverPayoutAccount,
    LedgerAccount,
    LedgerTransaction,
    RidePayment,
    StripeEvent,
)
from payments.money import Money, allocate
from payments.pricing import Fare, FareSplit, TripEstimate, TripMeasurement
from payments.service import PaymentService, refund_key, tip_transfer_key, transfer_key
from payments.stripe_gateway import WebhookEvent, verify_webhook
from payments.webhooks import (
    MAX_ATTEMPTS,
    STRIPE_EVENT_JOB,
    WebhookService,
    connected_account_id,
    platform_payout_returned,
    process_stripe_event,
    refund_ledger_key,
    sweep_unprocessed_events,
)
from tests.factories import make_account
from tests.payments.factories import make_policy
from tests.payments.test_webhooks import queued_jobs
from tests.payments.webhook_signing import stripe_signature

SECRET = "whsec_ridecoop_processing_0123456789abcdef"
NOW = datetime(2026, 11, 26, 8, 0, tzinfo=UTC)
POLICY = make_policy()
HOLD = 2_500
CARD = "pm_card_visa"
ACCT_DRIVER = "acct_1DriverOnboarded"
ACCT_WAITING = "acct_1DriverWaiting"


def usd(cents: int) -> Money:
    return Money(cents, "USD")


def priced() -> tuple[Fare, FareSplit]:
    quote = pricing.quote(
        POLICY, TripEstimate(8_200, 1_020), surge=Decimal(1), zones=frozenset(), now=NOW
    )
    fare = pricing.final_fare(POLICY, quote, TripMeasurement(8_200, 1_020, 0))
    return fare, pricing.split(POLICY, fare)


def cancellation_fee() -> tuple[Fare, FareSplit]:
    fee = pricing.cancellation_charge(
        POLICY,
        requested_at=NOW - timedelta(minutes=10),
        driver_assigned_at=NOW - timedelta(minutes=9),
        cancelled_at=NOW,
        by="rider",
    )
    assert fee is not None
    return fee, pricing.split(POLICY, fee)


FARE, SPLIT = priced()
FEE, FEE_SPLIT = cancellation_fee()


def driver_share_of(refunded: int) -> int:
    """The driver's pro-rata part of a refund of the scenario's fare."""
    others = SPLIT.total - SPLIT.driver - SPLIT.pass_through
    return allocate(refunded, [SPLIT.driver.amount, SPLIT.pass_through.amount, others.amount])[0]


# Stripe objects, in the shapes Stripe sends them.


def payment_intent(
    intent_id: str,
    *,
    metadata: dict[str, str],
    status: str,
    amount: int = HOLD,
    amount_capturable: int = 0,
    amount_received: int = 0,
    latest_charge: str | None = None,
    capture_method: str = "manual",
    last_payment_error: dict[str, Any] | None = None,
    cancellation_reason: str | None = None,
) -> dict[str, Any]:
    return {
        "id": intent_id,
        "object": "payment_intent",
        "amount": amount,
        "amount_capturable": amount_capturable,
        "amount_received": amount_received,
        "capture_method": capture_method,
        "cancellation_reason": cancellation_reason,
        "confirmation_method": "automatic",
        "created": int(NOW.timestamp()) - 3600,
        "currency": "usd",
        "customer": "cus_Rider",
        "latest_charge": latest_charge,
        "last_payment_error": last_payment_error,
        "livemode": False,
        "metadata": metadata,
        "payment_method": CARD,
        "payment_method_types": ["card"],
        "status": status,
    }


def refund(
    refund_id: str,
    *,
    charge: str,
    intent: str,
    amount: int,
    status: str = "succeeded",
    metadata: dict[str, str] | None = None,
) -> dict[str, Any]:
    return {
        "id": refund_id,
        "object": "refund",
        "amount": amount,
        "balance_transaction": f"txn_{refund_id}",
        "charge": charge,
        "created": int(NOW.timestamp()),
        "currency": "usd",
        "metadata": metadata or {},
        "payment_intent": intent,
        "reason": "requested_by_customer",
        "status": status,
    }


def charge(
    charge_id: str,
    *,
    intent: str,
    amount: int,
    metadata: dict[str, str],
    refunds: Sequence[dict[str, Any]] = (),
) -> dict[str, Any]:
    refunded = sum(r["amount"] for r in refunds if r["status"] == "succeeded")
    return {
        "id": charge_id,
        "object": "charge",
        "amount": HOLD,
        "amount_captured": amount,
        "amount_refunded": refunded,
        "balance_transaction": f"txn_{charge_id}",
        "captured": True,
        "created": int(NOW.timestamp()),
        "currency": "usd",
        "customer": "cus_Rider",
        "metadata": metadata,
        "paid": True,
        "payment_intent": intent,
        "payment_method": CARD,
        "refunded": refunded == amount,
        "refunds": {
            "object": "list",
            "data": list(refunds),
            "has_more": False,
            "total_count": len(refunds),
            "url": f"/v1/charges/{charge_id}/refunds",
        },
        "status": "succeeded",
    }


def balance_transaction(txn_id: str, *, amount: int, fee: int, category: str) -> dict[str, Any]:
    return {
        "id": txn_id,
        "object": "balance_transaction",
        "amount": amount,
        "currency": "usd",
        "fee": fee,
        "fee_details": [
            {"amount": fee, "currency": "usd", "description": "Dispute fee", "type": "stripe_fee"}
        ]
        if fee
        else [],
        "net": amount - fee,
        "reporting_category": category,
        "status": "available",
        "type": "adjustment",
    }


def dispute(
    dispute_id: str,
    *,
    charge_id: str,
    intent: str,
    amount: int,
    status: str,
    reinstated_fee: int | None = None,
) -> dict[str, Any]:
    movements = [
        balance_transaction(f"txn_{dispute_id}_w", amount=-amount, fee=1_500, category="dispute")
    ]
    if reinstated_fee is not None:
        movements.append(
            balance_transaction(
                f"txn_{dispute_id}_r",
                amount=amount,
                fee=-reinstated_fee,
                category="dispute_reversal",
            )
        )
    return {
        "id": dispute_id,
        "object": "dispute",
        "amount": amount,
        "balance_transactions": movements,
        "charge": charge_id,
        "created": int(NOW.timestamp()),
        "currency": "usd",
        "is_charge_refundable": False,
        "livemode": False,
        "metadata": {},
        "payment_intent": intent,
        "reason": "fraudulent",
        "status": status,
    }


def account(
    account_id: str, *, details_submitted: bool, charges_enabled: bool, payouts_enabled: bool
) -> dict[str, Any]:
    return {
        "id": account_id,
        "object": "account",
        "type": "express",
        "country": "US",
        "default_currency": "usd",
        "details_submitted": details_submitted,
        "charges_enabled": charges_enabled,
        "payouts_enabled": payouts_enabled,
        "capabilities": {"transfers": "active" if payouts_enabled else "inactive"},
        "metadata": {},
    }


def transfer(
    transfer_id: str,
    *,
    amount: int,
    source: str,
    metadata: dict[str, str],
    amount_reversed: int = 0,
    description: str | None = None,
) -> dict[str, Any]:
    return {
        "id": transfer_id,
        "object": "transfer",
        "amount": amount,
        "amount_reversed": amount_reversed,
        "balance_transaction": f"txn_{transfer_id}",
        "created": int(NOW.timestamp()),
        "currency": "usd",
        "description": description,
        "destination": ACCT_DRIVER,
        "destination_payment": f"py_{transfer_id}",
        "metadata": metadata,
        "reversals": {
            "object": "list",
            "data": (
                [
                    {
                        "id": f"trr_{transfer_id}",
                        "object": "transfer_reversal",
                        "amount": amount_reversed,
                    }
                ]
                if amount_reversed
                else []
            ),
            "has_more": False,
            "total_count": 1 if amount_reversed else 0,
        },
        "reversed": amount_reversed == amount,
        "source_transaction": source,
        "source_type": "card",
        "transfer_group": None,
    }


def payout(
    payout_id: str, *, amount: int, status: str, failure_code: str | None = None
) -> dict[str, Any]:
    return {
        "id": payout_id,
        "object": "payout",
        "amount": amount,
        "arrival_date": int((NOW + timedelta(days=2)).timestamp()),
        "automatic": True,
        "balance_transaction": f"txn_{payout_id}",
        "created": int(NOW.timestamp()),
        "currency": "usd",
        "destination": "ba_1Bank",
        "failure_code": failure_code,
        "method": "standard",
        "status": status,
        "type": "bank_account",
    }


@dataclass(frozen=True)
class Delivery:
    event: WebhookEvent
    account_id: str | None


def signed(
    event_type: str, data_object: dict[str, Any], *, number: int, account_id: str | None = None
) -> Delivery:
    """The event as Stripe would deliver it, verified the way the route verifies it."""
    body: dict[str, Any] = {
        "id": f"evt_{number:04d}",
        "object": "event",
        "api_version": "2026-10-28.endive",
        "created": int(NOW.timestamp()) + number,
        "data": {"object": data_object},
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": event_type,
    }
    if account_id is not None:
        body["account"] = account_id
    payload = json.dumps(body).encode()
    event = verify_webhook(payload, stripe_signature(payload, SECRET), SECRET)
    return Delivery(event, connected_account_id(payload))


# The scenario.


@dataclass(frozen=True)
class People:
    rider: uuid.UUID
    rider_in_debt: uuid.UUID
    rider_lapsed: uuid.UUID
    driver: uuid.UUID
    driver_waiting: uuid.UUID


RIDES = (
    "authorizing",
    "declined",
    "capturing",
    "transferring",
    "reversed",
    "tip_charging",
    "tip_transferring",
    "cancelling",
    "fee",
    "lapsed",
    "debt",
    "waiting",
)


@dataclass(frozen=True)
class Scenario:
    people: People
    rides: dict[str, uuid.UUID]

    def ride(self, name: str) -> uuid.UUID:
        return self.rides[name]

    def meta(self, name: str, kind: str = "fare") -> dict[str, str]:
        return {"ride_id": str(self.rides[name]), "kind": kind}


@pytest.fixture
async def people(client: httpx.AsyncClient) -> People:
    return People(
        rider=(await make_account(client, "rider")).user_id,
        rider_in_debt=(await make_account(client, "rider")).user_id,
        rider_lapsed=(await make_account(client, "rider")).user_id,
        driver=(await make_account(client, "driver")).user_id,
        driver_waiting=(await make_account(client, "driver")).user_id,
    )


@pytest.fixture
def scenario(people: People) -> Scenario:
    return Scenario(people, {name: uuid.uuid4() for name in RIDES})


def clock() -> FrozenClock:
    return FrozenClock(NOW)


async def arrange(session: AsyncSession, s: Scenario) -> None:
    """Ride payments as the flows leave them just before Stripe's events arrive."""
    service = PaymentService(session, clock())
    p = s.people
    for rider, customer in (
        (p.rider, "cus_Rider"),
        (p.rider_in_debt, "cus_InDebt"),
        (p.rider_lapsed, "cus_Lapsed"),
    ):
        await service.save_customer(rider, customer)
        await service.set_default_card(rider, CARD)
    await service.save_payout_account(p.driver, ACCT_DRIVER)
    await service.payout_account_updated(
        ACCT_DRIVER, details_submitted=True, charges_enabled=True, payouts_enabled=True
    )
    await service.save_payout_account(p.driver_waiting, ACCT_WAITING)

    async def authorized(name: str, rider: uuid.UUID = p.rider) -> uuid.UUID:
        ride = s.ride(name)
        await service.open_authorization(ride, rider, usd(HOLD))
        await service.authorized(ride, f"pi_{name}")
        return ride

    async def captured(name: str, driver: uuid.UUID = p.driver) -> uuid.UUID:
        ride = await authorized(name)
        await service.open_capture(ride, driver, FARE, SPLIT)
        await service.captured(ride, f"ch_{name}")
        return ride

    async def transferred(name: str) -> uuid.UUID:
        ride = await captured(name)
        await service.record_call(
            transfer_key(ride), "transfer", ride, {"amount": SPLIT.driver.amount}
        )
        await service.transferred(ride, f"tr_{name}", SPLIT.driver)
        return ride

    # The intents were created; their answers never recorded.
    await service.open_authorization(s.ride("authorizing"), p.rider, usd(HOLD))
    await service.open_authorization(s.ride("declined"), p.rider, usd(HOLD))
    # Priced; the capture made, its answer never recorded.
    ride = await authorized("capturing")
    await service.open_capture(ride, p.driver, FARE, SPLIT)
    # Captured; the transfer made, its answer never recorded.
    ride = await captured("transferring")
    await service.record_call(transfer_key(ride), "transfer", ride, {"amount": SPLIT.driver.amount})
    # Transferred, then partly refunded by the refund flow, which reversed the transfer.
    ride = await transferred("reversed")
    await service.record_call(
        refund_key(ride, "req-1"), "refund", ride, {"amount": 1_000, "from_driver": True}
    )
    await service.refunded(ride, "re_reversed", usd(1_000), Clawback.reverse_transfer, "req-1")
    # Transferred; a tip charged, its answer never recorded.
    ride = await transferred("tip_charging")
    await service.open_tip(ride, p.rider, usd(300), CARD)
    # Tip charged; its transfer made, the answer never recorded.
    ride = await transferred("tip_transferring")
    await service.open_tip(ride, p.rider, usd(400), CARD)
    await service.tip_charged(ride, "ch_tip_tip_transferring")
    await service.record_call(tip_transfer_key(ride), "transfer", ride, {"amount": 400})
    # A free cancellation and a paid one, under way.
    ride = await authorized("cancelling")
    await service.open_cancellation(ride, None, None, None)
    ride = await authorized("fee")
    await service.open_cancellation(ride, p.driver, FEE, FEE_SPLIT)
    # A capture under way when the hold lapses.
    ride = await authorized("lapsed", p.rider_lapsed)
    await service.open_capture(ride, p.driver, FARE, SPLIT)
    # A capture that failed: the rider owes the fare, and pays it later.
    ride = await authorized("debt", p.rider_in_debt)
    await service.open_capture(ride, p.driver, FARE, SPLIT)
    await service.capture_failed(ride, "card_declined")
    # Captured for a driver who cannot receive transfers yet.
    ride = await captured("waiting", driver=p.driver_waiting)
    await service.transfer_waits(ride)


def events(s: Scenario) -> list[Delivery]:
    """Every event of the scenario, in the order Stripe would send them."""
    fare = FARE.total.amount
    fee = FEE.total.amount
    pending_refund = refund(
        "re_capturing_2", charge="ch_capturing", intent="pi_capturing", amount=300, status="pending"
    )
    first_refund = refund(
        "re_capturing_1", charge="ch_capturing", intent="pi_capturing", amount=500
    )
    second_refund = {**pending_refund, "status": "succeeded"}
    dashboard_refund = refund(
        "re_transferring", charge="ch_transferring", intent="pi_transferring", amount=700
    )
    flow_refund = refund(
        "re_reversed",
        charge="ch_reversed",
        intent="pi_reversed",
        amount=1_000,
        metadata={**s.meta("reversed"), "request_id": "req-1"},
    )
    reversal = driver_share_of(1_000)
    listed: list[tuple[str, dict[str, Any], str | None]] = [
        (
            "payment_intent.amount_capturable_updated",
            payment_intent(
                "pi_authorizing",
                metadata=s.meta("authorizing"),
                status="requires_capture",
                amount_capturable=HOLD,
            ),
            None,
        ),
        (
            "payment_intent.payment_failed",
            payment_intent(
                "pi_declined",
                metadata=s.meta("declined"),
                status="requires_payment_method",
                last_payment_error={
                    "type": "card_error",
                    "code": "card_declined",
                    "decline_code": "insufficient_funds",
                },
            ),
            None,
        ),
        (
            "payment_intent.amount_capturable_updated",
            payment_intent(
                "pi_capturing",
                metadata=s.meta("capturing"),
                status="requires_capture",
                amount_capturable=HOLD,
            ),
            None,
        ),
        (
            "payment_intent.succeeded",
            payment_intent(
                "pi_capturing",
                metadata=s.meta("capturing"),
                status="succeeded",
                amount_received=fare,
                latest_charge="ch_capturing",
            ),
            None,
        ),
        (
            "charge.refunded",
            charge(
                "ch_capturing",
                intent="pi_capturing",
                amount=fare,
                metadata=s.meta("capturing"),
                refunds=[first_refund],
            ),
            None,
        ),
        ("refund.created", pending_refund, None),
        ("refund.updated", second_refund, None),
        ("charge.refund.updated", second_refund, None),
        (
            "charge.refunded",
            charge(
                "ch_capturing",
                intent="pi_capturing",
                amount=fare,
                metadata=s.meta("capturing"),
                refunds=[second_refund, first_refund],
            ),
            None,
        ),
        (
            "charge.dispute.created",
            dispute(
                "dp_capturing",
                charge_id="ch_capturing",
                intent="pi_capturing",
                amount=1_000,
                status="needs_response",
            ),
            None,
        ),
        (
            "charge.dispute.closed",
            dispute(
                "dp_capturing",
                charge_id="ch_capturing",
                intent="pi_capturing",
                amount=1_000,
                status="won",
                reinstated_fee=1_500,
            ),
            None,
        ),
        (
            "transfer.created",
            transfer(
                "tr_transferring",
                amount=SPLIT.driver.amount,
                source="ch_transferring",
                metadata=s.meta("transferring"),
            ),
            None,
        ),
        (
            "transfer.updated",
            transfer(
                "tr_transferring",
                amount=SPLIT.driver.amount,
                source="ch_transferring",
                metadata=s.meta("transferring"),
                description="Earnings",
            ),
            None,
        ),
        (
            "charge.refunded",
            charge(
                "ch_transferring",
                intent="pi_transferring",
                amount=fare,
                metadata=s.meta("transferring"),
                refunds=[dashboard_refund],
            ),
            None,
        ),
        (
            "charge.dispute.created",
            dispute(
                "dp_transferring",
                charge_id="ch_transferring",
                intent="pi_transferring",
                amount=800,
                status="needs_response",
            ),
            None,
        ),
        (
            "charge.dispute.closed",
            dispute(
                "dp_transferring",
                charge_id="ch_transferring",
                intent="pi_transferring",
                amount=800,
                status="lost",
            ),
            None,
        ),
        (
            "transfer.created",
            transfer(
                "tr_reversed",
                amount=SPLIT.driver.amount,
                source="ch_reversed",
                metadata=s.meta("reversed"),
            ),
            None,
        ),
        (
            "charge.refunded",
            charge(
                "ch_reversed",
                intent="pi_reversed",
                amount=fare,
                metadata=s.meta("reversed"),
                refunds=[flow_refund],
            ),
            None,
        ),
        (
            "transfer.reversed",
            transfer(
                "tr_reversed",
                amount=SPLIT.driver.amount,
                source="ch_reversed",
                metadata=s.meta("reversed"),
                amount_reversed=reversal,
            ),
            None,
        ),
        (
            "payment_intent.succeeded",
            payment_intent(
                "pi_tip_tip_charging",
                metadata=s.meta("tip_charging", "tip"),
                status="succeeded",
                amount=300,
                amount_received=300,
                capture_method="automatic",
                latest_charge="ch_tip_tip_charging",
            ),
            None,
        ),
        (
            "transfer.created",
            transfer(
                "tr_tip_tip_transferring",
                amount=400,
                source="ch_tip_tip_transferring",
                metadata=s.meta("tip_transferring", "tip"),
            ),
            None,
        ),
        (
            "payment_intent.canceled",
            payment_intent(
                "pi_cancelling",
                metadata=s.meta("cancelling"),
                status="canceled",
                cancellation_reason="requested_by_customer",
            ),
            None,
        ),
        (
            "payment_intent.succeeded",
            payment_intent(
                "pi_fee",
                metadata=s.meta("fee"),
                status="succeeded",
                amount_received=fee,
                latest_charge="ch_fee",
            ),
            None,
        ),
        (
            "payment_intent.canceled",
            payment_intent(
                "pi_lapsed",
                metadata=s.meta("lapsed"),
                status="canceled",
                cancellation_reason="automatic",
            ),
            None,
        ),
        (
            "payment_intent.succeeded",
            payment_intent(
                "pi_debt",
                metadata={"rider_id": str(s.people.rider_in_debt), "kind": "debt"},
                status="succeeded",
                amount=fare,
                amount_received=fare,
                capture_method="automatic",
                latest_charge="ch_debt",
            ),
            None,
        ),
        (
            "account.updated",
            account(
                ACCT_WAITING, details_submitted=True, charges_enabled=True, payouts_enabled=False
            ),
            ACCT_WAITING,
        ),
        (
            "account.updated",
            account(
                ACCT_WAITING, details_submitted=True, charges_enabled=True, payouts_enabled=True
            ),
            ACCT_WAITING,
        ),
        ("payout.paid", payout("po_driver", amount=4_000, status="paid"), ACCT_DRIVER),
        (
            "payout.failed",
            payout("po_driver", amount=4_000, status="failed", failure_code="account_closed"),
            ACCT_DRIVER,
        ),
        ("payout.paid", payout("po_platform_1", amount=5_000, status="paid"), None),
        ("payout.paid", payout("po_platform_2", amount=2_000, status="paid"), None),
        (
            "payout.failed",
            payout("po_platform_2", amount=2_000, status="failed", failure_code="no_account"),
            None,
        ),
        ("customer.created", {"id": "cus_New", "object": "customer", "metadata": {}}, None),
    ]
    return [
        signed(event_type, data_object, number=number, account_id=account_id)
        for number, (event_type, data_object, account_id) in enumerate(listed, start=1)
    ]


# Delivering.


async def deliver(session: AsyncSession, delivery: Delivery) -> None:
    """One delivery as the route and the worker handle it: store, then process."""
    service = WebhookService(session, clock())
    await service.receive(delivery.event, delivery.account_id)
    await service.process(delivery.event.id)


async def unprocessed(session: AsyncSession) -> list[str]:
    result = await session.execute(
        select(StripeEvent.id).where(StripeEvent.processed_at.is_(None)).order_by(StripeEvent.id)
    )
    return list(result.scalars())


async def sweep(session: AsyncSession) -> None:
    """What the worker's sweep does, until nothing is left waiting."""
    for _ in range(MAX_ATTEMPTS):
        waiting = await unprocessed(session)
        if not waiting:
            return
        for event_id in waiting:
            await WebhookService(session, clock()).process(event_id)


async def failures(session: AsyncSession) -> list[tuple[str, str | None, str | None]]:
    result = await session.execute(
        select(StripeEvent.id, StripeEvent.type, StripeEvent.last_error).where(
            StripeEvent.processed_at.is_(None) | StripeEvent.last_error.is_not(None)
        )
    )
    return [tuple(row) for row in result]  # type: ignore[misc]


def _row(row: Any, skip: Sequence[str] = ()) -> dict[str, Any]:
    return {c.key: getattr(row, c.key) for c in row.__table__.columns if c.key not in skip}


async def snapshot(session: AsyncSession, s: Scenario) -> dict[str, Any]:
    """The ledger and every row the events may touch."""
    accounts = await session.execute(
        select(LedgerAccount.code, LedgerAccount.currency, LedgerAccount.balance_amount)
    )
    transactions = await session.execute(
        select(
            LedgerTransaction.idempotency_key,
            LedgerTransaction.kind,
            LedgerTransaction.fingerprint,
            LedgerTransaction.reference,
        )
    )
    rides = await session.execute(
        select(RidePayment).where(RidePayment.ride_id.in_(list(s.rides.values())))
    )
    accounts_of_drivers = await session.execute(select(DriverPayoutAccount))
    payouts = await session.execute(select(DriverPayout))
    return {
        "ledger accounts": sorted(tuple(row) for row in accounts),
        "ledger transactions": sorted(tuple(row) for row in transactions),
        "ride payments": sorted(
            (_row(row) for row in rides.scalars()), key=lambda r: str(r["ride_id"])
        ),
        "payout accounts": sorted(
            (_row(row) for row in accounts_of_drivers.scalars()),
            key=lambda r: str(r["driver_id"]),
        ),
        "driver payouts": sorted(
            (_row(row) for row in payouts.scalars()), key=lambda r: str(r["id"])
        ),
    }


async def in_order(sessionmaker: async_sessionmaker[AsyncSession], s: Scenario) -> dict[str, Any]:
    async with sessionmaker() as session:
        await arrange(session, s)
        for delivery in events(s):
            await deliver(session, delivery)
        assert await failures(session) == []
        state = await snapshot(session, s)
        await session.rollback()
    return state


# Two adversarial orders (everything backwards; backwards with each event's three
# deliveries in a row, so what waits is left for the sweep) and shuffles.
ORDERS = ["reversed", "reversed in runs", 7, 1_009, 65_537, 424_242]


def ordered(deliveries: list[Delivery], order: str | int) -> list[Delivery]:
    if order == "reversed":
        return list(reversed(deliveries * 3))
    if order == "reversed in runs":
        return [d for d in reversed(deliveries) for _ in range(3)]
    shuffled = deliveries * 3
    random.Random(order).shuffle(shuffled)
    return shuffled


@pytest.mark.parametrize("order", ORDERS)
async def test_every_event_three_times_in_any_order_leaves_what_one_in_order_delivery_does(
    sessionmaker: async_sessionmaker[AsyncSession],
    scenario: Scenario,
    order: str | int,
) -> None:
    expected = await in_order(sessionmaker, scenario)

    async with sessionmaker() as session:
        await arrange(session, scenario)
        for delivery in ordered(events(scenario), order):
            await deliver(session, delivery)
        await sweep(session)

        assert await failures(session) == []
        assert await snapshot(session, scenario) == expected
        await session.rollback()


async def test_the_scenario_covers_every_handled_event_type(
    session: AsyncSession, scenario: Scenario
) -> None:
    service = WebhookService(session, clock())
    delivered = {d.event.type for d in events(scenario)}
    handled = {t for t in delivered if service.handler(t) is not None}

    assert set(service._handlers) <= handled
    assert {"transfer.created", "transfer.updated", "transfer.reversed"} <= handled
    assert delivered - handled == {"customer.created"}


async def test_in_order_the_ledger_records_what_stripe_did(
    sessionmaker: async_sessionmaker[AsyncSession], scenario: Scenario
) -> None:
    async with sessionmaker() as session:
        await arrange(session, scenario)
        for delivery in events(scenario):
            await deliver(session, delivery)
        books = LedgerService(session, clock())
        service = PaymentService(session, clock())
        rides = {name: await service.get(scenario.ride(name)) for name in RIDES}

        assert {name: ride.status for name, ride in rides.items()} == {
            "authorizing": "authorized",
            "declined": "declined",
            "capturing": "captured",
            "transferring": "captured",
            "reversed": "captured",
            "tip_charging": "captured",
            "tip_transferring": "captured",
            "cancelling": "cancelled",
            "fee": "fee_captured",
            "lapsed": "in_debt",
            "debt": "debt_paid",
            "waiting": "captured",
        }
        assert rides["capturing"].refunded_amount == 800
        assert rides["transferring"].transfer_id == "tr_transferring"
        assert rides["tip_charging"].tip_charge_id == "ch_tip_tip_charging"
        assert rides["tip_transferring"].tip_transfer_id == "tr_tip_tip_transferring"
        assert rides["waiting"].next_attempt_at == NOW
        # The Dashboard refund after the transfer: the driver owes their share.
        receivable = ledger.owned_account(
            AccountKind.driver_receivable, scenario.people.driver, "USD"
        )
        assert (await books.balance(receivable)).amount == driver_share_of(700)
        # Disputes: both closed; the lost one written off, the won one's fee returned.
        assert (await books.balance(ledger.shared_account(AccountKind.disputes, "USD"))).amount == 0
        losses = ledger.shared_account(AccountKind.dispute_losses, "USD")
        assert (await books.balance(losses)).amount == 800
        fees = ledger.shared_account(AccountKind.stripe_fees, "USD")
        assert (await books.balance(fees)).amount == 1_500
        # Platform payouts: one arrived, one failed and came back.
        bank = ledger.shared_account(AccountKind.bank, "USD")
        assert (await books.balance(bank)).amount == 5_000
        [driver_payout] = (await session.execute(select(DriverPayout))).scalars()
        assert (driver_payout.status, driver_payout.driver_id) == ("failed", scenario.people.driver)
        assert (await books.verify()).ok
        await session.rollback()


# One behaviour each.


def intent_succeeded(ride_id: uuid.UUID, *, number: int = 9_001) -> Delivery:
    return signed(
        "payment_intent.succeeded",
        payment_intent(
            "pi_lonely",
            metadata={"ride_id": str(ride_id), "kind": "fare"},
            status="succeeded",
            amount_received=FARE.total.amount,
            latest_charge="ch_lonely",
        ),
        number=number,
    )


async def stored_event(session: AsyncSession, event_id: str) -> StripeEvent:
    event = await session.get(StripeEvent, event_id, populate_existing=True)
    assert event is not None
    return event


async def test_an_event_for_an_unknown_ride_is_retried_then_dead_lettered(
    session: AsyncSession,
) -> None:
    delivery = intent_succeeded(uuid.uuid4())
    service = WebhookService(session, clock())
    await service.receive(delivery.event)

    for attempt in range(1, MAX_ATTEMPTS):
        await service.process(delivery.event.id)
        event = await stored_event(session, delivery.event.id)
        assert (event.processed_at, event.attempts) == (None, attempt)
        assert event.last_error is not None
        assert event.last_error.startswith("stripe-event-not-ready: ")
    await service.process(delivery.event.id)

    event = await stored_event(session, delivery.event.id)
    assert (event.processed_at, event.attempts) == (NOW, MAX_ATTEMPTS)
    assert event.last_error is not None
    assert event.last_error.startswith("stripe-event-not-ready: ")


async def test_an_event_that_came_before_its_ride_is_processed_when_retried(
    session: AsyncSession, people: People
) -> None:
    ride_id = uuid.uuid4()
    delivery = signed(
        "payment_intent.amount_capturable_updated",
        payment_intent(
            "pi_early",
            metadata={"ride_id": str(ride_id), "kind": "fare"},
            status="requires_capture",
            amount_capturable=HOLD,
        ),
        number=9_002,
    )
    await deliver(session, delivery)
    service = PaymentService(session, clock())
    await service.save_customer(people.rider, "cus_Early")
    await service.set_default_card(people.rider, CARD)
    await service.open_authorization(ride_id, people.rider, usd(HOLD))

    await WebhookService(session, clock()).process(delivery.event.id)

    event = await stored_event(session, delivery.event.id)
    assert (event.attempts, event.last_error) == (2, None)
    assert event.processed_at == NOW
    payment = await service.get(ride_id)
    assert (payment.status, payment.payment_intent_id) == ("authorized", "pi_early")


async def test_an_unknown_event_type_is_marked_processed_and_ignored(
    session: AsyncSession,
) -> None:
    delivery = signed("customer.created", {"id": "cus_1", "object": "customer"}, number=9_003)
    await deliver(session, delivery)

    event = await stored_event(session, delivery.event.id)
    assert (event.processed_at, event.last_error) == (NOW, None)
    assert (await LedgerService(session, clock()).verify()).transactions == 0


async def captured_ride(session: AsyncSession, people: People, name: str) -> uuid.UUID:
    service = PaymentService(session, clock())
    ride_id = uuid.uuid4()
    await service.save_customer(people.rider, "cus_Rider")
    await service.set_default_card(people.rider, CARD)
    await service.open_authorization(ride_id, people.rider, usd(HOLD))
    await service.authorized(ride_id, f"pi_{name}")
    await service.open_capture(ride_id, people.driver, FARE, SPLIT)
    await service.captured(ride_id, f"ch_{name}")
    return ride_id


def refunded_event(ride_id: uuid.UUID, name: str, amount: int, **metadata: str) -> Delivery:
    meta = {"ride_id": str(ride_id), "kind": "fare"}
    return signed(
        "charge.refunded",
        charge(
            f"ch_{name}",
            intent=f"pi_{name}",
            amount=FARE.total.amount,
            metadata=meta,
            refunds=[
                refund(
                    f"re_{name}",
                    charge=f"ch_{name}",
                    intent=f"pi_{name}",
                    amount=amount,
                    metadata={**meta, **metadata} if metadata else None,
                )
            ],
        ),
        number=9_100,
    )


async def refund_postings(session: AsyncSession, refund_id: str) -> dict[str, int]:
    books = LedgerService(session, clock())
    found = await books.repository.transaction_by_key(refund_ledger_key(refund_id))
    assert found is not None
    postings = await books.repository.postings_of(found.id)
    return {p.account.kind.value: p.amount for p in postings}


async def test_a_dashboard_refund_before_any_transfer_comes_off_what_the_driver_is_owed(
    session: AsyncSession, people: People
) -> None:
    ride_id = await captured_ride(session, people, "early_refund")

    await deliver(session, refunded_event(ride_id, "early_refund", 1_000))

    postings = await refund_postings(session, "re_early_refund")
    assert postings["driver_payable"] == driver_share_of(1_000)
    assert "driver_receivable" not in postings
    payment = await PaymentService(session, clock()).get(ride_id)
    assert payment.transferred_amount == driver_share_of(1_000)


async def test_a_dashboard_refund_after_a_transfer_started_is_owed_by_the_driver(
    session: AsyncSession, people: People
) -> None:
    ride_id = await captured_ride(session, people, "late_refund")
    service = PaymentService(session, clock())
    await service.record_call(transfer_key(ride_id), "transfer", ride_id, {"amount": 1})

    await deliver(session, refunded_event(ride_id, "late_refund", 1_000))

    postings = await refund_postings(session, "re_late_refund")
    assert postings["driver_receivable"] == driver_share_of(1_000)
    assert "driver_payable" not in postings


async def test_a_refund_our_refund_flow_is_recording_waits_for_the_flow(
    session: AsyncSession, people: People
) -> None:
    ride_id = await captured_ride(session, people, "flow_refund")
    service = PaymentService(session, clock())
    key = refund_key(ride_id, "req-9")
    await service.record_call(key, "refund", ride_id, {"amount": 1_000, "from_driver": False})
    delivery = refunded_event(ride_id, "flow_refund", 1_000, request_id="req-9")

    await deliver(session, delivery)
    waiting = await stored_event(session, delivery.event.id)
    assert waiting.processed_at is None
    assert not await service.ledger.has(refund_ledger_key("re_flow_refund"))

    await service.refunded(ride_id, "re_flow_refund", usd(1_000), Clawback.none, "req-9")
    await WebhookService(session, clock()).process(delivery.event.id)

    done = await stored_event(session, delivery.event.id)
    assert (done.processed_at, done.last_error) == (NOW, None)
    postings = await refund_postings(session, "re_flow_refund")
    assert "driver_payable" not in postings
    assert "driver_receivable" not in postings


async def test_a_refund_of_a_tip_is_dead_lettered_at_once(
    session: AsyncSession, people: People
) -> None:
    ride_id = await captured_ride(session, people, "tipped")
    service = PaymentService(session, clock())
    await service.open_tip(ride_id, people.rider, usd(300), CARD)
    await service.tip_charged(ride_id, "ch_tip_tipped")
    delivery = signed(
        "charge.refunded",
        charge(
            "ch_tip_tipped",
            intent="pi_tip_tipped",
            amount=300,
            metadata={"ride_id": str(ride_id), "kind": "tip"},
            refunds=[refund("re_tip", charge="ch_tip_tipped", intent="pi_tip_tipped", amount=300)],
        ),
        number=9_200,
    )

    await deliver(session, delivery)

    event = await stored_event(session, delivery.event.id)
    assert (event.processed_at, event.attempts) == (NOW, 1)
    assert event.last_error is not None
    assert event.last_error.startswith("stripe-event-unsupported: ")
    assert not await service.ledger.has(refund_ledger_key("re_tip"))


async def test_an_older_account_update_does_not_undo_a_newer_one(
    session: AsyncSession, people: People
) -> None:
    await PaymentService(session, clock()).save_payout_account(people.driver, ACCT_WAITING)
    older = signed(
        "account.updated",
        account(ACCT_WAITING, details_submitted=True, charges_enabled=True, payouts_enabled=False),
        number=9_301,
        account_id=ACCT_WAITING,
    )
    newer = signed(
        "account.updated",
        account(ACCT_WAITING, details_submitted=True, charges_enabled=True, payouts_enabled=True),
        number=9_302,
        account_id=ACCT_WAITING,
    )

    await deliver(session, newer)
    await deliver(session, older)

    payout_account = await PaymentService(session, clock()).payout_account(people.driver)
    assert payout_account is not None
    assert payout_account.payouts_enabled
    assert (await stored_event(session, older.event.id)).processed_at == NOW


async def test_payouts_becoming_enabled_make_waiting_transfers_due(
    session: AsyncSession, people: People
) -> None:
    service = PaymentService(session, clock())
    await service.save_payout_account(people.driver, ACCT_WAITING)
    ride_id = await captured_ride(session, people, "waiting_for_payouts")
    await service.transfer_waits(ride_id)
    assert (await service.get(ride_id)).next_attempt_at == NOW + timedelta(hours=1)

    await deliver(
        session,
        signed(
            "account.updated",
            account(
                ACCT_WAITING, details_submitted=True, charges_enabled=True, payouts_enabled=True
            ),
            number=9_400,
            account_id=ACCT_WAITING,
        ),
    )

    assert (await service.get(ride_id)).next_attempt_at == NOW


def test_the_ledger_keys_the_handlers_look_for_are_the_builders_keys() -> None:
    draft = ledger.refund(
        refund_id="re_key",
        ride_id=uuid.uuid4(),
        driver_id=uuid.uuid4(),
        amount=usd(100),
        driver_share=usd(80),
        pass_through_share=usd(0),
        clawback=Clawback.receivable,
    )
    assert refund_ledger_key("re_key") == draft.idempotency_key


def test_a_failed_platform_payout_is_returned_to_the_stripe_balance() -> None:
    paid = ledger.platform_payout(payout_id="po_1", amount=usd(2_000))
    returned = platform_payout_returned(payout_id="po_1", amount=usd(2_000))

    book = ledger.LedgerBook().record(paid).record(returned)

    assert book.balance(ledger.stripe_balance("USD")).amount == 0
    assert book.balance(ledger.shared_account(AccountKind.bank, "USD")).amount == 0
    assert returned.idempotency_key != paid.idempotency_key


# The worker's side.


async def test_the_job_processes_a_stored_event_in_its_own_transaction(
    sessionmaker: async_sessionmaker[AsyncSession], session: AsyncSession
) -> None:
    delivery = signed("customer.created", {"id": "cus_2", "object": "customer"}, number=9_500)
    async with sessionmaker() as receiving:
        await WebhookService(receiving, clock()).receive(delivery.event)
        await receiving.commit()

    await process_stripe_event(sessionmaker, clock(), delivery.event.id)

    assert (await stored_event(session, delivery.event.id)).processed_at == NOW


async def test_the_sweep_queues_events_left_unprocessed_for_a_minute(
    sessionmaker: async_sessionmaker[AsyncSession], redis_client: Redis
) -> None:
    old = signed("customer.created", {"id": "cus_3", "object": "customer"}, number=9_600)
    new = signed("customer.created", {"id": "cus_4", "object": "customer"}, number=9_601)
    async with sessionmaker() as receiving:
        await WebhookService(receiving, FrozenClock(NOW - timedelta(minutes=2))).receive(old.event)
        await WebhookService(receiving, clock()).receive(new.event)
        await receiving.commit()

    queued = await sweep_unprocessed_events(sessionmaker, redis_client, clock())

    assert queued == 1
    assert await queued_jobs(redis_client) == [(STRIPE_EVENT_JOB, {"id": old.event.id})]
