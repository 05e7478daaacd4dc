"""Offers: a matching window's assignments, made to drivers, who accept or decline them.

PostgreSQL decides; Redis only carries. An offer is a row in ``offers``; the partial
unique indexes let a ride and a driver hold one live (``offered``) offer each, so two
dispatchers that both chose the same driver cannot both make an offer. Every answer is a
compare-and-set on the offer's row:

- accept: ``offered -> accepted`` for the offer's own driver and before ``expires_at``,
  then the ride's own compare-and-set ``matching -> driver_assigned``
  (``RideService.assign``) in the same transaction, so exactly one driver gets a ride and
  only through a live offer. Accepting again answers the same acceptance (a retry after
  a lost reply must not read as a loss); another driver's offer is ``OfferNotYours``
  (403); an offer no longer open is ``OfferExpired`` (409).
- decline: ``offered -> declined``; the ride stays in matching and excludes the driver,
  so the next window offers it to someone else.
- expiry: the dispatcher marks offers past ``expires_at`` as ``expired`` and excludes
  their drivers the same way; until then an offer past its time cannot be accepted.

Whatever changes a ride and its offers locks the ride's row first (see the repository),
as the ride's own transitions do, so concurrent answers and cancellations queue up
instead of deadlocking.

After the commit, and only then: offers are pushed to the driver's outbox with a nudge
on the driver's pub/sub channel, so the api worker holding their websocket sends it at
once (``LiveState.deliver_to_drivers``), and put in the live state with their TTL; an
accepted offer's driver is marked busy and linked to the ride (``LiveState.set_trip``),
so their positions reach the rider. ``OfferFlows`` is that boundary for the driver's
websocket and the HTTP fallbacks.
"""

from __future__ import annotations

import asyncio
import math
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dispatch.errors import OfferExpired, OfferNotFound, OfferNotYours, RideNotFound
from dispatch.live import LiveState, LiveTrip
from dispatch.models import Offer
from dispatch.repository import OFFERED, NewOffer, OfferDetails, OfferRepository
from dispatch.schemas import OfferAcceptance, OfferRead, RideRead
from dispatch.service import RideService
from infra.clock import Clock
from infra.db import transaction
from infra.events import EventBuffer
from infra.ids import new_id
from infra.logging import get_logger
from infra.pubsub import publish_events

log = get_logger(__name__)

T = TypeVar("T")

OFFER_FRAME = "offer"
# Redis calls in flight at once when a window's offers enter or leave the live state:
# enough to hide the round trips, few enough not to open a connection per offer.
ANNOUNCE_CONCURRENCY = 16


@dataclass(frozen=True, slots=True)
class PlannedOffer:
    """One pair a matching window chose, before it becomes an offer."""

    ride_id: uuid.UUID
    driver_id: uuid.UUID
    decision_id: uuid.UUID
    pickup_eta_s: float


@dataclass(frozen=True, slots=True)
class MadeOffer:
    offer: OfferRead
    details: OfferDetails

    def frame(self) -> dict[str, Any]:
        """What the driver's app shows: where, how far, the fare, and until when."""
        offer, details = self.offer, self.details
        return {
            "type": OFFER_FRAME,
            "offer_id": str(offer.id),
            "ride_id": str(offer.ride_id),
            "pickup": {"lat": details.pickup[0], "lng": details.pickup[1]},
            "dropoff": {"lat": details.dropoff[0], "lng": details.dropoff[1]},
            "pickup_eta_s": offer.pickup_eta_s,
            "trip_distance_m": details.trip_distance_m,
            "trip_duration_s": details.trip_duration_s,
            "fare": {"amount": details.fare_amount, "currency": details.currency},
            "offered_at": offer.offered_at.isoformat(),
            "expires_at": offer.expires_at.isoformat(),
        }


@dataclass(frozen=True, slots=True)
class Acceptance:
    result: OfferAcceptance
    # False when this was a repeat of an acceptance already made.
    accepted_now: bool


def offer_read(offer: Offer) -> OfferRead:
    return OfferRead.model_validate(offer, from_attributes=True)


