"""Periodic jobs that every worker may try to run: each period runs once in the fleet.

Claims live in Redis with a TTL; if a claim is lost, a job runs twice, which is why every
scheduled job is idempotent.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

from redis.asyncio import Redis


@dataclass(frozen=True, slots=True)
class Periodic:
    name: str
    every_s: int
    run: Callable[[datetime], Awaitable[None]]

    def slot(self, now: datetime) -> int:
        return int(now.timestamp()) // self.every_s


async def claim(redis: Redis, job: Periodic, now: datetime) -> bool:
    """True for exactly one caller per job and period."""
    key = f"schedule:{job.name}:{job.slot(now)}"
    return bool(await redis.set(key, "1", nx=True, ex=max(60, 2 * job.every_s)))
