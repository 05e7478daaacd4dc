"""Trip breadcrumbs: the positions of drivers on a trip, sampled, and written to PostGIS
in batches, never one transaction per ping.

Each api process holds one :class:`BreadcrumbWriter`. ``add`` is synchronous and cheap,
called for every accepted position of a driver on a trip (``LiveState.trip_of``). It
keeps a position when ``sample_s`` seconds have passed since the driver's last kept
position of the same ride, or when it lies more than ``min_move_m`` metres from it; the
first position of a ride is always kept. A stationary driver so leaves one point per
``sample_s``; a moving one a point per ping, which the trip's distance needs.

Kept positions wait in memory and are written as one statement
(``BreadcrumbRepository.add_many``) in a transaction of their own every ``flush_s``
seconds, or as soon as ``flush_max`` wait, and when the process stops. A write that fails
keeps its rows for the next one, up to ``max_pending`` (beyond, the oldest are dropped
and counted). What a crash loses is at most ``flush_s`` of positions: breadcrumbs refine
a trip's distance, and a trip with too few of them is priced from its estimate
(``dispatch.service``).

The distance and time of a ride's trip come from its breadcrumbs with PostGIS:
``RideRepository.track`` (the length on the spheroid of the line through them in time
order, and the time they span).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dispatch.locations import LocationUpdate, haversine_m
from dispatch.repository import BreadcrumbRepository, BreadcrumbRow
from infra.clock import Clock
from infra.db import transaction
from infra.logging import get_logger
from infra.settings import DispatchSettings

log = get_logger(__name__)

# Rows per INSERT: a backlog after an outage goes out in statements of bounded size.
STATEMENT_ROWS = 5_000
# Sampling state of a driver not heard from for this long is forgotten.
FORGET_AFTER = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class _Kept:
    ride_id: uuid.UUID
    lat: float
    lng: float
    recorded_at: datetime


class BreadcrumbSampler:
    """Decides which positions of a trip to keep; see the module docstring. Pure."""

    def __init__(self, sample_s: float, min_move_m: float) -> None:
        if sample_s < 0 or min_move_m < 0:
            raise ValueError("sample_s and min_move_m must be >= 0")
        self.sample_s = sample_s
        self.min_move_m = min_move_m
        self._last: dict[uuid.UUID, _Kept] = {}

    def keep(self, ride_id: uuid.UUID, driver_id: uuid.UUID, update: LocationUpdate) -> bool:
        """Whether to keep ``update``, a position of ``driver_id`` on ``ride_id``; a kept
        one becomes the reference for the driver's next."""
        last = self._last.get(driver_id)
        if last is not None and last.ride_id == ride_id:
            elapsed_s = (update.recorded_at - last.recorded_at).total_seconds()
            if elapsed_s <= 0:
                return False
            if elapsed_s < self.sample_s and (
                haversine_m(last.lat, last.lng, update.lat, update.lng) <= self.min_move_m
            ):
                return False
        self._last[driver_id] = _Kept(ride_id, update.lat, update.lng, update.recorded_at)
        return True

    def forget_before(self, moment: datetime) -> int:
        """Drops the state of drivers whose last kept position is older than ``moment``."""
        stale = [driver for driver, kept in self._last.items() if kept.recorded_at < moment]
        for driver in stale:
            del self._last[driver]
        return len(stale)


class BreadcrumbWriter:
    """Buffers the breadcrumbs of an api process and writes them in batches."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        clock: Clock,
        *,
        sample_s: float = 5.0,
        min_move_m: float = 30.0,
        flush_s: float = 2.0,
        flush_max: int = 1_000,
        max_pending: int = 100_000,
    ) -> None:
        if not flush_s > 0 or flush_max < 1 or max_pending < flush_max:
            raise ValueError("flush_s must be > 0, flush_max >= 1 and max_pending >= flush_max")
        self.sessionmaker = sessionmaker
        self.clock = clock
        self.sampler = BreadcrumbSampler(sample_s, min_move_m)
        self.flush_s = flush_s
        self.flush_max = flush_max
        self.max_pending = max_pending
        self.flushes = 0
        self.written = 0
        self.dropped = 0
        self._rows: list[BreadcrumbRow] = []
        self._lock = asyncio.Lock()
        self._full = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def from_settings(
        cls,
        sessionmaker: async_sessionmaker[AsyncSession],
        clock: Clock,
        settings: DispatchSettings,
    ) -> BreadcrumbWriter:
        return cls(
            sessionmaker,
            clock,
            sample_s=settings.breadcrumb_sample_s,
            min_move_m=settings.breadcrumb_min_move_m,
            flush_s=settings.breadcrumb_flush_s,
            flush_max=settings.breadcrumb_flush_max,
        )

    @property
    def pending(self) -> int:
        return len(self._rows)

    def add(
        self,
        ride_id: uuid.UUID,
        driver_id: uuid.UUID,
        update: LocationUpdate,
        *,
        sampled: bool = True,
    ) -> bool:
        """Queues the position as a breadcrumb of the ride if the sampler keeps it (or
        unconditionally when ``sampled`` is False); returns whether it was queued."""
        if sampled and not self.sampler.keep(ride_id, driver_id, update):
            return False
        self._rows.append(
            BreadcrumbRow(
                ride_id=ride_id,
                driver_id=driver_id,
                lat=update.lat,
                lng=update.lng,
                recorded_at=update.recorded_at,
                speed_mps=update.speed_mps,
                heading_deg=update.heading_deg,
                accuracy_m=update.accuracy_m,
            )
        )
        if len(self._rows) > self.max_pending:
            excess = len(self._rows) - self.max_pending
            del self._rows[:excess]
            self.dropped += excess
        if len(self._rows) >= self.flush_max:
            self._full.set()
        return True

    async def flush(self) -> int:
        """Writes every waiting breadcrumb; returns how many were stored (rows of a ride
        the driver no longer drives are dropped by the statement). On a failure the rows
        not written wait for the next flush, and the error is raised."""
        async with self._lock:
            stored = 0
            while self._rows:
                rows = self._rows[:STATEMENT_ROWS]
                del self._rows[:STATEMENT_ROWS]
                try:
                    async with transaction(self.sessionmaker) as session:
                        stored += await BreadcrumbRepository(session).add_many(rows)
                except BaseException:
                    self._rows[:0] = rows
                    raise
                self.flushes += 1
            self.written += stored
            self.sampler.forget_before(self.clock.now() - FORGET_AFTER)
            return stored

    async def start(self) -> None:
        """Flushes every ``flush_s`` seconds, or sooner when ``flush_max`` wait, until
        :meth:`stop`."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="breadcrumb-writer")

    async def stop(self) -> None:
        """Stops the periodic flush and writes what is left."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._full.wait(), self.flush_s)
            self._full.clear()
            try:
                await self.flush()
            except Exception:
                log.exception("breadcrumb_flush_failed", pending=len(self._rows))
