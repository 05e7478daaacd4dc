"""Money flows end to end: our flows, the real stripe SDK, loopback Stripe fakes, the
ledger in PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from infra.clock import SystemClock
from payments import ledger, pricing
from payments.errors import (
    CardDeclined,
    NothingToRefund,
    PaymentProviderUnavailable,
    RidePaymentStateConflict,
    RiderHasUnpaidFare,
)
from payments.flows import PaymentFlows, hold_amount
from payments.ledger import AccountKind
from payments.ledger_service import LedgerService
from payments.money import Money
from payments.pricing import Fare, FareSplit, TripEstimate, TripMeasurement
from payments.schemas import RidePaymentRead
from payments.service import PaymentService
from payments.stripe_gateway import StripeGateway
from tests.factories import make_account
from tests.payments.conftest import stripe_settings_for
from tests.payments.factories import make_policy
from tests.payments.fake_connect import FakeConnect
from tests.payments.test_stripe_gateway import (
    VISA,
    VISA_DECLINED_ON_CHARGE,
    confirm_setup_intent_in_the_app,
    payment_intents_of,
)

pytestmark = pytest.mark.slow

POLICY = make_policy()
NOW = datetime(2026, 11, 26, 8, 0, tzinfo=UTC)


def usd(cents: int) -> Money:
    return Money(cents, "USD")


def priced(distance_m: int = 8_200, duration_s: int = 1_020) -> tuple[Fare, FareSplit]:
    quote = pricing.quote(
        POLICY,
        TripEstimate(distance_m, duration_s),
        surge=Decimal(1),
        zones=frozenset(),
        now=NOW,
    )
    fare = pricing.final_fare(POLICY, quote, TripMeasurement(distance_m, duration_s, 0))
    return fare, pricing.split(POLICY, fare)


@dataclass
class People:
    rider_id: uuid.UUID
    driver_id: uuid.UUID


@pytest.fixture
async def flows(
    sessionmaker: async_sessionmaker[AsyncSession], stripe_gateway: StripeGateway
) -> PaymentFlows:
    return PaymentFlows(sessionmaker, stripe_gateway, SystemClock())


@pytest.fixture
async def people(client: httpx.AsyncClient) -> People:
    rider = await make_account(client, "rider")
    driver = await make_account(client, "driver")
    return People(rider.user_id, driver.user_id)


async def save_card(
    flows: PaymentFlows, fake: FakeConnect, rider_id: uuid.UUID, card: str = VISA
) -> None:
    setup = await flows.start_card_setup(rider_id, "rider@example.org", "A Rider")
    confirmed = await confirm_setup_intent_in_the_app(
        fake, setup.setup_intent_id, setup.client_secret, card
    )
    await flows.save_card(rider_id, confirmed["payment_method"])


async def onboard(flows: PaymentFlows, driver_id: uuid.UUID) -> None:
    link = await flows.onboarding_link(driver_id, "driver@example.org", "US")
    async with httpx.AsyncClient() as browser:
        await browser.get(link.url)
    assert (await flows.refresh_payout_account(driver_id)).payouts_enabled


async def balance(session: AsyncSession, account: ledger.AccountRef) -> int:
    return (await LedgerService(session, SystemClock()).balance(account)).amount


def payable(driver_id: uuid.UUID) -> ledger.AccountRef:
    return ledger.owned_account(AccountKind.driver_payable, driver_id, "USD")


@pytest.fixture
async def ready(flows: PaymentFlows, fake_stripe: FakeConnect, people: People) -> People:
    await save_card(flows, fake_stripe, people.rider_id)
    await onboard(flows, people.driver_id)
    return people


async def test_a_saved_card_is_the_riders_default(
    flows: PaymentFlows, fake_stripe: FakeConnect, people: People
) -> None:
    await save_card(flows, fake_stripe, people.rider_id)
    cards = await flows.cards(people.rider_id)
    assert [c.default for c in cards] == [True]
    assert cards[0].last4 == "4242"


async def test_a_ride_without_a_card_is_refused(flows: PaymentFlows, people: People) -> None:
    from payments.errors import PaymentMethodRequired

    with pytest.raises(PaymentMethodRequired):
        await flows.authorize_ride(uuid.uuid4(), people.rider_id, usd(2_000))


async def test_a_completed_ride_is_captured_split_and_the_driver_paid(
    flows: PaymentFlows, ready: People, session: AsyncSession
) -> None:
    ride_id = uuid.uuid4()
    fare, split = priced()
    authorized = await flows.authorize_ride(ride_id, ready.rider_id, hold_amount(fare.total))
    assert authorized.status == "authorized"

    settled = await flows.settle_ride(ride_id, ready.driver_id, fare, split)

    assert settled.status == "captured"
    assert settled.captured_amount == fare.total.amount
    assert settled.transferred_amount == split.driver.amount
    stripe = ledger.stripe_balance("USD")
    revenue = ledger.shared_account(AccountKind.coop_commission_revenue, "USD")
    assert await balance(session, stripe) == fare.total.amount - split.driver.amount
    assert await balance(session, payable(ready.driver_id)) == 0
    assert await balance(session, revenue) == split.commission.amount
    assert (await LedgerService(session, SystemClock()).verify()).ok


async def test_settling_twice_captures_and_records_once(
    flows: PaymentFlows, ready: People, session: AsyncSession
) -> None:
    ride_id = uuid.uuid4()
    fare, split = priced()
    await flows.authorize_ride(ride_id, ready.rider_id, hold_amount(fare.total))
    await flows.settle_ride(ride_id, ready.driver_id, fare, split)
    again = await flows.settle_ride(ride_id, ready.driver_id, fare, split)
    assert again.captured_amount == fare.total.amount
    stripe = ledger.stripe_balance("USD")
    assert await balance(session, stripe) == fare.total.amount - split.driver.amount


async def test_a_declined_card_stops_the_ride_before_dispatch(
    flows: PaymentFlows, fake_stripe: FakeConnect, people: People
) -> None:
    await save_card(flows, fake_stripe, people.rider_id, VISA_DECLINED_ON_CHARGE)
    ride_id = uuid.uuid4()
    with pytest.raises(CardDeclined):
        await flows.authorize_ride(ride_id, people.rider_id, usd(2_500))
    assert (await flows.read(ride_id)).status == "declined"


async def test_stripe_down_at_request_is_retried_with_the_same_key(
    flows: PaymentFlows, ready: People, fake_stripe: FakeConnect, session: AsyncSession
) -> None:
    ride_id = uuid.uuid4()
    fake_stripe.add_fault("/v1/payment_intents", status=503)
    waiting = await flows.authorize_ride(ride_id, ready.rider_id, usd(2_500))
    assert waiting.status == "authorizing"  # the ride is not lost: it waits

    advanced = await flows.advance(ride_id)

    assert advanced.status == "authorized"
    customer = await PaymentService(session, SystemClock()).customer(ready.rider_id)
    assert customer is not None
    assert len(await payment_intents_of(fake_stripe, customer.stripe_customer_id)) == 1


async def test_a_timeout_after_stripe_acted_never_charges_twice(
    sessionmaker: async_sessionmaker[AsyncSession],
    ready: People,
    fake_stripe: FakeConnect,
    session: AsyncSession,
) -> None:
    impatient = StripeGateway(stripe_settings_for(fake_stripe, timeout_s=0.5))
    try:
        flows = PaymentFlows(sessionmaker, impatient, SystemClock())
        ride_id = uuid.uuid4()
        # Stripe does the work, but answers after we stopped waiting.
        fake_stripe.add_fault("/v1/payment_intents", status=0, delay_s=1.0)
        waiting = await flows.authorize_ride(ride_id, ready.rider_id, usd(2_500))
        assert waiting.status == "authorizing"
        # While Stripe still works on the first request, a retry is told to come back.
        assert (await flows.advance(ride_id)).status == "authorizing"
        await asyncio.sleep(1.0)
        assert (await flows.advance(ride_id)).status == "authorized"
    finally:
        await impatient.aclose()
    customer = await PaymentService(session, SystemClock()).customer(ready.rider_id)
    assert customer is not None
    assert len(await payment_intents_of(fake_stripe, customer.stripe_customer_id)) == 1


async def test_a_driver_without_a_payout_account_is_paid_once_onboarded(
    flows: PaymentFlows, fake_stripe: FakeConnect, people: People, session: AsyncSession
) -> None:
    await save_card(flows, fake_stripe, people.rider_id)
    ride_id = uuid.uuid4()
    fare, split = priced()
    await flows.authorize_ride(ride_id, people.rider_id, hold_amount(fare.total))
    settled = await flows.settle_ride(ride_id, people.driver_id, fare, split)
    assert settled.transferred_amount == 0
    assert await balance(session, payable(people.driver_id)) == split.driver.amount

    await onboard(flows, people.driver_id)
    assert await flows.advance_due() == 1

    assert (await flows.read(ride_id)).transferred_amount == split.driver.amount
    assert await balance(session, payable(people.driver_id)) == 0


async def test_a_failed_capture_completes_the_ride_as_the_riders_debt(
    flows: PaymentFlows,
    ready: People,
    fake_stripe: FakeConnect,
    session: AsyncSession,
) -> None:
    ride_id = uuid.uuid4()
    fare, split = priced()
    await flows.authorize_ride(ride_id, ready.rider_id, hold_amount(fare.total))
    service = PaymentService(session, SystemClock())
    payment = await service.get(ride_id)
    # The hold is gone by trip end (expired, or released by the bank).
    await flows.gateway.cancel_authorization(
        payment_intent_id=str(payment.payment_intent_id), idempotency_key=f"t:{ride_id}:x"
    )

    settled = await flows.settle_ride(ride_id, ready.driver_id, fare, split)

    assert settled.status == "in_debt"
    owed = ledger.owned_account(AccountKind.rider_receivable, ready.rider_id, "USD")
    assert await balance(session, owed) == fare.total.amount
    assert await balance(session, payable(ready.driver_id)) == split.driver.amount
    with pytest.raises(RiderHasUnpaidFare):
        await flows.authorize_ride(uuid.uuid4(), ready.rider_id, usd(2_000))

    paid = await flows.settle_debts(ready.rider_id, "USD")

    assert [p.status for p in paid] == ["debt_paid"]
    assert paid[0].transferred_amount == split.driver.amount
    assert await balance(session, owed) == 0
    assert (await flows.authorize_ride(uuid.uuid4(), ready.rider_id, usd(2_000))).status == (
        "authorized"
    )


async def test_a_free_cancellation_releases_the_hold(
    flows: PaymentFlows, ready: People, session: AsyncSession
) -> None:
    ride_id = uuid.uuid4()
    await flows.authorize_ride(ride_id, ready.rider_id, usd(2_500))
    cancelled = await flows.cancel_ride(ride_id, None, None, None)
    assert cancelled.status == "cancelled"
    assert await balance(session, ledger.stripe_balance("USD")) == 0


async def test_a_late_cancellation_captures_the_fee_and_pays_the_driver_their_part(
    flows: PaymentFlows, ready: People, session: AsyncSession
) -> None:
    ride_id = uuid.uuid4()
    await flows.authorize_ride(ride_id, ready.rider_id, usd(2_500))
    fee = pricing.cancellation_charge(
        POLICY,
        requested_at=NOW,
        driver_assigned_at=NOW,
        cancelled_at=NOW.replace(minute=5),
        by="rider",
    )
    assert fee is not None
    split = pricing.split(POLICY, fee)
    done = await flows.cancel_ride(ride_id, ready.driver_id, fee, split)
    assert done.status == "fee_captured"
    assert done.captured_amount == fee.total.amount
    assert done.transferred_amount == split.driver.amount
    fees = ledger.shared_account(AccountKind.cancellation_fee_revenue, "USD")
    assert await balance(session, fees) == fee.total.amount - split.driver.amount


async def test_a_tip_is_its_own_charge_and_all_of_it_goes_to_the_driver(
    flows: PaymentFlows, ready: People, session: AsyncSession
) -> None:
    ride_id = uuid.uuid4()
    fare, split = priced()
    await flows.authorize_ride(ride_id, ready.rider_id, hold_amount(fare.total))
    await flows.settle_ride(ride_id, ready.driver_id, fare, split)
    tipped = await flows.tip(ride_id, ready.rider_id, usd(300))
    assert tipped.tip_amount == 300
    payment = await PaymentService(session, SystemClock()).get(ride_id)
    assert payment.tip_transfer_id is not None
    tips = ledger.owned_account(AccountKind.tips_payable, ready.driver_id, "USD")
    assert await balance(session, tips) == 0


async def test_a_refund_reverses_the_drivers_share_by_policy(
    flows: PaymentFlows, ready: People, session: AsyncSession
) -> None:
    ride_id = uuid.uuid4()
    fare, split = priced()
    await flows.authorize_ride(ride_id, ready.rider_id, hold_amount(fare.total))
    await flows.settle_ride(ride_id, ready.driver_id, fare, split)
    stripe_before = await balance(session, ledger.stripe_balance("USD"))

    refunded = await flows.refund(ride_id, None, "complaint-1", from_driver=True)
    again = await flows.refund(ride_id, None, "complaint-1", from_driver=True)

    assert refunded.refunded_amount == again.refunded_amount == fare.total.amount
    # The whole fare left the balance; the driver's share came back by reversal.
    assert await balance(session, ledger.stripe_balance("USD")) == (
        stripe_before - fare.total.amount + split.driver.amount
    )
    with pytest.raises(NothingToRefund):
        await flows.refund(ride_id, usd(1), "complaint-2", from_driver=True)
    assert (await LedgerService(session, SystemClock()).verify()).ok


def test_the_hold_leaves_headroom_above_the_upfront_price() -> None:
    assert hold_amount(usd(2_000)) == usd(2_500)
    assert hold_amount(usd(1_999)) == usd(2_499)  # 1999 + 499.75, rounded once to 500


async def test_cancelling_while_the_hold_is_unanswered_releases_it_anyway(
    sessionmaker: async_sessionmaker[AsyncSession],
    ready: People,
    fake_stripe: FakeConnect,
    session: AsyncSession,
) -> None:
    impatient = StripeGateway(stripe_settings_for(fake_stripe, timeout_s=0.5))
    try:
        flows = PaymentFlows(sessionmaker, impatient, SystemClock())
        ride_id = uuid.uuid4()
        # Stripe places the hold, but its answer never reaches us.
        fake_stripe.add_fault("/v1/payment_intents", status=0, delay_s=1.0)
        assert (await flows.authorize_ride(ride_id, ready.rider_id, usd(2_500))).status == (
            "authorizing"
        )
        await asyncio.sleep(1.0)
        cancelled = await flows.cancel_ride(ride_id, None, None, None)
    finally:
        await impatient.aclose()
    assert cancelled.status == "cancelled"
    customer = await PaymentService(session, SystemClock()).customer(ready.rider_id)
    assert customer is not None
    intents = await payment_intents_of(fake_stripe, customer.stripe_customer_id)
    assert len(intents) == 1
    held = await flows_gateway_status(fake_stripe, intents[0])
    assert held == "canceled"


async def flows_gateway_status(fake: FakeConnect, payment_intent_id: str) -> str:
    gateway = StripeGateway(stripe_settings_for(fake))
    try:
        return (await gateway.retrieve_payment_intent(payment_intent_id)).status
    finally:
        await gateway.aclose()


# Settling many rides together (what concurrent trip completions do).


async def authorized_rides(flows: PaymentFlows, people: People, count: int) -> list[uuid.UUID]:
    fare, _ = priced()
    rides = [uuid.uuid4() for _ in range(count)]
    for ride_id in rides:
        await flows.authorize_ride(ride_id, people.rider_id, hold_amount(fare.total))
    return rides


async def test_concurrent_settlements_go_together_and_each_ride_is_settled(
    sessionmaker: async_sessionmaker[AsyncSession],
    stripe_gateway: StripeGateway,
    ready: People,
    session: AsyncSession,
) -> None:
    # One batch at a time: every session of this test shares one connection.
    flows = PaymentFlows(sessionmaker, stripe_gateway, SystemClock(), settle_batches_at_once=1)
    rides = await authorized_rides(flows, ready, 6)
    fare, split = priced()

    settled = await asyncio.gather(
        *(flows.settle_ride(ride_id, ready.driver_id, fare, split) for ride_id in rides)
    )

    assert [s.status for s in settled] == ["captured"] * 6
    assert [s.transferred_amount for s in settled] == [split.driver.amount] * 6
    # All six went in one batch: its transactions and Stripe calls served them all.
    assert flows.settlement_batches == (1, 6)
    service = PaymentService(session, SystemClock())
    for ride_id in rides:
        for key in (f"ride:{ride_id}:capture:v1", f"ride:{ride_id}:transfer:v1"):
            call = await service.call(key)
            assert call is not None
            assert call.status == "succeeded"
    stripe = ledger.stripe_balance("USD")
    assert await balance(session, stripe) == 6 * (fare.total.amount - split.driver.amount)
    assert await balance(session, payable(ready.driver_id)) == 0
    assert (await LedgerService(session, SystemClock()).verify()).ok


async def test_a_refused_ride_in_a_batch_costs_the_others_nothing(
    flows: PaymentFlows, ready: People, session: AsyncSession
) -> None:
    first, refused, last = await authorized_rides(flows, ready, 3)
    fare, split = priced()
    other_fare, other_split = priced(distance_m=20_000, duration_s=2_400)
    await flows.settle_ride(refused, ready.driver_id, fare, split)

    outcomes = await flows.settle_rides(
        [
            (first, ready.driver_id, fare, split),
            (refused, ready.driver_id, other_fare, other_split),
            (last, ready.driver_id, fare, split),
        ]
    )

    assert isinstance(outcomes[1], RidePaymentStateConflict)
    for outcome in (outcomes[0], outcomes[2]):
        assert isinstance(outcome, RidePaymentRead)
        assert outcome.status == "captured"
        assert outcome.transferred_amount == split.driver.amount
    # The refused ride keeps the fare it was settled with.
    assert (await flows.read(refused)).captured_amount == fare.total.amount
    stripe = ledger.stripe_balance("USD")
    assert await balance(session, stripe) == 3 * (fare.total.amount - split.driver.amount)


async def test_a_failed_capture_in_a_batch_is_that_riders_debt_alone(
    flows: PaymentFlows, ready: People, session: AsyncSession
) -> None:
    paid, unpaid = await authorized_rides(flows, ready, 2)
    payment = await PaymentService(session, SystemClock()).get(unpaid)
    await flows.gateway.cancel_authorization(
        payment_intent_id=str(payment.payment_intent_id), idempotency_key=f"t:{unpaid}:x"
    )
    fare, split = priced()

    outcomes = await flows.settle_rides(
        [(paid, ready.driver_id, fare, split), (unpaid, ready.driver_id, fare, split)]
    )

    statuses = [o.status if isinstance(o, RidePaymentRead) else o for o in outcomes]
    assert statuses == ["captured", "in_debt"]
    owed = ledger.owned_account(AccountKind.rider_receivable, ready.rider_id, "USD")
    assert await balance(session, owed) == fare.total.amount
    # The unpaid ride's driver is still owed their share; the paid one's is transferred.
    assert await balance(session, payable(ready.driver_id)) == split.driver.amount
    assert (await LedgerService(session, SystemClock()).verify()).ok


async def test_transfers_refused_by_a_stripe_outage_in_a_batch_are_retried_with_their_keys(
    flows: PaymentFlows, ready: People, fake_stripe: FakeConnect, session: AsyncSession
) -> None:
    rides = await authorized_rides(flows, ready, 2)
    fare, split = priced()
    fake_stripe.add_fault("/v1/transfers", status=503, times=2)

    outcomes = await flows.settle_rides([(r, ready.driver_id, fare, split) for r in rides])

    for outcome in outcomes:
        assert isinstance(outcome, RidePaymentRead)
        assert outcome.status == "captured"
        assert outcome.transferred_amount == 0
    assert await balance(session, payable(ready.driver_id)) == 2 * split.driver.amount
    service = PaymentService(session, SystemClock())
    for ride_id in rides:
        call = await service.call(f"ride:{ride_id}:transfer:v1")
        assert call is not None
        assert call.status == "pending"
        assert call.last_error

    for ride_id in rides:
        assert (await flows.advance(ride_id)).transferred_amount == split.driver.amount
    assert await balance(session, payable(ready.driver_id)) == 0
    assert (await LedgerService(session, SystemClock()).verify()).ok


async def test_a_debt_payment_settles_the_oldest_rides_it_covers_and_no_more(
    flows: PaymentFlows, ready: People, session: AsyncSession
) -> None:
    older, newer = await authorized_rides(flows, ready, 2)
    for ride_id in (older, newer):
        payment = await PaymentService(session, SystemClock()).get(ride_id)
        await flows.gateway.cancel_authorization(
            payment_intent_id=str(payment.payment_intent_id), idempotency_key=f"t:{ride_id}:x"
        )
    fare, split = priced()
    await flows.settle_ride(older, ready.driver_id, fare, split)
    await flows.settle_ride(newer, ready.driver_id, fare, split)
    assert (await flows.read(newer)).status == "in_debt"

    # A charge made for the first debt only (the second came after it was made).
    service = PaymentService(session, SystemClock())
    paid = await service.debt_paid(ready.rider_id, "ch_first_debt", fare.total)

    assert [p.ride_id for p in paid] == [older]
    assert (await service.get(older)).status == "debt_paid"
    assert (await service.get(newer)).status == "in_debt"
    owed = ledger.owned_account(AccountKind.rider_receivable, ready.rider_id, "USD")
    assert await balance(session, owed) == fare.total.amount


async def test_payments_due_after_an_outage_advance_through_the_batch_paths(
    flows: PaymentFlows,
    ready: People,
    fake_stripe: FakeConnect,
    session: AsyncSession,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fare, split = priced()
    uncaptured = await authorized_rides(flows, ready, 3)
    untransferred = await authorized_rides(flows, ready, 2)
    # Stripe down for the captures of the first rides...
    capture = flows.gateway.capture

    async def down(**_: object) -> None:
        raise PaymentProviderUnavailable("Stripe could not be reached")

    monkeypatch.setattr(flows.gateway, "capture", down)
    for outcome in await flows.settle_rides(
        [(r, ready.driver_id, fare, split) for r in uncaptured]
    ):
        assert isinstance(outcome, RidePaymentRead)
        assert outcome.status == "capturing"
    monkeypatch.setattr(flows.gateway, "capture", capture)
    # ...and for the transfers of the others.
    fake_stripe.add_fault("/v1/transfers", status=503, times=2)
    for outcome in await flows.settle_rides(
        [(r, ready.driver_id, fare, split) for r in untransferred]
    ):
        assert isinstance(outcome, RidePaymentRead)
        assert outcome.transferred_amount == 0
    # Their retries come due.
    await session.execute(
        text("UPDATE ride_payments SET next_attempt_at = now() - interval '1 second'")
    )
    await session.commit()
    batches: list[tuple[str, set[uuid.UUID]]] = []
    capture_many, pay_drivers = flows._capture_many, flows.pay_drivers

    async def capturing(ride_ids: list[uuid.UUID]) -> object:
        batches.append(("capture", set(ride_ids)))
        return await capture_many(ride_ids)

    async def paying(ride_ids: list[uuid.UUID]) -> object:
        batches.append(("transfer", set(ride_ids)))
        return await pay_drivers(ride_ids)

    monkeypatch.setattr(flows, "_capture_many", capturing)
    monkeypatch.setattr(flows, "pay_drivers", paying)

    assert await flows.advance_due() == 5

    assert ("capture", set(uncaptured)) in batches
    assert ("transfer", set(untransferred)) in batches
    assert len([kind for kind, _ in batches if kind == "capture"]) == 1
    for ride_id in uncaptured + untransferred:
        payment = await flows.read(ride_id)
        assert payment.status == "captured"
        assert payment.transferred_amount == split.driver.amount
    assert await balance(session, payable(ready.driver_id)) == 0
    assert (await LedgerService(session, SystemClock()).verify()).ok
