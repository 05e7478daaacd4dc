"""Completed trips of a period, as other domains replay them (governance's impact
simulation). Read-only; the queries are ``dispatch.repository.HistoryRepository``'s.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncSession

from dispatch.repository import HistoryRepository


@dataclass(frozen=True, slots=True)
class CompletedTrip:
    """``fare_amount`` is what was captured (or the final fare, before capture);
    ``driver_amount`` the driver's share when payments has split the fare."""

    ride_id: uuid.UUID
    rider_id: uuid.UUID
    driver_id: uuid.UUID
    ended_at: datetime
    distance_m: int
    duration_s: int
    waiting_s: int
    estimated_distance_m: int
    estimated_duration_s: int
    currency: str
    surge: Decimal
    zones: frozenset[str]
    fare_amount: int | None
    driver_amount: int | None


class CompletedTripService:
    def __init__(self, session: AsyncSession) -> None:
        self.history = HistoryRepository(session)

    async def between(self, start: datetime, end: datetime) -> list[CompletedTrip]:
        """Trips completed in ``[start, end)``, oldest first."""
        result = await self.history.completed_trips(start, end)
        # A month of a city's trips is hundreds of thousands of rows: positional rows and
        # one Decimal and one frozenset per distinct surge and zone list, not per trip.
        surges: dict[str, Decimal] = {}
        zone_sets: dict[tuple[str, ...], frozenset[str]] = {}
        trips = []
        for (
            ride_id,
            rider_id,
            driver_id,
            ended_at,
            distance_m,
            duration_s,
            waiting_s,
            estimated_distance_m,
            estimated_duration_s,
            currency,
            surge,
            zones,
            fare_amount,
            driver_amount,
        ) in result:
            if surge not in surges:
                surges[surge] = Decimal(surge)
            zone_key = tuple(zones)
            if zone_key not in zone_sets:
                zone_sets[zone_key] = frozenset(zone_key)
            trips.append(
                CompletedTrip(
                    ride_id,
                    rider_id,
                    driver_id,
                    ended_at,
                    distance_m,
                    duration_s,
                    int(waiting_s),
                    estimated_distance_m,
                    estimated_duration_s,
                    currency,
                    surges[surge],
                    zone_sets[zone_key],
                    fare_amount,
                    driver_amount,
                )
            )
        return trips

    async def online_seconds(self, start: datetime, end: datetime) -> dict[uuid.UUID, int]:
        """Each driver's seconds online within ``[start, end)``; drivers without a shift
        in the period are absent."""
        return await self.history.online_seconds(start, end)
