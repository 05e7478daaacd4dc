"""Location ingestion through the real driver websocket, end to end, beside raw Redis.

    python -m bench.dispatch_ingest [--drivers 1000] [--seconds 20]
                                    [--runs 1:12000,2:16000] [--redis-db 11] [--no-save]

Goal (the dispatch issue): at least 10k location updates a second sustained through
``/v1/drivers/ws`` on this 2-core machine, none lost (what Redis holds at the end is the
last position each driver sent), reported beside raw pipelined GEOADD measured in the
same run.

What runs, all on 127.0.0.1:

- the real app under uvicorn, once per ``--runs`` entry ``workers:rate`` (api worker
  processes : frames a second offered; by default one worker, as
  ``RIDECOOP_API_WORKERS`` defaults to, then two, one per core), with the driver channel
  wired in as ``api/app.py`` does (or as :func:`app_factory` does until it does), on a
  scratch database (``bench.harness.scratch_database``) and Redis logical database
  ``--redis-db``, which must be empty at the start and is flushed between runs and at
  the end;
- ``--drivers`` active members, each with an access token, made before the clock starts;
- a separate load-generator process that connects every driver (each socket
  authenticated, membership checked, subscribed to its user channel, as in production),
  sends ``go_online``, then, for ``--seconds``, location frames at the run's rate in
  total, round-robin over the drivers: each driver moves 2 m per frame with its device
  time. A city's drivers send every 4 s; here each sends several a second, so that a
  bounded number of sockets offers a city's rate.
  Every ``--sample-every``-th frame carries an ``id``, so its ``ok`` gives a round-trip
  latency. At the end every driver sends a heartbeat with an ``id``; when all are
  answered, the server has taken every frame sent before them.

Sustained throughput is the accepted updates (sent minus refused) over the time from
the first frame to the last answer, so a server that queues what it cannot take counts
its queue. Then, for every driver, the status hash in Redis must hold exactly the last
position sent (latitude, longitude, device time to the millisecond) and the geo index
must place them within a metre of it; any difference fails the run.

Beside it, in the same run and the same Redis: raw GEOADD, pipelined 500 at a time (the
floor of any ingestion), and ``LiveState.update_locations_with_trips`` in pipelines of
500 (the Redis work of the real path, without the websocket). CPU seconds of the server,
the load generator and Redis over the window say where the time goes, with the cost per
frame of the pure steps (JSON, the frame's model, ``validate_update``) measured apart.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import multiprocessing
import os
import random
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI
from pydantic import RedisDsn

from accounts.models import Role
from accounts.passwords import Passwords
from accounts.service import AccountService
from accounts.tokens import issue_access_token
from api.app import create_app
from bench.dispatch_live import NYC_TRIPS, measure_raw_geoadd, scatter, trip_origins
from bench.harness import machine, merge_results, now_iso, progress, scratch_database
from dispatch.channel import LocationFrame
from dispatch.live import GEO_PREFIX, LiveState, driver_key
from dispatch.locations import LocationUpdate, haversine_m, validate_update
from dispatch.matching import EARTH_RADIUS_M
from dispatch.regions import region_of
from governance.schemas import MembershipTransition
from governance.service import MembershipService
from infra.clock import SystemClock
from infra.db import create_engine, create_sessionmaker, transaction
from infra.events import EventBuffer
from infra.redis import create_redis
from infra.settings import AuthSettings, DatabaseSettings, RedisSettings, Settings

GOAL_UPDATES_PER_S = 10_000
STEP_M = 2.0
# Shared by the parent, the server and the load generator; this run only.
BENCH_JWT_SECRET = "bench-ingest-secret-" + uuid.uuid4().hex
CONNECT_CONCURRENCY = 50
TICK_S = 0.005


def app_factory() -> FastAPI:
    """The app uvicorn serves: the api exactly as deployed."""
    return create_app()


# Preparing drivers.


async def make_drivers(settings: Settings, count: int) -> list[tuple[uuid.UUID, str]]:
    """``count`` active members, each with an access token."""
    engine = create_engine(settings.database)
    maker = create_sessionmaker(engine)
    clock = SystemClock()
    passwords = Passwords(settings.auth)
    ids: list[uuid.UUID] = []
    try:
        async with transaction(maker) as session:
            accounts = AccountService(session, settings.auth, passwords, clock, EventBuffer())
            memberships = MembershipService(session, clock, EventBuffer())
            password_hash_source = uuid.uuid4().hex
            for n in range(count):
                user = await accounts.create_user(
                    role=Role.driver,
                    email=f"bench.driver{n}.{uuid.uuid4().hex[:6]}@example.org",
                    phone=f"+1202{2_000_000 + n:07d}",
                    full_name=f"Driver {n}",
                    password=password_hash_source,
                )
                await memberships.open_application(user.id, reason="bench")
                await memberships.transition(
                    user.id,
                    MembershipTransition(
                        to_status="member",
                        reason="bench share",
                        share_amount=5_000,
                        share_currency="USD",
                    ),
                    changed_by=None,
                )
                ids.append(user.id)
    finally:
        await engine.dispose()
    now = clock.now()
    return [
        (
            user_id,
            issue_access_token(
                settings.auth, user_id=user_id, role=Role.driver, session_id=uuid.uuid4(), now=now
            )[0],
        )
        for user_id in ids
    ]


# The load generator (its own process).


def generate_load(config: dict[str, Any], results: Any) -> None:
    import uvloop

    results.put(("result", uvloop.run(_generate(config, results))))


async def _generate(config: dict[str, Any], signals: Any) -> dict[str, Any]:
    from websockets.asyncio.client import ClientConnection, connect

    url: str = config["url"]
    tokens: list[str] = config["tokens"]
    starts: list[list[float]] = config["starts"]
    rate: float = config["rate"]
    seconds: float = config["seconds"]
    sample_every: int = config["sample_every"]
    rng = random.Random(config["seed"])
    count = len(tokens)
    sockets: list[ClientConnection] = [None] * count  # type: ignore[list-item]
    positions = [list(p) for p in starts]
    bearings = [rng.uniform(0, 2 * math.pi) for _ in range(count)]
    last_sent: list[tuple[float, float, int] | None] = [None] * count
    sent_at: dict[str, float] = {}
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    answered: dict[str, asyncio.Future[dict[str, Any]]] = {}
    loop = asyncio.get_running_loop()

    async def reader(ws: ClientConnection) -> None:
        async for raw in ws:
            frame = json.loads(raw)
            ref = frame.get("ref")
            if frame.get("type") == "error":
                errors[frame.get("code", "?")] += 1
            if isinstance(ref, str):
                if ref in sent_at:
                    latencies.append(time.perf_counter() - sent_at.pop(ref))
                waiting = answered.pop(ref, None)
                if waiting is not None and not waiting.done():
                    waiting.set_result(frame)

    async def ask(ws: ClientConnection, frame: dict[str, Any]) -> dict[str, Any]:
        ref = uuid.uuid4().hex
        answered[ref] = loop.create_future()
        await ws.send(json.dumps({**frame, "id": ref}))
        return await asyncio.wait_for(answered[ref], 30)

    readers: list[asyncio.Task[None]] = []
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

    async def open_one(i: int) -> None:
        async with gate:
            ws = await connect(
                f"{url}?access_token={tokens[i]}",
                compression=None,
                open_timeout=30,
                max_queue=None,
            )
            hello = json.loads(await asyncio.wait_for(ws.recv(), 30))
            if hello.get("type") != "hello":
                raise RuntimeError(f"unexpected first frame {hello}")
            sockets[i] = ws
            readers.append(asyncio.create_task(reader(ws)))
            lat, lng = positions[i]
            reply = await ask(ws, {"type": "go_online", "lat": lat, "lng": lng})
            if reply.get("type") != "ok":
                raise RuntimeError(f"going online failed: {reply}")

    connect_started = time.perf_counter()
    await asyncio.gather(*(open_one(i) for i in range(count)))
    connect_s = time.perf_counter() - connect_started

    lat_step = STEP_M / EARTH_RADIUS_M * 180 / math.pi
    # The parent samples the server's and Redis' CPU at these two signals.
    signals.put(("window", "start"))
    cpu_started = time.process_time()
    sent = 0
    per_second: list[int] = []
    started = loop.time()
    end = started + seconds
    next_mark = started + 1.0
    marked = 0
    while True:
        now = loop.time()
        if now >= end:
            break
        due = int(rate * (now - started)) - sent
        for _ in range(due):
            i = sent % count
            lat, lng = positions[i]
            bearing = bearings[i]
            lat += lat_step * math.cos(bearing)
            lng += lat_step * math.sin(bearing) / math.cos(math.radians(lat))
            positions[i] = [lat, lng]
            at = datetime.now(UTC)
            sent += 1
            id_part = ""
            if sent % sample_every == 0:
                ref = f"s{sent}"
                sent_at[ref] = time.perf_counter()
                id_part = f',"id":"{ref}"'
            await sockets[i].send(
                f'{{"type":"location","lat":{lat!r},"lng":{lng!r},"heading":90.0,'
                f'"speed":8.0,"accuracy":5.0,"recorded_at":"{at.isoformat()}"{id_part}}}'
            )
            last_sent[i] = (lat, lng, int(at.timestamp() * 1000))
        if now >= next_mark:
            per_second.append(sent - marked)
            marked = sent
            next_mark += 1.0
        await asyncio.sleep(TICK_S)
    sending_s = loop.time() - started

    # Every frame sent before a driver's heartbeat is taken once the heartbeat is answered.
    async def last_word(ws: ClientConnection) -> dict[str, Any]:
        # Paced like the connects: a driver's heartbeats are spread over time, and a
        # burst of them all at once would measure the api's connection pool instead.
        async with gate:
            return await ask(ws, {"type": "heartbeat"})

    replies = await asyncio.gather(*(last_word(ws) for ws in sockets), return_exceptions=True)
    drained_s = loop.time() - started
    window_cpu_s = time.process_time() - cpu_started
    signals.put(("window", "end"))
    unanswered = sum(1 for reply in replies if not isinstance(reply, dict))
    for ws in sockets:
        await ws.close()
    for task in readers:
        task.cancel()
    ordered = sorted(latencies)
    return {
        "connect_s": round(connect_s, 2),
        "sent": sent,
        "sending_s": round(sending_s, 3),
        "drained_s": round(drained_s, 3),
        "per_second_sent": per_second,
        "errors": dict(errors),
        "unanswered_heartbeats": unanswered,
        "window_cpu_s": round(window_cpu_s, 2),
        "last_sent": last_sent,
        "latency_ms": {
            "samples": len(ordered),
            "p50": round(1000 * ordered[len(ordered) // 2], 2) if ordered else None,
            "p99": round(1000 * ordered[int(len(ordered) * 0.99)], 2) if ordered else None,
            "max": round(1000 * ordered[-1], 2) if ordered else None,
        },
    }


# Measuring around it.


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_tree(pid: int) -> list[int]:
    """The process and its descendants (uvicorn's workers)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            children.setdefault(parent, []).append(int(entry.name))
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        found.append(current)
        pending.extend(children.get(current, []))
    return found


def tree_cpu(pids: Sequence[int]) -> float:
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError):
            total += cpu_seconds(pid)
    return total


