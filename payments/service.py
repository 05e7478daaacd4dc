"""The facts of a ride's money, recorded in PostgreSQL: flushes, never commits.

Both paths that learn what Stripe did use these methods: the flows, right after their
own call, and the webhook handlers, when Stripe tells us (perhaps again, perhaps first,
perhaps out of order). Every method is therefore idempotent and tolerant of order: a
status moves only forward, and every ledger transaction has a deterministic key.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy.ext.asyncio import AsyncSession

from infra.clock import Clock
from payments import ledger
from payments.errors import (
    PaymentMethodRequired,
    RideHasNoFare,
    RidePaymentNotFound,
    RidePaymentStateConflict,
    RiderHasUnpaidFare,
)
from payments.ledger import AccountKind, Clawback
from payments.ledger_service import LedgerService
from payments.models import (
    DriverPayout,
    DriverPayoutAccount,
    PaymentCustomer,
    RidePayment,
    RidePaymentStatus,
    StripeCall,
)
from payments.money import Money, allocate
from payments.pricing import Fare, FareSplit
from payments.repository import (
    CustomerRepository,
    PayoutAccountRepository,
    RidePaymentRepository,
    StripeCallRepository,
)
from payments.schemas import FareRead, RidePaymentRead, SplitRead

S = RidePaymentStatus
RETRY_BASE_S = 5
RETRY_MAX_S = 3600
# A driver without a working payout account is checked again this often.
TRANSFER_RECHECK_S = 3600
# A capture or a release recorded this long ago and still unanswered is repeated (with
# its key) by the worker: the process that opened it may have died before calling Stripe.
STEP_DEADLINE_S = 60


def authorize_key(ride_id: uuid.UUID) -> str:
    return f"ride:{ride_id}:authorize:v1"


def capture_key(ride_id: uuid.UUID) -> str:
    return f"ride:{ride_id}:capture:v1"


def cancel_key(ride_id: uuid.UUID) -> str:
    return f"ride:{ride_id}:cancel:v1"


def transfer_key(ride_id: uuid.UUID) -> str:
    return f"ride:{ride_id}:transfer:v1"


def tip_charge_key(ride_id: uuid.UUID, payment_method_id: str) -> str:
    return f"ride:{ride_id}:tip:{payment_method_id}:v1"


def tip_transfer_key(ride_id: uuid.UUID) -> str:
    return f"ride:{ride_id}:tip-transfer:v1"


def refund_key(ride_id: uuid.UUID, request_id: str) -> str:
    return f"ride:{ride_id}:refund:{request_id}:v1"


def reversal_key(ride_id: uuid.UUID, request_id: str) -> str:
    return f"ride:{ride_id}:refund:{request_id}:reversal:v1"


def debt_charge_key(rider_id: uuid.UUID, owed: Money, payment_method_id: str) -> str:
    # The card is part of the key: a declined card is declined again under its key, and a
    # new card must be able to try.
    return f"rider:{rider_id}:debt:{owed.currency}:{owed.amount}:{payment_method_id}:v1"


def backoff(attempts: int) -> timedelta:
    return timedelta(seconds=min(RETRY_MAX_S, RETRY_BASE_S * 2 ** min(attempts, 12)))


def fare_json(fare: Fare) -> dict[str, Any]:
    return FareRead.of(fare).model_dump(mode="json")


def split_json(split: FareSplit) -> dict[str, int]:
    return SplitRead.of(split).model_dump()


def split_of(payment: RidePayment) -> FareSplit:
    if payment.split is None:
        raise RideHasNoFare(f"ride {payment.ride_id} has no fare yet")
    return SplitRead.model_validate(payment.split).to_split(payment.currency)


class PaymentService:
    def __init__(self, session: AsyncSession, clock: Clock) -> None:
        self.session = session
        self.clock = clock
        self.ledger = LedgerService(session, clock)
        self.customers = CustomerRepository(session)
        self.payout_accounts = PayoutAccountRepository(session)
        self.rides = RidePaymentRepository(session)
        self.calls = StripeCallRepository(session)

    # Customers and payout accounts.

    async def customer(self, rider_id: uuid.UUID) -> PaymentCustomer | None:
        return await self.customers.get(rider_id)

    async def save_customer(self, rider_id: uuid.UUID, stripe_customer_id: str) -> PaymentCustomer:
        now = self.clock.now()
        return await self.customers.add(
            PaymentCustomer(
                user_id=rider_id,
                stripe_customer_id=stripe_customer_id,
                created_at=now,
                updated_at=now,
            )
        )

    async def set_default_card(self, rider_id: uuid.UUID, payment_method_id: str) -> None:
        await self.customers.set_default_payment_method(
            rider_id, payment_method_id, self.clock.now()
        )

    async def payout_account(self, driver_id: uuid.UUID) -> DriverPayoutAccount | None:
        return await self.payout_accounts.get(driver_id)

    async def save_payout_account(
        self, driver_id: uuid.UUID, stripe_account_id: str
    ) -> DriverPayoutAccount:
        now = self.clock.now()
        return await self.payout_accounts.add(
            DriverPayoutAccount(
                driver_id=driver_id,
                stripe_account_id=stripe_account_id,
                details_submitted=False,
                charges_enabled=False,
                payouts_enabled=False,
                created_at=now,
                updated_at=now,
            )
        )

    async def payout_account_updated(
        self,
        stripe_account_id: str,
        *,
        details_submitted: bool,
        charges_enabled: bool,
        payouts_enabled: bool,
    ) -> DriverPayoutAccount | None:
        return await self.payout_accounts.update_capabilities(
            stripe_account_id,
            details_submitted=details_submitted,
            charges_enabled=charges_enabled,
            payouts_enabled=payouts_enabled,
            now=self.clock.now(),
        )

    async def driver_payout_seen(
        self,
        stripe_account_id: str,
        payout_id: str,
        amount: Money,
        status: str,
        arrival_at: datetime | None,
        at: datetime,
    ) -> bool:
        account = await self.payout_accounts.by_stripe_id(stripe_account_id)
        if account is None:
            return False
        await self.payout_accounts.upsert_payout(
            DriverPayout(
                id=payout_id,
                driver_id=account.driver_id,
                amount=amount.amount,
                currency=amount.currency,
                status=status,
                arrival_at=arrival_at,
                updated_at=at,
            )
        )
        return True

    # Debts.

    async def unpaid(self, rider_id: uuid.UUID, currencies: Iterable[str]) -> list[Money]:
        owed = []
        for currency in currencies:
            balance = await self.ledger.balance(
                ledger.owned_account(AccountKind.rider_receivable, rider_id, currency)
            )
            if balance.amount > 0:
                owed.append(balance)
        return owed

    # Authorization.

    async def open_authorization(
        self, ride_id: uuid.UUID, rider_id: uuid.UUID, amount: Money
    ) -> tuple[RidePayment, PaymentCustomer]:
        """Records the ride's payment and the authorization call before it is made.
        Refuses a rider who owes an earlier fare or has no card. Idempotent per ride."""
        if await self.unpaid(rider_id, [amount.currency]):
            raise RiderHasUnpaidFare
        customer = await self.customers.get(rider_id)
        if customer is None or customer.default_payment_method_id is None:
            raise PaymentMethodRequired
        now = self.clock.now()
        payment, _ = await self.rides.add(
            RidePayment(
                ride_id=ride_id,
                rider_id=rider_id,
                currency=amount.currency,
                status=S.authorizing.value,
                authorized_amount=amount.amount,
                refunded_amount=0,
                transferred_amount=0,
                attempts=0,
                created_at=now,
                updated_at=now,
            )
        )
        if payment.rider_id != rider_id:
            raise RidePaymentStateConflict("this ride belongs to another rider")
        await self.record_call(
            authorize_key(ride_id),
            "authorize",
            ride_id,
            {"amount": amount.amount, "currency": amount.currency},
        )
        return payment, customer

    async def authorized(self, ride_id: uuid.UUID, payment_intent_id: str) -> RidePayment:
        await self.finish_call(authorize_key(ride_id), "succeeded", {"id": payment_intent_id})
        return await self._advance(
            ride_id,
            [S.authorizing],
            {"status": S.authorized.value, "payment_intent_id": payment_intent_id},
        )

    async def authorization_declined(self, ride_id: uuid.UUID, code: str) -> RidePayment:
        await self.finish_call(authorize_key(ride_id), "failed", None, code)
        return await self._advance(
            ride_id, [S.authorizing], {"status": S.declined.value, "failure_code": code}
        )

    async def retry_later(self, ride_id: uuid.UUID, key: str, error: str) -> RidePayment:
        """Stripe did not answer: keep the step, and try it again later with the same key."""
        await self.calls.finish(
            key, status="pending", result=None, error=error, now=self.clock.now()
        )
        payment = await self.get(ride_id, lock=True)
        updated = await self.rides.update(
            ride_id,
            None,
            {
                "attempts": payment.attempts + 1,
                "next_attempt_at": self.clock.now() + backoff(payment.attempts),
                "updated_at": self.clock.now(),
            },
        )
        assert updated is not None
        return updated

    # Settlement.

    async def open_capture(
        self, ride_id: uuid.UUID, driver_id: uuid.UUID, fare: Fare, split: FareSplit
    ) -> RidePayment:
        """Prices the ride and records the capture call. A ride is priced once: asking
        again with the same fare is a no-op, with another fare a conflict."""
        await self.open_captures([(ride_id, driver_id, fare, split)])
        return await self.get(ride_id)

    async def open_captures(
        self, rides: Sequence[tuple[uuid.UUID, uuid.UUID, Fare, FareSplit]]
    ) -> list[uuid.UUID]:
        """``open_capture`` for many rides (ride, driver, fare, split) in a few statements;
        answers the rides. All or nothing: one conflict raises."""
        payments = await self._locked([ride_id for ride_id, *_ in rides])
        priced: dict[uuid.UUID, tuple[dict[str, Any], uuid.UUID | None]] = {
            p.ride_id: (p.fare, p.driver_id) for p in payments.values() if p.fare is not None
        }
        moves: list[_Move] = []
        calls = []
        deadline = self.clock.now() + timedelta(seconds=STEP_DEADLINE_S)
        for ride_id, driver_id, fare, split in rides:
            if split.total != fare.total:
                raise RidePaymentStateConflict("the split does not add up to the fare")
            payment = payments[ride_id]
            fare_values = fare_json(fare)
            if ride_id in priced:
                if priced[ride_id] != (fare_values, driver_id):
                    raise RidePaymentStateConflict("this ride was already priced differently")
                continue
            priced[ride_id] = (fare_values, driver_id)
            capture = Money(min(fare.total.amount, payment.authorized_amount), fare.currency)
            moves.append(
                (
                    payment,
                    [S.authorized],
                    {
                        "status": S.capturing.value,
                        "driver_id": driver_id,
                        "fare": fare_values,
                        "split": split_json(split),
                        "next_attempt_at": deadline,
                    },
                )
            )
            calls.append(
                self._call(
                    capture_key(ride_id),
                    "capture",
                    ride_id,
                    {"payment_intent_id": payment.payment_intent_id, "amount": capture.amount},
                )
            )
        await self._advance_many(moves)
        await self.calls.record_many(calls)
        return [ride_id for ride_id, *_ in rides]

    def capture_amount(self, payment: RidePayment) -> Money:
        split = split_of(payment)
        return Money(min(split.total.amount, payment.authorized_amount), payment.currency)

    async def captured(self, ride_id: uuid.UUID, charge_id: str) -> RidePayment:
        """The fare was captured: record it in the ledger (the part above the card's hold
        is the rider's debt) and make the driver's transfer due."""
        await self.captured_many([(ride_id, charge_id)])
        return await self.get(ride_id)

    async def captured_many(self, captures: Sequence[tuple[uuid.UUID, str]]) -> list[uuid.UUID]:
        """``captured`` for many (ride, charge) at once: one ledger insert for all of them;
        answers the rides. All or nothing: one conflict raises."""
        payments = await self._locked([ride_id for ride_id, _ in captures])
        drafts = []
        moves: list[_Move] = []
        now = self.clock.now()
        for ride_id, charge_id in captures:
            payment = payments[ride_id]
            if payment.driver_id is None:
                raise RideHasNoFare(f"ride {ride_id} has no driver")
            split = split_of(payment)
            captured = self.capture_amount(payment)
            drafts.append(
                ledger.ride_settlement(
                    ride_id=ride_id,
                    driver_id=payment.driver_id,
                    charge_id=charge_id,
                    driver=split.driver,
                    commission=split.commission,
                    reserve=split.reserve,
                    booking_fee=split.booking_fee,
                    pass_through=split.pass_through,
                    rider_id=payment.rider_id,
                    unpaid=split.total - captured,
                )
            )
            moves.append(
                (
                    payment,
                    [S.capturing],
                    {
                        "status": S.captured.value,
                        "charge_id": charge_id,
                        "captured_amount": captured.amount,
                        "settled_at": now,
                        "next_attempt_at": now,
                        "attempts": 0,
                    },
                )
            )
        await self.ledger.record_many(drafts)
        await self.calls.finish_many(
            [(capture_key(r), "succeeded", {"charge_id": c}, None) for r, c in captures], now=now
        )
        await self._advance_many(moves)
        return [ride_id for ride_id, _ in captures]

    async def capture_failed(self, ride_id: uuid.UUID, code: str) -> RidePayment:
        """The card could not pay: the ride is still complete and the driver still owed;
        the rider owes the fare and may not ride again until it is paid."""
        payment = await self.get(ride_id, lock=True)
        if payment.driver_id is None:
            raise RideHasNoFare(f"ride {ride_id} has no driver")
        split = split_of(payment)
        await self.ledger.record(
            ledger.rider_debt(
                ride_id=ride_id,
                rider_id=payment.rider_id,
                driver_id=payment.driver_id,
                driver=split.driver,
                commission=split.commission,
                reserve=split.reserve,
                booking_fee=split.booking_fee,
                pass_through=split.pass_through,
            )
        )
        await self.finish_call(capture_key(ride_id), "failed", None, code)
        return await self._advance(
            ride_id,
            [S.capturing],
            {
                "status": S.in_debt.value,
                "failure_code": code,
                "settled_at": self.clock.now(),
                "next_attempt_at": None,
            },
        )

    async def debt_paid(
        self, rider_id: uuid.UUID, charge_id: str, amount: Money
    ) -> list[RidePayment]:
        """A charge paid what the rider owed: record it, and make the transfers of the
        rides whose capture had failed due from this charge: the oldest first, as many as
        ``amount`` covers (a ride that went into debt after the charge was made waits for
        the next one)."""
        await self.ledger.record(
            ledger.rider_debt_payment(rider_id=rider_id, charge_id=charge_id, amount=amount)
        )
        now = self.clock.now()
        paid = []
        budget = amount.amount
        for payment in reversed(await self.rides_in_debt(rider_id)):
            if payment.currency != amount.currency:
                continue
            owed = split_of(payment).total.amount
            if owed > budget:
                break
            budget -= owed
            updated = await self.rides.update(
                payment.ride_id,
                [S.in_debt.value],
                {
                    "status": S.debt_paid.value,
                    "charge_id": charge_id,
                    "captured_amount": split_of(payment).total.amount,
                    "next_attempt_at": now,
                    "attempts": 0,
                    "updated_at": now,
                },
            )
            if updated is not None:
                paid.append(updated)
        return paid

    async def rides_in_debt(self, rider_id: uuid.UUID) -> list[RidePayment]:
        return [p for p in await self.rides.for_rider(rider_id, 500, None) if p.status == S.in_debt]

    # Cancellation.

    async def open_cancellation(
        self,
        ride_id: uuid.UUID,
        driver_id: uuid.UUID | None,
        fee: Fare | None,
        split: FareSplit | None,
    ) -> RidePayment:
        payment = await self.get(ride_id, lock=True)
        if payment.status in (S.cancelled, S.fee_captured, S.declined):
            return payment
        deadline = self.clock.now() + timedelta(seconds=STEP_DEADLINE_S)
        if fee is None:
            updated = await self._advance(
                ride_id,
                [S.authorizing, S.authorized],
                {"status": S.cancelling.value, "next_attempt_at": deadline},
            )
            await self.record_call(cancel_key(ride_id), "cancel", ride_id, {})
            return updated
        if split is None or split.total != fee.total:
            raise RidePaymentStateConflict("a cancellation fee needs its split")
        updated = await self._advance(
            ride_id,
            [S.authorized],
            {
                "status": S.cancelling.value,
                "driver_id": driver_id,
                "fare": fare_json(fee),
                "split": split_json(split),
                "next_attempt_at": deadline,
            },
        )
        await self.record_call(
            capture_key(ride_id), "capture", ride_id, {"amount": fee.total.amount}
        )
        return updated

    async def cancelled(self, ride_id: uuid.UUID) -> RidePayment:
        await self.finish_call(cancel_key(ride_id), "succeeded", {})
        return await self._advance(
            ride_id,
            [S.authorizing, S.authorized, S.cancelling],
            {"status": S.cancelled.value, "next_attempt_at": None},
        )

    async def fee_captured(self, ride_id: uuid.UUID, charge_id: str) -> RidePayment:
        payment = await self.get(ride_id, lock=True)
        split = split_of(payment)
        fee_basis = (payment.fare or {}).get("basis")
        captured = self.capture_amount(payment)
        coop = split.commission + split.reserve + split.booking_fee + split.pass_through
        await self.ledger.record(
            ledger.cancellation_fee(
                ride_id=ride_id,
                charge_id=charge_id,
                driver_id=payment.driver_id,
                driver_share=split.driver if payment.driver_id else Money.zero(payment.currency),
                coop_share=coop if payment.driver_id else split.total,
                no_show=fee_basis == "no_show",
            )
        )
        await self.finish_call(capture_key(ride_id), "succeeded", {"charge_id": charge_id})
        now = self.clock.now()
        return await self._advance(
            ride_id,
            [S.cancelling],
            {
                "status": S.fee_captured.value,
                "charge_id": charge_id,
                "captured_amount": captured.amount,
                "settled_at": now,
                "next_attempt_at": now if payment.driver_id and split.driver.amount else None,
            },
        )

    # Transfers to drivers.

    def transfer_amount(self, payment: RidePayment) -> Money:
        split = split_of(payment)
        return Money(max(0, split.driver.amount - payment.transferred_amount), payment.currency)

    async def offset_driver_debt(self, payment: RidePayment) -> Money:
        """Takes what the driver owes the co-op (claw-backs) out of this ride's share
        before it is transferred; returns what is left to transfer."""
        due = self.transfer_amount(payment)
        if payment.driver_id is None or due.is_zero():
            return due
        receivable = await self.ledger.balance(
            ledger.owned_account(AccountKind.driver_receivable, payment.driver_id, due.currency)
        )
        offset = Money(min(receivable.amount, due.amount), due.currency)
        draft_key = f"driver:{payment.driver_id}:debt_offset:ride-{payment.ride_id}:v1"
        # One offset per ride: a retried transfer must not offset (or change) it again.
        if offset.amount > 0 and not await self.ledger.has(draft_key):
            await self.ledger.record(
                ledger.driver_debt_offset(
                    offset_id=f"ride-{payment.ride_id}",
                    driver_id=payment.driver_id,
                    amount=offset,
                )
            )
            updated = await self.rides.update(
                payment.ride_id,
                None,
                {"transferred_amount": payment.transferred_amount + offset.amount},
            )
            assert updated is not None
            payment = updated
        return self.transfer_amount(payment)

    async def transfer_orders(self, ride_ids: Sequence[uuid.UUID]) -> list[TransferOrder]:
        """The driver's transfer each ride's payment owes now (less what the driver owes
        the co-op), with its call recorded before it is made. A ride whose driver cannot
        receive money yet waits; one with nothing left to transfer is done; one not
        captured is skipped."""
        payments = await self._locked(ride_ids)
        drivers = {p.driver_id for p in payments.values() if p.driver_id is not None}
        accounts = await self.payout_accounts.get_many(drivers)
        currencies = {p.currency for p in payments.values()}
        receivables = await self.ledger.balances_of(
            ledger.owned_account(AccountKind.driver_receivable, driver_id, currency)
            for driver_id in drivers
            for currency in currencies
        )
        now = self.clock.now()
        orders: list[TransferOrder] = []
        changes: list[tuple[uuid.UUID, dict[str, Any]]] = []
        calls = []
        for ride_id in dict.fromkeys(ride_ids):
            payment = payments[ride_id]
            if payment.status not in (S.captured, S.debt_paid, S.fee_captured):
                continue
            account = accounts.get(payment.driver_id) if payment.driver_id else None
            if account is None or not account.payouts_enabled:
                changes.append(
                    (ride_id, {"next_attempt_at": now + timedelta(seconds=TRANSFER_RECHECK_S)})
                )
                continue
            assert payment.driver_id is not None
            owes = receivables.get(
                ledger.owned_account(
                    AccountKind.driver_receivable, payment.driver_id, payment.currency
                )
            )
            if owes is not None and owes.amount > 0:
                # Rare: the balance moves with each offset, so these go one by one.
                amount = await self.offset_driver_debt(payment)
            else:
                amount = self.transfer_amount(payment)
            if amount.is_zero():
                changes.append((ride_id, {"next_attempt_at": None}))
                continue
            assert payment.charge_id is not None
            calls.append(
                self._call(transfer_key(ride_id), "transfer", ride_id, {"amount": amount.amount})
            )
            orders.append(
                TransferOrder(ride_id, amount, account.stripe_account_id, payment.charge_id)
            )
        await self.rides.update_many(changes)
        await self.calls.record_many(calls)
        return orders

    async def transferred(self, ride_id: uuid.UUID, transfer_id: str, amount: Money) -> RidePayment:
        await self.transferred_many([(ride_id, transfer_id, amount)])
        return await self.get(ride_id)

    async def transferred_many(
        self, transfers: Sequence[tuple[uuid.UUID, str, Money]]
    ) -> list[uuid.UUID]:
        """The drivers' transfers (ride, transfer, amount) were made: one ledger insert for
        all of them; answers the rides. All or nothing."""
        payments = await self._locked([ride_id for ride_id, _, _ in transfers])
        drafts = []
        for ride_id, transfer_id, amount in transfers:
            driver_id = payments[ride_id].driver_id
            if driver_id is None:
                raise RideHasNoFare(f"ride {ride_id} has no driver")
            drafts.append(
                ledger.driver_transfer(transfer_id=transfer_id, driver_id=driver_id, amount=amount)
            )
        recorded = await self.ledger.record_many(drafts)
        now = self.clock.now()
        await self.calls.finish_many(
            [
                (transfer_key(ride_id), "succeeded", {"transfer_id": transfer_id}, None)
                for ride_id, transfer_id, _ in transfers
            ],
            now=now,
        )
        changes: list[tuple[uuid.UUID, dict[str, Any]]] = []
        transferred = {ride_id: p.transferred_amount for ride_id, p in payments.items()}
        for (ride_id, transfer_id, amount), done in zip(transfers, recorded, strict=True):
            payment = payments[ride_id]
            tip_due = payment.tip_charge_id is not None and payment.tip_transfer_id is None
            values: dict[str, Any] = {
                "transfer_id": transfer_id,
                # A charged tip still to transfer keeps the payment due.
                "next_attempt_at": now if tip_due else None,
                "updated_at": now,
            }
            if done.created:
                transferred[ride_id] += amount.amount
                values["transferred_amount"] = transferred[ride_id]
            changes.append((ride_id, values))
        await self.rides.update_many(changes)
        return [ride_id for ride_id, _, _ in transfers]

    async def transfer_waits(self, ride_id: uuid.UUID) -> None:
        """The driver cannot receive transfers yet (no onboarded account): check again later."""
        await self.rides.update(
            ride_id,
            None,
            {"next_attempt_at": self.clock.now() + timedelta(seconds=TRANSFER_RECHECK_S)},
        )

    async def transfers_due_for(self, driver_id: uuid.UUID) -> None:
        """The driver's account can now receive money: every waiting transfer is due now."""
        for payment in await self.rides.waiting_transfers(driver_id):
            await self.rides.update(payment.ride_id, None, {"next_attempt_at": self.clock.now()})

    # Tips.

    async def open_tip(
        self, ride_id: uuid.UUID, rider_id: uuid.UUID, amount: Money, payment_method_id: str
    ) -> RidePayment:
        payment = await self.get(ride_id, lock=True)
        if payment.rider_id != rider_id:
            raise RidePaymentNotFound
        if payment.status not in (S.captured, S.debt_paid) or payment.driver_id is None:
            raise RidePaymentStateConflict("a tip follows a completed, paid ride")
        if payment.tip_amount is not None:
            if payment.tip_amount != amount.amount:
                raise RidePaymentStateConflict("this ride was already tipped")
            return payment
        await self.record_call(
            tip_charge_key(ride_id, payment_method_id),
            "charge",
            ride_id,
            {"amount": amount.amount, "currency": amount.currency},
        )
        updated = await self.rides.update(
            ride_id, None, {"tip_amount": amount.amount, "updated_at": self.clock.now()}
        )
        assert updated is not None
        return updated

    async def tip_declined(self, ride_id: uuid.UUID, key: str, code: str) -> None:
        """The tip's card was declined: forget the tip, so the rider may try another card."""
        await self.finish_call(key, "failed", None, code)
        await self.rides.update(ride_id, None, {"tip_amount": None, "updated_at": self.clock.now()})

    async def tip_charged(
        self, ride_id: uuid.UUID, charge_id: str, key: str | None = None
    ) -> RidePayment:
        payment = await self.get(ride_id, lock=True)
        if payment.driver_id is None or payment.tip_amount is None:
            raise RidePaymentStateConflict("no tip was asked for on this ride")
        await self.ledger.record(
            ledger.tip(
                charge_id=charge_id,
                ride_id=ride_id,
                driver_id=payment.driver_id,
                amount=Money(payment.tip_amount, payment.currency),
            )
        )
        if key is not None:
            await self.finish_call(key, "succeeded", {"charge_id": charge_id})
        updated = await self.rides.update(
            ride_id, None, {"tip_charge_id": charge_id, "next_attempt_at": self.clock.now()}
        )
        assert updated is not None
        return updated

    async def tip_transferred(self, ride_id: uuid.UUID, transfer_id: str) -> RidePayment:
        payment = await self.get(ride_id, lock=True)
        assert payment.driver_id is not None
        assert payment.tip_amount is not None
        await self.ledger.record(
            ledger.tip_transfer(
                transfer_id=transfer_id,
                driver_id=payment.driver_id,
                amount=Money(payment.tip_amount, payment.currency),
            )
        )
        await self.finish_call(tip_transfer_key(ride_id), "succeeded", {"transfer_id": transfer_id})
        updated = await self.rides.update(
            ride_id, None, {"tip_transfer_id": transfer_id, "next_attempt_at": None}
        )
        assert updated is not None
        return updated

    # Refunds.

    def refund_shares(self, payment: RidePayment, amount: Money) -> tuple[Money, Money]:
        """The driver's and third parties' parts of a refund, pro rata to the fare."""
        split = split_of(payment)
        others = split.total - split.driver - split.pass_through
        driver, pass_through, _ = (
            allocate(amount.amount, [split.driver.amount, split.pass_through.amount, others.amount])
            if split.total.amount
            else (0, 0, 0)
        )
        return Money(driver, payment.currency), Money(pass_through, payment.currency)

    async def refunded(
        self,
        ride_id: uuid.UUID,
        refund_id: str,
        amount: Money,
        clawback: Clawback,
        request_id: str | None = None,
    ) -> RidePayment:
        payment = await self.get(ride_id, lock=True)
        if payment.driver_id is None:
            raise RideHasNoFare(f"ride {ride_id} has no driver")
        driver_share, pass_through_share = self.refund_shares(payment, amount)
        recorded = await self.ledger.record(
            ledger.refund(
                refund_id=refund_id,
                ride_id=ride_id,
                driver_id=payment.driver_id,
                amount=amount,
                driver_share=driver_share,
                pass_through_share=pass_through_share,
                clawback=clawback,
            )
        )
        if request_id is not None:
            await self.finish_call(
                refund_key(ride_id, request_id), "succeeded", {"refund_id": refund_id}
            )
        if not recorded.created:
            return payment
        values: dict[str, Any] = {
            "refunded_amount": payment.refunded_amount + amount.amount,
            "updated_at": self.clock.now(),
        }
        if clawback is Clawback.from_payable:
            # Taken off what the co-op owes the driver: not to be transferred any more.
            values["transferred_amount"] = payment.transferred_amount + driver_share.amount
        updated = await self.rides.update(ride_id, None, values)
        assert updated is not None
        return updated

    # Stripe calls.

    async def record_call(
        self, key: str, operation: str, ride_id: uuid.UUID | None, request: dict[str, Any]
    ) -> StripeCall:
        return await self.calls.record(self._call(key, operation, ride_id, request))

    def _call(
        self, key: str, operation: str, ride_id: uuid.UUID | None, request: dict[str, Any]
    ) -> StripeCall:
        now = self.clock.now()
        return StripeCall(
            idempotency_key=key,
            operation=operation,
            ride_id=ride_id,
            request=request,
            created_at=now,
            updated_at=now,
        )

    async def call(self, key: str) -> StripeCall | None:
        return await self.calls.get(key)

    async def pending_call(self, ride_id: uuid.UUID, operation: str) -> StripeCall | None:
        """The ride's latest call of this kind still waiting for an answer."""
        pending = [
            c
            for c in await self.calls.for_ride(ride_id)
            if c.operation == operation and c.status == "pending"
        ]
        return pending[-1] if pending else None

    async def finish_call(
        self, key: str, status: str, result: dict[str, Any] | None, error: str | None = None
    ) -> None:
        await self.calls.finish(
            key, status=status, result=result, error=error, now=self.clock.now()
        )

    # Reading.

    async def get(self, ride_id: uuid.UUID, *, lock: bool = False) -> RidePayment:
        payment = await self.rides.get(ride_id, lock=lock)
        if payment is None:
            raise RidePaymentNotFound
        return payment

    async def get_many(self, ride_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, RidePayment]:
        """The payments of those rides that have one."""
        return await self.rides.get_many(ride_ids)

    async def read(self, ride_id: uuid.UUID) -> RidePaymentRead:
        return RidePaymentRead.model_validate(await self.get(ride_id))

    async def by_payment_intent(self, payment_intent_id: str) -> RidePayment | None:
        return await self.rides.by_payment_intent(payment_intent_id)

    async def by_charge(self, charge_id: str) -> RidePayment | None:
        return await self.rides.by_charge(charge_id)

    async def due(self, limit: int) -> Sequence[uuid.UUID]:
        return await self.rides.due(self.clock.now(), limit)

    async def _advance(
        self, ride_id: uuid.UUID, sources: Sequence[RidePaymentStatus], values: dict[str, Any]
    ) -> RidePayment:
        """Moves the status forward from one of ``sources`` (compare-and-set). Reaching a
        status the payment is already in, or has passed, changes nothing: a late or
        repeated event must not move it back."""
        values = {"updated_at": self.clock.now(), **values}
        updated = await self.rides.update(ride_id, [s.value for s in sources], values)
        if updated is not None:
            return updated
        current = await self.get(ride_id, lock=True)
        target = values.get("status")
        if target is not None and _rank(current.status) >= _rank(target):
            return current
        raise RidePaymentStateConflict(
            f"the payment of ride {ride_id} is {current.status}",
            payment_status=current.status,
        )

    async def _advance_many(self, moves: Sequence[_Move]) -> None:
        """``_advance`` for rows this transaction holds locked: each payment moves forward
        from one of its sources; one already at or past its target is left as it is; any
        other raises (and nothing is written)."""
        now = self.clock.now()
        changes: list[tuple[uuid.UUID, dict[str, Any]]] = []
        for payment, sources, values in moves:
            if payment.status in sources:
                changes.append((payment.ride_id, {"updated_at": now, **values}))
                continue
            target = values.get("status")
            if target is not None and _rank(payment.status) >= _rank(target):
                continue
            raise RidePaymentStateConflict(
                f"the payment of ride {payment.ride_id} is {payment.status}",
                payment_status=payment.status,
            )
        await self.rides.update_many(changes)

    async def _locked(self, ride_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, RidePayment]:
        """The rides' payments, locked for this transaction; every one must exist."""
        payments = await self.rides.get_many(ride_ids, lock=True)
        if len(payments) < len(set(ride_ids)):
            raise RidePaymentNotFound
        return payments


_Move = tuple[RidePayment, Sequence[RidePaymentStatus], dict[str, Any]]


class TransferOrder(NamedTuple):
    """A driver's transfer to make: its call is recorded, Stripe not yet asked."""

    ride_id: uuid.UUID
    amount: Money
    destination_account_id: str
    source_charge_id: str


_ORDER = {
    S.authorizing: 0,
    S.authorized: 1,
    S.declined: 9,
    S.capturing: 2,
    S.cancelling: 2,
    S.captured: 5,
    S.in_debt: 4,
    S.debt_paid: 6,
    S.cancelled: 9,
    S.fee_captured: 9,
}


def _rank(status: str) -> int:
    return _ORDER[S(status)]
