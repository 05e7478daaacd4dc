"""The driver channel: what a driver's app and the server say to each other over the
driver websocket (``/v1/drivers/ws``), without the websocket. The api wraps a
:class:`DriverChannel` per connection in ``api.websocket.serve``.

Frames from the app (JSON objects with a ``type``; any may carry an ``id``, a string of
at most 64 characters or an integer, echoed as ``ref`` in its reply):

==============  ===========================================  ============================
``type``        fields                                       reply
==============  ===========================================  ============================
``go_online``   ``lat``, ``lng``                             ``ok`` with ``status``
                                                             (``available``, or ``busy``
                                                             mid-trip), ``region``,
                                                             ``shift_id``
``go_offline``                                               ``ok``
``location``    ``lat``, ``lng``, ``recorded_at`` (ISO       none (``ok`` if it has an
                8601 with offset); ``heading`` (degrees),    ``id``)
                ``speed`` (m/s), ``accuracy`` (m) optional
``heartbeat``                                                none (``ok`` if it has an
                                                             ``id``)
``ack``         ``message_id``                               none (``ok`` if it has an
                                                             ``id``)
``accept``      ``offer_id``                                 ``ok`` with ``offer`` and
                                                             ``ride``
``decline``     ``offer_id``                                 ``ok`` with ``offer``
==============  ===========================================  ============================

A refused frame gets ``{"type": "error", "code", "detail", "ref", "status"}``, changes
nothing stored, and the connection stays open. Codes: ``unknown-type``,
``invalid-frame`` (with ``invalid_params``), ``not-online`` (positions and heartbeats
need ``go_online`` on this connection first), a position's rejection code from
``dispatch.locations`` (``coordinates-out-of-range``, ``timestamp-in-future``,
``timestamp-stale``, ``out-of-order``, ``impossible-speed``, ...), ``unknown-message``
(an ``ack`` of no message waiting), ``driver-on-trip`` (``go_offline`` with a ride under
way), the offer's problem types (``offer-not-found``, ``offer-not-yours`` 403,
``offer-expired`` 409), and ``service-unavailable`` when the database or Redis fails.

The server pushes offers (``type: offer``, from ``dispatch.offers``) and trip updates
(``type: event``, the ride's events, put there by :func:`after_ride_events` after each
commit) from the driver's outbox (``LiveState.deliver_to_drivers``), each with its
``message_id``, oldest first. The app acknowledges each with ``ack``; what it did not
acknowledge is pushed again after a reconnect. The pub/sub nudge that comes with each
push (``dispatch.offers.deliver``) carries the push itself: once the connection has
looked in the outbox, it is sent from the nudge at once, and the connection looks in the
outbox ``look_after_sent_ahead_s`` later (not at once: a window's offers reach a
process's sockets together, and their frames go first) for anything sent before it
whose nudge was lost. A heartbeat also makes it look, so a nudge lost with a broken
pub/sub connection delays a push by at most a heartbeat. Other notifications of the
driver's user channel (membership changes, revoked sessions) are passed on as they come,
as on ``/v1/ws``; a ride event naming the driver is not, as it comes through the
outbox.

Positions: each is validated against the connection's last accepted one
(``validate_update``); accepted ones update the live state through
:class:`LocationIngest`, which gathers the positions of every connection of the process
into one Redis pipeline per round trip. A driver on a trip (``LiveState.trip_of``) also
leaves breadcrumbs (``dispatch.breadcrumbs``) and their rider, and only their rider, gets
``driver_position`` frames on their user channel, at most one per
``tracking_interval_s``, with the pickup ETA until the driver arrives. A heartbeat keeps
the driver live at their last position. A driver not heard from for ``liveness_s``
gets no offers (``LiveState``).

Shifts: ``go_online`` opens a shift for this connection (``driver_shifts``),
``go_offline`` and the end of the connection close it; a driver's time online is the
union of their shifts, so a reconnect that overlaps the old connection counts once and
the old connection's end does not cut the new one short. The end of a connection
leaves the live state alone: a driver whose app reconnects within ``liveness_s`` loses
nothing, and one who does not drops out of offers by liveness.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Annotated, Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dispatch.breadcrumbs import BreadcrumbWriter
from dispatch.events import RideDomainEvent
from dispatch.live import LiveState, LiveTrip, TripStatus
from dispatch.locations import (
    LocationLimits,
    LocationUpdate,
    Rejected,
    haversine_m,
    jump_from,
    storable_coordinates,
    validate_update,
)
from dispatch.offers import OfferFlows, deliver
from dispatch.regions import region_of
from dispatch.repository import ShiftRepository
from dispatch.schemas import (
    LocationBatch,
    LocationBatchRead,
    LocationIn,
    LocationResult,
    RideRead,
)
from dispatch.service import StraightLineRoutes
from infra.clock import Clock
from infra.db import transaction
from infra.errors import DomainError
from infra.events import DomainEvent
from infra.fanout import Fanout
from infra.logging import get_logger
from infra.pubsub import publish, user_channel
from infra.settings import DispatchSettings

log = get_logger(__name__)

Frame = dict[str, Any]
FrameId = Annotated[str, Field(max_length=64)] | int | None

# Positions of every connection of the process stored per Redis round trip, at most.
INGEST_BATCH = 500
DRIVER_POSITION = "driver_position"
OUTBOX_RETRY_S = 1.0
# After sending a push straight from its nudge, the connection looks in the outbox this
# much later for older pushes whose nudge was lost.
LOOK_AFTER_SENT_AHEAD_S = 0.5
# A ride's statuses while a trip links its driver to it.
_UNDER_WAY: dict[str, TripStatus] = {
    "driver_assigned": "driver_assigned",
    "driver_arrived": "driver_arrived",
    "in_progress": "in_progress",
}


# Frames from the app.


class _Frame(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: FrameId = None


class GoOnline(_Frame):
    type: Literal["go_online"]
    lat: float
    lng: float


class GoOffline(_Frame):
    type: Literal["go_offline"]


class LocationFrame(LocationIn):
    type: Literal["location"]
    id: FrameId = None


class Heartbeat(_Frame):
    type: Literal["heartbeat"]


class Ack(_Frame):
    type: Literal["ack"]
    message_id: str = Field(max_length=64)


class AcceptOffer(_Frame):
    type: Literal["accept"]
    offer_id: uuid.UUID


class DeclineOffer(_Frame):
    type: Literal["decline"]
    offer_id: uuid.UUID


_FRAMES: dict[str, type[BaseModel]] = {
    "go_online": GoOnline,
    "go_offline": GoOffline,
    "location": LocationFrame,
    "heartbeat": Heartbeat,
    "ack": Ack,
    "accept": AcceptOffer,
    "decline": DeclineOffer,
}


class FrameRefused(Exception):
    """A frame the channel will not act on; becomes an ``error`` frame."""

    def __init__(self, code: str, detail: str, status: int = 422, **extra: Any) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.status = status
        self.extra = extra


def error_frame(
    code: str, detail: str, ref: FrameId, status: int | None = None, **extra: Any
) -> Frame:
    frame: Frame = {"type": "error", "code": code, "detail": detail, "ref": ref}
    if status is not None:
        frame["status"] = status
    return {**extra, **frame}


def ok_frame(ref: FrameId, **data: Any) -> Frame:
    return {**data, "type": "ok", "ref": ref}


def location_update(position: LocationIn) -> LocationUpdate:
    return LocationUpdate(
        lat=position.lat,
        lng=position.lng,
        heading_deg=position.heading,
        speed_mps=position.speed,
        accuracy_m=position.accuracy,
        recorded_at=position.recorded_at,
    )


def location_limits(settings: DispatchSettings) -> LocationLimits:
    return LocationLimits(
        max_clock_skew_s=settings.location_max_clock_skew_s,
        max_age_s=settings.location_max_age_s,
        max_speed_mps=settings.location_max_speed_mps,
    )


# What the channel works with.


class OfferAnswers(Protocol):
    """Accepting and declining offers (``dispatch.offers.OfferFlows``): each its own
    transaction, raising the offer's domain errors."""

    async def accept(self, offer_id: uuid.UUID, driver_id: uuid.UUID) -> BaseModel: ...

    async def decline(self, offer_id: uuid.UUID, driver_id: uuid.UUID) -> BaseModel: ...


