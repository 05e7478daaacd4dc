"""The Redis client. Redis holds live state that can be rebuilt; never money or votes."""

from __future__ import annotations

from redis.asyncio import Redis

from infra.settings import RedisSettings


def create_redis(settings: RedisSettings) -> Redis:
    return Redis.from_url(
        str(settings.url),
        decode_responses=True,
        health_check_interval=30,
        socket_connect_timeout=5,
        socket_timeout=10,
    )