async def redis_cpu(settings: Settings) -> float:
    redis = create_redis(settings.redis)
    try:
        info = await redis.info("cpu")
        return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
    finally:
        await redis.aclose()


def receive(queue: Any, kind: str, process: Any, timeout_s: float) -> Any:
    """The next message from the load generator, which must be of ``kind``."""
    try:
        got, value = queue.get(timeout=timeout_s)
    except Exception as exc:
        raise SystemExit(f"the load generator stopped (exit {process.exitcode})") from exc
    if got != kind:
        raise SystemExit(f"expected {kind} from the load generator, got {got}")
    return value


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for_port(port: int, server: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server exited with {server.returncode}")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise SystemExit("the server did not start")


def pure_costs(samples: int) -> dict[str, float]:
    """Microseconds per frame of the steps that need no I/O."""
    now = datetime.now(UTC)
    raw = json.dumps(
        {
            "type": "location",
            "lat": 40.7580,
            "lng": -73.9855,
            "heading": 90.0,
            "speed": 8.0,
            "accuracy": 5.0,
            "recorded_at": now.isoformat(),
        }
    )
    started = time.perf_counter()
    for _ in range(samples):
        json.loads(raw)
    parse = time.perf_counter() - started
    message = json.loads(raw)
    started = time.perf_counter()
    for _ in range(samples):
        LocationFrame.model_validate(message)
    model = time.perf_counter() - started
    update = LocationUpdate(40.7580, -73.9855, 90.0, 8.0, 5.0, now)
    previous = LocationUpdate(40.7579, -73.9855, 90.0, 8.0, 5.0, now.replace(microsecond=0))
    started = time.perf_counter()
    for _ in range(samples):
        validate_update(update, previous, now)
    checks = time.perf_counter() - started
    return {
        "json_loads_us": round(parse / samples * 1e6, 2),
        "frame_model_us": round(model / samples * 1e6, 2),
        "validate_update_us": round(checks / samples * 1e6, 2),
    }


async def redis_side(settings: Settings, points: np.ndarray, batch: int) -> dict[str, Any]:
    """Raw GEOADD and the real path's Redis work, in pipelines of ``batch``."""
    redis = create_redis(settings.redis)
    live = LiveState(redis)
    try:
        raw = await measure_raw_geoadd(redis, points, batch)
        ids = [uuid.UUID(int=(1 << 80) | i) for i in range(len(points))]
        now = datetime.now(UTC)
        for start in range(0, len(ids), batch):
            async with redis.pipeline(transaction=False) as pipe:
                for i in range(start, min(len(ids), start + batch)):
                    lat, lng = float(points[i, 0]), float(points[i, 1])
                    pipe.hset(
                        driver_key(ids[i]),
                        mapping={"status": "available", "region": region_of(lat, lng)},
                    )
                await pipe.execute()
        updates = [
            (ids[i], LocationUpdate(float(p[0]), float(p[1]), 90.0, 8.0, 5.0, now))
            for i, p in enumerate(points)
        ]
        started = time.perf_counter()
        for start in range(0, len(updates), batch):
            await live.update_locations_with_trips(updates[start : start + batch], now)
        elapsed = time.perf_counter() - started
        return {
            "raw_geoadd_pipelined": raw,
            "update_locations_with_trips_pipelined": {
                "updates": len(updates),
                "batch": batch,
                "updates_per_s": round(len(updates) / elapsed),
            },
        }
    finally:
        await redis.aclose()


async def check_redis(
    settings: Settings, driver_ids: Sequence[uuid.UUID], last_sent: Sequence[Any]
) -> dict[str, Any]:
    """Compares what Redis holds for each driver with the last position sent."""
    redis = create_redis(settings.redis)
    try:
        async with redis.pipeline(transaction=False) as pipe:
            for driver_id in driver_ids:
                pipe.hmget(driver_key(driver_id), ["lat", "lng", "recorded_at", "region"])
            rows = await pipe.execute()
        mismatched = []
        off_index = []
        async with redis.pipeline(transaction=False) as pipe:
            for driver_id, (_, _, _, region) in zip(driver_ids, rows, strict=True):
                pipe.geopos(f"{GEO_PREFIX}{region}", str(driver_id))
            indexed = await pipe.execute()
        for driver_id, row, sent, geo in zip(driver_ids, rows, last_sent, indexed, strict=True):
            lat, lng, recorded_ms = sent
            stored = (float(row[0]), float(row[1]), int(row[2])) if row[0] else None
            if stored != (lat, lng, recorded_ms):
                mismatched.append({"driver": str(driver_id), "sent": sent, "stored": stored})
                continue
            position = geo[0]
            if position is None or haversine_m(lat, lng, position[1], position[0]) > 1.0:
                off_index.append(str(driver_id))
        return {
            "drivers": len(driver_ids),
            "matching_last_sent": len(driver_ids) - len(mismatched),
            "mismatched": mismatched[:5],
            "off_geo_index": off_index[:5],
            "ok": not mismatched and not off_index,
        }
    finally:
        await redis.aclose()


async def require_empty(settings: Settings, db: int) -> None:
    redis = create_redis(settings.redis)
    try:
        if await redis.dbsize():
            raise SystemExit(f"Redis database {db} is not empty; choose another --redis-db")
    finally:
        await redis.aclose()


async def flush(settings: Settings) -> None:
    redis = create_redis(settings.redis)
    try:
        await redis.flushdb()
    finally:
        await redis.aclose()


def run(args: argparse.Namespace) -> dict[str, Any]:
    redis_url = f"{str(args.redis_url).rstrip('/')}/{args.redis_db}"
    base = Settings(redis=RedisSettings(url=RedisDsn(redis_url)))
    asyncio.run(require_empty(base, args.redis_db))
    try:
        return _run(args, redis_url)
    finally:
        asyncio.run(flush(base))


def _run(args: argparse.Namespace, redis_url: str) -> dict[str, Any]:
    rng = np.random.default_rng(args.seed)
    starts = scatter(trip_origins(args.trips), args.drivers, 1_500.0, rng)
    with scratch_database("ingest") as database_url:
        settings = Settings(
            database=DatabaseSettings(url=database_url, pool_size=10),
            redis=RedisSettings(url=RedisDsn(redis_url)),
            auth=AuthSettings(
                jwt_secret=BENCH_JWT_SECRET, argon2_time_cost=1, argon2_memory_kib=1024
            ),
        )
        progress(f"making {args.drivers} member drivers")
        drivers = asyncio.run(make_drivers(settings, args.drivers))
        runs = []
        for workers, rate in args.runs:
            runs.append(
                measure_websocket(args, settings, database_url, drivers, starts, workers, rate)
            )
            # The next run starts from nothing, as this one did.
            asyncio.run(flush(settings))
        progress("raw GEOADD and the real path's Redis work, pipelined")
        points = scatter(trip_origins(args.trips), args.redis_points, 1_500.0, rng)
        beside = asyncio.run(redis_side(settings, points, 500))
    best = max(run["websocket"]["sustained_accepted_per_s"] for run in runs)
    return {
        "machine": machine(),
        "measured_at": now_iso(),
        "goal_updates_per_s": GOAL_UPDATES_PER_S,
        "drivers": args.drivers,
        "seconds": args.seconds,
        "transport": "websockets over loopback, no compression, one socket per driver",
        "runs": runs,
        "meets_goal": any(run["websocket"]["meets_goal"] for run in runs),
        "best_sustained_accepted_per_s": best,
        "pure_costs_per_frame": pure_costs(100_000),
        **beside,
    }


def measure_websocket(
    args: argparse.Namespace,
    settings: Settings,
    database_url: str,
    drivers: list[tuple[uuid.UUID, str]],
    starts: np.ndarray,
    workers: int,
    rate: float,
) -> dict[str, Any]:
    """One run: the api with ``workers`` processes, ``rate`` frames a second offered."""
    port = free_port()
    env = {
        **os.environ,
        "RIDECOOP_DATABASE_URL": database_url,
        "RIDECOOP_REDIS_URL": str(settings.redis.url),
        "RIDECOOP_AUTH_JWT_SECRET": BENCH_JWT_SECRET,
        "RIDECOOP_LOG_LEVEL": "WARNING",
        # One pool per worker; every socket's membership check takes one briefly.
        "RIDECOOP_DATABASE_POOL_SIZE": "10",
    }
    progress(f"starting the api ({workers} worker(s)) on 127.0.0.1:{port}")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            "bench.dispatch_ingest:app_factory",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        env=env,
    )
    try:
        wait_for_port(port, server, 60)
        # Workers start one after the other; all must be listening before the load.
        time.sleep(1.0 + 2.0 * (workers - 1))
        context = multiprocessing.get_context("spawn")
        results = context.Queue()
        load = context.Process(
            target=generate_load,
            args=(
                {
                    "url": f"ws://127.0.0.1:{port}/v1/drivers/ws",
                    "tokens": [token for _, token in drivers],
                    "starts": starts.tolist(),
                    "rate": rate,
                    "seconds": args.seconds,
                    "sample_every": args.sample_every,
                    "seed": args.seed,
                },
                results,
            ),
        )
        progress(f"{len(drivers)} drivers connecting, then {rate:g}/s for {args.seconds:g} s")
        server_pids = process_tree(server.pid)
        load.start()
        receive(results, "window", load, 300)
        cpu_before = (tree_cpu(server_pids), asyncio.run(redis_cpu(settings)))
        receive(results, "window", load, args.seconds + 300)
        cpu_after = (tree_cpu(server_pids), asyncio.run(redis_cpu(settings)))
        outcome = receive(results, "result", load, 120)
        load.join(timeout=30)
        progress("checking Redis against what was sent")
        check = asyncio.run(
            check_redis(settings, [driver_id for driver_id, _ in drivers], outcome["last_sent"])
        )
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    if not check["ok"] or outcome["unanswered_heartbeats"]:
        print(json.dumps({"check": check, "outcome": _short(outcome)}, indent=2))
        raise SystemExit("positions were lost: Redis does not hold what was sent")
    refused = sum(outcome["errors"].values())
    accepted = outcome["sent"] - refused
    window = outcome["drained_s"]
    sustained = accepted / window
    server_cpu = cpu_after[0] - cpu_before[0]
    redis_cpu_s = cpu_after[1] - cpu_before[1]
    progress(f"{workers} worker(s): {sustained:,.0f} accepted updates/s sustained")
    return {
        "api_workers": workers,
        "offered_per_s": rate,
        "connect_s": outcome["connect_s"],
        "websocket": {
            "sent": outcome["sent"],
            "refused": outcome["errors"],
            "accepted": accepted,
            "sending_s": outcome["sending_s"],
            "drained_s": window,
            "sent_per_s": round(outcome["sent"] / outcome["sending_s"]),
            "sustained_accepted_per_s": round(sustained),
            "per_second_sent": outcome["per_second_sent"],
            "ack_latency_ms": outcome["latency_ms"],
            "meets_goal": sustained >= GOAL_UPDATES_PER_S,
        },
        "none_lost": check,
        "cpu_s": {
            "window_s": window,
            "api": round(server_cpu, 2),
            "load_generator": outcome["window_cpu_s"],
            "redis": round(redis_cpu_s, 2),
            "api_us_per_update": round(server_cpu / max(1, accepted) * 1e6, 1),
            "redis_us_per_update": round(redis_cpu_s / max(1, accepted) * 1e6, 1),
        },
    }


