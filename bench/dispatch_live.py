"""Time the live state in Redis with a city's worth of drivers online: nearest-driver
queries, location ingestion through ``LiveState``, and raw Redis GEOADD beside it.

    python -m bench.dispatch_live [--drivers 50000] [--queries 20000] [--no-save]

Goal (the dispatch issue): nearest drivers p99 <= 1 ms with 50k drivers online. Location
ingestion is reported beside raw pipelined GEOADD measured in the same run, so the cost
of the liveness index, the status hash and the region bookkeeping shows.

Drivers stand where New York's taxi trips of shared/data begin, scattered by a normal
offset of ``--spread-m`` metres, so they are as dense as real demand makes them (most in
Manhattan); queries are drawn the same way. Each query asks the ``--k`` nearest within
``--radius-m`` in the regions that radius reaches (looked up before the clock starts:
the dispatcher knows its regions). Latency is measured one query at a time, from the
call to the decoded answer, so it includes the client, the loopback and Redis; each
query is followed by a timed PING, reported as ``ping_control``.

Runs against Redis at ``--redis-url`` in logical database ``--redis-db`` (12 by default,
away from the numbers tests use), which it flushes after the run. It refuses to start on
a database that holds any key, and checks at the end that every driver is still there,
so that a test flushing the same database during the run cannot pass unnoticed.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import math
import statistics
import sys
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from pydantic import RedisDsn
from redis.asyncio import Redis

from bench.harness import machine, merge_results, now_iso, progress
from dispatch.live import GEO_PREFIX, SEEN_KEY, LiveState
from dispatch.locations import LocationUpdate, validate_update
from dispatch.matching import EARTH_RADIUS_M
from dispatch.regions import region_of, regions_near
from infra.redis import create_redis
from infra.settings import RedisSettings

NYC_TRIPS = (
    Path(__file__).parent.parent.parent / "shared" / "data" / ("nyc_taxi_2011-01-19_0700-0731.csv")
)
GOAL_NEAREST_P99_US = 1_000.0
# A driver's step between two pings: 4 s at about 30 km/h.
STEP_M = 35.0
Points = npt.NDArray[np.float64]


def trip_origins(path: Path) -> Points:
    with path.open(newline="") as handle:
        rows = [
            (float(row["pickup_latitude"]), float(row["pickup_longitude"]))
            for row in csv.DictReader(handle)
        ]
    # A few records carry (0, 0) for an unknown place.
    return np.array([(lat, lng) for lat, lng in rows if 40 < lat < 42 and -75 < lng < -73])


def scatter(origins: Points, count: int, spread_m: float, rng: np.random.Generator) -> Points:
    chosen = origins[rng.integers(0, len(origins), count)]
    offsets = rng.normal(0.0, spread_m, size=(count, 2))
    lat = chosen[:, 0] + np.degrees(offsets[:, 0] / EARTH_RADIUS_M)
    lng = chosen[:, 1] + np.degrees(
        offsets[:, 1] / (EARTH_RADIUS_M * np.cos(np.radians(chosen[:, 0])))
    )
    return np.column_stack([lat, lng])


def step(points: Points, rng: np.random.Generator) -> Points:
    bearing = rng.uniform(0, 2 * math.pi, len(points))
    lat = points[:, 0] + np.degrees(STEP_M * np.cos(bearing) / EARTH_RADIUS_M)
    lng = points[:, 1] + np.degrees(
        STEP_M * np.sin(bearing) / (EARTH_RADIUS_M * np.cos(np.radians(points[:, 0])))
    )
    return np.column_stack([lat, lng])


def percentiles_us(samples_ns: Sequence[int]) -> dict[str, float]:
    ordered = np.sort(np.asarray(samples_ns, dtype=np.float64)) / 1_000.0
    return {
        "p50_us": round(float(np.percentile(ordered, 50)), 1),
        "p95_us": round(float(np.percentile(ordered, 95)), 1),
        "p99_us": round(float(np.percentile(ordered, 99)), 1),
        "max_us": round(float(ordered[-1]), 1),
        "mean_us": round(float(ordered.mean()), 1),
    }


async def bring_online(
    live: LiveState, ids: list[uuid.UUID], points: Points, concurrency: int
) -> None:
    now = datetime.now(UTC)
    queue = iter(range(len(ids)))

    async def worker() -> None:
        for i in queue:
            lat, lng = float(points[i, 0]), float(points[i, 1])
            await live.set_online(ids[i], region_of(lat, lng), lat, lng, now)

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def measure_region_listing(live: LiveState, region: str) -> dict[str, Any]:
    """``drivers_in_region`` for the busiest region: what the matcher reads per window."""
    now = datetime.now(UTC)
    samples = []
    listed = 0
    for _ in range(5):
        started = time.perf_counter()
        listed = len(await live.drivers_in_region(region, now))
        samples.append(time.perf_counter() - started)
    return {"drivers": listed, "median_ms": round(statistics.median(samples) * 1_000, 1)}


async def measure_nearest(
    live: LiveState, queries: Points, radius_m: float, k: int
) -> dict[str, Any]:
    points = [(float(lat), float(lng)) for lat, lng in queries]
    regions = [sorted(regions_near(lat, lng, radius_m)) for lat, lng in points]
    now = datetime.now(UTC)
    for i in range(min(500, len(points))):  # warm-up: scripts loaded, connection open
        await live.nearest_available(regions[i], *points[i], radius_m, k, now)
    samples: list[int] = []
    pings: list[int] = []
    found: list[int] = []
    for i, (lat, lng) in enumerate(points):
        started = time.perf_counter_ns()
        hits = await live.nearest_available(regions[i], lat, lng, radius_m, k, now)
        samples.append(time.perf_counter_ns() - started)
        found.append(len(hits))
        # The control: a PING right after shows what the client, the loopback and the
        # machine's other load cost alone; a tail both share is not the query's.
        started = time.perf_counter_ns()
        await live.redis.ping()
        pings.append(time.perf_counter_ns() - started)
    return {
        "queries": len(queries),
        "radius_m": radius_m,
        "k": k,
        "regions_per_query_mean": round(statistics.fmean(len(r) for r in regions), 2),
        "found_mean": round(statistics.fmean(found), 2),
        "found_k_share": round(sum(n == k for n in found) / len(found), 4),
        **percentiles_us(samples),
        "ping_control": percentiles_us(pings),
    }


async def measure_raw_geoadd(redis: Redis, points: Points, batch: int) -> dict[str, Any]:
    """One GEOADD per update, pipelined ``batch`` at a time, into each point's region."""
    members = [str(uuid.UUID(int=i + 1)) for i in range(len(points))]
    keys = [GEO_PREFIX + "raw:" + region_of(*point) for point in points]
    started = time.perf_counter()
    for start in range(0, len(points), batch):
        async with redis.pipeline(transaction=False) as pipe:
            for i in range(start, min(len(points), start + batch)):
                pipe.geoadd(keys[i], (float(points[i, 1]), float(points[i, 0]), members[i]))
            await pipe.execute()
    elapsed = time.perf_counter() - started
    for key in set(keys):
        await redis.delete(key)
    return {
        "updates": len(points),
        "batch": batch,
        "updates_per_s": round(len(points) / elapsed),
    }


