"""Offer latency: from the end of a matching window's computation to the offer frame
received at the driver's websocket, with 10k drivers online.

    python -m bench.dispatch_offers [--drivers 10000] [--rides 200] [--windows 5] [--no-save]

Goal (the dispatch issue): p99 <= 50 ms with 10k drivers online.

The path measured is the production one end to end: ``Dispatcher.run_window`` (its
region's transaction stores the decisions and inserts the offers, commits, then puts each
offer in the live state, pushes it to the driver's outbox and nudges the driver's pub/sub
channel) -> the api process (a real uvicorn, in its own process) whose driver websocket
(``/v1/drivers/ws``) is woken by the nudge, reads the outbox and sends the frame -> the
driver's app, a websocket client in a third process that stamps each offer frame as it
arrives and acknowledges it. Latency is that stamp minus the moment ``match`` returned,
both on the machine's wall clock (the dispatcher's ``perf_counter`` moment is converted).
The window's duration (regions, requests, drivers near them, matching, storing,
announcing) is reported beside it.

Setup (not timed): a scratch database; ``--drivers`` drivers online in Redis logical
database ``--redis-db`` (13 by default, which must be empty and is flushed afterwards),
where New York's taxi trips begin, scattered; ``--rides`` x ``--windows`` of them are
members with a websocket open. Before each window ``--rides`` rides in matching are
loaded, each at the position of one connected driver who holds no offer, so that the
optimum gives each ride that driver (checked: every offer must go to it and arrive).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import multiprocessing
import os
import random
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import numpy as np
import uvloop
import websockets
from fastapi import FastAPI
from pydantic import RedisDsn
from redis.asyncio import Redis

from accounts.models import Role
from accounts.passwords import Passwords
from accounts.tokens import issue_access_token
from api.app import create_app, freeze_start_up
from api.routes import driver_ws
from api.state import Resources
from bench.dispatch_live import NYC_TRIPS, scatter, trip_origins
from bench.harness import machine, merge_results, now_iso, plain_url, progress, scratch_database
from bench.inprocess_gateway import InProcessGateway
from dispatch.dispatcher import Dispatcher, WindowReport
from dispatch.flows import RideFlows
from dispatch.live import LiveState
from dispatch.locations import LocationUpdate
from dispatch.matching import MatchingParams
from dispatch.offers import MadeOffer
from dispatch.regions import region_of
from infra.clock import SystemClock
from infra.db import create_engine, create_sessionmaker
from infra.redis import create_redis
from infra.settings import (
    ApiSettings,
    AuthSettings,
    DatabaseSettings,
    RedisSettings,
    get_settings,
)
from payments.flows import PaymentFlows
from payments.stripe_gateway import StripeGateway

GOAL_P99_MS = 50.0
CHART_PATH = Path(__file__).parent.parent / "docs" / "img" / "dispatch_offers.png"
BENCH_JWT_SECRET = "bench-secret-0123456789abcdef0123456789abcdef"
ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT_S = 60.0
# uvicorn's and the websockets client's ping interval.
KEEPALIVE_S = 20.0
CONNECT_BATCH = 25
# A driver reads the offer and taps accept a few seconds later (seconds, uniform).
ACCEPT_AFTER_S = (2.0, 8.0)
# How long the clients listen after the last window, and wait to report.
DELIVERY_GRACE_S = 3.0
DELIVERY_TIMEOUT_S = 30.0
NOW = datetime.now(UTC)


# The api process: the app as deployed, with the driver channel wired if the app does
# not wire it yet, and a larger Redis pool. Each driver websocket holds a pub/sub
# connection of its own, and redis-py 8 caps a pool at 100 connections by default, so an
# api worker as configured today serves about 100 drivers at once; the pool is raised
# here (API_REDIS_POOL) so that the latency of many open sockets can be measured. The
# garbage collector is set up as the deployed lifespan does (``freeze_start_up``, with
# RIDECOOP_API_GC_GEN2_THRESHOLD, which --api-gc-gen2-threshold sets for a variant).

API_REDIS_POOL = 4_000
API_GC_GEN2_ENV = "RIDECOOP_API_GC_GEN2_THRESHOLD"


def api_app() -> FastAPI:
    settings = get_settings()
    _log_long_collections()
    app = create_app(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(settings.database)
        redis = Redis.from_url(
            str(settings.redis.url), decode_responses=True, max_connections=API_REDIS_POOL
        )
        gateway = StripeGateway(settings.stripe)
        resources = Resources(
            settings=settings,
            engine=engine,
            sessionmaker=create_sessionmaker(engine),
            redis=redis,
            passwords=Passwords(settings.auth),
            clock=SystemClock(),
            gateway=gateway,
        )
        app.state.resources = resources
        try:
            async with driver_ws.driver_channels(resources) as channels:
                app.state.driver_channels = channels
                freeze_start_up(settings.api)
                yield
        finally:
            await gateway.aclose()
            await redis.aclose()
            await engine.dispose()

    app.router.lifespan_context = lifespan
    return app


def _log_long_collections(longer_than_s: float = 0.02) -> None:
    # The api's own pauses, in its log: a window whose offers all arrive late at once
    # is told apart from a slow dispatcher this way.
    started: dict[int, float] = {}

    def timed(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[info["generation"]] = time.perf_counter()
            return
        took = time.perf_counter() - started.pop(info["generation"], time.perf_counter())
        if took > longer_than_s:
            print(
                json.dumps(
                    {
                        "event": "gc_pause",
                        "generation": info["generation"],
                        "ms": round(took * 1000, 1),
                        "at": time.time(),
                    }
                ),
                file=sys.stderr,
                flush=True,
            )

    gc.callbacks.append(timed)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def start_api(
    database_url: str, redis_url: str, port: int, log: Path, gc_gen2: int | None
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        **({API_GC_GEN2_ENV: str(gc_gen2)} if gc_gen2 else {}),
        "RIDECOOP_DATABASE_URL": database_url,
        "RIDECOOP_REDIS_URL": redis_url,
        "RIDECOOP_AUTH_JWT_SECRET": BENCH_JWT_SECRET,
        "RIDECOOP_LOG_LEVEL": "WARNING",
        "RIDECOOP_DATABASE_POOL_SIZE": "20",
    }
    with log.open("wb") as output:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "bench.dispatch_offers:api_app",
                "--factory",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--log-level",
                "warning",
                "--no-access-log",
            ],
            cwd=ROOT,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )


async def wait_for_api(port: int, api: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            if api.poll() is not None:
                raise SystemExit(f"the api exited with {api.returncode}")
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200:
                    return
            await asyncio.sleep(0.2)
    raise SystemExit("the api did not start")


# The drivers' apps, in a process of their own.


def run_clients(port: int, tokens: list[str], pipe: Connection) -> None:
    uvloop.run(_clients(port, tokens, pipe))


async def _clients(port: int, tokens: list[str], pipe: Connection) -> None:
    """Opens a socket per token, stamps and acknowledges every offer frame and accepts
    it a few seconds later, until the parent says stop; then sends what it received."""
    received: list[tuple[str, float]] = []
    accepts: list[asyncio.Task[None]] = []
    replies: dict[str, int] = {}
    connected = 0
    connections = []

    async def connect(token: str) -> Any:
        nonlocal connected
        socket_ = await websockets.connect(
            f"ws://127.0.0.1:{port}/v1/drivers/ws?access_token={token}",
            max_queue=None,
            open_timeout=60,
        )
        hello = json.loads(await socket_.recv())
        if hello.get("type") != "hello":
            raise SystemExit(f"unexpected first frame {hello}")
        connected += 1
        return socket_

    async def listen(socket_: Any) -> None:
        async for raw in socket_:
            frame = json.loads(raw)
            if frame.get("type") != "offer":
                kind = f"{frame.get('type')}:{frame.get('code', '')}"
                replies[kind] = replies.get(kind, 0) + 1
                continue
            received.append((frame["offer_id"], time.time()))
            await socket_.send(json.dumps({"type": "ack", "message_id": frame["message_id"]}))
            # A driver takes a moment to accept; an offer left unanswered would expire
            # and its ride go to another driver.
            accepts.append(asyncio.create_task(accept(socket_, frame["offer_id"])))

    async def accept(socket_: Any, offer_id: str) -> None:
        await asyncio.sleep(random.uniform(*ACCEPT_AFTER_S))
        await socket_.send(json.dumps({"type": "accept", "offer_id": offer_id}))

    # Phones connect at random times, so their keepalive pings (every 20 s, both ways)
    # are spread out; sockets all opened in the same second would ping in one burst
    # every 20 s and stall one window's offers behind a thousand pongs.
    steps = range(0, len(tokens), CONNECT_BATCH)
    pause_s = KEEPALIVE_S / max(1, len(steps))
    for start in steps:
        batch = tokens[start : start + CONNECT_BATCH]
        connections += await asyncio.gather(*(connect(token) for token in batch))
        await asyncio.sleep(pause_s)
    listeners = [asyncio.create_task(listen(c)) for c in connections]
    # The clients stand in for a thousand phones: a collection pass over this process's
    # thousand connections would stall them all at once, which no phone does.
    gc.collect()
    gc.freeze()
    pipe.send(("ready", connected))
    await asyncio.to_thread(pipe.recv)
    for task in listeners:
        task.cancel()
    await asyncio.gather(*(c.close() for c in connections), return_exceptions=True)
    pipe.send(("received", (received, replies)))


# The data.


async def load_people(
    url: str, drivers: list[uuid.UUID], members: list[uuid.UUID], riders: list[uuid.UUID]
) -> None:
    connection = await asyncpg.connect(plain_url(url))
    try:
        people = [
            (d, "driver", f"driver{i}@bench.test", f"+1303{i:07d}") for i, d in enumerate(drivers)
        ]
        people += [
            (r, "rider", f"rider{i}@bench.test", f"+1202{i:07d}") for i, r in enumerate(riders)
        ]
        await connection.copy_records_to_table(
            "users",
            records=[(u, role, e, p, "Bench Person", "x", NOW, NOW) for u, role, e, p in people],
            columns=[
                "id",
                "role",
                "email",
                "phone",
                "full_name",
                "password_hash",
                "created_at",
                "updated_at",
            ],
        )
        await connection.copy_records_to_table(
            "memberships",
            records=[(m, "member", NOW, 10_000, "USD", NOW, NOW, NOW) for m in members],
            columns=[
                "user_id",
                "status",
                "share_paid_at",
                "share_amount",
                "share_currency",
                "member_since",
                "created_at",
                "updated_at",
            ],
        )
    finally:
        await connection.close()


async def load_rides(
    url: str, riders: Sequence[uuid.UUID], pickups: Sequence[tuple[float, float]]
) -> None:
    """Rides in matching, one per rider, each with a bare quote of its own."""
    now = datetime.now(UTC)
    policy_id = uuid.uuid4()
    quotes, rides = [], []
    for rider, (lat, lng) in zip(riders, pickups, strict=True):
        quote_id, ride_id = uuid.uuid4(), uuid.uuid4()
        pickup = f"SRID=4326;POINT({lng:.9f} {lat:.9f})"
        dropoff = f"SRID=4326;POINT({lng:.9f} {lat + 0.02:.9f})"
        fare = json.dumps(
            {
                "policy_id": str(policy_id),
                "policy_version": 1,
                "basis": "upfront",
                "currency": "USD",
                "total": 1_500,
                "line_items": [{"code": "base", "description": "Fare", "amount": 1_500}],
                "surge_multiplier": "1",
                "zones": [],
            }
        )
        quotes.append(
            (quote_id, rider, pickup, dropoff, policy_id, fare, now, now + timedelta(minutes=5))
        )
        rides.append(
            (ride_id, rider, quote_id, ride_id.hex, region_of(lat, lng), pickup, dropoff, now)
        )
    connection = await asyncpg.connect(plain_url(url))
    try:
        await connection.executemany(
            """
            INSERT INTO quotes (id, rider_id, pickup, dropoff, policy_version_id,
                                total_amount, currency, fare, estimated_distance_m,
                                estimated_duration_s, pickup_eta_s, created_at, expires_at)
            VALUES ($1, $2, ST_GeogFromText($3), ST_GeogFromText($4), $5, 1500, 'USD',
                    $6::jsonb, 2200, 400, NULL, $7, $8)
            """,
            quotes,
        )
        await connection.executemany(
            """
            INSERT INTO rides (id, rider_id, quote_id, idempotency_key, status, region,
                               pickup, dropoff, pin, requested_at)
            VALUES ($1, $2, $3, $4, 'matching', $5, ST_GeogFromText($6),
                    ST_GeogFromText($7), '1234', $8)
            """,
            rides,
        )
    finally:
        await connection.close()


async def bring_online(
    live: LiveState, ids: Sequence[uuid.UUID], points: np.ndarray[Any, Any], at: datetime
) -> None:
    pending = iter(range(len(ids)))

    async def worker() -> None:
        for i in pending:
            lat, lng = float(points[i, 0]), float(points[i, 1])
            await live.set_online(ids[i], region_of(lat, lng), lat, lng, at)

    await asyncio.gather(*(worker() for _ in range(32)))


async def heard_from(
    live: LiveState, ids: Sequence[uuid.UUID], points: np.ndarray[Any, Any]
) -> None:
    """Every driver sends their position again, as apps do every few seconds: without
    it they would fall out of offers after ``liveness_s``."""
    now = datetime.now(UTC)
    for start in range(0, len(ids), 1_000):
        await live.update_locations(
            [
                (
                    ids[i],
                    LocationUpdate(float(points[i, 0]), float(points[i, 1]), None, None, None, now),
                )
                for i in range(start, min(len(ids), start + 1_000))
            ],
            now,
        )


def gc_pauses() -> list[float]:
    """Collects the durations of this process's garbage collections from now on."""
    pauses: list[float] = []
    started: dict[int, float] = {}

    def timed(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[info["generation"]] = time.perf_counter()
        elif info["generation"] in started:
            pauses.append(time.perf_counter() - started.pop(info["generation"]))

    gc.callbacks.append(timed)
    return pauses


# The run.


def percentiles_ms(samples_s: Sequence[float]) -> dict[str, float]:
    ordered = sorted(samples_s)
    if not ordered:
        return {}

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 2)

    return {
        "count": len(ordered),
        "p50_ms": at(0.50),
        "p90_ms": at(0.90),
        "p99_ms": at(0.99),
        "max_ms": round(ordered[-1] * 1000, 2),
        "mean_ms": round(statistics.fmean(ordered) * 1000, 2),
    }


