"""Settle completed trips end to end and report trips per second (goal: >= 500/s).

    RIDECOOP_DATABASE_URL=postgresql+asyncpg://root@127.0.0.1:5432/ridecoop \\
        python -m bench.payments_settle [--trips 10000] [--concurrency 400 100 16]

Each trip is one call of the production entry point, payments.flows.PaymentFlows.
settle_ride, as dispatch makes it when a driver completes a trip; ``--concurrency`` such
calls are in flight at once (drivers completing at the same moment). Concurrent calls are
settled together (PaymentFlows.settle_rides, through infra.batching.Coalescer): price the
final fares and record the capture calls with their keys, commit; capture through the
gateway; record the settlements in the ledger, commit; record the drivers' transfer calls,
commit; transfer; record the transfers, commit. The gateway is an in-process stand-in
(bench/inprocess_gateway.py): the figure is our code and PostgreSQL, not Stripe's
latency. At Stripe each call takes ~100-300 ms, so by Little's law 500 trips/s means some
400 settlements in flight whatever the code does: hence 400, the first (headline) run.

Setup (not timed): a scratch database per run with 2,000 riders, 200 onboarded drivers
and the trips' card holds already authorized, bulk-loaded. Afterwards the ledger is
verified and its totals checked against the trips. Results: bench/results/payments.json
(``settle``).
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
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import asyncpg

from bench.harness import machine, merge_results, now_iso, plain_url, progress, scratch_database
from bench.inprocess_gateway import InProcessGateway
from infra.clock import SystemClock
from infra.db import create_engine, create_sessionmaker
from infra.settings import DatabaseSettings
from payments import ledger, pricing
from payments.flows import PaymentFlows, hold_amount
from payments.ledger import AccountKind
from payments.ledger_service import LedgerService
from payments.policy import FarePolicy
from payments.pricing import Fare, FareSplit, TripEstimate, TripMeasurement

GOAL_PER_S = 500
# Trips settled (not timed) before the measured ones, then ANALYZE: see run().
WARMUP = 2_000
RIDERS = 2_000
DRIVERS = 200
NOW = datetime(2026, 11, 26, 8, 0, tzinfo=UTC)
POLICY = FarePolicy(
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


def trip(rng: random.Random) -> tuple[Fare, FareSplit]:
    distance_m = int(rng.lognormvariate(8.6, 0.6))
    duration_s = max(120, int(distance_m / 8.5))
    zones = frozenset({"airport"}) if rng.random() < 0.05 else frozenset()
    surge = Decimal(rng.choice(["1", "1", "1", "1.2", "1.5"]))
    quote = pricing.quote(
        POLICY, TripEstimate(distance_m, duration_s), surge=surge, zones=zones, now=NOW
    )
    measured = TripMeasurement(
        int(distance_m * rng.uniform(0.9, 1.4)), int(duration_s * rng.uniform(0.9, 1.4)), 0
    )
    fare = pricing.final_fare(POLICY, quote, measured)
    return fare, pricing.split(POLICY, fare)


async def setup(
    url: str, trips: int, seed: int
) -> list[tuple[uuid.UUID, uuid.UUID, Fare, FareSplit]]:
    rng = random.Random(seed)
    riders = [uuid.uuid4() for _ in range(RIDERS)]
    drivers = [uuid.uuid4() for _ in range(DRIVERS)]
    rows = [
        (
            user_id,
            role,
            f"{role}{i}@bench.test",
            f"+1202555{i:04d}" if role == "rider" else f"+1303555{i:04d}",
        )
        for role, people in (("rider", riders), ("driver", drivers))
        for i, user_id in enumerate(people)
    ]
    work = []
    payments = []
    for _ in range(trips):
        ride_id, rider, driver = uuid.uuid4(), rng.choice(riders), rng.choice(drivers)
        fare, split = trip(rng)
        work.append((ride_id, driver, fare, split))
        hold = hold_amount(
            pricing.quote(
                POLICY, TripEstimate(1, 1), surge=Decimal(1), zones=frozenset(), now=NOW
            ).total
        )
        amount = max(hold.amount, fare.total.amount)
        payments.append(
            (
                ride_id,
                rider,
                "USD",
                "authorized",
                amount,
                f"pi_setup_{ride_id.hex}",
                0,
                0,
                0,
                NOW,
                NOW,
            )
        )
    connection = await asyncpg.connect(plain_url(url))
    try:
        await connection.copy_records_to_table(
            "users",
            records=[(u, r, e, p, "Bench Person", "x", NOW, NOW) for u, r, e, p in rows],
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
            "payment_customers",
            records=[(r, f"cus_{r.hex}", f"pm_{r.hex}", NOW, NOW) for r in riders],
            columns=[
                "user_id",
                "stripe_customer_id",
                "default_payment_method_id",
                "created_at",
                "updated_at",
            ],
        )
        await connection.copy_records_to_table(
            "driver_payout_accounts",
            records=[(d, f"acct_{d.hex}", True, True, True, NOW, NOW) for d in drivers],
            columns=[
                "driver_id",
                "stripe_account_id",
                "details_submitted",
                "charges_enabled",
                "payouts_enabled",
                "created_at",
                "updated_at",
            ],
        )
        await connection.copy_records_to_table(
            "ride_payments",
            records=payments,
            columns=[
                "ride_id",
                "rider_id",
                "currency",
                "status",
                "authorized_amount",
                "payment_intent_id",
                "refunded_amount",
                "transferred_amount",
                "attempts",
                "created_at",
                "updated_at",
            ],
        )
        await connection.execute("VACUUM ANALYZE")
    finally:
        await connection.close()
    return work


Work = Sequence[tuple[uuid.UUID, uuid.UUID, Fare, FareSplit]]


async def settle(
    url: str, work: Work, concurrency: int, settled_before: Work = ()
) -> tuple[float, list[float], dict[str, Any]]:
    """Settles ``work`` with ``concurrency`` calls in flight; the pool and the batching
    are production's defaults. The checks cover ``settled_before`` too."""
    engine = create_engine(DatabaseSettings(url=url))
    flows = PaymentFlows(create_sessionmaker(engine), InProcessGateway(), SystemClock())
    latencies: list[float] = []
    queue: asyncio.Queue[tuple[uuid.UUID, uuid.UUID, Fare, FareSplit]] = asyncio.Queue()
    for item in work:
        queue.put_nowait(item)
    done = 0

    async def worker() -> None:
        nonlocal done
        while not queue.empty():
            ride_id, driver_id, fare, split = queue.get_nowait()
            started = time.perf_counter()
            result = await flows.settle_ride(ride_id, driver_id, fare, split)
            latencies.append(time.perf_counter() - started)
            if result.status != "captured" or result.transferred_amount != split.driver.amount:
                raise SystemExit(f"ride {ride_id} ended {result.status}")
            done += 1
            if done % 2_000 == 0:
                progress(f"settled {done}/{len(work)}")

    try:
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
        async with create_sessionmaker(engine)() as session:
            service = LedgerService(session, SystemClock())
            verification = await service.verify()
            stripe = await service.balance(ledger.stripe_balance("USD"))
            revenue = await service.balance(
                ledger.shared_account(AccountKind.coop_commission_revenue, "USD")
            )
            version = (
                await session.execute(__import__("sqlalchemy").text("SHOW server_version"))
            ).scalar_one()
        everything = [*settled_before, *work]
        expected_stripe = sum(f.total.amount - s.driver.amount for _, _, f, s in everything)
        expected_commission = sum(s.commission.amount for _, _, _, s in everything)
        checks = {
            "ledger_balances": verification.ok,
            "stripe_balance_matches": stripe.amount == expected_stripe,
            "commission_matches": revenue.amount == expected_commission,
            "postgresql": version,
            "batches": flows.settlement_batches,
        }
    finally:
        await engine.dispose()
    return elapsed, latencies, checks