def _short(outcome: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in outcome.items() if k != "last_sent"}


def _runs(value: str) -> list[tuple[int, float]]:
    runs = []
    for part in value.split(","):
        workers, _, rate = part.partition(":")
        if not (workers.isdigit() and 1 <= int(workers) <= 8 and float(rate or 0) > 0):
            raise argparse.ArgumentTypeError(f"{part!r} is not workers:rate (1..8 workers)")
        runs.append((int(workers), float(rate)))
    return runs


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.dispatch_ingest", description=__doc__)
    parser.add_argument("--drivers", type=int, default=1_000)
    parser.add_argument(
        "--runs",
        type=_runs,
        default=_runs("1:12000,2:16000"),
        help="api workers:frames per second offered, comma-separated",
    )
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--sample-every", type=int, default=100)
    parser.add_argument("--redis-points", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--trips", type=Path, default=NYC_TRIPS)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379")
    parser.add_argument("--redis-db", type=int, default=11)
    parser.add_argument("--no-save", action="store_true", help="print only")
    args = parser.parse_args(argv)
    if not (1 <= args.drivers <= 20_000 and 0 < args.seconds <= 600):
        parser.error("--drivers 1..20000, --seconds up to 600")
    results = run(args)
    if not args.no_save:
        merge_results("dispatch", "ingest", results)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
