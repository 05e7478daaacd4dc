from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from redis.asyncio import Redis

from infra.clock import FrozenClock
from infra.jobs import Job, enqueue
from infra.schedule import Periodic
from ridecoop.worker import Worker

T0 = datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC)


async def test_a_periodic_job_runs_once_per_period_across_workers(redis_client: Redis) -> None:
    runs: list[datetime] = []

    async def job(now: datetime) -> None:
        runs.append(now)

    clock = FrozenClock(T0)
    periodic = [Periodic("reconcile", every_s=3600, run=job)]
    workers = [Worker(redis_client, {}, periodic, clock) for _ in range(3)]
    await asyncio.gather(*(w.run_periodic_once() for w in workers))
    assert len(runs) == 1
    clock.set(T0.replace(minute=59))
    await workers[0].run_periodic_once()
    assert len(runs) == 1
    clock.set(T0.replace(hour=13))
    await workers[1].run_periodic_once()
    assert len(runs) == 2


async def test_a_failing_periodic_job_does_not_stop_the_others(redis_client: Redis) -> None:
    ran: list[str] = []

    async def broken(now: datetime) -> None:
        raise RuntimeError("boom")

    async def fine(now: datetime) -> None:
        ran.append("fine")

    worker = Worker(
        redis_client,
        {},
        [Periodic("broken", 60, broken), Periodic("fine", 60, fine)],
        FrozenClock(T0),
    )
    assert await worker.run_periodic_once() == 1
    assert ran == ["fine"]


async def test_the_worker_runs_queued_jobs_until_stopped(redis_client: Redis) -> None:
    done = asyncio.Event()
    seen: list[Job] = []

    async def handle(job: Job) -> None:
        seen.append(job)
        done.set()

    worker = Worker(redis_client, {"hello": handle}, [])
    task = asyncio.create_task(worker.run())
    await enqueue(redis_client, "hello", {"who": "driver"})
    await asyncio.wait_for(done.wait(), timeout=5)
    worker.stop()
    await asyncio.wait_for(task, timeout=5)
    assert seen[0].payload == {"who": "driver"}