def pings(points: Points, at: datetime) -> list[LocationUpdate]:
    return [LocationUpdate(float(lat), float(lng), 90.0, 8.3, 5.0, at) for lat, lng in points]


async def measure_updates_concurrent(
    live: LiveState, ids: list[uuid.UUID], points: Points, concurrency: int
) -> dict[str, Any]:
    """``update_location`` one round trip each, ``concurrency`` in flight at a time."""
    now = datetime.now(UTC)
    updates = pings(points, now)
    queue = iter(range(len(ids)))

    async def worker() -> None:
        for i in queue:
            await live.update_location(ids[i], updates[i], now)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    return {
        "updates": len(ids),
        "concurrency": concurrency,
        "updates_per_s": round(len(ids) / elapsed),
    }


async def measure_updates_batched(
    live: LiveState, ids: list[uuid.UUID], points: Points, batch: int
) -> dict[str, Any]:
    """``update_locations`` with ``batch`` updates per pipeline, one pipeline at a time."""
    now = datetime.now(UTC)
    updates = list(zip(ids, pings(points, now), strict=True))
    started = time.perf_counter()
    for start in range(0, len(updates), batch):
        await live.update_locations(updates[start : start + batch], now)
    elapsed = time.perf_counter() - started
    return {"updates": len(ids), "batch": batch, "updates_per_s": round(len(ids) / elapsed)}