class ShiftLog:
    """Shifts online, each change in a transaction of its own."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self.sessionmaker = sessionmaker

    async def open(self, driver_id: uuid.UUID, now: datetime) -> uuid.UUID:
        async with transaction(self.sessionmaker) as session:
            return await ShiftRepository(session).open(driver_id, now)

    async def close(self, shift_id: uuid.UUID, now: datetime) -> bool:
        async with transaction(self.sessionmaker) as session:
            return await ShiftRepository(session).close(shift_id, now)


@dataclass(slots=True)
class _Waiting:
    driver_id: uuid.UUID
    update: LocationUpdate
    now: datetime
    stored: asyncio.Future[tuple[str | None, LiveTrip | None]]


class LocationIngest:
    """Stores the positions of every connection of an api process: those that arrive
    while a round trip is under way wait and go together in the next pipeline
    (``LiveState.update_locations_with_trips``), so Redis and its client see a few large
    pipelines instead of a round trip per ping. Each caller waits for its own result."""

    def __init__(self, live: LiveState, max_batch: int = INGEST_BATCH) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self.live = live
        self.max_batch = max_batch
        self.stored = 0
        self.round_trips = 0
        self._waiting: list[_Waiting] = []
        self._draining: asyncio.Task[None] | None = None

    async def store(
        self, driver_id: uuid.UUID, update: LocationUpdate, now: datetime
    ) -> tuple[str | None, LiveTrip | None]:
        """The driver's region (None if they are not online, and nothing was stored) and
        the trip they are on (None if none)."""
        stored: asyncio.Future[tuple[str | None, LiveTrip | None]]
        stored = asyncio.get_running_loop().create_future()
        self._waiting.append(_Waiting(driver_id, update, now, stored))
        if self._draining is None or self._draining.done():
            self._draining = asyncio.create_task(self._drain(), name="location-ingest")
        return await stored

    async def _drain(self) -> None:
        while self._waiting:
            batch = self._waiting[: self.max_batch]
            del self._waiting[: self.max_batch]
            try:
                results = await self.live.update_locations_with_trips(
                    [(item.driver_id, item.update) for item in batch],
                    max(item.now for item in batch),
                )
            except Exception as exc:
                for item in batch:
                    if not item.stored.done():
                        item.stored.set_exception(exc)
                continue
            self.round_trips += 1
            self.stored += len(batch)
            for item, result in zip(batch, results, strict=True):
                # A caller whose connection closed meanwhile no longer waits.
                if not item.stored.done():
                    item.stored.set_result(result)


def driver_position_frame(
    driver_id: uuid.UUID, update: LocationUpdate, trip: LiveTrip, routes: StraightLineRoutes
) -> Frame:
    """What the rider of ``trip`` is told of their driver's position; with the ETA to
    the pickup while the driver is on the way."""
    eta_s = None
    if trip.status == "driver_assigned":
        eta_s = routes.pickup_eta_s(
            haversine_m(update.lat, update.lng, trip.pickup_lat, trip.pickup_lng)
        )
    return {
        "type": DRIVER_POSITION,
        "ride_id": str(trip.ride_id),
        "driver_id": str(driver_id),
        "ride_status": trip.status,
        "lat": update.lat,
        "lng": update.lng,
        "heading": update.heading_deg,
        "speed": update.speed_mps,
        "recorded_at": update.recorded_at.isoformat(),
        "pickup_eta_s": eta_s,
    }


class DriverChannels:
    """What an api process holds for its drivers' channels: the live state, the shared
    location ingest, the pub/sub fan-out to its sockets, the breadcrumb writer, shifts
    and offers. ``start`` and ``stop`` with the process (``stop`` writes the breadcrumbs
    still waiting)."""

    def __init__(
        self,
        *,
        live: LiveState,
        clock: Clock,
        sessionmaker: async_sessionmaker[AsyncSession],
        settings: DispatchSettings,
        offers: OfferAnswers,
        breadcrumbs: BreadcrumbWriter,
    ) -> None:
        self.live = live
        self.clock = clock
        self.settings = settings
        self.offers = offers
        self.breadcrumbs = breadcrumbs
        self.shifts = ShiftLog(sessionmaker)
        self.ingest = LocationIngest(live)
        self.fanout = Fanout(live.redis)
        self.limits = location_limits(settings)
        self.batch_limits = replace(self.limits, max_age_s=settings.location_batch_max_age_s)
        self.routes = StraightLineRoutes()
        # Connections open in this process, for metrics and for tests to wait on.
        self.connected = 0

    @classmethod
    def create(
        cls,
        redis: Redis,
        sessionmaker: async_sessionmaker[AsyncSession],
        clock: Clock,
        settings: DispatchSettings,
    ) -> DriverChannels:
        live = LiveState(redis, liveness_s=settings.liveness_s, offer_ttl_s=settings.offer_ttl_s)
        return cls(
            live=live,
            clock=clock,
            sessionmaker=sessionmaker,
            settings=settings,
            offers=OfferFlows(sessionmaker, clock, live),
            breadcrumbs=BreadcrumbWriter.from_settings(sessionmaker, clock, settings),
        )

    async def start(self) -> None:
        await self.fanout.start()
        await self.breadcrumbs.start()

    async def stop(self) -> None:
        try:
            await self.breadcrumbs.stop()
        finally:
            await self.fanout.stop()

    def connect(self, driver_id: uuid.UUID) -> DriverChannel:
        self.connected += 1
        return DriverChannel(driver_id, self)

    async def tell_rider(
        self, driver_id: uuid.UUID, update: LocationUpdate, trip: LiveTrip
    ) -> None:
        # The trip's rider's own channel, and no one else's: a rider sees a driver only
        # while a trip links them.
        frame = driver_position_frame(driver_id, update, trip, self.routes)
        await publish(self.live.redis, user_channel(trip.rider_id), frame)

    async def upload(self, driver_id: uuid.UUID, batch: LocationBatch) -> LocationBatchRead:
        """Positions an app kept while offline, oldest first. Each is validated against
        the one accepted before it, with ``location_batch_max_age_s`` for staleness. The
        newest accepted one becomes the live position only if the driver is online and
        it passes the live checks against the stored position (newer, fresh, no jump);
        every accepted one becomes a breadcrumb of the ride the driver is on, if any."""
        now = self.clock.now()
        previous: LocationUpdate | None = None
        accepted: list[LocationUpdate] = []
        results: list[LocationResult] = []
        for index, position in enumerate(batch.locations):
            update = location_update(position)
            verdict = validate_update(update, previous, now, self.batch_limits)
            if isinstance(verdict, Rejected):
                results.append(
                    LocationResult(
                        index=index,
                        accepted=False,
                        reason_code=verdict.reason_code,
                        detail=verdict.detail,
                    )
                )
                continue
            previous = update
            accepted.append(update)
            results.append(
                LocationResult(index=index, accepted=True, reason_code=None, detail=None)
            )
        live_updated = False
        trip = await self.live.trip_of(driver_id)
        if accepted:
            newest = accepted[-1]
            stored = await self.live.position(driver_id)
            if stored is not None and not isinstance(
                validate_update(newest, stored.location, now, self.limits), Rejected
            ):
                live_updated = await self.live.update_location(driver_id, newest, now) is not None
            if live_updated and trip is not None:
                await self.tell_rider(driver_id, newest, trip)
        if trip is not None:
            for update in accepted:
                self.breadcrumbs.add(trip.ride_id, driver_id, update, sampled=False)
        return LocationBatchRead(
            accepted=len(accepted),
            rejected=len(results) - len(accepted),
            results=results,
            live_position_updated=live_updated,
            ride_id=trip.ride_id if trip else None,
            breadcrumbs=len(accepted) if trip else 0,
        )


class DriverChannel:
    """One connection of one driver; see the module docstring."""

    def __init__(self, driver_id: uuid.UUID, channels: DriverChannels) -> None:
        self.driver_id = driver_id
        self.channels = channels
        self.live = channels.live
        self.online = False
        self.shift_id: uuid.UUID | None = None
        # The last position accepted on this connection, against which the next is
        # checked; the last position stored, which a heartbeat stores again.
        self.previous: LocationUpdate | None = None
        self.position: LocationUpdate | None = None
        self._told_rider_at: datetime | None = None
        # The newest outbox message sent on this connection, as (ms, sequence).
        self._delivered_through: tuple[int, int] | None = None
        # Outbox messages sent straight from their nudge, ahead of the outbox look that
        # moves ``_delivered_through`` past them.
        self._sent_ahead: set[str] = set()
        self._looked = False
        self._outbox_lock = asyncio.Lock()
        self._look_in_outbox = asyncio.Event()
        self.look_after_sent_ahead_s = LOOK_AFTER_SENT_AHEAD_S
        self._look_soon: asyncio.TimerHandle | None = None
        self._closed = False

    async def handle(self, message: Mapping[str, Any]) -> Frame | None:
        """Acts on one frame from the app; returns the reply, if any."""
        ref = message.get("id")
        ref = ref if isinstance(ref, str | int) and not isinstance(ref, bool) else None
        kind = message.get("type")
        try:
            model = _FRAMES.get(kind) if isinstance(kind, str) else None
            if model is None:
                raise FrameRefused("unknown-type", f"Unknown frame type {kind!r}", 400)
            try:
                frame = model.model_validate(message)
            except ValidationError as exc:
                raise _invalid(exc) from None
            return await self._act(frame)
        except FrameRefused as refused:
            return error_frame(refused.code, refused.detail, ref, refused.status, **refused.extra)
        except DomainError as exc:
            return error_frame(exc.type, exc.detail, ref, exc.status, **exc.extra)
        except Exception:
            log.exception("driver_frame_failed", driver_id=str(self.driver_id), type=kind)
            return error_frame(
                "service-unavailable", "The server could not act on this frame; retry", ref, 503
            )

    async def _act(self, frame: BaseModel) -> Frame | None:
        if isinstance(frame, LocationFrame):
            return await self._location(frame)
        if isinstance(frame, Heartbeat):
            return await self._heartbeat(frame)
        if isinstance(frame, Ack):
            if not await self.live.ack(self.driver_id, frame.message_id):
                raise FrameRefused(
                    "unknown-message", f"No message {frame.message_id!r} is waiting", 404
                )
            return ok_frame(frame.id) if frame.id is not None else None
        if isinstance(frame, GoOnline):
            return await self._go_online(frame)
        if isinstance(frame, GoOffline):
            return await self._go_offline(frame)
        if isinstance(frame, AcceptOffer):
            acceptance = await self.channels.offers.accept(frame.offer_id, self.driver_id)
            return ok_frame(frame.id, **acceptance.model_dump(mode="json"))
        assert isinstance(frame, DeclineOffer)
        declined = await self.channels.offers.decline(frame.offer_id, self.driver_id)
        return ok_frame(frame.id, offer=declined.model_dump(mode="json"))

    async def _location(self, frame: LocationFrame) -> Frame | None:
        if not self.online:
            raise _not_online()
        update = location_update(frame)
        now = self.channels.clock.now()
        verdict = validate_update(update, self.previous, now, self.channels.limits)
        if isinstance(verdict, Rejected):
            raise FrameRefused(verdict.reason_code, verdict.detail)
        if self.previous is None and self.position is not None:
            # The first after going online: not teleported from where that was.
            jump = jump_from(self.position, update, self.channels.limits)
            if jump is not None:
                raise FrameRefused(jump.reason_code, jump.detail)
        region, trip = await self.channels.ingest.store(self.driver_id, update, now)
        if region is None:
            self.online = False
            raise _not_online()
        self.previous = self.position = update
        if trip is not None:
            await self._on_trip(update, trip, now)
        return ok_frame(frame.id) if frame.id is not None else None

    async def _on_trip(self, update: LocationUpdate, trip: LiveTrip, now: datetime) -> None:
        self.channels.breadcrumbs.add(trip.ride_id, self.driver_id, update)
        interval = self.channels.settings.tracking_interval_s
        if (
            self._told_rider_at is not None
            and (now - self._told_rider_at).total_seconds() < interval
        ):
            return
        self._told_rider_at = now
        await self.channels.tell_rider(self.driver_id, update, trip)

    async def _heartbeat(self, frame: Heartbeat) -> Frame | None:
        if not self.online or self.position is None:
            raise _not_online()
        # Stored again as it was, so the driver stays live where they last were.
        region, _ = await self.channels.ingest.store(
            self.driver_id, self.position, self.channels.clock.now()
        )
        if region is None:
            self.online = False
            raise _not_online()
        self._look_in_outbox.set()
        return ok_frame(frame.id) if frame.id is not None else None

    async def _go_online(self, frame: GoOnline) -> Frame:
        if not storable_coordinates(frame.lat, frame.lng):
            raise FrameRefused(
                "coordinates-out-of-range",
                f"({frame.lat}, {frame.lng}) is not a place a driver can be",
            )
        now = self.channels.clock.now()
        here = LocationUpdate(frame.lat, frame.lng, None, None, None, now)
        stored = await self.live.position(self.driver_id)
        if stored is not None:
            # Back on a new connection (the last one dropped, or a second device): from
            # where the driver was last seen, not from anywhere.
            jump = jump_from(stored.location, here, self.channels.limits)
            if jump is not None:
                raise FrameRefused(jump.reason_code, jump.detail)
        if self.shift_id is None:
            self.shift_id = await self.channels.shifts.open(self.driver_id, now)
        region = region_of(frame.lat, frame.lng)
        status = await self.live.set_online(self.driver_id, region, frame.lat, frame.lng, now)
        self.online = True
        # The first position after going online is checked against this one with
        # ``jump_from`` only: this carries the server's time, not the device's.
        self.previous = None
        self.position = here
        return ok_frame(frame.id, status=status, region=region, shift_id=str(self.shift_id))

    async def _go_offline(self, frame: GoOffline) -> Frame:
        trip = await self.live.trip_of(self.driver_id)
        if trip is not None:
            raise FrameRefused(
                "driver-on-trip",
                "Finish or give up the ride under way before going offline",
                409,
                ride_id=str(trip.ride_id),
            )
        await self.live.set_offline(self.driver_id)
        self.online = False
        self.previous = self.position = None
        await self._close_shift()
        return ok_frame(frame.id)

    async def close(self) -> None:
        """The connection ended: the shift closes; the live state is left to liveness."""
        try:
            await self._close_shift()
        finally:
            if self._look_soon is not None:
                self._look_soon.cancel()
            if not self._closed:
                self._closed = True
                self.channels.connected -= 1

    async def _close_shift(self) -> None:
        if self.shift_id is not None:
            shift_id, self.shift_id = self.shift_id, None
            await self.channels.shifts.close(shift_id, self.channels.clock.now())

    # Pushes.

    async def undelivered(self) -> list[Frame]:
        """The driver's outbox messages not yet sent on this connection, oldest first:
        on the first call, every message not acknowledged (a reconnect's redelivery)."""
        async with self._outbox_lock:
            fresh = []
            for message in await self.live.unacked(self.driver_id):
                order = _stream_order(message.message_id)
                if self._delivered_through is None or order > self._delivered_through:
                    if message.message_id not in self._sent_ahead:
                        fresh.append({**message.body, "message_id": message.message_id})
                    self._delivered_through = order
            self._looked = True
            through = self._delivered_through
            self._sent_ahead = {
                m for m in self._sent_ahead if through is None or _stream_order(m) > through
            }
            return fresh

    async def outbox_frames(self) -> AsyncGenerator[Frame, None]:
        """Pushes from the outbox, for as long as the connection lasts. A failed look
        (Redis away) is tried again a moment later, not the end of the connection."""
        while True:
            try:
                frames = await self.undelivered()
            except Exception:
                log.warning("driver_outbox_unreadable", driver_id=str(self.driver_id))
                await asyncio.sleep(OUTBOX_RETRY_S)
                continue
            # Handed out and forgotten: a connection waiting for its next push keeps
            # none of those it sent (an idle socket would hold its last for hours).
            frames.reverse()
            while frames:
                yield frames.pop()
            await self._look_in_outbox.wait()
            self._look_in_outbox.clear()

    async def notifications(self, messages: AsyncIterator[Frame]) -> AsyncGenerator[Frame, None]:
        """The driver's user channel as the app should see it: an outbox nudge makes the
        connection look in the outbox; a ride event naming this driver comes through the
        outbox (with a message id), not here; anything else is passed on."""
        async for message in messages:
            message_id = message.get("message_id")
            if isinstance(message_id, str):
                if self._may_send_ahead(message_id):
                    # The nudge carries the whole push: sent now, without a round trip
                    # to the outbox. The look a moment later still finds anything a lost
                    # nudge left there, and does not send this one again.
                    self._sent_ahead.add(message_id)
                    self._look_later()
                    yield message
                else:
                    self._look_in_outbox.set()
            elif not self._comes_through_outbox(message):
                yield message
            # Not kept while waiting for the next: a nudge carries a whole push.
            del message

    def _look_later(self) -> None:
        if self._look_soon is None:
            self._look_soon = asyncio.get_running_loop().call_later(
                self.look_after_sent_ahead_s, self._look_now
            )

    def _look_now(self) -> None:
        self._look_soon = None
        self._look_in_outbox.set()

    def _may_send_ahead(self, message_id: str) -> bool:
        """A nudge's push may go out before the outbox is read once the connection has
        had its first look (which sends every unacknowledged message, in order) and if
        nothing sent it yet."""
        if not self._looked or not _STREAM_ID_SHAPE.match(message_id):
            return False
        through = self._delivered_through
        return (
            through is None or _stream_order(message_id) > through
        ) and message_id not in self._sent_ahead

    def _comes_through_outbox(self, message: Mapping[str, Any]) -> bool:
        data = message.get("data")
        return (
            message.get("type") == "event"
            and isinstance(data, dict)
            and "ride_id" in data
            and data.get("driver_id") == str(self.driver_id)
        )


# After a ride's transitions commit.


async def after_ride_events(live: LiveState, events: Iterable[DomainEvent]) -> int:
    """What a ride's committed events mean for its driver, called after the commit beside
    ``publish_events``: the trip link (``live:trip``) follows the ride (its status while
    under way; gone once the ride ends or goes back to matching; set at acceptance by
    ``OfferFlows``, which knows the pickup), and each event reaches the driver through
    their outbox, so the driver channel delivers it with a message id until
    acknowledged. Returns how many events were delivered."""
    delivered = 0
    for event in events:
        if not isinstance(event, RideDomainEvent) or event.driver_id is None:
            continue
        await _follow_ride(live, event.driver_id, event.ride_id, event.status)
        if event.driver_id in event.recipients():
            await deliver(live, event.driver_id, event.to_message())
            delivered += 1
    return delivered


async def ride_events_published(redis: Redis, events: Sequence[DomainEvent]) -> None:
    """The ``infra.pubsub.after_publish`` hook for rides: see ``after_ride_events``."""
    await after_ride_events(LiveState(redis), events)


async def _follow_ride(
    live: LiveState, driver_id: uuid.UUID, ride_id: uuid.UUID, status: str
) -> None:
    under_way = _UNDER_WAY.get(status)
    if under_way is None:
        await live.clear_trip(driver_id, ride_id)
        return
    trip = await live.trip_of(driver_id)
    if trip is not None and trip.ride_id == ride_id and trip.status != under_way:
        await live.set_trip(driver_id, replace(trip, status=under_way))


async def sync_trip(live: LiveState, driver_id: uuid.UUID, ride: RideRead) -> None:
    """Keeps ``live:trip:{driver_id}`` in step with the ride after one of its transitions
    committed: linked while the ride is assigned to the driver and not over, unlinked
    otherwise (completed, cancelled, given back to matching)."""
    status = _UNDER_WAY.get(ride.status)
    if ride.driver_id == driver_id and status is not None:
        await live.set_trip(
            driver_id,
            LiveTrip(
                ride_id=ride.id,
                rider_id=ride.rider_id,
                status=status,
                pickup_lat=ride.pickup.lat,
                pickup_lng=ride.pickup.lng,
            ),
        )
    else:
        await live.clear_trip(driver_id, ride.id)


_STREAM_ID_SHAPE = re.compile(r"^\d{1,20}-\d{1,20}$")


def _stream_order(message_id: str) -> tuple[int, int]:
    milliseconds, _, sequence = message_id.partition("-")
    return int(milliseconds), int(sequence or 0)


def _not_online() -> FrameRefused:
    return FrameRefused("not-online", "Send go_online on this connection first", 409)


def _invalid(exc: ValidationError) -> FrameRefused:
    params = [
        {"name": ".".join(str(part) for part in error["loc"]), "reason": error["msg"]}
        for error in exc.errors(include_url=False, include_input=False)
    ]
    first = params[0]
    return FrameRefused(
        "invalid-frame", f"{first['name']}: {first['reason']}", 422, invalid_params=params
    )
