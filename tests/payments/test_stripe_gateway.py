"""The Stripe gateway through the real SDK over HTTP, against localstripe + the Connect fake."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from payments.errors import (
    CardAuthenticationRequired,
    CardDeclined,
    IdempotencyKeyReused,
    PaymentProviderUnavailable,
    PaymentRequestRejected,
    PaymentResourceMissing,
    WebhookPayloadInvalid,
    WebhookSignatureInvalid,
)
from payments.money import Money
from payments.stripe_gateway import (
    StripeAccount,
    StripeGateway,
    StripePaymentIntent,
    verify_webhook,
)
from tests.payments.conftest import (
    CONNECT_REFRESH_URL,
    CONNECT_RETURN_URL,
    TEST_STRIPE_API_KEY,
    TEST_STRIPE_PUBLISHABLE_KEY,
    TEST_WEBHOOK_SECRET,
    stripe_settings_for,
)
from tests.payments.fake_connect import FakeConnect
from tests.payments.webhook_signing import event_payload, stripe_signature

pytestmark = pytest.mark.slow

# localstripe's test cards (Stripe's numbers and ids).
VISA = "pm_card_visa"
VISA_DECLINED_ON_ATTACH = "4000000000000002"
VISA_DECLINED_ON_CHARGE = "pm_card_chargeCustomerFail"
VISA_NEEDS_AUTHENTICATION = "4000002500003155"


def usd(cents: int) -> Money:
    return Money(cents, "USD")


def key(purpose: str) -> str:
    """A fresh idempotency key: the fakes live for the whole session."""
    return f"test:{uuid.uuid4()}:{purpose}:v1"


@dataclass(frozen=True)
class Rider:
    customer_id: str
    payment_method_id: str


async def create_card(fake: FakeConnect, number: str) -> str:
    """A card payment method made from a raw number, as Stripe.js does in the app."""
    async with httpx.AsyncClient() as app:
        response = await app.post(
            f"{fake.base_url}/v1/payment_methods",
            headers={"Authorization": f"Bearer {TEST_STRIPE_API_KEY}"},
            data={
                "type": "card",
                "card[number]": number,
                "card[exp_month]": "12",
                "card[exp_year]": "2030",
                "card[cvc]": "123",
            },
        )
    response.raise_for_status()
    payment_method_id: str = response.json()["id"]
    return payment_method_id


async def confirm_setup_intent_in_the_app(
    fake: FakeConnect, setup_intent_id: str, client_secret: str, payment_method: str
) -> dict[str, str]:
    """What Stripe.js does in the rider's app: confirm with the publishable key."""
    async with httpx.AsyncClient() as app:
        response = await app.post(
            f"{fake.base_url}/v1/setup_intents/{setup_intent_id}/confirm",
            data={
                "key": TEST_STRIPE_PUBLISHABLE_KEY,
                "client_secret": client_secret,
                "payment_method": payment_method,
            },
        )
    response.raise_for_status()
    confirmed: dict[str, str] = response.json()
    return confirmed


async def payment_intents_of(fake: FakeConnect, customer_id: str) -> list[str]:
    found: list[str] = []
    query = {"limit": "100"}
    async with httpx.AsyncClient(
        base_url=fake.base_url, headers={"Authorization": f"Bearer {TEST_STRIPE_API_KEY}"}
    ) as client:
        while True:
            page = (await client.get("/v1/payment_intents", params=query)).json()
            found.extend(i["id"] for i in page["data"] if i["customer"] == customer_id)
            if not page["has_more"]:
                return found
            query["starting_after"] = page["data"][-1]["id"]


async def new_customer(gateway: StripeGateway) -> str:
    customer = await gateway.create_customer(
        email=f"{uuid.uuid4().hex[:8]}@riders.test",
        name="A Rider",
        metadata={"rider_id": str(uuid.uuid4())},
        idempotency_key=key("customer"),
    )
    return customer.id