def measure_validation(points: Points) -> dict[str, Any]:
    now = datetime.now(UTC)
    previous = pings(points, now - timedelta(seconds=4))
    following = pings(step(points, np.random.default_rng(7)), now)
    started = time.perf_counter()
    for before, after in zip(previous, following, strict=True):
        validate_update(after, before, now)
    elapsed = time.perf_counter() - started
    return {"updates": len(points), "updates_per_s": round(len(points) / elapsed)}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    base = str(args.redis_url).rstrip("/")
    redis = create_redis(RedisSettings(url=RedisDsn(f"{base}/{args.redis_db}")))
    live = LiveState(redis)
    rng = np.random.default_rng(args.seed)
    origins = trip_origins(args.trips)
    drivers = scatter(origins, args.drivers, args.spread_m, rng)
    ids = [uuid.UUID(int=(1 << 64) | i) for i in range(args.drivers)]
    if await redis.dbsize():
        await redis.aclose()
        raise SystemExit(f"Redis database {args.redis_db} is not empty; choose another")
    try:
        progress(f"bringing {args.drivers} drivers online in db {args.redis_db}")
        await bring_online(live, ids, drivers, args.concurrency)
        per_region = Counter(region_of(float(lat), float(lng)) for lat, lng in drivers)
        regions = set(per_region)
        progress(f"{len(regions)} regions; nearest x {args.queries}")
        nearest = await measure_nearest(
            live, scatter(origins, args.queries, args.spread_m, rng), args.radius_m, args.k
        )
        progress(f"nearest p99 {nearest['p99_us']} us; raw GEOADD")
        moved = step(drivers, rng)
        raw = await measure_raw_geoadd(redis, moved, args.batch)
        progress("update_location, concurrent")
        concurrent = await measure_updates_concurrent(live, ids, moved, args.concurrency)
        progress("update_locations, batched")
        batched = await measure_updates_batched(live, ids, step(moved, rng), args.batch)
        progress("validate_update")
        validation = measure_validation(drivers)
        nearest_1km = await measure_nearest(
            live, scatter(origins, min(args.queries, 5_000), args.spread_m, rng), 1_000.0, args.k
        )
        progress("drivers_in_region")
        listing = await measure_region_listing(live, per_region.most_common(1)[0][0])
        if await redis.zcard(SEEN_KEY) != args.drivers:
            raise SystemExit("drivers went missing: something else uses the same database")
    finally:
        await redis.flushdb()
        await redis.aclose()
    return {
        "machine": machine(),
        "redis": args.redis_url.split("@")[-1],
        "measured_at": now_iso(),
        "drivers": args.drivers,
        "regions": len(regions),
        "layout": f"NYC trip origins + normal scatter of {args.spread_m:g} m",
        "goals": {"nearest_p99_us": GOAL_NEAREST_P99_US},
        "nearest": {**nearest, "meets_goal": nearest["p99_us"] <= GOAL_NEAREST_P99_US},
        "nearest_1km": nearest_1km,
        "drivers_in_busiest_region": listing,
        "raw_geoadd_pipelined": raw,
        "update_location_concurrent": concurrent,
        "update_locations_batched": batched,
        "validate_update": validation,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.dispatch_live", description=__doc__)
    parser.add_argument("--drivers", type=int, default=50_000)
    parser.add_argument("--queries", type=int, default=20_000)
    parser.add_argument("--radius-m", type=float, default=3_000.0)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--spread-m", type=float, default=1_500.0)
    parser.add_argument("--batch", type=int, default=500, help="updates per pipeline")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--trips", type=Path, default=NYC_TRIPS)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379")
    parser.add_argument("--redis-db", type=int, default=12)
    parser.add_argument("--no-save", action="store_true", help="print only")
    args = parser.parse_args(argv)
    results = asyncio.run(run(args))
    if not args.no_save:
        merge_results("dispatch", "live", results)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
