"""Stripe webhooks: stored by id once when they arrive, processed by the worker.

The route verifies the signature on the raw body, stores the event (a redelivery stores
nothing), answers at once and enqueues a ``stripe.event`` job; the worker runs
``process_stripe_event``. ``sweep_unprocessed_events`` re-enqueues what is still
unprocessed a minute after it arrived, so a lost job delays an event, never loses it.

Processing records the same facts the flows record (``PaymentService``), so it does not
matter who learns of a fact first, how often, or in which order:

- A fact already recorded (its ledger key taken, or the payment's status at or past the
  one the event implies) changes nothing.
- An event that builds on something not recorded yet (a ride, payout account or capture
  this database does not have yet, a refund our own refund flow is still recording) is
  left unprocessed with the reason in ``last_error`` and retried. After ``MAX_ATTEMPTS``
  attempts it is dead-lettered: marked processed with the error kept, for an operator.
  Any other failure of a handler is treated the same way.
- An event the ledger cannot record by itself (a refund of a tip, a second tip charge)
  is dead-lettered at once.
- Events of other types are marked processed and ignored.

Rules per event type (the ride comes from the object's ``metadata.ride_id``, else its
payment intent or charge id):

- ``payment_intent.amount_capturable_updated``: an ``authorizing`` payment becomes
  ``authorized``; any later status already knows it.
- ``payment_intent.succeeded``: the fare is ``captured`` (or, on a fee cancellation, the
  fee is ``fee_captured``) from the intent's ``latest_charge``; an ``authorizing``
  payment is first ``authorized``; a payment not priced yet waits. With ``kind: tip`` the
  ride's tip is charged; with ``kind: debt`` (``metadata.rider_id``) the rider's debt is
  paid. A capture already recorded, in whatever status, is left alone.
- ``payment_intent.payment_failed``: an ``authorizing`` payment is ``declined``.
- ``payment_intent.canceled``: a hold still ``authorizing``, ``authorized`` or
  ``cancelling`` is ``cancelled``; a ride ``capturing`` lost its hold before the capture,
  so the capture failed and the rider owes the fare (as the flow records it).
- ``charge.refunded`` (each refund in ``refunds.data``), ``charge.refund.updated``,
  ``refund.created``, ``refund.updated``: a ``succeeded`` refund not yet in the ledger is
  recorded once the capture is. One our refund flow asked for (``metadata.request_id``)
  waits while the flow's call is pending: the flow books it with its own claw-back. Any
  other (made in the Dashboard) takes the driver's share back from the driver:
  ``from_payable`` when no transfer of the ride was ever started (so none can land
  after it), else ``receivable`` (offset against later earnings). The choice depends on
  what the flows recorded, not on whether a transfer event was processed first.
- ``charge.dispute.created``: the disputed amount and the dispute fee (from the
  dispute's withdrawal balance transaction, else 0) leave the balance; inquiries
  (``warning_*``) move no money. ``charge.dispute.closed`` (``won``/``lost``) records the
  opening first if it is missing, then the outcome (a won dispute returns the amount
  and any fee Stripe gives back).
- ``account.updated``: the payout account's capabilities; an event older than one
  already applied to the account is ignored; when payouts become enabled, the driver's
  waiting transfers are due.
- ``transfer.*``: the transfer is in the ledger (``kind: tip`` as the tip's transfer,
  once the tip's charge is recorded; else as earnings, once the fare is settled).
  Reversals are recorded by the refund that made them, not here.
- ``payout.paid`` / ``payout.failed`` from a driver's connected account: the driver's
  payout status (the newest event wins). The platform's own payouts: ``paid`` moves the
  amount from the Stripe balance to the bank; ``failed`` records that payout too (if it
  is not yet) and its return to the balance, just as Stripe's balance shows a payout and
  a payout failure, so either order of the two events gives the same two transactions.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from infra.clock import Clock
from infra.db import transaction
from infra.errors import DomainError
from infra.jobs import enqueue
from infra.logging import get_logger
from payments import ledger
from payments.errors import RidePaymentNotFound, StripeEventNotReady, StripeEventUnsupported
from payments.ledger import Clawback, TransactionDraft, TransactionKind
from payments.models import RidePayment, RidePaymentStatus, StripeEvent
from payments.money import Money
from payments.repository import StripeEventRepository
from payments.service import PaymentService, refund_key, transfer_key
from payments.stripe_gateway import WebhookEvent

log = get_logger(__name__)
S = RidePaymentStatus

STRIPE_EVENT_JOB = "stripe.event"
# With the sweep every minute, an event waits about this many minutes for what it
# builds on before an operator is asked to look.
MAX_ATTEMPTS = 10
SWEEP_AFTER = timedelta(minutes=1)
SWEEP_BATCH = 500
SETTLED = (S.captured, S.debt_paid, S.fee_captured)
REFUND_EVENTS = ("charge.refund.updated", "refund.created", "refund.updated")

Handler = Callable[[StripeEvent], Awaitable[None]]


def refund_ledger_key(refund_id: str) -> str:
    """The key ``ledger.refund`` gives the refund ``refund_id``."""
    return f"refund:{refund_id}:v1"


def connected_account_id(payload: bytes) -> str | None:
    """The connected account a Connect event comes from (the top-level ``account`` of a
    verified event body), or None for the platform's own events."""
    try:
        body = json.loads(payload)
    except ValueError:
        return None
    account = body.get("account") if isinstance(body, dict) else None
    return account if isinstance(account, str) and account else None


