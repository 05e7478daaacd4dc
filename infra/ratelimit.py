"""Fixed-window rate limits in Redis, shared by every api worker."""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis


@dataclass(frozen=True, slots=True)
class RateLimitResult:
    allowed: bool
    remaining: int
    retry_after_s: int


async def hit(redis: Redis, key: str, limit: int, window_s: int) -> RateLimitResult:
    """Counts one hit against ``key``; the window starts at the first hit."""
    async with redis.pipeline(transaction=True) as pipe:
        pipe.incr(key)
        pipe.expire(key, window_s, nx=True)
        pipe.ttl(key)
        count, _, ttl = await pipe.execute()
    remaining = max(0, limit - int(count))
    return RateLimitResult(
        allowed=int(count) <= limit, remaining=remaining, retry_after_s=max(1, int(ttl))
    )


async def reset(redis: Redis, key: str) -> None:
    await redis.delete(key)
