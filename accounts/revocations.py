"""Revoked sessions, in Redis for the lifetime of the access tokens they issued.

Access tokens are checked on every request without touching PostgreSQL; a revoked
session's marker outlives any access token it could have issued.
"""

from __future__ import annotations

import uuid

from redis.asyncio import Redis


def _key(session_id: uuid.UUID) -> str:
    return f"auth:revoked-session:{session_id}"


class SessionRevocations:
    def __init__(self, redis: Redis, access_token_ttl_s: int) -> None:
        self.redis = redis
        self.ttl_s = access_token_ttl_s + 60  # outlive clock skew on the token's exp

    async def revoke(self, session_id: uuid.UUID) -> None:
        await self.redis.set(_key(session_id), "1", ex=self.ttl_s)

    async def is_revoked(self, session_id: uuid.UUID) -> bool:
        return bool(await self.redis.exists(_key(session_id)))