class _Superseded(Exception):
    """A newer state was applied meanwhile: undo this older one."""


class WebhookService:
    def __init__(self, session: AsyncSession, clock: Clock) -> None:
        self.session = session
        self.clock = clock
        self.events = StripeEventRepository(session)
        self.payments = PaymentService(session, clock)
        self.ledger = self.payments.ledger
        self._handlers: dict[str, Handler] = {
            "payment_intent.amount_capturable_updated": self._payment_intent,
            "payment_intent.succeeded": self._payment_intent,
            "payment_intent.payment_failed": self._payment_intent,
            "payment_intent.canceled": self._payment_intent,
            "charge.refunded": self._charge_refunded,
            **dict.fromkeys(REFUND_EVENTS, self._refund_event),
            "charge.dispute.created": self._dispute_created,
            "charge.dispute.closed": self._dispute_closed,
            "account.updated": self._account_updated,
            "payout.paid": self._payout,
            "payout.failed": self._payout,
        }

    def handler(self, event_type: str) -> Handler | None:
        if event_type.startswith("transfer."):
            return self._transfer
        return self._handlers.get(event_type)

    async def receive(self, event: WebhookEvent, account_id: str | None = None) -> bool:
        """Stores the event once by its id; False when it was already stored (Stripe
        delivered it again). ``account_id`` is the connected account it comes from; an
        ``account.*`` event is stored under the account it describes."""
        if account_id is None and event.type.startswith("account."):
            account_id = _id_of(event.data_object.get("id"))
        return await self.events.store(
            StripeEvent(
                id=event.id,
                type=event.type,
                account_id=account_id,
                api_version=event.api_version,
                stripe_created_at=event.created,
                payload=event.data_object,
                received_at=self.clock.now(),
            )
        )

    async def process(self, event_id: str) -> None:
        """Processes one stored event, unless it is done or another worker holds it."""
        event = await self.events.claim(event_id)
        if event is None:
            return
        handler = self.handler(event.type)
        try:
            if handler is not None:
                # A handler's writes go together or not at all; the claim stays held.
                async with self.session.begin_nested():
                    await handler(event)
        except StripeEventUnsupported as exc:
            log.error(
                "stripe_event_dead_lettered", event_id=event.id, type=event.type, error=str(exc)
            )
            await self.events.dead_letter(event.id, _describe(exc), self.clock.now())
            return
        except Exception as exc:  # any failure is kept on the event and retried
            await self._failed(event, exc)
            return
        await self.events.mark_processed(event.id, self.clock.now())

    async def unprocessed(self) -> Sequence[str]:
        """Events still unprocessed ``SWEEP_AFTER`` after they arrived."""
        return await self.events.unprocessed(self.clock.now() - SWEEP_AFTER, SWEEP_BATCH)

    async def _failed(self, event: StripeEvent, exc: Exception) -> None:
        reason = _describe(exc)
        fields = {"event_id": event.id, "type": event.type, "attempts": event.attempts + 1}
        if event.attempts + 1 >= MAX_ATTEMPTS:
            log.error("stripe_event_dead_lettered", error=reason, **fields)
            await self.events.dead_letter(event.id, reason, self.clock.now())
        elif isinstance(exc, StripeEventNotReady):
            log.info("stripe_event_deferred", error=reason, **fields)
            await self.events.mark_failed(event.id, reason)
        else:
            log.exception("stripe_event_failed", **fields)
            await self.events.mark_failed(event.id, reason)

    # Payment intents.

    async def _payment_intent(self, event: StripeEvent) -> None:
        intent = event.payload
        intent_id = str(intent["id"])
        metadata = _metadata(intent)
        kind = metadata.get("kind", "fare")
        if kind == "debt":
            if event.type == "payment_intent.succeeded":
                await self._debt_paid(intent, metadata)
            return
        payment = await self._ride_payment(metadata, payment_intent_id=intent_id)
        if kind == "tip":
            if event.type == "payment_intent.succeeded":
                await self._tip_charged(payment, intent)
            return
        if payment.payment_intent_id not in (None, intent_id):
            raise StripeEventUnsupported(
                f"ride {payment.ride_id} is paid by {payment.payment_intent_id}, not {intent_id}"
            )
        ride_id = payment.ride_id
        if event.type == "payment_intent.amount_capturable_updated":
            if payment.status == S.authorizing and intent.get("status") == "requires_capture":
                await self.payments.authorized(ride_id, intent_id)
        elif event.type == "payment_intent.succeeded":
            await self._fare_charged(payment, intent_id, _latest_charge(intent))
        elif event.type == "payment_intent.payment_failed":
            if payment.status == S.authorizing:
                await self.payments.authorization_declined(ride_id, _decline_code(intent))
        elif event.type == "payment_intent.canceled":
            await self._hold_released(payment)

    async def _hold_released(self, payment: RidePayment) -> None:
        if payment.status in (S.authorizing, S.authorized, S.cancelling):
            await self.payments.cancelled(payment.ride_id)
        elif payment.status == S.capturing:
            # The hold lapsed or was released before the capture: the capture failed,
            # as the flow records it when Stripe refuses to capture a cancelled intent.
            await self.payments.capture_failed(payment.ride_id, "authorization_canceled")

    async def _fare_charged(self, payment: RidePayment, intent_id: str, charge_id: str) -> None:
        if payment.status == S.authorizing:
            payment = await self.payments.authorized(payment.ride_id, intent_id)
        if payment.status == S.capturing:
            await self.payments.captured(payment.ride_id, charge_id)
        elif payment.status == S.cancelling and payment.split is not None:
            await self.payments.fee_captured(payment.ride_id, charge_id)
        elif payment.status in (S.authorized, S.cancelling):
            raise StripeEventNotReady(
                f"ride {payment.ride_id} was charged before its fare was recorded here"
            )

    async def _tip_charged(self, payment: RidePayment, intent: Mapping[str, Any]) -> None:
        charge_id = _latest_charge(intent)
        if payment.tip_charge_id == charge_id:
            return
        if payment.tip_charge_id is not None:
            raise StripeEventUnsupported(
                f"ride {payment.ride_id} already has the tip charge {payment.tip_charge_id}"
            )
        if payment.tip_amount != int(intent["amount_received"]):
            raise StripeEventUnsupported(
                f"tip charge {charge_id} of {intent['amount_received']} does not match the "
                f"tip asked for on ride {payment.ride_id} ({payment.tip_amount})"
            )
        await self.payments.tip_charged(payment.ride_id, charge_id)

    async def _debt_paid(self, intent: Mapping[str, Any], metadata: Mapping[str, str]) -> None:
        rider_id = _uuid(metadata.get("rider_id"))
        if rider_id is None:
            raise StripeEventUnsupported(f"debt payment {intent['id']} names no rider")
        amount = _money(intent, "amount_received")
        await self.payments.debt_paid(rider_id, _latest_charge(intent), amount)

    # Refunds.

    async def _charge_refunded(self, event: StripeEvent) -> None:
        charge = event.payload
        refunds = charge.get("refunds")
        for refund in refunds.get("data", []) if isinstance(refunds, dict) else []:
            await self._refund(refund, charge)

    async def _refund_event(self, event: StripeEvent) -> None:
        await self._refund(event.payload, None)

    async def _refund(self, refund: Mapping[str, Any], charge: Mapping[str, Any] | None) -> None:
        # Pending refunds are recorded when they succeed; failed ones never moved money.
        refund_id = str(refund["id"])
        if refund.get("status") != "succeeded":
            return
        if await self.ledger.has(refund_ledger_key(refund_id)):
            return
        charge_id = _id_of(refund.get("charge")) or (_id_of(charge.get("id")) if charge else None)
        metadata = {**_metadata(charge or {}), **_metadata(refund)}
        payment = await self._ride_payment(
            metadata,
            charge_id=charge_id,
            payment_intent_id=_id_of(refund.get("payment_intent")),
        )
        ride_id = payment.ride_id
        if metadata.get("kind") == "tip" or (charge_id and charge_id == payment.tip_charge_id):
            raise StripeEventUnsupported(f"refund {refund_id} of a tip is not recorded by itself")
        if payment.status not in SETTLED:
            raise StripeEventNotReady(f"refund {refund_id} came before ride {ride_id}'s capture")
        if charge_id != payment.charge_id:
            raise StripeEventUnsupported(
                f"refund {refund_id} is of charge {charge_id}, not of ride {ride_id}'s fare"
            )
        request_id = metadata.get("request_id")
        call = await self.payments.call(refund_key(ride_id, request_id)) if request_id else None
        if call is not None and call.status == "pending":
            raise StripeEventNotReady(f"refund {refund_id} is being recorded by its refund flow")
        amount = _money(refund, "amount")
        clawback = await self._clawback(payment, amount)
        await self.payments.refunded(ride_id, refund_id, amount, clawback)

    async def _clawback(self, payment: RidePayment, amount: Money) -> Clawback:
        # A transfer that was ever started may land, or have landed, before or after
        # this refund; only without one can the share come off what is still owed.
        started = payment.transfer_id is not None or (
            await self.payments.call(transfer_key(payment.ride_id)) is not None
        )
        driver_share, _ = self.payments.refund_shares(payment, amount)
        if not started and driver_share <= self.payments.transfer_amount(payment):
            return Clawback.from_payable
        return Clawback.receivable

    # Disputes.

    async def _dispute_created(self, event: StripeEvent) -> None:
        dispute = event.payload
        if not str(dispute.get("status", "")).startswith("warning_"):
            await self._record_once(_dispute_opened(dispute))

    async def _dispute_closed(self, event: StripeEvent) -> None:
        dispute = event.payload
        status = dispute.get("status")
        if status not in ("won", "lost"):
            return  # an inquiry closed: no money moved
        await self._record_once(_dispute_opened(dispute))
        amount = _money(dispute, "amount")
        _, fee_returned = _dispute_fees(dispute, amount.currency)
        await self._record_once(
            ledger.dispute_closed(
                dispute_id=str(dispute["id"]),
                amount=amount,
                won=status == "won",
                fee_returned=Money(fee_returned if status == "won" else 0, amount.currency),
            )
        )

    # Payout accounts, transfers and payouts.

    async def _account_updated(self, event: StripeEvent) -> None:
        account = event.payload
        account_id = str(account["id"])
        if await self.events.applied_after(event.type, account_id, event.stripe_created_at):
            return
        known = await self.payments.payout_accounts.by_stripe_id(account_id)
        if known is None:
            raise StripeEventNotReady(f"no driver has the payout account {account_id}")
        was_enabled = known.payouts_enabled
        try:
            async with self.session.begin_nested():
                updated = await self.payments.payout_account_updated(
                    account_id,
                    details_submitted=bool(account.get("details_submitted")),
                    charges_enabled=bool(account.get("charges_enabled")),
                    payouts_enabled=bool(account.get("payouts_enabled")),
                )
                # Asked again under the row lock the update holds: a newer event applied
                # by another worker meanwhile wins.
                if await self.events.applied_after(event.type, account_id, event.stripe_created_at):
                    raise _Superseded
        except _Superseded:
            return
        if updated is not None and updated.payouts_enabled and not was_enabled:
            await self.payments.transfers_due_for(updated.driver_id)

    async def _transfer(self, event: StripeEvent) -> None:
        transfer = event.payload
        transfer_id = str(transfer["id"])
        metadata = _metadata(transfer)
        source = _id_of(transfer.get("source_transaction"))
        payment = await self._ride_payment(metadata, charge_id=source)
        ride_id = payment.ride_id
        amount = _money(transfer, "amount")
        if payment.driver_id is None:
            raise StripeEventNotReady(f"transfer {transfer_id} came before ride {ride_id}'s fare")
        if metadata.get("kind") == "tip" or (source and source == payment.tip_charge_id):
            if payment.tip_charge_id is None or payment.tip_amount is None:
                raise StripeEventNotReady(f"tip transfer {transfer_id} came before the tip")
            if payment.tip_amount != amount.amount:
                raise StripeEventUnsupported(
                    f"tip transfer {transfer_id} of {amount} does not match ride {ride_id}'s tip"
                )
            tip_draft = ledger.tip_transfer(
                transfer_id=transfer_id, driver_id=payment.driver_id, amount=amount
            )
            if not await self.ledger.has(tip_draft.idempotency_key):
                await self.payments.tip_transferred(ride_id, transfer_id)
            return
        draft = ledger.driver_transfer(
            transfer_id=transfer_id, driver_id=payment.driver_id, amount=amount
        )
        if await self.ledger.has(draft.idempotency_key):
            return
        if payment.status not in SETTLED:
            raise StripeEventNotReady(
                f"transfer {transfer_id} came before ride {ride_id}'s capture"
            )
        await self.payments.transferred(ride_id, transfer_id, amount)

    async def _payout(self, event: StripeEvent) -> None:
        payout = event.payload
        payout_id = str(payout["id"])
        amount = _money(payout, "amount")
        if event.account_id is not None:
            seen = await self.payments.driver_payout_seen(
                event.account_id,
                payout_id,
                amount,
                str(payout["status"]),
                _timestamp(payout.get("arrival_date")),
                event.stripe_created_at,
            )
            if not seen:
                raise StripeEventNotReady(f"no driver has the payout account {event.account_id}")
            return
        await self._record_once(ledger.platform_payout(payout_id=payout_id, amount=amount))
        if event.type == "payout.failed":
            await self._record_once(platform_payout_returned(payout_id=payout_id, amount=amount))

    # Shared.

    async def _ride_payment(
        self,
        metadata: Mapping[str, str],
        *,
        payment_intent_id: str | None = None,
        charge_id: str | None = None,
    ) -> RidePayment:
        """The ride's payment, locked: by ``metadata.ride_id``, else by the intent or charge."""
        ride_id = _uuid(metadata.get("ride_id"))
        payment: RidePayment | None = None
        if ride_id is not None:
            try:
                payment = await self.payments.get(ride_id, lock=True)
            except RidePaymentNotFound:
                payment = None
        else:
            if payment_intent_id is not None:
                payment = await self.payments.by_payment_intent(payment_intent_id)
            if payment is None and charge_id is not None:
                payment = await self.payments.by_charge(charge_id)
        if payment is None:
            known = ride_id or payment_intent_id or charge_id
            raise StripeEventNotReady(f"no ride payment is recorded for {known}")
        return payment

    async def _record_once(self, draft: TransactionDraft) -> None:
        # The first fact recorded under a key wins: a later event describing it from a
        # different snapshot (a fee seen later) must not conflict with it.
        if not await self.ledger.has(draft.idempotency_key):
            await self.ledger.record(draft)


