"""Money flows that call Stripe. The boundary of their own transactions.

Every step runs the same way: record what is about to happen and the idempotency key it
will carry, commit; call Stripe outside any transaction; record what Stripe said,
commit. A crash or a timeout between the two leaves a recorded, unanswered step that
``advance`` (run by the worker for every due payment) repeats with the same key, so
Stripe acts once. Webhooks (payments.webhooks) record the same facts when they arrive
first.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from decimal import Decimal
from functools import partial
from typing import TypeVar, cast

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from infra.batching import Coalescer
from infra.clock import Clock
from infra.db import transaction
from infra.errors import DomainError
from infra.logging import get_logger
from payments.errors import (
    CardAuthenticationRequired,
    CardDeclined,
    NothingToRefund,
    PaymentMethodRequired,
    PaymentProviderUnavailable,
    PaymentRequestRejected,
    PayoutAccountMissing,
    RidePaymentNotFound,
    RidePaymentStateConflict,
)
from payments.ledger import Clawback
from payments.models import RidePayment, RidePaymentStatus
from payments.money import Money
from payments.pricing import Fare, FareSplit
from payments.schemas import (
    CardSetup,
    OnboardingLink,
    PaymentMethodRead,
    PayoutAccountRead,
    RidePaymentRead,
)
from payments.service import (
    PaymentService,
    authorize_key,
    cancel_key,
    capture_key,
    debt_charge_key,
    refund_key,
    reversal_key,
    tip_transfer_key,
    transfer_key,
)
from payments.stripe_gateway import GatewayProtocol

log = get_logger(__name__)
S = RidePaymentStatus
# Rides settled together at most, and batches of them running at once (see settle_rides).
SETTLE_BATCH = 200
SETTLE_BATCHES_AT_ONCE = 2
# How long a batch that is not full waits for more rides to join it.
SETTLE_LINGER_S = 0.005
# Calls to Stripe one batch makes side by side.
STRIPE_CALLS_AT_ONCE = 16
# Due payments that are neither captures nor transfers, advanced side by side.
ADVANCE_AT_ONCE = 8
T = TypeVar("T")
R = TypeVar("R")
# Headroom held on the card above the upfront price, so a metered fare within the
# deviation tolerance (and some waiting) is still covered by the hold.
DEFAULT_HOLD_HEADROOM = Decimal("0.25")


def hold_amount(upfront: Money, headroom: Decimal = DEFAULT_HOLD_HEADROOM) -> Money:
    """What to authorize for a ride priced ``upfront``: the price plus headroom, rounded."""
    return upfront + upfront.times(headroom)


def _metadata(ride_id: uuid.UUID, kind: str) -> Mapping[str, str]:
    return {"ride_id": str(ride_id), "kind": kind}


class PaymentFlows:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        gateway: GatewayProtocol,
        clock: Clock,
        *,
        settle_batches_at_once: int = SETTLE_BATCHES_AT_ONCE,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.gateway = gateway
        self.clock = clock
        self._settlements: Coalescer[Settlement, RidePaymentRead] = Coalescer(
            self.settle_rides,
            max_batch=SETTLE_BATCH,
            max_running=settle_batches_at_once,
            linger_s=SETTLE_LINGER_S,
        )

    @property
    def settlement_batches(self) -> tuple[int, int]:
        """How many batches ``settle_ride`` calls were settled in, and how many rides."""
        return self._settlements.batches, self._settlements.items

    # Cards.

    async def start_card_setup(self, rider_id: uuid.UUID, email: str, name: str) -> CardSetup:
        customer_id = await self._customer_id(rider_id, email, name)
        setup = await self.gateway.create_setup_intent(
            customer_id=customer_id,
            metadata={"rider_id": str(rider_id)},
            idempotency_key=f"rider:{rider_id}:setup:{uuid.uuid4().hex}",
        )
        return CardSetup(
            customer_id=customer_id,
            setup_intent_id=setup.id,
            client_secret=setup.client_secret,
        )

    async def save_card(self, rider_id: uuid.UUID, payment_method_id: str) -> None:
        async with transaction(self.sessionmaker) as session:
            customer = await PaymentService(session, self.clock).customer(rider_id)
        if customer is None:
            raise PaymentMethodRequired("Start a card set-up first")
        await self.gateway.attach_payment_method(
            payment_method_id=payment_method_id,
            customer_id=customer.stripe_customer_id,
            idempotency_key=f"rider:{rider_id}:attach:{payment_method_id}:v1",
        )
        async with transaction(self.sessionmaker) as session:
            await PaymentService(session, self.clock).set_default_card(rider_id, payment_method_id)

    async def cards(self, rider_id: uuid.UUID) -> list[PaymentMethodRead]:
        async with transaction(self.sessionmaker) as session:
            customer = await PaymentService(session, self.clock).customer(rider_id)
        if customer is None:
            return []
        methods = await self.gateway.list_payment_methods(customer_id=customer.stripe_customer_id)
        return [
            PaymentMethodRead(
                id=m.id,
                brand=m.brand,
                last4=m.last4,
                exp_month=m.exp_month,
                exp_year=m.exp_year,
                default=m.id == customer.default_payment_method_id,
            )
            for m in methods
        ]

    async def _customer_id(self, rider_id: uuid.UUID, email: str, name: str) -> str:
        async with transaction(self.sessionmaker) as session:
            existing = await PaymentService(session, self.clock).customer(rider_id)
        if existing is not None:
            return existing.stripe_customer_id
        # Keyed by rider: two concurrent set-ups create one Stripe customer.
        customer = await self.gateway.create_customer(
            email=email,
            name=name,
            metadata={"rider_id": str(rider_id)},
            idempotency_key=f"rider:{rider_id}:customer:v1",
        )
        async with transaction(self.sessionmaker) as session:
            saved = await PaymentService(session, self.clock).save_customer(rider_id, customer.id)
        return saved.stripe_customer_id

    # Authorization.

    async def authorize_ride(
        self, ride_id: uuid.UUID, rider_id: uuid.UUID, amount: Money
    ) -> RidePaymentRead:
        """Holds ``amount`` on the rider's card before the ride is dispatched. A declined
        card raises ``CardDeclined`` (the ride must not go ahead); Stripe being unreachable
        leaves the payment ``authorizing``, retried by the worker with the same key."""
        async with transaction(self.sessionmaker) as session:
            service = PaymentService(session, self.clock)
            payment, customer = await service.open_authorization(ride_id, rider_id, amount)
            call = await service.pending_call(ride_id, "authorize")
            if call is not None and "payment_method_id" not in call.request:
                call.request = {
                    **call.request,
                    "customer_id": customer.stripe_customer_id,
                    "payment_method_id": customer.default_payment_method_id,
                }
        if payment.status != S.authorizing:
            return await self.read(ride_id)
        return await self._authorize(ride_id)

    async def _authorize(self, ride_id: uuid.UUID) -> RidePaymentRead:
        async with transaction(self.sessionmaker) as session:
            service = PaymentService(session, self.clock)
            payment = await service.get(ride_id)
            call = await service.pending_call(ride_id, "authorize")
        if payment.status != S.authorizing or call is None:
            return RidePaymentRead.model_validate(payment)
        key = authorize_key(ride_id)
        try:
            intent = await self.gateway.authorize(
                customer_id=str(call.request["customer_id"]),
                payment_method_id=str(call.request["payment_method_id"]),
                amount=Money(payment.authorized_amount, payment.currency),
                metadata=_metadata(ride_id, "fare"),
                idempotency_key=key,
            )
        except (CardDeclined, CardAuthenticationRequired) as declined:
            code = getattr(declined, "decline_code", None) or declined.type
            await self._record(ride_id, lambda s: s.authorization_declined(ride_id, code))
            raise
        except PaymentProviderUnavailable as down:
            return await self._retry_later(ride_id, key, down)
        if intent.status != "requires_capture":
            await self._record(ride_id, lambda s: s.authorization_declined(ride_id, intent.status))
            raise CardDeclined(f"the authorization ended {intent.status}")
        return await self._record(ride_id, lambda s: s.authorized(ride_id, intent.id))

    # Settlement.

    async def settle_ride(
        self, ride_id: uuid.UUID, driver_id: uuid.UUID, fare: Fare, split: FareSplit
    ) -> RidePaymentRead:
        """Captures the final fare (up to the hold; the rest becomes the rider's debt),
        records it in the ledger, and transfers the driver's share. A failed capture
        completes the ride all the same, as the rider's debt. Concurrent calls are settled
        together (see ``settle_rides``); each waits for its own ride's outcome."""
        return await self._settlements.submit((ride_id, driver_id, fare, split))

    async def settle_rides(self, rides: Sequence[Settlement]) -> list[RidePaymentRead | Exception]:
        """Settles many rides (ride, driver, final fare, split) as ``settle_ride`` settles
        one, in a handful of transactions whatever their number: one prices them all and
        records their capture calls, the captures go to Stripe side by side, one records
        every capture in the ledger, one records the drivers' transfer calls, the transfers
        go side by side, one records them. A ride refused by one of those transactions (a
        conflict) is taken out and recorded alone, so it costs the others nothing. Answers
        each ride's payment, or what went wrong with it, in order."""
        opened, errors = await self._in_batches(rides, PaymentService.open_captures)
        outcomes = await self._capture_many(opened)
        return [
            error if error is not None else outcomes[ride_id]
            for (ride_id, *_), error in zip(rides, errors, strict=True)
        ]

    async def _capture(self, ride_id: uuid.UUID) -> RidePaymentRead:
        return _one(await self._capture_many([ride_id]), ride_id)

    async def _capture_many(
        self, ride_ids: Sequence[uuid.UUID]
    ) -> dict[uuid.UUID, RidePaymentRead | Exception]:
        """Captures each payment's recorded fare or fee (those being captured), records
        what Stripe answered, and pays the drivers of those captured."""
        outcomes: dict[uuid.UUID, RidePaymentRead | Exception] = {}
        plan: list[tuple[RidePayment, Money]] = []
        async with transaction(self.sessionmaker) as session:
            service = PaymentService(session, self.clock)
            payments = await service.get_many(ride_ids)
            for ride_id in dict.fromkeys(ride_ids):
                payment = payments.get(ride_id)
                if payment is None:
                    outcomes[ride_id] = RidePaymentNotFound()
                elif payment.status not in (S.capturing, S.cancelling) or payment.split is None:
                    outcomes[ride_id] = RidePaymentRead.model_validate(payment)
                elif payment.payment_intent_id is None:
                    outcomes[ride_id] = RidePaymentStateConflict(
                        f"the payment of ride {ride_id} holds no authorization to capture",
                        payment_status=payment.status,
                    )
                else:
                    plan.append((payment, service.capture_amount(payment)))
        answers = await self._call_stripe(
            [
                partial(
                    self.gateway.capture,
                    payment_intent_id=str(payment.payment_intent_id),
                    amount=amount,
                    idempotency_key=capture_key(payment.ride_id),
                )
                for payment, amount in plan
            ]
        )
        captured: list[tuple[uuid.UUID, str]] = []
        alone: list[tuple[uuid.UUID, Callable[[PaymentService], Awaitable[object]]]] = []
        paid: list[uuid.UUID] = []
        for (payment, _), answer in zip(plan, answers, strict=True):
            ride_id, is_fee = payment.ride_id, payment.status == S.cancelling
            key = capture_key(ride_id)
            if isinstance(
                answer, (CardDeclined, CardAuthenticationRequired, PaymentRequestRejected)
            ):
                code = getattr(answer, "decline_code", None) or answer.type
                # An uncollectable cancellation fee is written off, not chased as debt.
                alone.append(
                    (ride_id, partial(_cancelled, ride_id=ride_id))
                    if is_fee
                    else (ride_id, partial(_capture_failed, ride_id=ride_id, code=code))
                )
            elif isinstance(answer, PaymentProviderUnavailable):
                log.warning(
                    "stripe_call_deferred", ride_id=str(ride_id), key=key, error=str(answer)
                )
                alone.append((ride_id, partial(_defer, ride_id=ride_id, key=key, error=answer)))
            elif isinstance(answer, Exception):
                outcomes[ride_id] = answer
            else:
                charge_id = answer.latest_charge_id
                assert charge_id is not None
                if is_fee:
                    alone.append(
                        (ride_id, partial(_fee_captured, ride_id=ride_id, charge_id=charge_id))
                    )
                    paid.append(ride_id)
                else:
                    captured.append((ride_id, charge_id))
        _, errors = await self._in_batches(captured, PaymentService.captured_many)
        for (ride_id, _), error in zip(captured, errors, strict=True):
            if error is not None:
                outcomes[ride_id] = error
            else:
                paid.append(ride_id)
        for ride_id, fact in alone:
            try:
                outcomes[ride_id] = await self._record(ride_id, fact)
            except Exception as error:
                outcomes[ride_id] = error
                if ride_id in paid:
                    paid.remove(ride_id)
        outcomes.update(await self.pay_drivers(paid))
        return outcomes

    # Cancellation.

    async def cancel_ride(
        self,
        ride_id: uuid.UUID,
        driver_id: uuid.UUID | None,
        fee: Fare | None,
        split: FareSplit | None,
    ) -> RidePaymentRead:
        """Releases the hold (free cancellation) or captures the fee from it."""
        async with transaction(self.sessionmaker) as session:
            payment = await PaymentService(session, self.clock).open_cancellation(
                ride_id, driver_id, fee, split
            )
        if payment.status != S.cancelling:
            return RidePaymentRead.model_validate(payment)
        if fee is not None:
            return await self._capture(ride_id)
        return await self._release(ride_id)

    async def _release(self, ride_id: uuid.UUID) -> RidePaymentRead:
        payment = await self._get(ride_id)
        payment_intent_id = payment.payment_intent_id
        key = cancel_key(ride_id)
        if payment_intent_id is None:
            try:
                payment_intent_id = await self._unanswered_hold(ride_id)
            except PaymentProviderUnavailable as down:
                return await self._retry_later(ride_id, key, down)
        if payment_intent_id is None:
            return await self._record(ride_id, lambda s: s.cancelled(ride_id))
        try:
            await self.gateway.cancel_authorization(
                payment_intent_id=payment_intent_id, idempotency_key=key
            )
        except PaymentProviderUnavailable as down:
            return await self._retry_later(ride_id, key, down)
        return await self._record(ride_id, lambda s: s.cancelled(ride_id))

    async def _unanswered_hold(self, ride_id: uuid.UUID) -> str | None:
        """The hold an authorization call may have placed though we never got its answer
        (a timeout, a crash). Replaying the recorded call with its key returns that hold
        if Stripe made it, so it can be released rather than left on the rider's card; if
        Stripe never made it, the replay makes it now and it is released all the same."""
        async with transaction(self.sessionmaker) as session:
            call = await PaymentService(session, self.clock).call(authorize_key(ride_id))
            payment = await PaymentService(session, self.clock).get(ride_id)
        if call is None or "payment_method_id" not in call.request:
            return None
        try:
            intent = await self.gateway.authorize(
                customer_id=str(call.request["customer_id"]),
                payment_method_id=str(call.request["payment_method_id"]),
                amount=Money(payment.authorized_amount, payment.currency),
                metadata=_metadata(ride_id, "fare"),
                idempotency_key=authorize_key(ride_id),
            )
        except (CardDeclined, CardAuthenticationRequired):
            return None
        return intent.id if intent.status == "requires_capture" else None

    # Transfers.

    async def pay_driver(self, ride_id: uuid.UUID) -> RidePaymentRead:
        """Transfers the driver's share (less any claw-back they owe) to their connected
        account, from this ride's charge; waits if they cannot receive money yet."""
        return _one(await self.pay_drivers([ride_id]), ride_id)

    async def pay_drivers(
        self, ride_ids: Sequence[uuid.UUID]
    ) -> dict[uuid.UUID, RidePaymentRead | Exception]:
        """``pay_driver`` for many rides: their transfer calls recorded in one transaction,
        the transfers made side by side, what Stripe answered recorded in one more; then
        any tip charged and not yet transferred."""
        outcomes: dict[uuid.UUID, RidePaymentRead | Exception] = {}
        if not ride_ids:
            return outcomes
        orders, errors = await self._in_batches(ride_ids, PaymentService.transfer_orders)
        outcomes.update(
            {ride_id: error for ride_id, error in zip(ride_ids, errors, strict=True) if error}
        )
        answers = await self._call_stripe(
            [
                partial(
                    self.gateway.create_transfer,
                    amount=order.amount,
                    destination_account_id=order.destination_account_id,
                    source_charge_id=order.source_charge_id,
                    metadata=_metadata(order.ride_id, "fare"),
                    idempotency_key=transfer_key(order.ride_id),
                )
                for order in orders
            ]
        )
        made: list[tuple[uuid.UUID, str, Money]] = []
        for order, answer in zip(orders, answers, strict=True):
            if isinstance(answer, (PaymentProviderUnavailable, PaymentRequestRejected)):
                try:
                    await self._retry_later(order.ride_id, transfer_key(order.ride_id), answer)
                except Exception as error:
                    outcomes[order.ride_id] = error
            elif isinstance(answer, Exception):
                outcomes[order.ride_id] = answer
            else:
                made.append((order.ride_id, answer.id, order.amount))
        _, errors = await self._in_batches(made, PaymentService.transferred_many)
        outcomes.update(
            {ride_id: error for (ride_id, _, _), error in zip(made, errors, strict=True) if error}
        )
        remaining = [ride_id for ride_id in dict.fromkeys(ride_ids) if ride_id not in outcomes]
        async with transaction(self.sessionmaker) as session:
            payments = await PaymentService(session, self.clock).get_many(remaining)
        for ride_id in remaining:
            payment = payments[ride_id]
            if payment.tip_charge_id is not None and payment.tip_transfer_id is None:
                try:
                    outcomes[ride_id] = await self._tip_transfer(ride_id)
                except Exception as error:
                    outcomes[ride_id] = error
            else:
                outcomes[ride_id] = RidePaymentRead.model_validate(payment)
        return outcomes

    # Tips.

    async def tip(self, ride_id: uuid.UUID, rider_id: uuid.UUID, amount: Money) -> RidePaymentRead:
        async with transaction(self.sessionmaker) as session:
            service = PaymentService(session, self.clock)
            customer = await service.customer(rider_id)
            if customer is None or customer.default_payment_method_id is None:
                raise PaymentMethodRequired
            payment = await service.open_tip(
                ride_id, rider_id, amount, customer.default_payment_method_id
            )
            call = await service.pending_call(ride_id, "charge")
        if payment.tip_charge_id is not None or call is None:
            return await self.read(ride_id)
        key = call.idempotency_key
        try:
            intent = await self.gateway.charge(
                customer_id=customer.stripe_customer_id,
                payment_method_id=key.split(":")[3],
                amount=amount,
                metadata=_metadata(ride_id, "tip"),
                idempotency_key=key,
            )
        except (CardDeclined, CardAuthenticationRequired) as declined:
            code = getattr(declined, "decline_code", None) or declined.type
            await self._record(ride_id, lambda s: s.tip_declined(ride_id, key, code))
            raise
        except PaymentProviderUnavailable as down:
            return await self._retry_later(ride_id, key, down)
        charge_id = intent.latest_charge_id
        assert charge_id is not None
        await self._record(ride_id, lambda s: s.tip_charged(ride_id, charge_id, key))
        return await self._tip_transfer(ride_id)

    async def _tip_transfer(self, ride_id: uuid.UUID) -> RidePaymentRead:
        async with transaction(self.sessionmaker) as session:
            service = PaymentService(session, self.clock)
            payment = await service.get(ride_id, lock=True)
            if payment.tip_charge_id is None or payment.tip_transfer_id is not None:
                return RidePaymentRead.model_validate(payment)
            assert payment.driver_id is not None
            assert payment.tip_amount is not None
            account = await service.payout_account(payment.driver_id)
            if account is None or not account.payouts_enabled:
                await service.transfer_waits(ride_id)
                return RidePaymentRead.model_validate(await service.get(ride_id))
            amount = Money(payment.tip_amount, payment.currency)
            await service.record_call(
                tip_transfer_key(ride_id), "transfer", ride_id, {"amount": amount.amount}
            )
            destination, charge_id = account.stripe_account_id, payment.tip_charge_id
        key = tip_transfer_key(ride_id)
        try:
            transfer = await self.gateway.create_transfer(
                amount=amount,
                destination_account_id=destination,
                source_charge_id=charge_id,
                metadata=_metadata(ride_id, "tip"),
                idempotency_key=key,
            )
        except (PaymentProviderUnavailable, PaymentRequestRejected) as failed:
            return await self._retry_later(ride_id, key, failed)
        return await self._record(ride_id, lambda s: s.tip_transferred(ride_id, transfer.id))

    # Refunds.

    async def refund(
        self,
        ride_id: uuid.UUID,
        amount: Money | None,
        request_id: str,
        from_driver: bool,
        reason: str = "",
    ) -> RidePaymentRead:
        """Refunds (part of) a captured fare. The driver's pro-rata share comes back from
        the driver when ``from_driver``: off what is still owed to them if not yet
        transferred, else by reversing the transfer, else (already paid out) as a debt
        offset against later earnings; otherwise the co-op absorbs it."""
        key = refund_key(ride_id, request_id)
        async with transaction(self.sessionmaker) as session:
            service = PaymentService(session, self.clock)
            payment = await service.get(ride_id, lock=True)
            call = await service.call(key)
            if call is not None and call.status == "succeeded":
                # The same refund request again: it was done, nothing more to do.
                return RidePaymentRead.model_validate(payment)
            if call is None:
                if payment.status not in (S.captured, S.debt_paid, S.fee_captured):
                    raise RidePaymentStateConflict("only a captured fare can be refunded")
                remaining = (payment.captured_amount or 0) - payment.refunded_amount
                value = amount.amount if amount is not None else remaining
                if remaining <= 0 or not 0 < value <= remaining:
                    raise NothingToRefund(f"{remaining} minor units are left to refund")
                call = await service.record_call(
                    key,
                    "refund",
                    ride_id,
                    {"amount": value, "from_driver": from_driver, "reason": reason},
                )
            money = Money(int(call.request["amount"]), payment.currency)
        assert payment.payment_intent_id is not None
        refund = await self.gateway.refund(
            payment_intent_id=payment.payment_intent_id,
            amount=money,
            metadata={
                **_metadata(ride_id, "fare"),
                "request_id": request_id,
                "reason": str(call.request.get("reason", ""))[:500],
            },
            idempotency_key=key,
        )
        clawback = await self._clawback(
            payment, money, request_id, bool(call.request["from_driver"])
        )
        return await self._record(
            ride_id, lambda s: s.refunded(ride_id, refund.id, money, clawback, request_id)
        )

    async def _clawback(
        self, payment: RidePayment, amount: Money, request_id: str, from_driver: bool
    ) -> Clawback:
        if not from_driver or payment.driver_id is None:
            return Clawback.none
        if payment.transfer_id is None:
            async with transaction(self.sessionmaker) as session:
                transfer = await PaymentService(session, self.clock).call(
                    transfer_key(payment.ride_id)
                )
            # A transfer in flight may land after this refund: taking the share off what
            # is owed would then overdraw it, so the driver owes it instead.
            return Clawback.from_payable if transfer is None else Clawback.receivable
        async with transaction(self.sessionmaker) as session:
            driver_share, _ = PaymentService(session, self.clock).refund_shares(payment, amount)
        if driver_share.is_zero():
            return Clawback.none
        key = reversal_key(payment.ride_id, request_id)
        await self._record(
            payment.ride_id,
            lambda s: s.record_call(
                key, "reverse_transfer", payment.ride_id, {"amount": driver_share.amount}
            ),
        )
        try:
            reversal = await self.gateway.reverse_transfer(
                transfer_id=payment.transfer_id,
                amount=driver_share,
                metadata={"ride_id": str(payment.ride_id), "request_id": request_id},
                idempotency_key=key,
            )
        except PaymentRequestRejected as refused:
            # Already paid out of the driver's account: they owe it, taken off later pay.
            code = refused.type
            await self._record(payment.ride_id, lambda s: s.finish_call(key, "failed", None, code))
            return Clawback.receivable
        await self._record(
            payment.ride_id,
            lambda s: s.finish_call(key, "succeeded", {"reversal_id": reversal.id}),
        )
        return Clawback.reverse_transfer

    # Debts.

    async def settle_debts(self, rider_id: uuid.UUID, currency: str) -> list[RidePaymentRead]:
        """Charges the rider's card for every unpaid fare in ``currency`` at once."""
        async with transaction(self.sessionmaker) as session:
            service = PaymentService(session, self.clock)
            owed = await service.unpaid(rider_id, [currency])
            customer = await service.customer(rider_id)
        if not owed:
            return []
        if customer is None or customer.default_payment_method_id is None:
            raise PaymentMethodRequired
        debt = owed[0]
        intent = await self.gateway.charge(
            customer_id=customer.stripe_customer_id,
            payment_method_id=customer.default_payment_method_id,
            amount=debt,
            metadata={"rider_id": str(rider_id), "kind": "debt"},
            idempotency_key=debt_charge_key(rider_id, debt, customer.default_payment_method_id),
        )
        charge_id = intent.latest_charge_id
        assert charge_id is not None
        async with transaction(self.sessionmaker) as session:
            paid = await PaymentService(session, self.clock).debt_paid(rider_id, charge_id, debt)
            ride_ids = [p.ride_id for p in paid]
        outcomes = await self.pay_drivers(ride_ids)
        return [_one(outcomes, ride_id) for ride_id in ride_ids]

    # Drivers' payout accounts.

    async def onboarding_link(
        self, driver_id: uuid.UUID, email: str, country: str
    ) -> OnboardingLink:
        async with transaction(self.sessionmaker) as session:
            account = await PaymentService(session, self.clock).payout_account(driver_id)
        if account is None:
            created = await self.gateway.create_express_account(
                email=email,
                country=country,
                metadata={"driver_id": str(driver_id)},
                idempotency_key=f"driver:{driver_id}:express-account:v1",
            )
            async with transaction(self.sessionmaker) as session:
                account = await PaymentService(session, self.clock).save_payout_account(
                    driver_id, created.id
                )
        # Links work once and expire: each request names a new attempt.
        link = await self.gateway.create_account_link(
            account_id=account.stripe_account_id,
            idempotency_key=f"driver:{driver_id}:account-link:{uuid.uuid4().hex}",
        )
        return OnboardingLink(url=link.url, expires_at=link.expires_at, account=_account(account))

    async def refresh_payout_account(self, driver_id: uuid.UUID) -> PayoutAccountRead:
        async with transaction(self.sessionmaker) as session:
            account = await PaymentService(session, self.clock).payout_account(driver_id)
        if account is None:
            raise PayoutAccountMissing
        live = await self.gateway.retrieve_account(account.stripe_account_id)
        async with transaction(self.sessionmaker) as session:
            service = PaymentService(session, self.clock)
            updated = await service.payout_account_updated(
                live.id,
                details_submitted=live.details_submitted,
                charges_enabled=live.charges_enabled,
                payouts_enabled=live.payouts_enabled,
            )
            if live.payouts_enabled:
                await service.transfers_due_for(driver_id)
        assert updated is not None
        return _account(updated)

    # Retries.

    async def advance(self, ride_id: uuid.UUID) -> RidePaymentRead:
        """Repeats whatever step of this ride's payment is recorded and unanswered."""
        payment = await self._get(ride_id)
        status = S(payment.status)
        if status is S.authorizing:
            return await self._authorize(ride_id)
        if _capture_due(payment):
            return await self._capture(ride_id)
        if status is S.cancelling:
            return await self._release(ride_id)
        if _transfer_due(payment):
            return await self.pay_driver(ride_id)
        if status in (S.captured, S.debt_paid, S.fee_captured):
            if payment.tip_amount is not None and payment.tip_charge_id is None:
                return await self._retry_tip(payment)
            return await self._tip_transfer(ride_id)
        return RidePaymentRead.model_validate(payment)

    async def _retry_tip(self, payment: RidePayment) -> RidePaymentRead:
        assert payment.tip_amount is not None
        return await self.tip(
            payment.ride_id, payment.rider_id, Money(payment.tip_amount, payment.currency)
        )

    async def advance_due(self, limit: int = 100) -> int:
        """Advances every payment whose retry is due; one failure does not stop the rest.
        After an outage most are captures and transfers: those go through the batch paths
        (``_capture_many``, ``pay_drivers``: a handful of transactions, Stripe called side
        by side), the rest ``ADVANCE_AT_ONCE`` at a time. Answers how many advanced."""
        async with transaction(self.sessionmaker) as session:
            service = PaymentService(session, self.clock)
            due = list(await service.due(limit))
            payments = await service.get_many(due)
        captures = [r for r in due if r in payments and _capture_due(payments[r])]
        transfers = [r for r in due if r in payments and _transfer_due(payments[r])]
        batched = {*captures, *transfers}
        outcomes: dict[uuid.UUID, RidePaymentRead | Exception] = {}
        if captures:
            outcomes.update(await self._capture_many(captures))
        if transfers:
            outcomes.update(await self.pay_drivers(transfers))
        pending = iter([r for r in due if r not in batched])

        async def one_by_one() -> None:
            for ride_id in pending:
                try:
                    outcomes[ride_id] = await self.advance(ride_id)
                except Exception as error:
                    outcomes[ride_id] = error

        await asyncio.gather(*(one_by_one() for _ in range(ADVANCE_AT_ONCE)))
        advanced = 0
        for ride_id, outcome in outcomes.items():
            if isinstance(outcome, Exception):
                log.error("payment_advance_failed", ride_id=str(ride_id), exc_info=outcome)
            else:
                advanced += 1
        return advanced

    async def read(self, ride_id: uuid.UUID) -> RidePaymentRead:
        return RidePaymentRead.model_validate(await self._get(ride_id))

    async def _get(self, ride_id: uuid.UUID) -> RidePayment:
        async with transaction(self.sessionmaker) as session:
            return await PaymentService(session, self.clock).get(ride_id)

    async def _record(
        self, ride_id: uuid.UUID, fact: Callable[[PaymentService], Awaitable[object]]
    ) -> RidePaymentRead:
        """Records one fact in its own transaction and answers the payment as it now is."""
        async with transaction(self.sessionmaker) as session:
            service = PaymentService(session, self.clock)
            await fact(service)
            return RidePaymentRead.model_validate(await service.get(ride_id))

    async def _retry_later(self, ride_id: uuid.UUID, key: str, error: Exception) -> RidePaymentRead:
        log.warning("stripe_call_deferred", ride_id=str(ride_id), key=key, error=str(error))
        return await self._record(ride_id, lambda s: s.retry_later(ride_id, key, str(error)))

    async def _in_batches(
        self,
        items: Sequence[T],
        fact: Callable[[PaymentService, Sequence[T]], Awaitable[Sequence[R]]],
    ) -> tuple[list[R], list[Exception | None]]:
        """Records ``fact`` for all ``items`` in one transaction. If the database or a rule
        refuses it, records each item alone, so one refused item costs the others nothing.
        Answers what the fact answered and each item's error (None where recorded)."""
        if not items:
            return [], []
        try:
            async with transaction(self.sessionmaker) as session:
                return list(await fact(PaymentService(session, self.clock), items)), [None] * len(
                    items
                )
        except (DomainError, DBAPIError) as error:
            if len(items) == 1:
                return [], [error]
            log.info("payments_batch_split", items=len(items), error=str(error))
        results: list[R] = []
        errors: list[Exception | None] = []
        for item in items:
            try:
                async with transaction(self.sessionmaker) as session:
                    results.extend(await fact(PaymentService(session, self.clock), [item]))
                errors.append(None)
            except (DomainError, DBAPIError) as error:
                errors.append(error)
        return results, errors

    async def _call_stripe(
        self, calls: Sequence[Callable[[], Awaitable[R]]]
    ) -> list[R | Exception]:
        """Makes the calls side by side, at most STRIPE_CALLS_AT_ONCE at a time; answers
        each call's result or the exception it raised, in order."""
        limit = asyncio.Semaphore(STRIPE_CALLS_AT_ONCE)

        async def one(call: Callable[[], Awaitable[R]]) -> R:
            async with limit:
                return await call()

        answers = await asyncio.gather(*(one(call) for call in calls), return_exceptions=True)
        for answer in answers:
            if isinstance(answer, BaseException) and not isinstance(answer, Exception):
                raise answer
        return cast(list[R | Exception], answers)


Settlement = tuple[uuid.UUID, uuid.UUID, Fare, FareSplit]


def _one(
    outcomes: Mapping[uuid.UUID, RidePaymentRead | Exception], ride_id: uuid.UUID
) -> RidePaymentRead:
    outcome = outcomes[ride_id]
    if isinstance(outcome, Exception):
        raise outcome
    return outcome


async def _cancelled(service: PaymentService, *, ride_id: uuid.UUID) -> object:
    return await service.cancelled(ride_id)


async def _capture_failed(service: PaymentService, *, ride_id: uuid.UUID, code: str) -> object:
    return await service.capture_failed(ride_id, code)


async def _fee_captured(service: PaymentService, *, ride_id: uuid.UUID, charge_id: str) -> object:
    return await service.fee_captured(ride_id, charge_id)


async def _defer(
    service: PaymentService, *, ride_id: uuid.UUID, key: str, error: Exception
) -> object:
    return await service.retry_later(ride_id, key, str(error))


def _account(account: object) -> PayoutAccountRead:
    return PayoutAccountRead.model_validate(account, from_attributes=True)


def _capture_due(payment: RidePayment) -> bool:
    """What ``advance`` would capture: a fare or a cancellation fee."""
    return payment.split is not None and payment.status in (S.capturing, S.cancelling)


def _transfer_due(payment: RidePayment) -> bool:
    """What ``advance`` would transfer to the driver: a captured share not yet sent."""
    return (
        payment.status in (S.captured, S.debt_paid, S.fee_captured) and payment.transfer_id is None
    )
