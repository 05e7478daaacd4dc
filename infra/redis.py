"""The Redis client. Redis holds live state that can be rebuilt; never money or votes."""

from __future__ import annotations

from redis.asyncio import BlockingConnectionPool, Redis

from infra.settings import RedisSettings


def create_redis(settings: RedisSettings) -> Redis:
    # A blocking pool: a burst beyond max_connections waits for a free connection
    # instead of failing at once (redis-py's default pool raises).
    pool = BlockingConnectionPool.from_url(
        str(settings.url),
        max_connections=settings.max_connections,
        timeout=settings.pool_timeout_s,
        decode_responses=True,
        health_check_interval=30,
        socket_connect_timeout=5,
        socket_timeout=10,
    )
    # from_pool: the client owns the pool, so aclose() closes its connections too.
    return Redis.from_pool(pool)