def platform_payout_returned(*, payout_id: str, amount: Money) -> TransactionDraft:
    """A platform payout that failed after it left: the bank never got it and Stripe puts
    it back in the balance (the reverse of ``ledger.platform_payout``)."""
    currency = amount.currency
    return TransactionDraft(
        idempotency_key=f"payout:{payout_id}:returned:v1",
        kind=TransactionKind.platform_payout,
        description=f"Failed payout {payout_id} returned to the Stripe balance",
        postings=(
            ledger.debit(ledger.stripe_balance(currency), amount),
            ledger.credit(ledger.shared_account(ledger.AccountKind.bank, currency), amount),
        ),
        reference=payout_id,
    )


def _dispute_opened(dispute: Mapping[str, Any]) -> TransactionDraft:
    amount = _money(dispute, "amount")
    charge_id = _id_of(dispute.get("charge"))
    if charge_id is None:
        raise StripeEventUnsupported(f"dispute {dispute.get('id')} names no charge")
    fee, _ = _dispute_fees(dispute, amount.currency)
    return ledger.dispute_opened(
        dispute_id=str(dispute["id"]),
        charge_id=charge_id,
        amount=amount,
        fee=Money(fee, amount.currency),
    )


def _dispute_fees(dispute: Mapping[str, Any], currency: str) -> tuple[int, int]:
    """The dispute fee withdrawn and the part of it given back, from the dispute's
    balance transactions in its own currency (0 when Stripe sent none)."""
    withdrawn = returned = 0
    for movement in dispute.get("balance_transactions") or []:
        if not isinstance(movement, dict) or str(movement.get("currency", "")).upper() != currency:
            continue
        fee = int(movement.get("fee") or 0)
        if int(movement["amount"]) < 0:
            withdrawn += fee
        elif fee < 0:
            returned -= fee
    return withdrawn, returned