async def new_rider(gateway: StripeGateway, payment_method: str = VISA) -> Rider:
    customer_id = await new_customer(gateway)
    saved = await gateway.attach_payment_method(
        payment_method_id=payment_method, customer_id=customer_id, idempotency_key=key("attach")
    )
    return Rider(customer_id, saved.id)


@pytest.fixture
async def rider(stripe_gateway: StripeGateway) -> Rider:
    return await new_rider(stripe_gateway)


async def authorize(gateway: StripeGateway, rider: Rider, cents: int) -> StripePaymentIntent:
    return await gateway.authorize(
        customer_id=rider.customer_id,
        payment_method_id=rider.payment_method_id,
        amount=usd(cents),
        metadata={"ride_id": str(uuid.uuid4())},
        idempotency_key=key("authorize"),
    )


async def captured_charge(gateway: StripeGateway, rider: Rider, cents: int) -> str:
    intent = await gateway.charge(
        customer_id=rider.customer_id,
        payment_method_id=rider.payment_method_id,
        amount=usd(cents),
        metadata={},
        idempotency_key=key("charge"),
    )
    assert intent.latest_charge_id is not None
    return intent.latest_charge_id


async def onboarded_driver(gateway: StripeGateway) -> StripeAccount:
    account = await gateway.create_express_account(
        email=f"{uuid.uuid4().hex[:8]}@drivers.test",
        country="US",
        metadata={"driver_id": str(uuid.uuid4())},
        idempotency_key=key("express-account"),
    )
    link = await gateway.create_account_link(
        account_id=account.id, idempotency_key=key("onboarding-link")
    )
    async with httpx.AsyncClient() as browser:
        finished = await browser.get(link.url)
    assert finished.headers["location"] == CONNECT_RETURN_URL
    return await gateway.retrieve_account(account.id)


@pytest.fixture
async def driver(stripe_gateway: StripeGateway) -> StripeAccount:
    return await onboarded_driver(stripe_gateway)


# -- customers and saved cards -------------------------------------------------------------


async def test_create_customer_returns_stripes_customer(stripe_gateway: StripeGateway) -> None:
    customer = await stripe_gateway.create_customer(
        email="ana@riders.test", name="Ana", metadata={}, idempotency_key=key("customer")
    )

    assert customer.id.startswith("cus_")
    assert customer.email == "ana@riders.test"
    assert customer.created_at.tzinfo is UTC


async def test_a_card_confirmed_in_the_app_is_saved_for_the_customer(
    stripe_gateway: StripeGateway, fake_stripe: FakeConnect
) -> None:
    customer_id = await new_customer(stripe_gateway)
    setup_intent = await stripe_gateway.create_setup_intent(
        customer_id=customer_id, metadata={}, idempotency_key=key("setup-intent")
    )
    assert setup_intent.status == "requires_payment_method"

    confirmed = await confirm_setup_intent_in_the_app(
        fake_stripe, setup_intent.id, setup_intent.client_secret, VISA
    )

    assert confirmed["status"] == "succeeded"
    saved = await stripe_gateway.list_payment_methods(customer_id=customer_id)
    assert [(card.id, card.last4) for card in saved] == [(confirmed["payment_method"], "4242")]


async def test_attaching_a_declined_card_raises_card_declined(
    stripe_gateway: StripeGateway, fake_stripe: FakeConnect
) -> None:
    customer_id = await new_customer(stripe_gateway)
    declined = await create_card(fake_stripe, VISA_DECLINED_ON_ATTACH)

    with pytest.raises(CardDeclined) as raised:
        await stripe_gateway.attach_payment_method(
            payment_method_id=declined, customer_id=customer_id, idempotency_key=key("attach")
        )

    assert raised.value.status == 402
    assert raised.value.decline_code == "generic_decline"


# -- authorize, capture, cancel, charge ----------------------------------------------------


