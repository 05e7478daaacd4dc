"""Time ``LedgerService.verify()`` on a ledger of 1,000,000 postings (goal: <= 2 s).

    RIDECOOP_DATABASE_URL=postgresql+asyncpg://root@127.0.0.1:5432/ridecoop \\
        python -m bench.ledger_verify [--postings N] [--runs R]

A scratch database (``ridecoop_bench_ledger_<pid>``) is created on the configured server,
migrated with ``infra.migrations.upgrade`` and dropped at the end, whatever happens.

The ledger is a year of a 2,000-driver co-op made by the production builders of
payments/ledger.py: every ride is settled, its Stripe fee booked and the driver's share
transferred; some rides add a tip and its transfer, a cancellation fee, a refund (the
transfer reversed) or a dispute; the platform is paid out to the bank daily. Drafts are
bulk-loaded with COPY (asyncpg), in chunks of about 100,000 postings, each chunk one
database transaction. Nothing is bypassed: COPY goes through the same tables, foreign
keys and triggers as ``LedgerService.record``: the balance trigger runs once per COPY
statement, and the deferred balance checks run for every posting and every transaction
at each chunk's COMMIT. The only difference from ``record`` is that account ids are
assigned here rather than by get-or-create.

After loading, ``VACUUM ANALYZE`` brings the tables to the state autovacuum keeps them
in; then ``verify()`` runs ``--runs`` times through the real service and session, and
the median is reported. Results go to bench/results/payments.json (``ledger_verify``).
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
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from bench.harness import (
    machine,
    merge_results,
    now_iso,
    plain_url,
    progress,
    scratch_database,
)
from infra.clock import SystemClock
from infra.db import create_engine, create_sessionmaker
from infra.ids import new_id
from infra.settings import DatabaseSettings
from payments import ledger
from payments.ledger import AccountRef, Clawback, TransactionDraft
from payments.ledger_service import LedgerService
from payments.money import Money

GOAL_SECONDS = 2.0
DRIVERS = 2_000
RIDERS = 20_000
CHUNK_POSTINGS = 100_000
# The largest number of postings one simulated ride produces (settlement 6, fee 2,
# transfer 2, tip 4, refund 4, dispute 5): generation stops this far from the target and
# fills the rest exactly.
MAX_RIDE_POSTINGS = 24
CURRENCY = "USD"
YEAR_START = datetime(2025, 1, 1, tzinfo=UTC)


def usd(amount: int) -> Money:
    return Money(amount, CURRENCY)


@dataclass
class Simulation:
    """A deterministic stream of a co-op's money movements, as ledger drafts."""

    rng: random.Random
    drivers: list[uuid.UUID] = field(default_factory=list)
    serial: int = 0
    day: int = 0
    collected_today: int = 0

    def __post_init__(self) -> None:
        self.drivers = [self._uuid() for _ in range(DRIVERS)]

    def _uuid(self) -> uuid.UUID:
        return uuid.UUID(int=self.rng.getrandbits(128), version=4)

    def _id(self, prefix: str) -> str:
        self.serial += 1
        return f"{prefix}_{self.serial}"

    def ride(self) -> list[TransactionDraft]:
        rng = self.rng
        ride_id, driver = self._uuid(), rng.choice(self.drivers)
        ride_part = rng.randint(800, 6_000)
        commission, reserve = ride_part * 10 // 100, ride_part * 2 // 100
        airport = 400 if rng.random() < 0.1 else 0
        driver_share = ride_part - commission - reserve
        charge = self._id("ch")
        total = ride_part + 200 + airport
        drafts = [
            ledger.ride_settlement(
                ride_id=ride_id,
                driver_id=driver,
                charge_id=charge,
                driver=usd(driver_share),
                commission=usd(commission),
                reserve=usd(reserve),
                booking_fee=usd(200),
                pass_through=usd(airport),
            ),
            ledger.stripe_fee(charge_id=charge, fee=usd(30 + total * 29 // 1_000)),
            ledger.driver_transfer(
                transfer_id=self._id("tr"), driver_id=driver, amount=usd(driver_share)
            ),
        ]
        if rng.random() < 0.15:
            tip = rng.choice([100, 200, 300, 500])
            drafts += [
                ledger.tip(
                    charge_id=self._id("ch"), ride_id=ride_id, driver_id=driver, amount=usd(tip)
                ),
                ledger.tip_transfer(transfer_id=self._id("tr"), driver_id=driver, amount=usd(tip)),
            ]
        if rng.random() < 0.02:
            drafts.append(
                ledger.refund(
                    refund_id=self._id("re"),
                    ride_id=ride_id,
                    driver_id=driver,
                    amount=usd(total),
                    driver_share=usd(driver_share),
                    pass_through_share=usd(airport),
                    clawback=Clawback.reverse_transfer,
                )
            )
        elif rng.random() < 0.005:
            dispute = self._id("dp")
            drafts += [
                ledger.dispute_opened(
                    dispute_id=dispute, charge_id=charge, amount=usd(total), fee=usd(1_500)
                ),
                ledger.dispute_closed(
                    dispute_id=dispute,
                    amount=usd(total),
                    won=rng.random() < 0.4,
                    fee_returned=usd(0),
                ),
            ]
        self.collected_today += total
        return drafts

    def cancellation(self) -> TransactionDraft:
        return ledger.cancellation_fee(
            ride_id=self._uuid(),
            charge_id=self._id("ch"),
            driver_id=self.rng.choice(self.drivers),
            driver_share=usd(400),
            coop_share=usd(100),
            no_show=self.rng.random() < 0.3,
        )

    def payout(self) -> TransactionDraft:
        amount, self.collected_today = max(self.collected_today // 2, 1), 0
        return ledger.platform_payout(payout_id=self._id("po"), amount=usd(amount))

    def filler(self, postings: int) -> TransactionDraft:
        """A draft of exactly 2 or 3 postings, to reach the target exactly."""
        if postings == 3:
            return ledger.dispute_opened(
                dispute_id=self._id("dp"),
                charge_id=self._id("ch"),
                amount=usd(1_000),
                fee=usd(1_500),
            )
        return ledger.platform_payout(payout_id=self._id("po"), amount=usd(100))


def simulate(target_postings: int, seed: int = 2026) -> Iterator[TransactionDraft]:
    """Drafts totalling exactly ``target_postings`` postings."""
    simulation = Simulation(random.Random(seed))
    count = rides = 0
    while count + MAX_RIDE_POSTINGS + 2 <= target_postings:
        drafts = simulation.ride()
        rides += 1
        if simulation.rng.random() < 0.03:
            drafts.append(simulation.cancellation())
        if rides % 250 == 0:
            drafts.append(simulation.payout())
        for draft in drafts:
            count += len(draft.postings)
            yield draft
    remaining = target_postings - count
    if remaining % 2:
        remaining -= 3
        yield simulation.filler(3)
    for _ in range(remaining // 2):
        yield simulation.filler(2)


@dataclass
class Loaded:
    transactions: int = 0
    postings: int = 0
    accounts: int = 0


async def load(url: str, target_postings: int) -> Loaded:
    connection = await asyncpg.connect(plain_url(url))
    loaded = Loaded()
    account_ids: dict[AccountRef, uuid.UUID] = {}
    at = YEAR_START
    step = timedelta(days=365) / max(target_postings // 4, 1)
    accounts: list[tuple[Any, ...]] = []
    transactions: list[tuple[Any, ...]] = []
    postings: list[tuple[Any, ...]] = []

    async def flush() -> None:
        async with connection.transaction():
            if accounts:
                await connection.copy_records_to_table(
                    "ledger_accounts",
                    records=accounts,
                    columns=[
                        "id",
                        "code",
                        "kind",
                        "currency",
                        "normal_side",
                        "non_negative",
                        "owner_id",
                    ],
                )
            await connection.copy_records_to_table(
                "ledger_transactions",
                records=transactions,
                columns=[
                    "id",
                    "idempotency_key",
                    "kind",
                    "description",
                    "reference",
                    "fingerprint",
                    "recorded_at",
                ],
            )
            await connection.copy_records_to_table(
                "ledger_postings",
                records=postings,
                columns=["transaction_id", "account_id", "currency", "amount"],
            )
        loaded.accounts += len(accounts)
        loaded.transactions += len(transactions)
        loaded.postings += len(postings)
        accounts.clear()
        transactions.clear()
        postings.clear()
        progress(
            f"loaded {loaded.postings:,}/{target_postings:,} postings "
            f"({loaded.transactions:,} transactions, {loaded.accounts:,} accounts)"
        )

    try:
        for draft in simulate(target_postings):
            transaction_id = new_id()
            at += step
            transactions.append(
                (
                    transaction_id,
                    draft.idempotency_key,
                    draft.kind.value,
                    draft.description,
                    draft.reference,
                    draft.fingerprint(),
                    at,
                )
            )
            for posting in draft.postings:
                account = posting.account
                if account not in account_ids:
                    account_ids[account] = new_id()
                    accounts.append(
                        (
                            account_ids[account],
                            account.code,
                            account.kind.value,
                            account.currency,
                            account.rule.normal_side.value,
                            account.rule.non_negative,
                            account.owner_id,
                        )
                    )
                postings.append(
                    (transaction_id, account_ids[account], posting.currency, posting.amount)
                )
            if len(postings) >= CHUNK_POSTINGS:
                await flush()
        if transactions:
            await flush()
        progress("VACUUM ANALYZE")
        await connection.execute(
            "VACUUM ANALYZE ledger_accounts, ledger_transactions, ledger_postings"
        )
    finally:
        await connection.close()
    return loaded


async def time_verify(url: str, runs: int) -> tuple[list[float], dict[str, Any]]:
    engine = create_engine(DatabaseSettings(url=url, pool_size=1))
    sessionmaker = create_sessionmaker(engine)
    timings: list[float] = []
    summary: dict[str, Any] = {}
    try:
        for run in range(1, runs + 1):
            async with sessionmaker() as session:
                started = time.perf_counter()
                verification = await LedgerService(session, SystemClock()).verify()
                timings.append(time.perf_counter() - started)
            if not verification.ok:
                raise SystemExit(f"the benchmark ledger does not verify: {verification}")
            summary = {
                "transactions": verification.transactions,
                "postings": verification.postings,
                "accounts": verification.accounts,
            }
            progress(f"verify run {run}/{runs}: {timings[-1]:.3f} s")
        async with engine.connect() as connection:
            summary["postgresql"] = (
                await connection.exec_driver_sql("SHOW server_version")
            ).scalar()
    finally:
        await engine.dispose()
    return timings, summary


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--postings", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    if args.postings < 2:
        parser.error("--postings must be at least 2")

    with scratch_database("ledger") as url:
        started = time.perf_counter()
        loaded = asyncio.run(load(url, args.postings))
        load_seconds = time.perf_counter() - started
        progress(f"loaded in {load_seconds:.1f} s; timing verify()")
        timings, summary = asyncio.run(time_verify(url, args.runs))

    if summary["postings"] != loaded.postings or loaded.postings != args.postings:
        raise SystemExit(f"loaded {loaded.postings} postings, verify counted {summary['postings']}")
    verify_seconds = statistics.median(timings)
    results = {
        "postings": loaded.postings,
        "transactions": summary["transactions"],
        "accounts": summary["accounts"],
        "verify_seconds": round(verify_seconds, 3),
        "verify_runs_seconds": [round(t, 3) for t in timings],
        "goal_seconds": GOAL_SECONDS,
        "goal_met": verify_seconds <= GOAL_SECONDS,
        "load_seconds": round(load_seconds, 1),
        "machine": machine(str(summary["postgresql"])),
        "date": now_iso(),
    }
    merge_results("payments", "ledger_verify", results)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