async def analyze(url: str) -> None:
    connection = await asyncpg.connect(plain_url(url))
    try:
        await connection.execute("ANALYZE")
    finally:
        await connection.close()


def run(trips: int, concurrency: int, seed: int) -> dict[str, Any]:
    with scratch_database("settle") as url:
        progress(
            f"loading {RIDERS} riders, {DRIVERS} drivers and {WARMUP + trips} authorized trips"
        )
        work = asyncio.run(setup(url, WARMUP + trips, seed))
        warmup, work = work[:WARMUP], work[WARMUP:]
        # A running platform, not an empty database: settle some trips first (not timed)
        # and ANALYZE, as autovacuum does on a live system. Plans made while the ledger
        # and the call log are empty would otherwise scan whole tables (docs/benchmarks.md).
        progress(f"warming up: {WARMUP} trips, then ANALYZE")
        asyncio.run(settle(url, warmup, concurrency))
        asyncio.run(analyze(url))
        progress(f"settling {trips} trips, {concurrency} in flight")
        elapsed, latencies, checks = asyncio.run(settle(url, work, concurrency, warmup))
    per_s = trips / elapsed
    latencies.sort()
    batches, items = checks.pop("batches")
    return {
        "trips": trips,
        "concurrency": concurrency,
        "seconds": round(elapsed, 2),
        "trips_per_s": round(per_s, 1),
        "latency_ms": {
            "p50": round(statistics.median(latencies) * 1000, 1),
            "p99": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 1),
        },
        "batches": batches,
        "mean_batch": round(items / batches, 1) if batches else 0,
        "goal_met": per_s >= GOAL_PER_S,
        "checks": checks,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--trips", type=int, default=10_000)
    parser.add_argument(
        "--concurrency",
        type=int,
        nargs="+",
        default=[400, 100, 16],
        help="settle_ride calls in flight; one run per value, the first is the headline",
    )
    parser.add_argument("--seed", type=int, default=2026)
    args = parser.parse_args(argv)
    runs = [run(args.trips, concurrency, args.seed) for concurrency in args.concurrency]
    postgresql = ""
    for each in runs:
        postgresql = str(each["checks"].pop("postgresql"))
    headline = runs[0]
    results = {
        **headline,
        "goal_per_s": GOAL_PER_S,
        "runs": runs,
        "machine": machine(postgresql),
        "date": now_iso(),
    }
    merge_results("payments", "settle", results)
    print(json.dumps(results, indent=2))
    return 0 if all(all(each["checks"].values()) for each in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