async def test_authorize_holds_the_amount_without_taking_it(
    stripe_gateway: StripeGateway, rider: Rider
) -> None:
    intent = await authorize(stripe_gateway, rider, 2_500)

    assert intent.status == "requires_capture"
    assert intent.amount_capturable == usd(2_500)
    assert intent.amount_received == usd(0)
    assert intent.latest_charge_id is not None
    assert intent.latest_charge_id.startswith("ch_")


async def test_capture_less_than_authorized_takes_only_the_final_fare(
    stripe_gateway: StripeGateway, rider: Rider
) -> None:
    authorized = await authorize(stripe_gateway, rider, 2_500)

    captured = await stripe_gateway.capture(
        payment_intent_id=authorized.id, amount=usd(1_830), idempotency_key=key("capture")
    )

    assert captured.status == "succeeded"
    assert captured.amount_received == usd(1_830)
    assert captured.amount_capturable == usd(0)


async def test_capture_more_than_authorized_is_rejected(
    stripe_gateway: StripeGateway, rider: Rider
) -> None:
    authorized = await authorize(stripe_gateway, rider, 2_500)

    with pytest.raises(PaymentRequestRejected):
        await stripe_gateway.capture(
            payment_intent_id=authorized.id, amount=usd(2_501), idempotency_key=key("capture")
        )


async def test_cancel_authorization_releases_the_hold(
    stripe_gateway: StripeGateway, rider: Rider
) -> None:
    authorized = await authorize(stripe_gateway, rider, 2_500)

    canceled = await stripe_gateway.cancel_authorization(
        payment_intent_id=authorized.id, idempotency_key=key("cancel")
    )

    assert canceled.status == "canceled"
    assert canceled.amount_received == usd(0)


async def test_a_canceled_authorization_cannot_be_captured(
    stripe_gateway: StripeGateway, rider: Rider
) -> None:
    authorized = await authorize(stripe_gateway, rider, 2_500)
    await stripe_gateway.cancel_authorization(
        payment_intent_id=authorized.id, idempotency_key=key("cancel")
    )

    with pytest.raises(PaymentRequestRejected) as raised:
        await stripe_gateway.capture(
            payment_intent_id=authorized.id, amount=usd(500), idempotency_key=key("capture")
        )

    assert raised.value.stripe_code == "payment_intent_unexpected_state"


async def test_authorize_on_a_card_declined_at_charge_raises_card_declined(
    stripe_gateway: StripeGateway,
) -> None:
    rider = await new_rider(stripe_gateway, VISA_DECLINED_ON_CHARGE)

    with pytest.raises(CardDeclined) as raised:
        await authorize(stripe_gateway, rider, 2_500)

    assert raised.value.payment_intent_id is not None
    declined = await stripe_gateway.retrieve_payment_intent(raised.value.payment_intent_id)
    assert declined.status == "requires_payment_method"


async def test_authorize_on_a_card_that_needs_3d_secure_raises_authentication_required(
    stripe_gateway: StripeGateway, fake_stripe: FakeConnect
) -> None:
    card = await create_card(fake_stripe, VISA_NEEDS_AUTHENTICATION)
    rider = await new_rider(stripe_gateway, card)

    with pytest.raises(CardAuthenticationRequired) as raised:
        await authorize(stripe_gateway, rider, 2_500)

    assert raised.value.payment_intent_id is not None


async def test_charge_takes_a_tip_at_once(stripe_gateway: StripeGateway, rider: Rider) -> None:
    tip = await stripe_gateway.charge(
        customer_id=rider.customer_id,
        payment_method_id=rider.payment_method_id,
        amount=usd(300),
        metadata={"ride_id": str(uuid.uuid4()), "kind": "tip"},
        idempotency_key=key("tip"),
    )

    assert tip.status == "succeeded"
    assert tip.amount_received == usd(300)
    assert tip.metadata["kind"] == "tip"


async def test_retrieve_an_unknown_payment_intent_raises_resource_missing(
    stripe_gateway: StripeGateway,
) -> None:
    with pytest.raises(PaymentResourceMissing):
        await stripe_gateway.retrieve_payment_intent("pi_doesnotexist")