async def run(url: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    base = str(args.redis_url).rstrip("/")
    redis_url = f"{base}/{args.redis_db}"
    redis = create_redis(RedisSettings(url=RedisDsn(redis_url)))
    if await redis.dbsize():
        await redis.aclose()
        raise SystemExit(f"Redis database {args.redis_db} is not empty; choose another")
    rng = np.random.default_rng(args.seed)
    points = scatter(trip_origins(args.trips), args.drivers, args.spread_m, rng)
    drivers = [uuid.uuid4() for _ in range(args.drivers)]
    connected_count = args.rides * args.windows
    chosen = rng.choice(args.drivers, size=connected_count, replace=False)
    members = [drivers[int(i)] for i in chosen]
    riders = [uuid.uuid4() for _ in range(connected_count)]
    engine = create_engine(DatabaseSettings(url=url, pool_size=10))
    api: subprocess.Popen[bytes] | None = None
    pauses: list[float] = []
    after_push: list[float] = []
    clients: Any = None
    try:
        progress(f"loading {args.drivers} drivers ({connected_count} connected) and riders")
        await load_people(url, drivers, members, riders)
        live = LiveState(redis)
        await bring_online(live, drivers, points, datetime.now(UTC))
        port = free_port()
        api = start_api(url, redis_url, port, workdir / "api.log", args.api_gc_gen2_threshold)
        await wait_for_api(port, api)
        auth = AuthSettings(jwt_secret=BENCH_JWT_SECRET)
        tokens = [
            issue_access_token(
                auth,
                user_id=member,
                role=Role.driver,
                session_id=uuid.uuid4(),
                now=datetime.now(UTC) + timedelta(seconds=0),
            )[0]
            for member in members
        ]
        parent, child = multiprocessing.get_context("spawn").Pipe()
        clients = multiprocessing.get_context("spawn").Process(
            target=run_clients, args=(port, tokens, child)
        )
        clients.start()
        # Only the child holds its end: if it dies, recv raises instead of waiting forever.
        child.close()
        _, connected = await asyncio.to_thread(parent.recv)
        progress(f"{connected} driver websockets open")

        sessionmaker = create_sessionmaker(engine)
        clock = SystemClock()
        flows = RideFlows(
            sessionmaker, PaymentFlows(sessionmaker, InProcessGateway(), clock), clock, redis
        )
        dispatcher = Dispatcher(
            sessionmaker, live, clock, MatchingParams(), "bench", no_driver=flows
        )
        # As run_dispatcher does before its first window.
        gc.collect()
        gc.freeze()
        pauses = gc_pauses()
        matched_wall: dict[str, float] = {}
        pushed_wall: dict[str, float] = {}
        window_of: dict[str, int] = {}
        others = 0
        all_offers: list[MadeOffer] = []
        windows: list[dict[str, Any]] = []
        for window in range(args.windows):
            window_started = time.monotonic()
            batch = range(window * args.rides, (window + 1) * args.rides)
            expected = {
                members[i]: (float(points[chosen[i], 0]), float(points[chosen[i], 1]))
                for i in batch
            }
            await load_rides(url, riders[batch.start : batch.stop], list(expected.values()))
            await heard_from(live, drivers, points)
            report: WindowReport = await dispatcher.run_window(datetime.now(UTC))
            perf_now, wall_now = time.perf_counter(), time.time()
            all_offers.extend(report.offers)
            offers = [o for o in report.offers if o.offer.driver_id in expected]
            if len(offers) != len(expected):
                raise SystemExit(
                    f"window {window}: {len(offers)} offers, not one to each connected driver"
                )
            # Offers to drivers without a socket here: rides of earlier windows offered
            # again (their offer was declined or expired). Not measured.
            others += len(report.offers) - len(offers)
            for region in report.regions:
                wall = wall_now - (perf_now - region.matched_at)
                pushed = wall_now - (perf_now - region.pushed_at)
                for made in region.offers:
                    matched_wall[str(made.offer.id)] = wall
                    pushed_wall[str(made.offer.id)] = pushed
                    window_of[str(made.offer.id)] = window
            windows.append(
                {
                    "window_ms": round(report.duration_s * 1000, 1),
                    "match_ms": round(sum(r.match_s for r in report.regions) * 1000, 1),
                    "commit_ms": round(
                        max(r.committed_at - r.matched_at for r in report.regions) * 1000, 1
                    ),
                    "pushed_ms": round(
                        max(r.pushed_at - r.matched_at for r in report.regions) * 1000, 1
                    ),
                    "regions": len(report.regions),
                    "requests": sum(r.requests for r in report.regions),
                    "drivers_considered": sum(r.drivers for r in report.regions),
                    "offers": len(offers),
                }
            )
            progress(f"window {window}: {windows[-1]}")
            # Windows start every window_s, as the dispatcher's loop runs them.
            await asyncio.sleep(max(0.0, args.window_s - (time.monotonic() - window_started)))
        # The last offers' frames are on their way: give them the time to arrive.
        await asyncio.sleep(DELIVERY_GRACE_S)
        parent.send(("stop",))
        _, (received, replies) = await asyncio.wait_for(
            asyncio.to_thread(parent.recv), timeout=DELIVERY_TIMEOUT_S
        )
        latencies = [stamp - matched_wall[offer_id] for offer_id, stamp in received]
        after_push = [stamp - pushed_wall[offer_id] for offer_id, stamp in received]
        sockets = set(members)
        sent = sum(1 for offer in all_offers if offer.offer.driver_id in sockets)
        missing = sent - len({offer_id for offer_id, _ in received})
        for offer_id, stamp in received:
            slowest = windows[window_of[offer_id]].setdefault("slowest_offer_ms", 0.0)
            latency_ms = round((stamp - matched_wall[offer_id]) * 1000, 1)
            windows[window_of[offer_id]]["slowest_offer_ms"] = max(slowest, latency_ms)
        if missing:
            raise SystemExit(f"{missing} offers never reached their driver's websocket")
    finally:
        if clients is not None and clients.pid is not None:
            clients.join(timeout=30)
            if clients.is_alive():
                clients.terminate()
        if api is not None:
            api.terminate()
            try:
                api.wait(timeout=15)
            except subprocess.TimeoutExpired:
                api.kill()
        # The scratch Redis database is emptied whatever happened before, once the api
        # (which may still be answering the last accepts) has stopped writing to it.
        await redis.flushdb()
        await redis.aclose()
        await engine.dispose()
    latency = percentiles_ms(latencies)
    api_pauses = [
        float(json.loads(line)["ms"])
        for line in (workdir / "api.log").read_text().splitlines()
        if '"gc_pause"' in line
    ]
    if not args.no_save:
        _chart(latencies, windows, latency, args.drivers)
    return {
        "machine": machine(),
        "measured_at": now_iso(),
        "drivers_online": args.drivers,
        "rides_per_window": args.rides,
        "windows": args.windows,
        "window_every_s": args.window_s,
        # Start-up objects frozen either way; the api inherits this process's environment,
        # so ApiSettings() reads the threshold it read unless the variant set one.
        "api_gc_gen2_threshold": args.api_gc_gen2_threshold or ApiSettings().gc_gen2_threshold,
        "api_gc_variant": bool(args.api_gc_gen2_threshold),
        "accept_after_s": list(ACCEPT_AFTER_S),
        "path": "end of match() in Dispatcher.run_window -> commit -> outbox + pub/sub "
        "nudge -> api process (uvicorn) driver websocket -> client process receives "
        "the offer frame; wall clock on one machine",
        "goals": {"offer_latency_p99_ms": GOAL_P99_MS},
        "offer_latency": {**latency, "meets_goal": latency["p99_ms"] <= GOAL_P99_MS},
        # The part of the latency after the dispatcher's push returned: the api process
        # and the drivers' apps (measured from when the region's last push returned).
        "after_push": percentiles_ms(after_push),
        "window_ms": percentiles_ms([w["window_ms"] / 1000 for w in windows]),
        "dispatcher_gc_pauses_ms": percentiles_ms(pauses),
        "api_gc_pauses_over_20_ms": api_pauses,
        "offers_not_measured": others,
        "client_replies": replies,
        "windows_detail": windows,
    }


def _chart(
    latencies_s: Sequence[float],
    windows: Sequence[dict[str, Any]],
    summary: dict[str, Any],
    drivers: int,
) -> None:
    """Every offer's latency, and where each window's slowest offer spent its time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (spread, parts) = plt.subplots(1, 2, figsize=(12, 4.6), constrained_layout=True)
    spread.hist([s * 1000 for s in latencies_s], bins=60, color="#1f77b4")
    spread.axvline(GOAL_P99_MS, color="#d62728", linestyle="--", label="goal: p99 50 ms")
    for key, style in (("p50_ms", ":"), ("p99_ms", "-")):
        spread.axvline(
            summary[key], color="black", linestyle=style, label=f"{key[:3]} {summary[key]} ms"
        )
    spread.set_xlabel("end of match() to offer frame at the driver's websocket (ms)")
    spread.set_ylabel("offers")
    spread.set_title(f"{summary['count']} offers, {drivers:,} drivers online", fontsize=10)
    spread.legend(fontsize=8)
    index = np.arange(len(windows))
    commit = np.array([w["commit_ms"] for w in windows])
    pushed = np.array([w["pushed_ms"] for w in windows]) - commit
    arrived = np.array([w.get("slowest_offer_ms", 0.0) for w in windows]) - commit - pushed
    parts.bar(index, commit, color="#1f77b4", label="offers stored, committed")
    parts.bar(index, pushed, bottom=commit, color="#ff7f0e", label="pushed (outbox + nudge)")
    parts.bar(index, arrived, bottom=commit + pushed, color="#2ca02c", label="api -> driver's app")
    parts.axhline(GOAL_P99_MS, color="#d62728", linestyle="--")
    parts.set_xlabel("window")
    parts.set_ylabel("slowest offer of the window (ms)")
    parts.set_title("Where each window's slowest offer spent its time", fontsize=10)
    parts.legend(fontsize=8)
    figure.suptitle("Offer latency (bench.dispatch_offers)")
    CHART_PATH.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(CHART_PATH, dpi=110)
    plt.close(figure)
    progress(f"chart written to {CHART_PATH}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.dispatch_offers", description=__doc__)
    parser.add_argument("--drivers", type=int, default=10_000)
    parser.add_argument("--rides", type=int, default=50, help="open rides per window")
    parser.add_argument("--windows", type=int, default=30)
    parser.add_argument("--window-s", type=float, default=2.0, help="a window every")
    parser.add_argument("--spread-m", type=float, default=1_500.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--trips", type=Path, default=NYC_TRIPS)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379")
    parser.add_argument("--redis-db", type=int, default=13)
    parser.add_argument(
        "--api-gc-gen2-threshold",
        type=int,
        default=None,
        help="a variant: the api process's third GC threshold (default: the api's "
        "RIDECOOP_API_GC_GEN2_THRESHOLD, as deployed; Python's own is 10)",
    )
    parser.add_argument("--section", default="offers", help="results section")
    parser.add_argument("--no-save", action="store_true", help="print only")
    args = parser.parse_args(argv)
    with scratch_database("offers") as url:
        workdir = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-offers-{os.getpid()}"
        workdir.mkdir(parents=True, exist_ok=True)
        results = uvloop.run(run(url, args, workdir))
    if not args.no_save:
        merge_results("dispatch", args.section, results)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
