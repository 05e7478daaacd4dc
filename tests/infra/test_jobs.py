from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis

from infra.jobs import DEAD_LETTER_STREAM, Job, JobConsumer, enqueue


@pytest.fixture
async def seen() -> list[Job]:
    return []


def _consumer(
    redis: Redis, seen: list[Job], name: str, claim_idle_ms: int = 60_000, max_deliveries: int = 10
) -> JobConsumer:
    async def record(job: Job) -> None:
        seen.append(job)

    async def explode(job: Job) -> None:
        raise RuntimeError("handler failed")

    return JobConsumer(
        redis,
        {"record": record, "explode": explode},
        consumer=name,
        claim_idle_ms=claim_idle_ms,
        max_deliveries=max_deliveries,
    )


async def test_each_job_goes_to_one_consumer(redis_client: Redis, seen: list[Job]) -> None:
    a = _consumer(redis_client, seen, "a")
    b = _consumer(redis_client, seen, "b")
    await a.ensure_group()
    await b.ensure_group()  # a second call is harmless
    for i in range(20):
        await enqueue(redis_client, "record", {"n": i})
    ran = sum(await asyncio.gather(a.run_once(block_ms=10), b.run_once(block_ms=10)))
    ran += await a.run_once(block_ms=10) + await b.run_once(block_ms=10)
    assert ran == 20
    assert sorted(job.payload["n"] for job in seen) == list(range(20))


async def test_a_failed_job_is_retried_by_another_worker(
    redis_client: Redis, seen: list[Job]
) -> None:
    flaky_calls = 0

    async def flaky(job: Job) -> None:
        nonlocal flaky_calls
        flaky_calls += 1
        if flaky_calls == 1:
            raise RuntimeError("first attempt fails")
        seen.append(job)

    first = JobConsumer(redis_client, {"flaky": flaky}, consumer="first", claim_idle_ms=0)
    second = JobConsumer(redis_client, {"flaky": flaky}, consumer="second", claim_idle_ms=0)
    await first.ensure_group()
    await enqueue(redis_client, "flaky", {"ride": "r1"})
    assert await first.run_once(block_ms=10) == 0
    assert await second.run_once(block_ms=10) == 1
    assert seen[0].payload == {"ride": "r1"}
    assert seen[0].deliveries == 2


async def test_poison_jobs_end_in_the_dead_letter_stream(
    redis_client: Redis, seen: list[Job]
) -> None:
    consumer = _consumer(redis_client, seen, "c", claim_idle_ms=0, max_deliveries=3)
    await consumer.ensure_group()
    await enqueue(redis_client, "explode", {})
    await enqueue(redis_client, "no-such-kind", {})
    for _ in range(4):
        await consumer.run_once(block_ms=10)
    dead = await redis_client.xrange(DEAD_LETTER_STREAM) or []
    reasons = sorted(str((fields or {}).get("reason")) for _, fields in dead)
    assert reasons == ["RuntimeError: handler failed", "unknown kind or malformed payload"]
    pending = await redis_client.xpending(consumer.stream, consumer.group)
    assert pending["pending"] == 0