# -- refunds -------------------------------------------------------------------------------


async def test_partial_refund_refunds_that_amount(
    stripe_gateway: StripeGateway, rider: Rider
) -> None:
    authorized = await authorize(stripe_gateway, rider, 2_500)
    await stripe_gateway.capture(
        payment_intent_id=authorized.id, amount=usd(2_000), idempotency_key=key("capture")
    )

    refund = await stripe_gateway.refund(
        payment_intent_id=authorized.id,
        amount=usd(700),
        metadata={"reason": "detour"},
        idempotency_key=key("refund"),
    )

    assert refund.id.startswith("re_")
    assert refund.amount == usd(700)
    assert refund.status == "succeeded"
    assert refund.charge_id == authorized.latest_charge_id


async def test_full_refund_refunds_what_is_left_of_the_captured_amount(
    stripe_gateway: StripeGateway, rider: Rider
) -> None:
    authorized = await authorize(stripe_gateway, rider, 2_500)
    await stripe_gateway.capture(
        payment_intent_id=authorized.id, amount=usd(2_000), idempotency_key=key("capture")
    )
    await stripe_gateway.refund(
        payment_intent_id=authorized.id,
        amount=usd(700),
        metadata={},
        idempotency_key=key("refund"),
    )

    rest = await stripe_gateway.refund(
        payment_intent_id=authorized.id, amount=None, metadata={}, idempotency_key=key("refund")
    )

    assert rest.amount == usd(1_300)


async def test_refund_of_more_than_is_left_is_rejected(
    stripe_gateway: StripeGateway, rider: Rider
) -> None:
    authorized = await authorize(stripe_gateway, rider, 2_500)
    await stripe_gateway.capture(
        payment_intent_id=authorized.id, amount=usd(2_000), idempotency_key=key("capture")
    )

    with pytest.raises(PaymentRequestRejected) as raised:
        await stripe_gateway.refund(
            payment_intent_id=authorized.id,
            amount=usd(2_001),
            metadata={},
            idempotency_key=key("refund"),
        )

    assert raised.value.param == "amount"


# -- idempotency and failures --------------------------------------------------------------


async def test_the_same_key_twice_authorizes_once(
    stripe_gateway: StripeGateway, fake_stripe: FakeConnect, rider: Rider
) -> None:
    same_key = key("authorize")
    intents = [
        await stripe_gateway.authorize(
            customer_id=rider.customer_id,
            payment_method_id=rider.payment_method_id,
            amount=usd(2_500),
            metadata={"ride_id": "r-1"},
            idempotency_key=same_key,
        )
        for _ in range(2)
    ]

    assert intents[1] == intents[0]
    assert await payment_intents_of(fake_stripe, rider.customer_id) == [intents[0].id]


async def test_the_same_key_with_other_parameters_raises_idempotency_key_reused(
    stripe_gateway: StripeGateway, rider: Rider
) -> None:
    same_key = key("authorize")
    await stripe_gateway.authorize(
        customer_id=rider.customer_id,
        payment_method_id=rider.payment_method_id,
        amount=usd(2_500),
        metadata={},
        idempotency_key=same_key,
    )

    with pytest.raises(IdempotencyKeyReused) as raised:
        await stripe_gateway.authorize(
            customer_id=rider.customer_id,
            payment_method_id=rider.payment_method_id,
            amount=usd(2_600),
            metadata={},
            idempotency_key=same_key,
        )

    assert raised.value.idempotency_key == same_key


async def test_a_declined_charge_replays_as_declined_under_its_key(
    stripe_gateway: StripeGateway,
) -> None:
    rider = await new_rider(stripe_gateway, VISA_DECLINED_ON_CHARGE)
    same_key = key("authorize")
    declines: list[CardDeclined] = []
    for _ in range(2):
        with pytest.raises(CardDeclined) as raised:
            await stripe_gateway.authorize(
                customer_id=rider.customer_id,
                payment_method_id=rider.payment_method_id,
                amount=usd(2_500),
                metadata={},
                idempotency_key=same_key,
            )
        declines.append(raised.value)

    assert declines[0].payment_intent_id == declines[1].payment_intent_id