class OfferService:
    def __init__(
        self,
        session: AsyncSession,
        clock: Clock,
        live: LiveState,
        events: EventBuffer | None = None,
    ) -> None:
        self.session = session
        self.clock = clock
        self.live = live
        self.events = events if events is not None else EventBuffer()
        self.offers = OfferRepository(session)
        self.rides = RideService(session, clock, self.events, live.redis)

    async def create(
        self,
        planned: Sequence[PlannedOffer],
        now: datetime,
        details: Mapping[uuid.UUID, OfferDetails] | None = None,
    ) -> list[MadeOffer]:
        """Makes the planned offers, expiring ``offer_ttl_s`` after ``now``, and returns
        those made: a ride or a driver that already holds a live offer gets none, nor a
        ride that left matching or excludes the driver since the window read it, nor a
        driver who took a ride meanwhile (``OfferRepository.insert_live``). ``details``
        (from :meth:`details`, read before matching so that it does not delay the
        offers) is read here if missing."""
        expires_at = self.live.offer_expiry(now)
        wanted = [
            NewOffer(
                id=new_id(),
                ride_id=plan.ride_id,
                driver_id=plan.driver_id,
                decision_id=plan.decision_id,
                pickup_eta_s=math.ceil(plan.pickup_eta_s),
            )
            for plan in planned
        ]
        stored = await self.offers.insert_live(wanted, now, expires_at)
        made = [offer for offer in wanted if offer.id in stored]
        known = dict(details or {})
        missing = [offer.ride_id for offer in made if offer.ride_id not in known]
        if missing:
            known.update(await self.offers.details(missing))
        return [
            MadeOffer(
                OfferRead(
                    id=offer.id,
                    ride_id=offer.ride_id,
                    driver_id=offer.driver_id,
                    decision_id=offer.decision_id,
                    status=OFFERED,
                    pickup_eta_s=offer.pickup_eta_s,
                    offered_at=now,
                    expires_at=expires_at,
                    responded_at=None,
                ),
                known[offer.ride_id],
            )
            for offer in made
        ]

    async def details(self, ride_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, OfferDetails]:
        """What offers for these rides would tell their drivers."""
        return await self.offers.details(ride_ids)

    async def accept(self, offer_id: uuid.UUID, driver_id: uuid.UUID) -> Acceptance:
        """The driver takes the ride offered (see the module docstring)."""
        offer = await self._own_offer(offer_id, driver_id)
        await self.offers.lock_ride(offer.ride_id)
        now = self.clock.now()
        accepted = await self.offers.respond(offer_id, driver_id, "accepted", now, unexpired=True)
        if accepted is None:
            current = await self._own_offer(offer_id, driver_id)
            if current.status != "accepted":
                raise _no_longer_open(current, now)
            try:
                ride = await self.rides.read_for(current.ride_id, driver_id)
            except RideNotFound as exc:
                # Accepted, then given up: the offer is not the driver's to act on any more.
                raise OfferExpired("You accepted this ride, then gave it up") from exc
            return Acceptance(OfferAcceptance(offer=offer_read(current), ride=ride), False)
        ride = await self.rides.assign(accepted.ride_id, driver_id, accepted.id)
        return Acceptance(
            OfferAcceptance(offer=offer_read(accepted), ride=_without_pin(ride)), True
        )

    async def decline(self, offer_id: uuid.UUID, driver_id: uuid.UUID) -> OfferRead:
        """The driver says no: the ride goes to the next window without them. Declining
        again answers the same; an offer already accepted, withdrawn or expired is
        ``OfferExpired``."""
        offer = await self._own_offer(offer_id, driver_id)
        await self.offers.lock_ride(offer.ride_id)
        now = self.clock.now()
        declined = await self.offers.respond(offer_id, driver_id, "declined", now, unexpired=False)
        if declined is None:
            current = await self._own_offer(offer_id, driver_id)
            if current.status == "declined":
                return offer_read(current)
            raise _no_longer_open(current, now)
        await self.offers.exclude_driver(declined.ride_id, driver_id)
        return offer_read(declined)

    async def expire_due(self, now: datetime, regions: Sequence[str]) -> list[OfferRead]:
        """Offers of rides in ``regions`` unanswered by their ``expires_at`` become
        ``expired``; their rides exclude their drivers from then on."""
        expired = await self.offers.expire_due(now, regions)
        for offer in expired:
            await self.offers.exclude_driver(offer.ride_id, offer.driver_id)
        return [offer_read(offer) for offer in expired]

    async def _own_offer(self, offer_id: uuid.UUID, driver_id: uuid.UUID) -> Offer:
        offer = await self.offers.get(offer_id)
        if offer is None:
            raise OfferNotFound
        if offer.driver_id != driver_id:
            raise OfferNotYours
        return offer


