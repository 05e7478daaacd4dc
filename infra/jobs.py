"""Job queue on Redis Streams, with consumer groups so each job goes to one worker.

Redis is not the source of truth for jobs that matter: whatever a job acts on is stored
in PostgreSQL first, and a periodic sweep re-enqueues what is still pending there. The
stream makes the common case fast; the sweep makes the rare lost message harmless. Every
handler must therefore be idempotent.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from infra.logging import get_logger

log = get_logger(__name__)

STREAM = "jobs"
GROUP = "workers"
# A message a worker took and did not acknowledge within this time is given to another.
CLAIM_IDLE_MS = 60_000
MAX_DELIVERIES = 10
DEAD_LETTER_STREAM = "jobs:dead"


@dataclass(frozen=True, slots=True)
class Job:
    kind: str
    payload: dict[str, Any]
    message_id: str = ""
    deliveries: int = 1


Handler = Callable[[Job], Awaitable[None]]


async def enqueue(redis: Redis, kind: str, payload: Mapping[str, Any], stream: str = STREAM) -> str:
    message_id = await redis.xadd(
        stream,
        {"kind": kind, "payload": json.dumps(dict(payload), separators=(",", ":"))},
        maxlen=1_000_000,
        approximate=True,
    )
    return str(message_id)


def consumer_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class JobConsumer:
    """Reads jobs for one worker process; ``run_once`` handles one batch."""

    def __init__(
        self,
        redis: Redis,
        handlers: Mapping[str, Handler],
        *,
        stream: str = STREAM,
        group: str = GROUP,
        consumer: str | None = None,
        claim_idle_ms: int = CLAIM_IDLE_MS,
        max_deliveries: int = MAX_DELIVERIES,
    ) -> None:
        self.redis = redis
        self.handlers = dict(handlers)
        self.stream = stream
        self.group = group
        self.consumer = consumer or consumer_name()
        self.claim_idle_ms = claim_idle_ms
        self.max_deliveries = max_deliveries

    async def ensure_group(self) -> None:
        try:
            await self.redis.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def run_once(self, block_ms: int = 1_000, count: int = 32) -> int:
        """Handles the jobs other workers abandoned, then new ones; returns how many ran."""
        handled = 0
        claimed: list[Any] = await self.redis.xautoclaim(
            self.stream, self.group, self.consumer, self.claim_idle_ms, "0-0", count=count
        )
        for message_id, fields in claimed[1]:
            handled += await self._handle(message_id, fields)
        fresh: Any = await self.redis.xreadgroup(
            self.group, self.consumer, {self.stream: ">"}, count=count, block=block_ms
        )
        for _stream, messages in fresh or []:
            for message_id, fields in messages:
                handled += await self._handle(message_id, fields)
        return handled

    async def _deliveries(self, message_id: str) -> int:
        pending = await self.redis.xpending_range(
            self.stream, self.group, min=message_id, max=message_id, count=1
        )
        return int(pending[0]["times_delivered"]) if pending else 1

    async def _handle(self, message_id: str, fields: Mapping[str, str] | None) -> int:
        if not fields:  # trimmed away while pending
            await self.redis.xack(self.stream, self.group, message_id)
            return 0
        deliveries = await self._deliveries(message_id)
        kind = fields.get("kind", "")
        handler = self.handlers.get(kind)
        try:
            payload = json.loads(fields.get("payload", "{}"))
        except ValueError:
            payload = None
        if handler is None or not isinstance(payload, dict):
            await self._dead(message_id, fields, "unknown kind or malformed payload")
            return 0
        try:
            await handler(Job(kind, payload, message_id, deliveries))
        except Exception as exc:
            # Left pending: a later run claims it after claim_idle_ms, until it gives up.
            log.exception("job_failed", kind=kind, message_id=message_id, deliveries=deliveries)
            if deliveries >= self.max_deliveries:
                await self._dead(message_id, fields, f"{type(exc).__name__}: {exc}")
            return 0
        await self.redis.xack(self.stream, self.group, message_id)
        return 1

    async def _dead(self, message_id: str, fields: Mapping[str, str], reason: str) -> None:
        dead: dict[str | bytes, str | bytes] = dict(fields.items())
        dead["reason"] = reason[:500]
        await self.redis.xadd(DEAD_LETTER_STREAM, dead)  # type: ignore[arg-type]
        await self.redis.xack(self.stream, self.group, message_id)