async def test_unreachable_stripe_raises_a_retryable_error_quickly(
    fake_stripe: FakeConnect,
) -> None:
    closed_port = _closed_loopback_port()
    settings = stripe_settings_for(
        fake_stripe, api_base=f"http://127.0.0.1:{closed_port}", max_network_retries=1
    )
    gateway = StripeGateway(settings)
    started = time.monotonic()
    try:
        with pytest.raises(PaymentProviderUnavailable):
            await new_customer(gateway)
    finally:
        await gateway.aclose()

    assert time.monotonic() - started < 3


async def test_a_server_error_once_is_retried_by_the_sdk(
    fake_stripe: FakeConnect, rider: Rider
) -> None:
    gateway = StripeGateway(stripe_settings_for(fake_stripe, max_network_retries=1))
    fake_stripe.add_fault("/v1/payment_intents", status=500, times=1)
    try:
        intent = await authorize(gateway, rider, 2_500)
    finally:
        await gateway.aclose()
        fake_stripe.clear_faults()

    assert intent.status == "requires_capture"


async def test_server_errors_past_the_retries_raise_a_retryable_error(
    stripe_gateway: StripeGateway, fake_stripe: FakeConnect, rider: Rider
) -> None:
    fake_stripe.add_fault("/v1/payment_intents", status=503, times=1)

    with pytest.raises(PaymentProviderUnavailable):
        await authorize(stripe_gateway, rider, 2_500)


async def test_a_timeout_raises_a_retryable_error(fake_stripe: FakeConnect, rider: Rider) -> None:
    gateway = StripeGateway(stripe_settings_for(fake_stripe, timeout_s=0.2))
    fake_stripe.add_fault("/v1/payment_intents", status=0, delay_s=1.0)
    try:
        with pytest.raises(PaymentProviderUnavailable):
            await authorize(gateway, rider, 2_500)
    finally:
        await gateway.aclose()
        fake_stripe.clear_faults()


async def test_retrying_after_a_timeout_with_the_same_key_returns_the_first_attempts_intent(
    fake_stripe: FakeConnect, rider: Rider
) -> None:
    gateway = StripeGateway(stripe_settings_for(fake_stripe, timeout_s=0.2))
    # Stripe got the request and will act on it, but answers too late.
    stall_s = 0.6
    fake_stripe.add_fault("/v1/payment_intents", status=0, delay_s=stall_s)
    same_key = key("authorize")
    started = time.monotonic()

    async def attempt() -> StripePaymentIntent:
        return await gateway.authorize(
            customer_id=rider.customer_id,
            payment_method_id=rider.payment_method_id,
            amount=usd(2_500),
            metadata={},
            idempotency_key=same_key,
        )

    try:
        with pytest.raises(PaymentProviderUnavailable):
            await attempt()
        deadline = time.monotonic() + 5
        while True:
            try:
                intent = await attempt()
                break
            except PaymentProviderUnavailable:
                # 409: the first attempt is still running at Stripe.
                assert time.monotonic() < deadline
                await asyncio.sleep(0.1)
    finally:
        await gateway.aclose()
        fake_stripe.clear_faults()
    # Count only once the first attempt has surely finished at Stripe.
    await asyncio.sleep(max(0.0, started + stall_s + 0.3 - time.monotonic()))

    assert await payment_intents_of(fake_stripe, rider.customer_id) == [intent.id]


def _closed_loopback_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


# -- Connect: drivers' accounts ------------------------------------------------------------


