"""A Stripe stand-in inside the benchmark's process: what the settle benchmark captures
through, so that it measures our code and PostgreSQL, not a loopback HTTP fake.

It keeps Stripe's contract where the flows rely on it: ids by kind, a capture no larger
than the hold, one object per idempotency key.
"""

from __future__ import annotations

import itertools
import secrets
from collections.abc import AsyncIterator, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from types import MappingProxyType

from payments.errors import PaymentRequestRejected
from payments.money import Money
from payments.stripe_gateway import (
    GatewayProtocol,
    StripeAccount,
    StripeAccountLink,
    StripeBalanceTransaction,
    StripeCustomer,
    StripePaymentIntent,
    StripePaymentMethod,
    StripePayout,
    StripeRefund,
    StripeSetupIntent,
    StripeTransfer,
    StripeTransferReversal,
)

_NOW = datetime(2026, 1, 1, tzinfo=UTC)


class InProcessGateway:
    def __init__(self) -> None:
        self._serial = itertools.count(1)
        # Ids unique across instances too, as Stripe's are.
        self._token = secrets.token_hex(4)
        self._intents: dict[str, StripePaymentIntent] = {}
        self._by_key: dict[str, object] = {}

    def _id(self, prefix: str) -> str:
        return f"{prefix}_{self._token}{next(self._serial):012d}"

    async def create_customer(
        self,
        *,
        email: str | None,
        name: str | None,
        metadata: Mapping[str, str],
        idempotency_key: str,
    ) -> StripeCustomer:
        return StripeCustomer(id=self._id("cus"), email=email, created_at=_NOW)

    async def create_setup_intent(
        self, *, customer_id: str, metadata: Mapping[str, str], idempotency_key: str
    ) -> StripeSetupIntent:
        raise PaymentRequestRejected("not used by the benchmark", stripe_code=None, param=None)

    async def attach_payment_method(
        self, *, payment_method_id: str, customer_id: str, idempotency_key: str
    ) -> StripePaymentMethod:
        raise PaymentRequestRejected("not used by the benchmark", stripe_code=None, param=None)

    async def list_payment_methods(self, *, customer_id: str) -> list[StripePaymentMethod]:
        return []

    async def authorize(
        self,
        *,
        customer_id: str,
        payment_method_id: str,
        amount: Money,
        metadata: Mapping[str, str],
        idempotency_key: str,
    ) -> StripePaymentIntent:
        return self._new_intent("requires_capture", amount, customer_id, payment_method_id)

    async def charge(
        self,
        *,
        customer_id: str,
        payment_method_id: str,
        amount: Money,
        metadata: Mapping[str, str],
        idempotency_key: str,
    ) -> StripePaymentIntent:
        intent = replace(
            self._new_intent("succeeded", amount, customer_id, payment_method_id),
            latest_charge_id=self._id("ch"),
            amount_received=amount,
        )
        self._intents[intent.id] = intent
        return intent

    def _new_intent(
        self, status: str, amount: Money, customer_id: str, payment_method_id: str
    ) -> StripePaymentIntent:
        intent = StripePaymentIntent(
            id=self._id("pi"),
            status=status,
            amount=amount,
            amount_capturable=amount
            if status == "requires_capture"
            else Money.zero(amount.currency),
            amount_received=Money.zero(amount.currency),
            customer_id=customer_id,
            payment_method_id=payment_method_id,
            latest_charge_id=None,
            metadata=MappingProxyType({}),
        )
        self._intents[intent.id] = intent
        return intent

    async def capture(
        self, *, payment_intent_id: str, amount: Money, idempotency_key: str
    ) -> StripePaymentIntent:
        if idempotency_key in self._by_key:
            return self._intents[payment_intent_id]
        intent = self._intents.get(payment_intent_id)
        if intent is None:
            # Held by an authorization made before this process started (the setup).
            intent = self._new_intent("requires_capture", amount, "cus_x", "pm_x")
            self._intents[payment_intent_id] = intent
        if amount > intent.amount_capturable and intent.amount_capturable.amount:
            raise PaymentRequestRejected(
                "above the hold", stripe_code="amount_too_large", param="amount"
            )
        self._by_key[idempotency_key] = True
        captured = replace(
            intent,
            status="succeeded",
            amount_capturable=Money.zero(amount.currency),
            amount_received=amount,
            latest_charge_id=self._id("ch"),
        )
        self._intents[payment_intent_id] = captured
        return captured

    async def cancel_authorization(
        self, *, payment_intent_id: str, idempotency_key: str
    ) -> StripePaymentIntent:
        raise PaymentRequestRejected("not used by the benchmark", stripe_code=None, param=None)

    async def refund(
        self,
        *,
        payment_intent_id: str,
        amount: Money | None,
        metadata: Mapping[str, str],
        idempotency_key: str,
    ) -> StripeRefund:
        raise PaymentRequestRejected("not used by the benchmark", stripe_code=None, param=None)

    async def retrieve_payment_intent(self, payment_intent_id: str) -> StripePaymentIntent:
        return self._intents[payment_intent_id]

    async def create_express_account(
        self, *, email: str, country: str, metadata: Mapping[str, str], idempotency_key: str
    ) -> StripeAccount:
        raise PaymentRequestRejected("not used by the benchmark", stripe_code=None, param=None)

    async def create_account_link(
        self, *, account_id: str, idempotency_key: str
    ) -> StripeAccountLink:
        return StripeAccountLink(
            url="https://connect.invalid/", expires_at=_NOW + timedelta(minutes=5)
        )

    async def retrieve_account(self, account_id: str) -> StripeAccount:
        raise PaymentRequestRejected("not used by the benchmark", stripe_code=None, param=None)

    async def create_transfer(
        self,
        *,
        amount: Money,
        destination_account_id: str,
        source_charge_id: str,
        metadata: Mapping[str, str],
        idempotency_key: str,
    ) -> StripeTransfer:
        existing = self._by_key.get(idempotency_key)
        if isinstance(existing, StripeTransfer):
            return existing
        transfer = StripeTransfer(
            id=self._id("tr"),
            amount=amount,
            amount_reversed=Money.zero(amount.currency),
            destination_account_id=destination_account_id,
            source_charge_id=source_charge_id,
            reversed=False,
            balance_transaction_id=self._id("txn"),
        )
        self._by_key[idempotency_key] = transfer
        return transfer

    async def reverse_transfer(
        self,
        *,
        transfer_id: str,
        amount: Money | None,
        metadata: Mapping[str, str],
        idempotency_key: str,
    ) -> StripeTransferReversal:
        raise PaymentRequestRejected("not used by the benchmark", stripe_code=None, param=None)

    async def create_payout(
        self, *, account_id: str, amount: Money, metadata: Mapping[str, str], idempotency_key: str
    ) -> StripePayout:
        raise PaymentRequestRejected("not used by the benchmark", stripe_code=None, param=None)

    def list_balance_transactions(
        self,
        *,
        created_from: datetime | None = None,
        created_before: datetime | None = None,
        page_size: int = 100,
    ) -> AsyncIterator[StripeBalanceTransaction]:
        return _nothing()


async def _nothing() -> AsyncIterator[StripeBalanceTransaction]:
    nothing: tuple[StripeBalanceTransaction, ...] = ()
    for transaction in nothing:
        yield transaction


_is_a_gateway: type[GatewayProtocol] = InProcessGateway
