"""The only door to Stripe: the one module that imports ``stripe``.

Every call that changes something carries an idempotency key the caller derives from its
own state (``ride:{id}:authorize:v1``) and records before calling: a retry after a crash
or a timeout sends the same key, and Stripe answers with its first answer instead of
charging twice. Bump the key's version only to mean "a new, different attempt".

Callers get our frozen dataclasses and our errors, never Stripe's objects: the rest of the
code base does not change when the SDK does, and an in-process gateway (for benchmarks)
only has to satisfy ``GatewayProtocol``.

Money goes in and out as ``Money`` (ISO currency, upper case); Stripe's lower-case
currencies stay in here.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator, Awaitable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import httpx
import stripe

from infra.settings import StripeSettings
from payments.errors import (
    CardAuthenticationRequired,
    CardDeclined,
    IdempotencyKeyReused,
    PaymentProviderMisconfigured,
    PaymentProviderUnavailable,
    PaymentRequestRejected,
    PaymentResourceMissing,
    WebhookPayloadInvalid,
    WebhookSignatureInvalid,
)
from payments.money import Money

T = TypeVar("T")

# Stripe's own limit for one page of a list.
MAX_PAGE_SIZE = 100


@dataclass(frozen=True, slots=True)
class StripeCustomer:
    id: str
    email: str | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class StripeSetupIntent:
    id: str
    # Handed to the rider's app, which confirms the intent with Stripe.js.
    client_secret: str
    status: str
    customer_id: str | None
    payment_method_id: str | None


@dataclass(frozen=True, slots=True)
class StripePaymentMethod:
    id: str
    customer_id: str | None
    brand: str | None
    last4: str | None
    exp_month: int | None
    exp_year: int | None


@dataclass(frozen=True, slots=True)
class StripePaymentIntent:
    id: str
    # requires_capture (authorized), succeeded (captured), canceled, processing, ...
    status: str
    amount: Money
    amount_capturable: Money
    amount_received: Money
    customer_id: str | None
    payment_method_id: str | None
    latest_charge_id: str | None
    metadata: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class StripeRefund:
    id: str
    amount: Money
    status: str
    charge_id: str | None
    payment_intent_id: str | None


@dataclass(frozen=True, slots=True)
class StripeAccount:
    id: str
    email: str | None
    country: str | None
    default_currency: str | None
    details_submitted: bool
    charges_enabled: bool
    payouts_enabled: bool


@dataclass(frozen=True, slots=True)
class StripeAccountLink:
    url: str
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class StripeTransfer:
    id: str
    amount: Money
    amount_reversed: Money
    destination_account_id: str
    source_charge_id: str | None
    reversed: bool
    balance_transaction_id: str | None


@dataclass(frozen=True, slots=True)
class StripeTransferReversal:
    id: str
    transfer_id: str
    amount: Money
    balance_transaction_id: str | None


@dataclass(frozen=True, slots=True)
class StripePayout:
    id: str
    account_id: str
    amount: Money
    status: str
    arrival_at: datetime


@dataclass(frozen=True, slots=True)
class StripeBalanceTransaction:
    id: str
    # charge, refund, transfer, transfer_refund, payout, payment, stripe_fee, ...
    type: str
    amount: Money
    fee: Money
    net: Money
    source_id: str | None
    status: str
    reporting_category: str | None
    created_at: datetime
    available_at: datetime


@dataclass(frozen=True, slots=True)
class WebhookEvent:
    id: str
    type: str
    created: datetime
    data_object: dict[str, Any]
    livemode: bool
    api_version: str | None


class GatewayProtocol(Protocol):
    """What the payments service needs from a payment provider."""

    async def create_customer(
        self,
        *,
        email: str | None,
        name: str | None,
        metadata: Mapping[str, str],
        idempotency_key: str,
    ) -> StripeCustomer: ...

    async def create_setup_intent(
        self, *, customer_id: str, metadata: Mapping[str, str], idempotency_key: str
    ) -> StripeSetupIntent: ...

    async def attach_payment_method(
        self, *, payment_method_id: str, customer_id: str, idempotency_key: str
    ) -> StripePaymentMethod: ...

    async def list_payment_methods(self, *, customer_id: str) -> list[StripePaymentMethod]: ...

    async def authorize(
        self,
        *,
        customer_id: str,
        payment_method_id: str,
        amount: Money,
        metadata: Mapping[str, str],
        idempotency_key: str,
    ) -> StripePaymentIntent: ...

    async def capture(
        self, *, payment_intent_id: str, amount: Money, idempotency_key: str
    ) -> StripePaymentIntent: ...

    async def cancel_authorization(
        self, *, payment_intent_id: str, idempotency_key: str
    ) -> StripePaymentIntent: ...

    async def charge(
        self,
        *,
        customer_id: str,
        payment_method_id: str,
        amount: Money,
        metadata: Mapping[str, str],
        idempotency_key: str,
    ) -> StripePaymentIntent: ...

    async def refund(
        self,
        *,
        payment_intent_id: str,
        amount: Money | None,
        metadata: Mapping[str, str],
        idempotency_key: str,
    ) -> StripeRefund: ...

    async def retrieve_payment_intent(self, payment_intent_id: str) -> StripePaymentIntent: ...

    async def create_express_account(
        self,
        *,
        email: str,
        country: str,
        metadata: Mapping[str, str],
        idempotency_key: str,
    ) -> StripeAccount: ...

    async def create_account_link(
        self, *, account_id: str, idempotency_key: str
    ) -> StripeAccountLink: ...

    async def retrieve_account(self, account_id: str) -> StripeAccount: ...

    async def create_transfer(
        self,
        *,
        amount: Money,
        destination_account_id: str,
        source_charge_id: str,
        metadata: Mapping[str, str],
        idempotency_key: str,
    ) -> StripeTransfer: ...

    async def reverse_transfer(
        self,
        *,
        transfer_id: str,
        amount: Money | None,
        metadata: Mapping[str, str],
        idempotency_key: str,
    ) -> StripeTransferReversal: ...

    async def create_payout(
        self,
        *,
        account_id: str,
        amount: Money,
        metadata: Mapping[str, str],
        idempotency_key: str,
    ) -> StripePayout: ...

    def list_balance_transactions(
        self,
        *,
        created_from: datetime | None = None,
        created_before: datetime | None = None,
        page_size: int = MAX_PAGE_SIZE,
    ) -> AsyncIterator[StripeBalanceTransaction]: ...


class _StripeHttpx(stripe.HTTPClient):
    """The SDK's transport, over an httpx.AsyncClient of our own.

    The SDK's own HTTPXClient hands httpx the encoded form as ``data=<str>``, which httpx
    deprecates with a warning on every request; this one sends it as ``content``. The
    SDK keeps doing the retries (same idempotency key, backoff) around ``request_async``.
    """

    name = "httpx"

    def __init__(self, timeout_s: float) -> None:
        super().__init__()
        self._client = httpx.AsyncClient(
            timeout=timeout_s, verify=ssl.create_default_context(cafile=stripe.ca_bundle_path)
        )

    async def request_async(
        self, method: str, url: str, headers: Mapping[str, str], post_data: Any = None
    ) -> tuple[bytes, int, Mapping[str, str]]:
        try:
            response = await self._client.request(method, url, headers=headers, content=post_data)
        except httpx.TransportError as exc:
            # Refused, reset, timed out: nothing was answered, so the same key may go again.
            # (The SDK leaves this constructor unannotated.)
            raise stripe.APIConnectionError(  # type: ignore[no-untyped-call]
                f"Stripe could not be reached ({type(exc).__name__}: {exc})", should_retry=True
            ) from exc
        return response.content, response.status_code, response.headers

    async def close_async(self) -> None:
        await self._client.aclose()

    def sleep_async(self, secs: float) -> Awaitable[None]:
        return asyncio.sleep(secs)


class StripeGateway:
    """``GatewayProtocol`` over Stripe's API, through the official SDK."""

    def __init__(self, settings: StripeSettings) -> None:
        self._settings = settings
        self._http = _StripeHttpx(settings.timeout_s)
        self._client = stripe.StripeClient(
            settings.api_key,
            base_addresses={"api": settings.api_base, "connect": settings.api_base},
            max_network_retries=settings.max_network_retries,
            http_client=self._http,
        )

    async def aclose(self) -> None:
        await self._http.close_async()

    async def create_customer(
        self,
        *,
        email: str | None,
        name: str | None,
        metadata: Mapping[str, str],
        idempotency_key: str,
    ) -> StripeCustomer:
        params: stripe.params.CustomerCreateParams = {"metadata": dict(metadata)}
        if email is not None:
            params["email"] = email
        if name is not None:
            params["name"] = name
        customer = await _call(
            self._client.v1.customers.create_async(params, {"idempotency_key": idempotency_key}),
            idempotency_key,
        )
        data = customer.to_dict()
        return StripeCustomer(
            id=data["id"], email=data.get("email"), created_at=_timestamp(data["created"])
        )

    async def create_setup_intent(
        self, *, customer_id: str, metadata: Mapping[str, str], idempotency_key: str
    ) -> StripeSetupIntent:
        setup_intent = await _call(
            self._client.v1.setup_intents.create_async(
                {
                    "customer": customer_id,
                    # Saved for rides charged while the rider is not in the app.
                    "usage": "off_session",
                    "allowed_payment_method_types": ["card"],
                    "metadata": dict(metadata),
                },
                {"idempotency_key": idempotency_key},
            ),
            idempotency_key,
        )
        data = setup_intent.to_dict()
        return StripeSetupIntent(
            id=data["id"],
            client_secret=data["client_secret"],
            status=data["status"],
            customer_id=_id_of(data.get("customer")),
            payment_method_id=_id_of(data.get("payment_method")),
        )

    async def attach_payment_method(
        self, *, payment_method_id: str, customer_id: str, idempotency_key: str
    ) -> StripePaymentMethod:
        payment_method = await _call(
            self._client.v1.payment_methods.attach_async(
                payment_method_id,
                {"customer": customer_id},
                {"idempotency_key": idempotency_key},
            ),
            idempotency_key,
        )
        return _payment_method(payment_method.to_dict())

    async def list_payment_methods(self, *, customer_id: str) -> list[StripePaymentMethod]:
        found: list[StripePaymentMethod] = []
        starting_after: str | None = None
        while True:
            params: stripe.params.PaymentMethodListParams = {
                "customer": customer_id,
                "type": "card",
                "limit": MAX_PAGE_SIZE,
            }
            if starting_after is not None:
                params["starting_after"] = starting_after
            page = await _call(self._client.v1.payment_methods.list_async(params))
            found.extend(_payment_method(item.to_dict()) for item in page.data)
            if not page.has_more or not page.data:
                return found
            starting_after = found[-1].id

    async def authorize(
        self,
        *,
        customer_id: str,
        payment_method_id: str,
        amount: Money,
        metadata: Mapping[str, str],
        idempotency_key: str,
    ) -> StripePaymentIntent:
        """Holds ``amount`` on the rider's saved card; capture() takes the final fare."""
        return await self._confirm_off_session(
            customer_id=customer_id,
            payment_method_id=payment_method_id,
            amount=amount,
            metadata=metadata,
            idempotency_key=idempotency_key,
            capture_method="manual",
        )

    async def charge(
        self,
        *,
        customer_id: str,
        payment_method_id: str,
        amount: Money,
        metadata: Mapping[str, str],
        idempotency_key: str,
    ) -> StripePaymentIntent:
        """Takes ``amount`` at once (tips, settling a rider's debt)."""
        return await self._confirm_off_session(
            customer_id=customer_id,
            payment_method_id=payment_method_id,
            amount=amount,
            metadata=metadata,
            idempotency_key=idempotency_key,
            capture_method="automatic",
        )

    async def _confirm_off_session(
        self,
        *,
        customer_id: str,
        payment_method_id: str,
        amount: Money,
        metadata: Mapping[str, str],
        idempotency_key: str,
        capture_method: str,
    ) -> StripePaymentIntent:
        payment_intent = await _call(
            self._client.v1.payment_intents.create_async(
                {
                    "amount": _positive(amount),
                    "currency": amount.currency.lower(),
                    "customer": customer_id,
                    "payment_method": payment_method_id,
                    "capture_method": capture_method,
                    "confirm": True,
                    # The rider is not there to answer a 3-D Secure challenge.
                    "off_session": True,
                    # Cards only: redirect-based methods cannot be confirmed off session.
                    "allowed_payment_method_types": ["card"],
                    "metadata": dict(metadata),
                },
                {"idempotency_key": idempotency_key},
            ),
            idempotency_key,
        )
        result = _payment_intent(payment_intent.to_dict())
        if result.status == "requires_action":
            raise CardAuthenticationRequired(payment_intent_id=result.id)
        return result

    async def capture(
        self, *, payment_intent_id: str, amount: Money, idempotency_key: str
    ) -> StripePaymentIntent:
        """Captures ``amount`` (at most what was authorized); Stripe releases the rest."""
        payment_intent = await _call(
            self._client.v1.payment_intents.capture_async(
                payment_intent_id,
                {"amount_to_capture": _positive(amount)},
                {"idempotency_key": idempotency_key},
            ),
            idempotency_key,
        )
        return _payment_intent(payment_intent.to_dict())

    async def cancel_authorization(
        self, *, payment_intent_id: str, idempotency_key: str
    ) -> StripePaymentIntent:
        payment_intent = await _call(
            self._client.v1.payment_intents.cancel_async(
                payment_intent_id, None, {"idempotency_key": idempotency_key}
            ),
            idempotency_key,
        )
        return _payment_intent(payment_intent.to_dict())

    async def retrieve_payment_intent(self, payment_intent_id: str) -> StripePaymentIntent:
        payment_intent = await _call(
            self._client.v1.payment_intents.retrieve_async(payment_intent_id)
        )
        return _payment_intent(payment_intent.to_dict())

    async def refund(
        self,
        *,
        payment_intent_id: str,
        amount: Money | None,
        metadata: Mapping[str, str],
        idempotency_key: str,
    ) -> StripeRefund:
        """Refunds ``amount``, or all that is left unrefunded when ``amount`` is None.

        Transfers already made to the driver stay; reverse_transfer() claws them back
        when the refund policy says so.
        """
        params: stripe.params.RefundCreateParams = {
            "payment_intent": payment_intent_id,
            "metadata": dict(metadata),
        }
        if amount is not None:
            params["amount"] = _positive(amount)
        refund = await _call(
            self._client.v1.refunds.create_async(params, {"idempotency_key": idempotency_key}),
            idempotency_key,
        )
        data = refund.to_dict()
        return StripeRefund(
            id=data["id"],
            amount=_money(data["amount"], data["currency"]),
            status=data["status"],
            charge_id=_id_of(data.get("charge")),
            payment_intent_id=_id_of(data.get("payment_intent")),
        )

    async def create_express_account(
        self,
        *,
        email: str,
        country: str,
        metadata: Mapping[str, str],
        idempotency_key: str,
    ) -> StripeAccount:
        account = await _call(
            self._client.v1.accounts.create_async(
                {
                    "type": "express",
                    "country": country,
                    "email": email,
                    "capabilities": {
                        "card_payments": {"requested": True},
                        "transfers": {"requested": True},
                    },
                    "metadata": dict(metadata),
                },
                {"idempotency_key": idempotency_key},
            ),
            idempotency_key,
        )
        return _account(account.to_dict())

    async def create_account_link(
        self, *, account_id: str, idempotency_key: str
    ) -> StripeAccountLink:
        """An onboarding URL for the driver. Links expire within minutes and work once,
        so the key names each attempt (``driver:{id}:onboarding-link:{n}``), not the driver.
        """
        link = await _call(
            self._client.v1.account_links.create_async(
                {
                    "account": account_id,
                    "type": "account_onboarding",
                    "return_url": self._settings.connect_return_url,
                    "refresh_url": self._settings.connect_refresh_url,
                },
                {"idempotency_key": idempotency_key},
            ),
            idempotency_key,
        )
        data = link.to_dict()
        return StripeAccountLink(url=data["url"], expires_at=_timestamp(data["expires_at"]))

    async def retrieve_account(self, account_id: str) -> StripeAccount:
        account = await _call(self._client.v1.accounts.retrieve_async(account_id))
        return _account(account.to_dict())

    async def create_transfer(
        self,
        *,
        amount: Money,
        destination_account_id: str,
        source_charge_id: str,
        metadata: Mapping[str, str],
        idempotency_key: str,
    ) -> StripeTransfer:
        """Sends the driver's share; ``source_charge_id`` ties it to the rider's charge so
        the transfer waits for that charge's funds instead of the platform's balance."""
        transfer = await _call(
            self._client.v1.transfers.create_async(
                {
                    "amount": _positive(amount),
                    "currency": amount.currency.lower(),
                    "destination": destination_account_id,
                    "source_transaction": source_charge_id,
                    "metadata": dict(metadata),
                },
                {"idempotency_key": idempotency_key},
            ),
            idempotency_key,
        )
        data = transfer.to_dict()
        return StripeTransfer(
            id=data["id"],
            amount=_money(data["amount"], data["currency"]),
            amount_reversed=_money(data.get("amount_reversed", 0), data["currency"]),
            destination_account_id=_required_id(data["destination"]),
            source_charge_id=_id_of(data.get("source_transaction")),
            reversed=bool(data.get("reversed", False)),
            balance_transaction_id=_id_of(data.get("balance_transaction")),
        )

    async def reverse_transfer(
        self,
        *,
        transfer_id: str,
        amount: Money | None,
        metadata: Mapping[str, str],
        idempotency_key: str,
    ) -> StripeTransferReversal:
        """Takes back ``amount`` of a transfer, or all that is left when None."""
        params: stripe.params.TransferReversalCreateParams = {"metadata": dict(metadata)}
        if amount is not None:
            params["amount"] = _positive(amount)
        reversal = await _call(
            self._client.v1.transfers.reversals.create_async(
                transfer_id, params, {"idempotency_key": idempotency_key}
            ),
            idempotency_key,
        )
        data = reversal.to_dict()
        return StripeTransferReversal(
            id=data["id"],
            transfer_id=_required_id(data["transfer"]),
            amount=_money(data["amount"], data["currency"]),
            balance_transaction_id=_id_of(data.get("balance_transaction")),
        )

    async def create_payout(
        self,
        *,
        account_id: str,
        amount: Money,
        metadata: Mapping[str, str],
        idempotency_key: str,
    ) -> StripePayout:
        """Pays ``amount`` of a driver's Stripe balance out to their bank, now."""
        payout = await _call(
            self._client.v1.payouts.create_async(
                {
                    "amount": _positive(amount),
                    "currency": amount.currency.lower(),
                    "metadata": dict(metadata),
                },
                {"idempotency_key": idempotency_key, "stripe_account": account_id},
            ),
            idempotency_key,
        )
        data = payout.to_dict()
        return StripePayout(
            id=data["id"],
            account_id=account_id,
            amount=_money(data["amount"], data["currency"]),
            status=data["status"],
            arrival_at=_timestamp(data["arrival_date"]),
        )

    async def list_balance_transactions(
        self,
        *,
        created_from: datetime | None = None,
        created_before: datetime | None = None,
        page_size: int = MAX_PAGE_SIZE,
    ) -> AsyncIterator[StripeBalanceTransaction]:
        """Every balance transaction of the platform created in [from, before), newest
        first, fetched a page at a time (for reconciliation against the ledger)."""
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page_size is between 1 and {MAX_PAGE_SIZE}")
        created: stripe.params.BalanceTransactionListParamsCreated = {}
        if created_from is not None:
            created["gte"] = _unix(created_from)
        if created_before is not None:
            created["lt"] = _unix(created_before)
        starting_after: str | None = None
        while True:
            params: stripe.params.BalanceTransactionListParams = {"limit": page_size}
            if created:
                params["created"] = created
            if starting_after is not None:
                params["starting_after"] = starting_after
            page = await _call(self._client.v1.balance_transactions.list_async(params))
            for item in page.data:
                entry = _balance_transaction(item.to_dict())
                starting_after = entry.id
                yield entry
            if not page.has_more or not page.data:
                return


