"""Completed trips of a period, as other domains replay them (governance's impact
simulation). Read-only.

This file holds its own SQL, against dispatch's ``rides`` and ``quotes`` and payments'
``ride_payments`` (read, never written): one query for the trips, one for drivers' time
online. It belongs in dispatch/repository.py and will move there.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

# Rides completed in [start, end), with what their quote priced them from (estimate,
# surge, zones) and what payments captured and paid the driver, when it has.
_TRIPS = text(
    """
    SELECT r.id AS ride_id,
           r.rider_id,
           r.driver_id,
           r.ended_at,
           r.distance_m,
           r.duration_s,
           GREATEST(0, COALESCE(
               EXTRACT(EPOCH FROM (r.started_at - r.driver_arrived_at))::bigint, 0
           )) AS waiting_s,
           q.estimated_distance_m,
           q.estimated_duration_s,
           q.currency,
           COALESCE(q.fare ->> 'surge_multiplier', '1') AS surge,
           COALESCE(
               ARRAY(SELECT jsonb_array_elements_text(q.fare -> 'zones')), '{}'
           ) AS zones,
           COALESCE(p.captured_amount, (r.final_fare ->> 'total')::bigint) AS fare_amount,
           (p.split ->> 'driver')::bigint AS driver_amount
      FROM rides r
      JOIN quotes q ON q.id = r.quote_id
      LEFT JOIN ride_payments p ON p.ride_id = r.id
     WHERE r.status = 'completed'
       AND r.ended_at >= :start AND r.ended_at < :end
       AND r.driver_id IS NOT NULL
       AND r.distance_m IS NOT NULL AND r.duration_s IS NOT NULL
     ORDER BY r.ended_at, r.id
    """
)

# Each driver's time online within [start, end): their shifts cut to the period (a shift
# still open counts up to the end of the period).
_ONLINE = text(
    """
    SELECT driver_id,
           SUM(EXTRACT(EPOCH FROM (
               LEAST(COALESCE(ended_at, :end), :end) - GREATEST(started_at, :start)
           )))::bigint AS seconds
      FROM driver_shifts
     WHERE started_at < :end AND COALESCE(ended_at, :end) > :start
     GROUP BY driver_id
    """
)


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
        self.session = session

    async def between(self, start: datetime, end: datetime) -> list[CompletedTrip]:
        """Trips completed in ``[start, end)``, oldest first."""
        result = await self.session.execute(_TRIPS, {"start": start, "end": end})
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
        result = await self.session.execute(_ONLINE, {"start": start, "end": end})
        return {row.driver_id: int(row.seconds) for row in result if row.seconds > 0}