def _describe(exc: Exception) -> str:
    if isinstance(exc, DomainError):
        return f"{exc.type}: {exc.detail}"
    return f"{type(exc).__name__}: {exc}"


def _metadata(stripe_object: Mapping[str, Any]) -> dict[str, str]:
    metadata = stripe_object.get("metadata")
    if not isinstance(metadata, dict):
        return {}
    return {str(key): str(value) for key, value in metadata.items()}


def _uuid(value: str | None) -> uuid.UUID | None:
    if value is None:
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


def _id_of(value: Any) -> str | None:
    # Stripe sends a related object as its id, or as the object when it is expanded.
    if isinstance(value, dict):
        value = value.get("id")
    return value if isinstance(value, str) and value else None


def _latest_charge(intent: Mapping[str, Any]) -> str:
    charge_id = _id_of(intent.get("latest_charge"))
    if charge_id is None:
        # API versions before 2022-11-15 list the charges instead.
        charges = intent.get("charges")
        data = charges.get("data") if isinstance(charges, dict) else None
        charge_id = _id_of(data[0]) if data else None
    if charge_id is None:
        raise StripeEventUnsupported(f"payment intent {intent.get('id')} names no charge")
    return charge_id


def _decline_code(intent: Mapping[str, Any]) -> str:
    error = intent.get("last_payment_error")
    if isinstance(error, dict):
        code = error.get("decline_code") or error.get("code")
        if isinstance(code, str) and code:
            return code[:64]
    return "payment_failed"


def _money(stripe_object: Mapping[str, Any], field: str) -> Money:
    return Money(int(stripe_object[field]), str(stripe_object["currency"]).upper())


def _timestamp(value: Any) -> datetime | None:
    return datetime.fromtimestamp(int(value), UTC) if value is not None else None


async def process_stripe_event(
    sessionmaker: async_sessionmaker[AsyncSession], clock: Clock, event_id: str
) -> None:
    """The ``stripe.event`` job: processes one stored event in its own transaction."""
    async with transaction(sessionmaker) as session:
        await WebhookService(session, clock).process(event_id)


async def sweep_unprocessed_events(
    sessionmaker: async_sessionmaker[AsyncSession], redis: Redis, clock: Clock
) -> int:
    """Re-enqueues every event still unprocessed a minute after it arrived (its job was
    lost, or it waits for what it builds on); returns how many."""
    async with transaction(sessionmaker) as session:
        event_ids = await WebhookService(session, clock).unprocessed()
    for event_id in event_ids:
        await enqueue(redis, STRIPE_EVENT_JOB, {"id": event_id})
    return len(event_ids)