if TYPE_CHECKING:
    _stripe_gateway_is_a_gateway: type[GatewayProtocol] = StripeGateway


def verify_webhook(
    payload: bytes, signature_header: str, secret: str, tolerance_s: int = 300
) -> WebhookEvent:
    """Checks a webhook's ``Stripe-Signature`` against its raw body and returns the event.

    The body must be the bytes as received: re-serialised JSON no longer matches. Raises
    WebhookSignatureInvalid for a missing, forged or tampered signature and for one
    older than ``tolerance_s`` (a replay), WebhookPayloadInvalid for a signed body that
    is not an event.
    """
    if tolerance_s <= 0:
        # The SDK treats 0 as "no limit", which would accept replays forever.
        raise ValueError("tolerance_s must be positive")
    try:
        stripe.WebhookSignature.verify_header(payload, signature_header, secret, tolerance_s)
    except (stripe.SignatureVerificationError, UnicodeDecodeError) as exc:
        raise WebhookSignatureInvalid(str(exc)) from exc
    try:
        event = json.loads(payload)
        data_object = event["data"]["object"]
        if not isinstance(data_object, dict) or event.get("object") != "event":
            raise TypeError("not an event")
        return WebhookEvent(
            id=str(event["id"]),
            type=str(event["type"]),
            created=_timestamp(event["created"]),
            data_object=data_object,
            livemode=bool(event["livemode"]),
            api_version=event.get("api_version"),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise WebhookPayloadInvalid(f"the signed body is not a Stripe event: {exc}") from exc


async def _call(operation: Awaitable[T], idempotency_key: str | None = None) -> T:
    """Awaits one SDK call, turning Stripe's errors into ours."""
    try:
        return await operation
    except stripe.CardError as exc:
        raise _card_error(exc) from exc
    except stripe.IdempotencyError as exc:
        raise IdempotencyKeyReused(idempotency_key or "") from exc
    except stripe.InvalidRequestError as exc:
        if exc.code == "resource_missing":
            raise PaymentResourceMissing(exc.user_message or str(exc)) from exc
        raise PaymentRequestRejected(
            exc.user_message or str(exc), stripe_code=exc.code, param=exc.param
        ) from exc
    except (stripe.AuthenticationError, stripe.PermissionError) as exc:
        raise PaymentProviderMisconfigured(exc.user_message or str(exc)) from exc
    except (stripe.APIConnectionError, stripe.RateLimitError) as exc:
        raise PaymentProviderUnavailable(exc.user_message or str(exc)) from exc
    except stripe.StripeError as exc:
        # 5xx (after the SDK's own retries) and 409 "a request with this key is still
        # running" are both worth retrying with the same key.
        if exc.http_status is None or exc.http_status >= 500 or exc.http_status == 409:
            raise PaymentProviderUnavailable(exc.user_message or str(exc)) from exc
        raise PaymentRequestRejected(
            exc.user_message or str(exc), stripe_code=exc.code, param=None
        ) from exc


def _card_error(exc: stripe.CardError) -> CardDeclined | CardAuthenticationRequired:
    error = exc.error.to_dict() if exc.error is not None else {}
    payment_intent_id = _id_of(error.get("payment_intent"))
    message = exc.user_message or str(exc)
    if exc.code == "authentication_required":
        return CardAuthenticationRequired(message, payment_intent_id=payment_intent_id)
    return CardDeclined(
        message,
        decline_code=error.get("decline_code") or exc.code,
        payment_intent_id=payment_intent_id,
    )


def _positive(amount: Money) -> int:
    if amount.amount <= 0:
        raise ValueError(f"Stripe amounts are positive, not {amount}")
    return amount.amount


def _money(amount: Any, currency: Any) -> Money:
    return Money(int(amount), str(currency).upper())


def _timestamp(value: Any) -> datetime:
    return datetime.fromtimestamp(int(value), tz=UTC)


def _unix(moment: datetime) -> int:
    if moment.tzinfo is None:
        raise ValueError("timestamps are timezone-aware")
    return int(moment.timestamp())


def _id_of(value: Any) -> str | None:
    """The id of an expandable field, whether Stripe sent the id or the object."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    return str(value["id"])


def _required_id(value: Any) -> str:
    found = _id_of(value)
    if found is None:
        raise ValueError("Stripe left out an id it always sends")
    return found


def _payment_method(data: dict[str, Any]) -> StripePaymentMethod:
    card = data.get("card") or {}
    return StripePaymentMethod(
        id=data["id"],
        customer_id=_id_of(data.get("customer")),
        brand=card.get("brand"),
        last4=card.get("last4"),
        exp_month=card.get("exp_month"),
        exp_year=card.get("exp_year"),
    )


def _payment_intent(data: dict[str, Any]) -> StripePaymentIntent:
    currency = data["currency"]
    return StripePaymentIntent(
        id=data["id"],
        status=data["status"],
        amount=_money(data["amount"], currency),
        amount_capturable=_money(data.get("amount_capturable", 0), currency),
        amount_received=_money(data.get("amount_received", 0), currency),
        customer_id=_id_of(data.get("customer")),
        payment_method_id=_id_of(data.get("payment_method")),
        latest_charge_id=_id_of(data.get("latest_charge")),
        metadata=MappingProxyType(dict(data.get("metadata") or {})),
    )


def _account(data: dict[str, Any]) -> StripeAccount:
    return StripeAccount(
        id=data["id"],
        email=data.get("email"),
        country=data.get("country"),
        default_currency=data.get("default_currency"),
        details_submitted=bool(data.get("details_submitted", False)),
        charges_enabled=bool(data.get("charges_enabled", False)),
        payouts_enabled=bool(data.get("payouts_enabled", False)),
    )


def _balance_transaction(data: dict[str, Any]) -> StripeBalanceTransaction:
    currency = data["currency"]
    return StripeBalanceTransaction(
        id=data["id"],
        type=data["type"],
        amount=_money(data["amount"], currency),
        fee=_money(data.get("fee", 0), currency),
        net=_money(data["net"], currency),
        source_id=_id_of(data.get("source")),
        status=data["status"],
        reporting_category=data.get("reporting_category"),
        created_at=_timestamp(data["created"]),
        available_at=_timestamp(data["available_on"]),
    )
