"""Completed trips as governance replays them: one row per completed ride in the period,
with its quote's estimate, surge and zones, and what payments captured."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from accounts.models import Role
from dispatch.history import CompletedTripService
from dispatch.models import DriverShift, Quote, Ride
from dispatch.repository import FairnessRepository, point_value
from infra.clock import FrozenClock
from infra.ids import new_id
from infra.settings import Settings
from payments.models import RidePayment
from tests.governance.factories import make_user

AT = datetime(2030, 2, 1, 12, tzinfo=UTC)
POLICY_ID = uuid.UUID("00000000-0000-7000-8000-000000000001")


async def _ride(
    session: AsyncSession,
    rider: uuid.UUID,
    driver: uuid.UUID,
    *,
    status: str = "completed",
    ended_at: datetime = AT,
    fare: dict[str, Any] | None = None,
) -> Ride:
    quote = Quote(
        id=new_id(),
        rider_id=rider,
        pickup=point_value(40.758, -73.9855),
        dropoff=point_value(40.7866, -73.9535),
        policy_version_id=POLICY_ID,
        total_amount=1_500,
        currency="USD",
        fare=fare
        or {
            "policy_id": str(POLICY_ID),
            "policy_version": 1,
            "basis": "upfront",
            "currency": "USD",
            "total": 1_500,
            "line_items": [],
            "surge_multiplier": "1.25",
            "zones": ["airport", "nyc"],
        },
        estimated_distance_m=4_000,
        estimated_duration_s=720,
        pickup_eta_s=None,
        created_at=ended_at - timedelta(minutes=30),
        expires_at=ended_at - timedelta(minutes=25),
    )
    session.add(quote)
    await session.flush()
    ride = Ride(
        id=new_id(),
        rider_id=rider,
        driver_id=driver,
        quote_id=quote.id,
        idempotency_key=uuid.uuid4().hex,
        status=status,
        region="852a1073fffffff",
        pickup=quote.pickup,
        dropoff=quote.dropoff,
        pin="1234",
        requested_at=ended_at - timedelta(minutes=29),
        driver_assigned_at=ended_at - timedelta(minutes=28),
        driver_arrived_at=ended_at - timedelta(minutes=20),
        started_at=ended_at - timedelta(minutes=17),
        ended_at=ended_at if status == "completed" else None,
        distance_m=4_300 if status == "completed" else None,
        duration_s=1_020 if status == "completed" else None,
        final_fare={"total": 1_640} if status == "completed" else None,
    )
    session.add(ride)
    await session.flush()
    return ride


async def test_completed_trips_come_with_their_quote_and_payment(
    session: AsyncSession, settings: Settings
) -> None:
    clock = FrozenClock(AT)
    rider = await make_user(session, settings, clock, Role.rider)
    driver = await make_user(session, settings, clock)
    paid = await _ride(session, rider, driver)
    session.add(
        RidePayment(
            ride_id=paid.id,
            rider_id=rider,
            driver_id=driver,
            currency="USD",
            status="captured",
            authorized_amount=1_500,
            captured_amount=1_650,
            split={"driver": 1_300, "commission": 150, "reserve": 0, "booking_fee": 200},
            created_at=AT,
            updated_at=AT,
        )
    )
    unpaid = await _ride(session, rider, driver, ended_at=AT + timedelta(hours=1))
    await _ride(session, rider, driver, status="in_progress", ended_at=AT)
    await _ride(session, rider, driver, ended_at=AT - timedelta(days=40))
    await session.flush()

    trips = await CompletedTripService(session).between(
        AT - timedelta(days=30), AT + timedelta(days=1)
    )
    assert [t.ride_id for t in trips] == [paid.id, unpaid.id]
    first = trips[0]
    assert (first.distance_m, first.duration_s, first.waiting_s) == (4_300, 1_020, 180)
    assert (first.estimated_distance_m, first.estimated_duration_s) == (4_000, 720)
    assert (first.surge, first.zones) == (Decimal("1.25"), frozenset({"airport", "nyc"}))
    assert (first.fare_amount, first.driver_amount) == (1_650, 1_300)
    # Not captured yet: the final fare, and no split.
    assert (trips[1].fare_amount, trips[1].driver_amount) == (1_640, None)


async def test_time_online_is_cut_to_the_period(session: AsyncSession, settings: Settings) -> None:
    clock = FrozenClock(AT)
    driver = await make_user(session, settings, clock)
    other = await make_user(session, settings, clock)
    session.add_all(
        [
            DriverShift(
                driver_id=driver,
                started_at=AT - timedelta(hours=2),
                ended_at=AT + timedelta(hours=1),
            ),
            DriverShift(driver_id=driver, started_at=AT + timedelta(hours=3), ended_at=None),
            DriverShift(
                driver_id=other,
                started_at=AT - timedelta(hours=5),
                ended_at=AT - timedelta(hours=4),
            ),
        ]
    )
    await session.flush()
    online = await CompletedTripService(session).online_seconds(AT, AT + timedelta(hours=4))
    assert online == {driver: 3_600 + 3_600}


async def test_overlapping_shifts_of_a_driver_count_once(
    session: AsyncSession, settings: Settings
) -> None:
    # Two connections at once (a reconnect before the old one was noticed gone).
    clock = FrozenClock(AT)
    driver = await make_user(session, settings, clock)
    session.add_all(
        [
            DriverShift(driver_id=driver, started_at=AT, ended_at=AT + timedelta(hours=2)),
            DriverShift(
                driver_id=driver,
                started_at=AT + timedelta(hours=1),
                ended_at=AT + timedelta(hours=3),
            ),
            DriverShift(driver_id=driver, started_at=AT + timedelta(minutes=30), ended_at=None),
        ]
    )
    await session.flush()
    history = CompletedTripService(session)
    assert await history.online_seconds(AT, AT + timedelta(hours=4)) == {driver: 4 * 3_600}
    fairness = FairnessRepository(session)
    until = AT + timedelta(hours=4)
    # At AT+2h the open shift has run 1.5 h; the closed ones still reach AT+3h.
    assert await fairness.online_seconds(AT, until, AT + timedelta(hours=2)) == {
        driver: 3 * 3_600.0
    }
    assert await fairness.online_seconds(AT, until, until, [driver]) == {driver: 4 * 3_600.0}
    assert await fairness.online_seconds(AT, until, until, []) == {}