async def test_a_new_express_account_can_neither_charge_nor_pay_out(
    stripe_gateway: StripeGateway,
) -> None:
    account = await stripe_gateway.create_express_account(
        email="bo@drivers.test", country="US", metadata={}, idempotency_key=key("account")
    )

    assert account.id.startswith("acct_")
    assert account.default_currency == "usd"
    assert (account.details_submitted, account.charges_enabled, account.payouts_enabled) == (
        False,
        False,
        False,
    )


async def test_finishing_onboarding_enables_charges_and_payouts(
    stripe_gateway: StripeGateway,
) -> None:
    driver = await onboarded_driver(stripe_gateway)

    assert (driver.details_submitted, driver.charges_enabled, driver.payouts_enabled) == (
        True,
        True,
        True,
    )


async def test_an_onboarding_link_works_once(stripe_gateway: StripeGateway) -> None:
    account = await stripe_gateway.create_express_account(
        email="cy@drivers.test", country="US", metadata={}, idempotency_key=key("account")
    )
    link = await stripe_gateway.create_account_link(
        account_id=account.id, idempotency_key=key("onboarding-link")
    )
    assert link.expires_at > datetime.now(UTC)

    async with httpx.AsyncClient() as browser:
        await browser.get(link.url)
        again = await browser.get(link.url)

    assert again.headers["location"] == CONNECT_REFRESH_URL


async def test_retrieve_an_unknown_account_raises_resource_missing(
    stripe_gateway: StripeGateway,
) -> None:
    with pytest.raises(PaymentResourceMissing):
        await stripe_gateway.retrieve_account("acct_doesnotexist")


# -- Connect: transfers, reversals, payouts ------------------------------------------------


async def test_transfer_sends_the_drivers_share_of_a_charge(
    stripe_gateway: StripeGateway, rider: Rider, driver: StripeAccount
) -> None:
    charge_id = await captured_charge(stripe_gateway, rider, 2_000)

    transfer = await stripe_gateway.create_transfer(
        amount=usd(1_600),
        destination_account_id=driver.id,
        source_charge_id=charge_id,
        metadata={"ride_id": "r-1"},
        idempotency_key=key("transfer"),
    )

    assert transfer.id.startswith("tr_")
    assert transfer.amount == usd(1_600)
    assert transfer.destination_account_id == driver.id
    assert transfer.source_charge_id == charge_id
    assert not transfer.reversed


async def test_transfer_to_a_driver_who_has_not_onboarded_is_rejected(
    stripe_gateway: StripeGateway, rider: Rider
) -> None:
    charge_id = await captured_charge(stripe_gateway, rider, 2_000)
    account = await stripe_gateway.create_express_account(
        email="di@drivers.test", country="US", metadata={}, idempotency_key=key("account")
    )

    with pytest.raises(PaymentRequestRejected) as raised:
        await stripe_gateway.create_transfer(
            amount=usd(1_600),
            destination_account_id=account.id,
            source_charge_id=charge_id,
            metadata={},
            idempotency_key=key("transfer"),
        )

    assert raised.value.stripe_code == "insufficient_capabilities_for_transfer"


async def test_transfers_from_one_charge_cannot_exceed_what_was_captured(
    stripe_gateway: StripeGateway, rider: Rider, driver: StripeAccount
) -> None:
    authorized = await authorize(stripe_gateway, rider, 2_500)
    captured = await stripe_gateway.capture(
        payment_intent_id=authorized.id, amount=usd(2_000), idempotency_key=key("capture")
    )
    assert captured.latest_charge_id is not None
    await stripe_gateway.create_transfer(
        amount=usd(1_500),
        destination_account_id=driver.id,
        source_charge_id=captured.latest_charge_id,
        metadata={},
        idempotency_key=key("transfer"),
    )

    with pytest.raises(PaymentRequestRejected) as raised:
        await stripe_gateway.create_transfer(
            amount=usd(501),
            destination_account_id=driver.id,
            source_charge_id=captured.latest_charge_id,
            metadata={},
            idempotency_key=key("transfer"),
        )

    assert raised.value.param == "amount"


