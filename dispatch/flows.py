"""Ride operations that move money: the boundary of their own transactions.

As in ``payments.flows``, no database transaction is open while Stripe is called: each
step commits what the ride became (and publishes its events), then asks PaymentFlows,
which records and retries its own calls.

Waiting for the payment: a requested ride is committed in ``requested`` before its hold
is asked for. When Stripe authorizes at once, the ride moves to ``matching`` and the
dispatcher sees it. When Stripe is down the payment stays ``authorizing`` (the payments
worker retries it) and the ride stays ``requested``, invisible to the dispatcher;
``promote_authorized`` (run periodically by the worker) moves it to ``matching`` once its
payment is ``authorized``, to ``payment_failed`` once it is ``declined``, and gives up
(``payment_failed``, hold released) after ``AUTHORIZATION_TIMEOUT_S``.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import timedelta

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dispatch.models import RideStatus
from dispatch.schemas import RideRead
from dispatch.service import RideCharge, RideService
from infra.clock import Clock
from infra.db import transaction
from infra.errors import DomainError
from infra.events import EventBuffer
from infra.logging import get_logger
from infra.pubsub import publish_events
from payments.errors import (
    CardAuthenticationRequired,
    CardDeclined,
    PaymentMethodRequired,
    PaymentRequestRejected,
    RidePaymentNotFound,
    RiderHasUnpaidFare,
)
from payments.flows import PaymentFlows, hold_amount
from payments.money import Money
from payments.schemas import RidePaymentRead
from payments.service import PaymentService

log = get_logger(__name__)
R = RideStatus

# A rider waits no longer than the longest search for a driver (90-300 s in real
# systems) for a card hold that Stripe does not answer.
AUTHORIZATION_TIMEOUT_S = 300
# A requested ride younger than this may still be in its request's own authorization.
AUTHORIZATION_IN_FLIGHT_S = 30
# Refusals that end a ride before dispatch.
PAYMENT_REFUSALS = (
    CardDeclined,
    CardAuthenticationRequired,
    PaymentRequestRejected,
    RiderHasUnpaidFare,
    PaymentMethodRequired,
)


class RideFlows:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        payments: PaymentFlows,
        clock: Clock,
        redis: Redis,
        authorization_timeout_s: int = AUTHORIZATION_TIMEOUT_S,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.payments = payments
        self.clock = clock
        self.redis = redis
        self.authorization_timeout_s = authorization_timeout_s

    @asynccontextmanager
    async def rides(self) -> AsyncIterator[RideService]:
        """One transaction with a RideService; its events are published after the
        commit, and dropped if it rolls back."""
        events = EventBuffer()
        async with transaction(self.sessionmaker) as session:
            yield RideService(session, self.clock, events, self.redis)
        await publish_events(self.redis, events.drain())

    # Requesting.

    async def request_ride(
        self, rider_id: uuid.UUID, quote_id: uuid.UUID, idempotency_key: str
    ) -> tuple[RideRead, bool]:
        """Requests a ride (or replays the request with the same key) and holds its
        upfront price on the rider's card. Returns the ride and whether it is new.

        A refused payment (declined card, no card, an unpaid fare) ends the ride as
        ``payment_failed`` and raises the refusal. Stripe down leaves it ``requested``.
        """
        async with self.rides() as rides:
            ride = await rides.find_request(rider_id, idempotency_key, quote_id)
            created = False
            if ride is None:
                ride, created = await rides.request(rider_id, quote_id, idempotency_key)
                if created:
                    # Refused before anything is stored: the quote stays usable once the
                    # rider has saved a card or paid what they owe.
                    await self._require_payable(rides.session, rider_id, ride)
        if ride.status == R.requested:
            ride = await self._authorize(ride)
        return ride, created

    async def _require_payable(
        self, session: AsyncSession, rider_id: uuid.UUID, ride: RideRead
    ) -> None:
        payments = PaymentService(session, self.clock)
        if await payments.unpaid(rider_id, [ride.upfront_fare.currency]):
            raise RiderHasUnpaidFare
        customer = await payments.customer(rider_id)
        if customer is None or customer.default_payment_method_id is None:
            raise PaymentMethodRequired

    async def _authorize(self, ride: RideRead) -> RideRead:
        upfront = Money(ride.upfront_fare.total, ride.upfront_fare.currency)
        try:
            payment = await self.payments.authorize_ride(
                ride.id, ride.rider_id, hold_amount(upfront)
            )
        except PAYMENT_REFUSALS as refused:
            async with self.rides() as rides:
                await rides.payment_failed(ride.id, refused.type)
            raise
        return await self._follow(ride.id, payment)

    async def _follow(self, ride_id: uuid.UUID, payment: RidePaymentRead) -> RideRead:
        """Moves a requested ride on by what its payment became."""
        if payment.status == "authorized":
            async with self.rides() as rides:
                ride = await rides.open_for_matching(ride_id)
            if ride.status == R.cancelled_by_rider:
                # Cancelled while Stripe was authorizing: the hold must not stay.
                await self._release(ride_id, ride.driver_id)
            return ride
        if payment.status == "declined":
            async with self.rides() as rides:
                return await rides.payment_failed(ride_id, payment.failure_code or "declined")
        async with self.rides() as rides:
            return await rides.get(ride_id)

    async def promote_authorized(self, limit: int = 100) -> int:
        """Moves on every ride waiting in ``requested`` whose payment got an answer
        (see the module docstring); returns how many moved. Run by the worker."""
        async with self.rides() as rides:
            waiting = await rides.waiting_for_payment(limit)
        moved = 0
        for ride in waiting:
            try:
                after = await self._promote(ride)
            except PAYMENT_REFUSALS:
                moved += 1
                continue
            except Exception:
                log.exception("ride_promotion_failed", ride_id=str(ride.id))
                continue
            moved += after.status != R.requested
        return moved

    async def _promote(self, ride: RideRead) -> RideRead:
        age = self.clock.now() - ride.requested_at
        try:
            payment = await self.payments.read(ride.id)
        except RidePaymentNotFound:
            if age < timedelta(seconds=AUTHORIZATION_IN_FLIGHT_S):
                return ride
            # The request stopped between committing the ride and asking for the hold.
            return await self._authorize(ride)
        if payment.status == "authorizing" and age >= timedelta(
            seconds=self.authorization_timeout_s
        ):
            async with self.rides() as rides:
                failed = await rides.payment_failed(ride.id, "authorization_timeout")
            await self._release(ride.id, None)
            return failed
        return await self._follow(ride.id, payment)

    # Ending a ride.

    async def complete_trip(self, ride_id: uuid.UUID, driver_id: uuid.UUID) -> RideRead:
        """Completes and prices the trip, commits, then captures the fare and pays the
        driver. Repeating it settles the same fare again (Stripe acts once)."""
        async with self.rides() as rides:
            charge = await rides.complete(ride_id, driver_id)
            assert charge.fare is not None
            assert charge.split is not None
            fare, split = charge.fare, charge.split
            await self._open_payment_step(
                rides.session, lambda p: p.open_capture(ride_id, driver_id, fare, split)
            )
        assert charge.fare is not None
        assert charge.split is not None
        await self.payments.settle_ride(ride_id, driver_id, charge.fare, charge.split)
        return charge.ride

    async def cancel(
        self,
        ride_id: uuid.UUID,
        rider_id: uuid.UUID,
        reason: str | None,
        accept_fee_amount: int | None = None,
    ) -> RideRead:
        """The rider cancels: commits, then releases the hold or captures the fee."""
        async with self.rides() as rides:
            charge = await rides.cancel_by_rider(ride_id, rider_id, reason, accept_fee_amount)
            await self._open_cancellation(rides.session, charge)
        await self._settle_charge(charge)
        return charge.ride

    async def no_show(self, ride_id: uuid.UUID, driver_id: uuid.UUID) -> RideRead:
        """The driver reports a no-show: commits, then captures the no-show fee."""
        async with self.rides() as rides:
            charge = await rides.no_show(ride_id, driver_id)
            await self._open_cancellation(rides.session, charge)
        await self._settle_charge(charge)
        return charge.ride

    async def no_driver_found(self, ride_id: uuid.UUID) -> RideRead:
        """For the dispatcher, when a request times out: the ride ends, the hold goes."""
        async with self.rides() as rides:
            ride = await rides.no_driver_found(ride_id)
            await self._open_payment_step(
                rides.session, lambda p: p.open_cancellation(ride_id, None, None, None)
            )
        await self._release(ride_id, None)
        return ride

    async def _open_cancellation(self, session: AsyncSession, charge: RideCharge) -> None:
        ride_id, driver_id = charge.ride.id, charge.driver_id
        fee, split = (charge.fare, charge.split) if charge.fare is not None else (None, None)
        await self._open_payment_step(
            session, lambda p: p.open_cancellation(ride_id, driver_id, fee, split)
        )

    async def _open_payment_step(
        self, session: AsyncSession, step: Callable[[PaymentService], Awaitable[object]]
    ) -> None:
        """Records the payment step the ride's new state calls for (capture the fare,
        capture the fee, release the hold) in the ride's own transaction: if this process
        dies before taking the step, the payments worker finds it due and takes it, with
        its key. A payment that refuses it (none, or in no state for it) is left to the
        step itself, taken after the commit, which reports it as before."""
        try:
            async with session.begin_nested():
                await step(PaymentService(session, self.clock))
        except DomainError as refused:
            log.info("payment_step_not_opened", error=refused.type)

    async def _settle_charge(self, charge: RideCharge) -> None:
        if charge.fare is None:
            await self._release(charge.ride.id, charge.driver_id)
            return
        await self.payments.cancel_ride(charge.ride.id, charge.driver_id, charge.fare, charge.split)

    async def _release(self, ride_id: uuid.UUID, driver_id: uuid.UUID | None) -> None:
        try:
            await self.payments.cancel_ride(ride_id, driver_id, None, None)
        except RidePaymentNotFound:
            # The hold was never asked for: nothing to release.
            return
