"""Two real ``ridecoop dispatcher`` processes against the test database and Redis: they
share the regions, and when one is killed the other takes its regions over within the
lease's TTL and every open ride still gets its offer."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest
from redis.asyncio import Redis
from sqlalchemy import select

from accounts.models import Role
from dispatch.dispatcher import DISPATCHERS_KEY
from dispatch.live import LiveState
from dispatch.models import Offer
from dispatch.regions import region_of
from dispatch.schemas import Point
from infra.clock import utcnow
from infra.settings import Settings
from tests.dispatch import test_offers
from tests.dispatch.test_offers import Committed, ride_in_matching
from tests.dispatch.test_quotes import JFK, TIMES_SQUARE, north_of

# Rows committed for real, removed afterwards.
committed = test_offers.committed

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
WINDOW_S = 0.5
LEASE_TTL_S = 2.0
# Generous bounds for a loaded machine; the takeover itself is checked against the TTL.
START_TIMEOUT_S = 30.0
SETTLE_TIMEOUT_S = 15.0
STATEN_ISLAND = Point(lat=40.58, lng=-74.15)
PICKUPS = (TIMES_SQUARE, JFK, STATEN_ISLAND)
T = TypeVar("T")
REGIONS = frozenset(region_of(p.lat, p.lng) for p in PICKUPS)


@dataclass
class Dispatchers:
    processes: list[subprocess.Popen[bytes]]
    logs: list[Path]

    def by_pid(self, pid: int) -> subprocess.Popen[bytes]:
        return next(p for p in self.processes if p.pid == pid)

    def tails(self) -> str:
        """The end of each process's log, to show what went wrong."""
        return "\n".join(f"{log.name}: {log.read_text()[-2_000:]}" for log in self.logs)


def _start(settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "RIDECOOP_ENV": "test",
        "RIDECOOP_LOG_LEVEL": "WARNING",
        "RIDECOOP_DATABASE_URL": str(settings.database.url),
        "RIDECOOP_DATABASE_POOL_SIZE": "3",
        "RIDECOOP_REDIS_URL": str(settings.redis.url),
        "RIDECOOP_DISPATCH_WINDOW_S": str(WINDOW_S),
        "RIDECOOP_DISPATCH_LEASE_TTL_S": str(LEASE_TTL_S),
    }
    with log.open("wb") as output:
        return subprocess.Popen(
            [sys.executable, "-m", "ridecoop", "dispatcher"],
            cwd=ROOT,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )


@pytest.fixture
def dispatchers(committed: Committed, settings: Settings, tmp_path: Path) -> Iterator[Dispatchers]:
    # Depends on ``committed`` so the processes stop before its rows are deleted.
    logs = [tmp_path / f"dispatcher-{i}.log" for i in range(2)]
    started = Dispatchers([_start(settings, log) for log in logs], logs)
    yield started
    for process in started.processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in started.processes:
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def eventually(
    check: Callable[[], Awaitable[T | None]],
    timeout_s: float,
    what: str,
    dispatchers: Dispatchers,
) -> T:
    deadline = time.monotonic() + timeout_s
    while True:
        found = await check()
        if found is not None:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s} s: {what}\n{dispatchers.tails()}")
        await asyncio.sleep(0.05)


async def lease_owners(live: LiveState) -> dict[str, str | None]:
    return {region: await live.lease_owner(region) for region in sorted(REGIONS)}


def pid_of(owner: str) -> int:
    return int(owner.split(":")[1])


@pytest.fixture
async def open_rides(committed: Committed) -> list[uuid.UUID]:
    ride_ids = []
    async with committed.maker() as session:
        for pickup in PICKUPS:
            ride = await ride_in_matching(
                session, committed.clock, committed.live.redis, committed.settings, pickup
            )
            committed.users.append(ride.rider_id)
            ride_ids.append(ride.id)
        await session.commit()
    return ride_ids


async def test_a_killed_dispatchers_regions_are_taken_over_and_every_ride_is_offered(
    committed: Committed,
    open_rides: list[uuid.UUID],
    dispatchers: Dispatchers,
    redis_client: Redis,
) -> None:
    live = committed.live

    async def both_hold_regions() -> dict[str, str] | None:
        owners = await lease_owners(live)
        held = {region: owner for region, owner in owners.items() if owner is not None}
        if len(held) == len(REGIONS) and len({pid_of(o) for o in held.values()}) == 2:
            return held
        return None

    owners = await eventually(
        both_hold_regions, START_TIMEOUT_S, "both dispatchers hold regions", dispatchers
    )
    assert await redis_client.zcard(DISPATCHERS_KEY) == 2
    victim_pid = pid_of(next(iter(owners.values())))
    survivor = next(p for p in dispatchers.processes if p.pid != victim_pid)

    dispatchers.by_pid(victim_pid).send_signal(signal.SIGKILL)
    killed_at = time.monotonic()

    async def survivor_holds_all() -> dict[str, str | None] | None:
        now = await lease_owners(live)
        return now if {pid_of(o or "x:0") for o in now.values()} == {survivor.pid} else None

    await eventually(
        survivor_holds_all, SETTLE_TIMEOUT_S, "the survivor holds every region", dispatchers
    )
    # The victim's leases lapse after the TTL; the survivor sees it within a window.
    assert time.monotonic() - killed_at <= LEASE_TTL_S + 2 * WINDOW_S + 1.0

    # Drivers come online near every pickup: each ride still gets its offer.
    drivers = {}
    async with committed.maker() as session:
        for ride_id, pickup in zip(open_rides, PICKUPS, strict=True):
            driver_id = await committed.user(session, Role.driver)
            near = north_of(pickup, 150)
            await live.set_online(
                driver_id, region_of(near.lat, near.lng), near.lat, near.lng, utcnow()
            )
            drivers[ride_id] = driver_id
        await session.commit()

    async def every_ride_offered() -> dict[uuid.UUID, uuid.UUID] | None:
        async with committed.maker() as session:
            rows = await session.execute(
                select(Offer.ride_id, Offer.driver_id).where(
                    Offer.ride_id.in_(open_rides), Offer.status == "offered"
                )
            )
            offered = dict(rows.all())
        return offered if len(offered) == len(open_rides) else None

    offered = await eventually(
        every_ride_offered, SETTLE_TIMEOUT_S, "every ride has an offer", dispatchers
    )
    assert offered == drivers

    survivor.send_signal(signal.SIGTERM)
    assert survivor.wait(timeout=10) == 0
    # Stopped cleanly, it gave its regions back at once.
    assert await lease_owners(live) == dict.fromkeys(sorted(REGIONS))