async def test_reverse_transfer_takes_back_part_then_the_rest(
    stripe_gateway: StripeGateway, rider: Rider, driver: StripeAccount
) -> None:
    charge_id = await captured_charge(stripe_gateway, rider, 2_000)
    transfer = await stripe_gateway.create_transfer(
        amount=usd(1_600),
        destination_account_id=driver.id,
        source_charge_id=charge_id,
        metadata={},
        idempotency_key=key("transfer"),
    )

    part = await stripe_gateway.reverse_transfer(
        transfer_id=transfer.id, amount=usd(600), metadata={}, idempotency_key=key("reversal")
    )
    rest = await stripe_gateway.reverse_transfer(
        transfer_id=transfer.id, amount=None, metadata={}, idempotency_key=key("reversal")
    )

    assert part.id.startswith("trr_")
    assert (part.transfer_id, part.amount) == (transfer.id, usd(600))
    assert rest.amount == usd(1_000)


async def test_reversing_more_than_is_left_of_a_transfer_is_rejected(
    stripe_gateway: StripeGateway, rider: Rider, driver: StripeAccount
) -> None:
    charge_id = await captured_charge(stripe_gateway, rider, 2_000)
    transfer = await stripe_gateway.create_transfer(
        amount=usd(1_600),
        destination_account_id=driver.id,
        source_charge_id=charge_id,
        metadata={},
        idempotency_key=key("transfer"),
    )

    with pytest.raises(PaymentRequestRejected):
        await stripe_gateway.reverse_transfer(
            transfer_id=transfer.id,
            amount=usd(1_601),
            metadata={},
            idempotency_key=key("reversal"),
        )


async def test_a_transfer_already_paid_out_cannot_be_reversed(
    stripe_gateway: StripeGateway, rider: Rider, driver: StripeAccount
) -> None:
    charge_id = await captured_charge(stripe_gateway, rider, 2_000)
    transfer = await stripe_gateway.create_transfer(
        amount=usd(1_600),
        destination_account_id=driver.id,
        source_charge_id=charge_id,
        metadata={},
        idempotency_key=key("transfer"),
    )
    payout = await stripe_gateway.create_payout(
        account_id=driver.id, amount=usd(1_600), metadata={}, idempotency_key=key("payout")
    )
    assert (payout.status, payout.amount, payout.account_id) == ("pending", usd(1_600), driver.id)

    with pytest.raises(PaymentRequestRejected) as raised:
        await stripe_gateway.reverse_transfer(
            transfer_id=transfer.id, amount=None, metadata={}, idempotency_key=key("reversal")
        )

    assert raised.value.stripe_code == "balance_insufficient"


async def test_a_payout_larger_than_the_drivers_balance_is_rejected(
    stripe_gateway: StripeGateway, driver: StripeAccount
) -> None:
    with pytest.raises(PaymentRequestRejected) as raised:
        await stripe_gateway.create_payout(
            account_id=driver.id, amount=usd(1), metadata={}, idempotency_key=key("payout")
        )

    assert raised.value.stripe_code == "balance_insufficient"


# -- reconciliation ------------------------------------------------------------------------