def _no_longer_open(offer: Offer, now: datetime) -> OfferExpired:
    if offer.status == OFFERED:
        return OfferExpired(
            f"The offer expired at {offer.expires_at.isoformat()}",
            offer_status="expired",
            expired_at=offer.expires_at.isoformat(),
        )
    return OfferExpired(f"The offer is {offer.status}", offer_status=offer.status)


def _without_pin(ride: RideRead) -> RideRead:
    # The PIN is the rider's to tell, never the driver's to read.
    return ride.model_copy(update={"pin": None})


# After the commit.


async def push(live: LiveState, made: Sequence[MadeOffer]) -> None:
    """Pushes committed offers to their drivers in one round trip
    (``LiveState.deliver_to_drivers``): every frame into its driver's outbox and out on
    their channel with its message id, as :func:`deliver` does one. A push that fails is
    logged: the offer stands, and the driver's app finds it in its outbox on reconnect
    or lets it expire."""
    if not made:
        return
    try:
        await live.deliver_to_drivers([(offer.offer.driver_id, offer.frame()) for offer in made])
    except Exception:
        log.exception("offer_push_failed", offers=len(made))


async def remember(live: LiveState, made: Sequence[MadeOffer]) -> None:
    """Puts committed offers in the live state, with their TTL."""

    async def put(offer: OfferRead) -> None:
        try:
            await live.put_offer(offer.id, offer.ride_id, offer.driver_id, offer.expires_at)
        except Exception:
            log.exception("offer_live_state_failed", offer_id=str(offer.id))

    await _bounded(put(offer.offer) for offer in made)


async def deliver(live: LiveState, driver_id: uuid.UUID, frame: dict[str, Any]) -> str:
    """Stores the frame in the driver's outbox until they acknowledge it, and nudges the
    api worker holding their websocket with it (and its message id) over pub/sub."""
    (message_id,) = await live.deliver_to_drivers([(driver_id, frame)])
    return message_id


async def forget(live: LiveState, offers: Iterable[OfferRead]) -> None:
    """Drops answered or expired offers from the live state."""
    await _bounded(live.take_offer(offer.id) for offer in offers)


async def _bounded(calls: Iterable[Awaitable[Any]]) -> None:
    pending = iter(calls)

    async def worker() -> None:
        for call in pending:
            await call

    await asyncio.gather(*(worker() for _ in range(ANNOUNCE_CONCURRENCY)))


class OfferFlows:
    """Accepting and declining as their own transactions, with what follows the commit:
    events to the rider, the live state updated. The driver's websocket and the HTTP
    fallbacks both answer through here."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        clock: Clock,
        live: LiveState,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.clock = clock
        self.live = live

    async def accept(self, offer_id: uuid.UUID, driver_id: uuid.UUID) -> OfferAcceptance:
        acceptance = await self._run(lambda offers: offers.accept(offer_id, driver_id))
        ride = acceptance.result.ride
        await self.live.take_offer(offer_id)
        await self.live.mark_busy(driver_id)
        if ride.status == "driver_assigned" and ride.driver_id == driver_id:
            # From now on the driver's positions are the ride's breadcrumbs and reach its
            # rider (dispatch.channel).
            await self.live.set_trip(
                driver_id,
                LiveTrip(ride.id, ride.rider_id, ride.status, ride.pickup.lat, ride.pickup.lng),
            )
        return acceptance.result

    async def decline(self, offer_id: uuid.UUID, driver_id: uuid.UUID) -> OfferRead:
        declined = await self._run(lambda offers: offers.decline(offer_id, driver_id))
        await self.live.take_offer(offer_id)
        return declined

    async def _run(self, act: Callable[[OfferService], Awaitable[T]]) -> T:
        events = EventBuffer()
        async with transaction(self.sessionmaker) as session:
            result = await act(OfferService(session, self.clock, self.live, events))
        await publish_events(self.live.redis, events.drain())
        return result
