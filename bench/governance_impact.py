"""Time the impact simulation of a pricing proposal over 200,000 trips (goal: <= 5 s).

    RIDECOOP_DATABASE_URL=postgresql+asyncpg://root@127.0.0.1:5432/ridecoop \\
        python -m bench.governance_impact [--trips 200000] [--runs 5] [--no-database]

The proposal raises the base fare by 50 cents and the commission by two points, against
the founding fare policy. Trips are drawn with a fixed seed: lognormal distances (median
about 5.4 km), durations at 20-40 km/h, 30 % of trips deviating beyond the tolerance,
waiting at pickup of 0-10 minutes, 15 % of trips surged (1.2-2.5), 5 % to or from the
airport, 2,000 drivers (70 % with a known time online) and 40,000 riders.

- ``simulate``: ``governance.impact.simulate`` on the trips in memory (columns built from
  the trip objects, both policies priced, every figure and each member's own), the
  median of ``--runs`` runs after a warm-up. This is the goal's figure.
- ``database``: what submitting a proposal does, on a scratch database loaded with the
  same trips as completed rides with their quotes and captured payments: the one query
  of ``dispatch.history.CompletedTripService.between``, the drivers' time online, and
  the simulation. Its figures must equal the in-memory ones (checked).

Results go to bench/results/governance.json (section ``impact``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg

from bench.harness import machine, merge_results, now_iso, plain_url, progress, scratch_database
from dispatch.history import CompletedTripService
from governance.impact import Trip, simulate
from infra.db import create_engine, create_sessionmaker
from infra.settings import DatabaseSettings
from payments.policy import FarePolicy

GOAL_SECONDS = 5.0
DRIVERS = 2_000
RIDERS = 40_000
NOW = datetime(2026, 11, 1, tzinfo=UTC)
START = NOW - timedelta(days=30)
CURRENT = FarePolicy(
    id=uuid.UUID("00000000-0000-7000-8000-000000000001"),
    version=1,
    effective_at=datetime(2026, 1, 1, tzinfo=UTC),
    currency="USD",
    base_fare=250,
    per_km=120,
    per_minute=30,
    booking_fee=200,
    minimum_fare=800,
    waiting_per_minute=30,
    cancellation_fee=500,
    no_show_fee=500,
    waiting_grace_s=180,
    cancellation_grace_s=120,
    quote_ttl_s=300,
    surge_cap=Decimal("2.0"),
    commission_rate=Decimal("0.10"),
    reserve_rate=Decimal("0.02"),
    deviation_tolerance=Decimal("0.25"),
    zone_surcharges={"airport": 400},
)
PROPOSED = replace(CURRENT, base_fare=300, commission_rate=Decimal("0.12"))


def draw(count: int, seed: int) -> tuple[list[Trip], list[datetime], dict[uuid.UUID, int]]:
    rng = random.Random(seed)
    drivers = [uuid.uuid4() for _ in range(DRIVERS)]
    riders = [uuid.uuid4() for _ in range(RIDERS)]
    trips, ended = [], []
    for _ in range(count):
        estimated_m = max(300, int(rng.lognormvariate(8.6, 0.6)))
        estimated_s = max(120, int(estimated_m / rng.uniform(5.5, 11.1)))
        deviates = rng.random() < 0.3
        factor = rng.uniform(1.3, 1.8) if deviates else rng.uniform(0.9, 1.2)
        trips.append(
            Trip(
                rider_id=rng.choice(riders),
                driver_id=rng.choice(drivers),
                distance_m=int(estimated_m * factor),
                duration_s=int(estimated_s * factor),
                waiting_s=rng.randint(0, 600),
                estimated_distance_m=estimated_m,
                estimated_duration_s=estimated_s,
                surge=Decimal(rng.choice(["1.2", "1.5", "2", "2.5"]))
                if rng.random() < 0.15
                else Decimal(1),
                zones=frozenset({"airport"}) if rng.random() < 0.05 else frozenset(),
            )
        )
        ended.append(START + timedelta(seconds=rng.randint(60, 30 * 86_400 - 60)))
    online = {d: rng.randint(20, 200) * 3_600 for d in drivers if rng.random() < 0.7}
    return trips, ended, online


def time_simulation(
    trips: Sequence[Trip], online: dict[uuid.UUID, int], runs: int
) -> tuple[list[float], dict[str, Any]]:
    figures = simulate(trips, CURRENT, PROPOSED, online_seconds=online).figures  # warm-up
    timings = []
    for run in range(runs):
        started = time.perf_counter()
        simulate(trips, CURRENT, PROPOSED, online_seconds=online)
        timings.append(time.perf_counter() - started)
        progress(f"run {run + 1}: {timings[-1]:.3f} s")
    return timings, figures


async def load(
    url: str, trips: Sequence[Trip], ended: Sequence[datetime], online: dict[uuid.UUID, int]
) -> str:
    connection = await asyncpg.connect(plain_url(url))
    try:
        people = {t.driver_id: "driver" for t in trips} | {t.rider_id: "rider" for t in trips}
        await connection.executemany(
            "INSERT INTO users (id, role, email, phone, full_name, password_hash, created_at, "
            "updated_at) VALUES ($1, $2, $3, $4, 'Bench', 'x', now(), now())",
            [
                (user_id, role, f"{user_id.hex}@bench.test", f"+1{2_000_000_000 + i}")
                for i, (user_id, role) in enumerate(people.items())
            ],
        )
        for start in range(0, len(trips), 50_000):
            batch = trips[start : start + 50_000]
            when = ended[start : start + 50_000]
            quote_ids = [uuid.uuid4() for _ in batch]
            ride_ids = [uuid.uuid4() for _ in batch]
            fares = [
                json.dumps(
                    {
                        "policy_id": str(CURRENT.id),
                        "policy_version": 1,
                        "basis": "upfront",
                        "currency": "USD",
                        "total": 0,
                        "line_items": [],
                        "surge_multiplier": str(t.surge),
                        "zones": sorted(t.zones),
                    }
                )
                for t in batch
            ]
            await connection.execute(
                """
                INSERT INTO quotes (id, rider_id, pickup, dropoff, policy_version_id,
                    total_amount, currency, fare, estimated_distance_m, estimated_duration_s,
                    created_at, expires_at)
                SELECT q.id, q.rider, 'SRID=4326;POINT(-73.9855 40.758)'::geography,
                       'SRID=4326;POINT(-73.9535 40.7866)'::geography, $7, 1000, 'USD',
                       q.fare::jsonb, q.distance, q.duration, q.ended - interval '40 minutes',
                       q.ended - interval '35 minutes'
                  FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::int[], $5::int[],
                              $6::timestamptz[]) AS q(id, rider, fare, distance, duration, ended)
                """,
                quote_ids,
                [t.rider_id for t in batch],
                fares,
                [t.estimated_distance_m for t in batch],
                [t.estimated_duration_s for t in batch],
                list(when),
                CURRENT.id,
            )
            await connection.execute(
                """
                INSERT INTO rides (id, rider_id, driver_id, quote_id, idempotency_key, status,
                    region, pickup, dropoff, pin, requested_at, driver_assigned_at,
                    driver_arrived_at, started_at, ended_at, distance_m, duration_s)
                SELECT r.id, r.rider, r.driver, r.quote, r.id::text, 'completed',
                       '852a1073fffffff', 'SRID=4326;POINT(-73.9855 40.758)'::geography,
                       'SRID=4326;POINT(-73.9535 40.7866)'::geography, '0000',
                       r.ended - interval '39 minutes', r.ended - interval '38 minutes',
                       r.started - make_interval(secs => r.waiting), r.started, r.ended,
                       r.distance, r.duration
                  FROM (SELECT *, ended - make_interval(secs => duration) AS started
                          FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[],
                                      $5::int[], $6::int[], $7::int[], $8::timestamptz[])
                               AS u(id, rider, driver, quote, distance, duration, waiting, ended)
                       ) AS r
                """,
                ride_ids,
                [t.rider_id for t in batch],
                [t.driver_id for t in batch],
                quote_ids,
                [t.distance_m for t in batch],
                [t.duration_s for t in batch],
                [t.waiting_s for t in batch],
                list(when),
            )
            progress(f"loaded {start + len(batch)} trips")
        await connection.executemany(
            "INSERT INTO driver_shifts (id, driver_id, started_at, ended_at) "
            "VALUES ($1, $2, $3, $4)",
            [
                (
                    uuid.uuid4(),
                    driver,
                    START + timedelta(days=1),
                    START + timedelta(days=1, seconds=s),
                )
                for driver, s in online.items()
            ],
        )
        await connection.execute("ANALYZE")
        return str(await connection.fetchval("SHOW server_version"))
    finally:
        await connection.close()


async def from_database(url: str) -> tuple[float, float, int, dict[str, Any]]:
    engine = create_engine(DatabaseSettings(url=url, pool_size=1))
    try:
        async with create_sessionmaker(engine)() as session:
            history = CompletedTripService(session)
            started = time.perf_counter()
            trips = await history.between(START, NOW)
            online = await history.online_seconds(START, NOW)
            loaded = time.perf_counter() - started
            figures = simulate(trips, CURRENT, PROPOSED, online_seconds=online).figures
            total = time.perf_counter() - started
        return loaded, total, len(trips), figures
    finally:
        await engine.dispose()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--trips", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=20261101)
    parser.add_argument("--no-database", action="store_true")
    args = parser.parse_args(argv)
    progress(f"drawing {args.trips} trips")
    trips, ended, online = draw(args.trips, args.seed)
    timings, figures = time_simulation(trips, online, args.runs)
    seconds = statistics.median(timings)
    scenario = {
        k: figures[k] for k in ("riders_price_change", "drivers_earnings_per_hour", "coop_revenue")
    }
    results: dict[str, Any] = {
        "trips": args.trips,
        "drivers": figures["drivers"],
        "riders": figures["riders"],
        "seed": args.seed,
        "proposal": "fare.base_fare 250 -> 300, fare.commission_rate 0.10 -> 0.12",
        "goal_seconds": GOAL_SECONDS,
        "simulate": {"seconds": round(seconds, 3), "runs_seconds": [round(t, 4) for t in timings]},
        "goal_met": seconds <= GOAL_SECONDS,
        "figures": scenario,
    }
    postgresql = None
    if not args.no_database:
        with scratch_database("impact") as url:
            progress("loading the trips as completed rides")
            postgresql = asyncio.run(load(url, trips, ended, online))
            progress("reading them back and simulating, as submitting a proposal does")
            loaded, total, count, database_figures = asyncio.run(from_database(url))
        same = database_figures == figures and count == args.trips
        results["database"] = {
            "read_seconds": round(loaded, 3),
            "read_and_simulate_seconds": round(total, 3),
            "trips_read": count,
            "figures_equal_in_memory": same,
        }
        if not same:
            progress("the figures from the database differ from the in-memory ones")
    results["machine"] = machine(postgresql)
    results["date"] = now_iso()
    merge_results("governance", "impact", results)
    print(json.dumps(results, indent=2))
    return 0 if results.get("database", {}).get("figures_equal_in_memory", True) else 1


if __name__ == "__main__":
    sys.exit(main())