async def test_balance_transactions_list_charges_refunds_and_transfers_page_by_page(
    stripe_gateway: StripeGateway, rider: Rider, driver: StripeAccount
) -> None:
    since = datetime.now(UTC) - timedelta(seconds=1)
    authorized = await authorize(stripe_gateway, rider, 2_500)
    captured = await stripe_gateway.capture(
        payment_intent_id=authorized.id, amount=usd(2_000), idempotency_key=key("capture")
    )
    assert captured.latest_charge_id is not None
    refund = await stripe_gateway.refund(
        payment_intent_id=authorized.id,
        amount=usd(500),
        metadata={},
        idempotency_key=key("refund"),
    )
    transfer = await stripe_gateway.create_transfer(
        amount=usd(1_200),
        destination_account_id=driver.id,
        source_charge_id=captured.latest_charge_id,
        metadata={},
        idempotency_key=key("transfer"),
    )
    reversal = await stripe_gateway.reverse_transfer(
        transfer_id=transfer.id, amount=usd(200), metadata={}, idempotency_key=key("reversal")
    )

    listed = [
        entry
        async for entry in stripe_gateway.list_balance_transactions(created_from=since, page_size=2)
    ]

    assert len({entry.id for entry in listed}) == len(listed)
    ours = {
        entry.source_id: (entry.type, entry.amount)
        for entry in listed
        if entry.source_id in {captured.latest_charge_id, refund.id, transfer.id, reversal.id}
    }
    assert ours == {
        captured.latest_charge_id: ("charge", usd(2_000)),
        refund.id: ("refund", usd(-500)),
        transfer.id: ("transfer", usd(-1_200)),
        reversal.id: ("transfer_refund", usd(200)),
    }
    assert [entry.created_at for entry in listed] == sorted(
        (entry.created_at for entry in listed), reverse=True
    )


async def test_balance_transactions_before_a_moment_leave_out_later_ones(
    stripe_gateway: StripeGateway, rider: Rider
) -> None:
    charge_id = await captured_charge(stripe_gateway, rider, 1_000)

    listed = [
        entry
        async for entry in stripe_gateway.list_balance_transactions(
            created_before=datetime.now(UTC) - timedelta(hours=1)
        )
    ]

    assert charge_id not in {entry.source_id for entry in listed}


# -- webhooks ------------------------------------------------------------------------------


def test_a_correctly_signed_webhook_gives_its_event() -> None:
    payload = event_payload("payment_intent.succeeded", {"id": "pi_1", "object": "payment_intent"})

    event = verify_webhook(
        payload, stripe_signature(payload, TEST_WEBHOOK_SECRET), TEST_WEBHOOK_SECRET
    )

    assert (event.id, event.type, event.livemode) == (
        "evt_test_1",
        "payment_intent.succeeded",
        False,
    )
    assert event.data_object == {"id": "pi_1", "object": "payment_intent"}
    assert event.created.tzinfo is UTC


def test_a_webhook_signed_with_another_secret_is_refused() -> None:
    payload = event_payload("payment_intent.succeeded", {"id": "pi_1"})
    forged = stripe_signature(payload, "whsec_someone_else")

    with pytest.raises(WebhookSignatureInvalid) as raised:
        verify_webhook(payload, forged, TEST_WEBHOOK_SECRET)

    assert raised.value.status == 400


def test_a_webhook_signed_too_long_ago_is_refused() -> None:
    payload = event_payload("payment_intent.succeeded", {"id": "pi_1"})
    stale = stripe_signature(payload, TEST_WEBHOOK_SECRET, timestamp=int(time.time()) - 301)

    with pytest.raises(WebhookSignatureInvalid):
        verify_webhook(payload, stale, TEST_WEBHOOK_SECRET, tolerance_s=300)


def test_a_webhook_whose_body_was_changed_is_refused() -> None:
    payload = event_payload("charge.refunded", {"id": "ch_1", "amount_refunded": 100})
    signature = stripe_signature(payload, TEST_WEBHOOK_SECRET)
    tampered = payload.replace(b'"amount_refunded": 100', b'"amount_refunded": 9900')

    with pytest.raises(WebhookSignatureInvalid):
        verify_webhook(tampered, signature, TEST_WEBHOOK_SECRET)


def test_a_webhook_without_a_signature_is_refused() -> None:
    payload = event_payload("charge.refunded", {"id": "ch_1"})

    with pytest.raises(WebhookSignatureInvalid):
        verify_webhook(payload, "", TEST_WEBHOOK_SECRET)


def test_a_signed_body_that_is_not_an_event_is_refused() -> None:
    payload = b'{"hello": "world"}'

    with pytest.raises(WebhookPayloadInvalid):
        verify_webhook(payload, stripe_signature(payload, TEST_WEBHOOK_SECRET), TEST_WEBHOOK_SECRET)
