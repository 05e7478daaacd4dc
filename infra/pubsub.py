"""Fan-out over Redis pub/sub, so every api worker can reach the sockets it holds.

Pub/sub is fire-and-forget: it carries notifications, never the only copy of a fact.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import Any

from redis.asyncio import Redis

from infra.events import DomainEvent

EVENTS_CHANNEL = "events"


def user_channel(user_id: uuid.UUID) -> str:
    return f"user:{user_id}"


async def publish(redis: Redis, channel: str, message: dict[str, Any]) -> int:
    return int(await redis.publish(channel, json.dumps(message, separators=(",", ":"))))


AfterPublish = Callable[[Redis, Sequence[DomainEvent]], Awaitable[object]]
_after_publish: list[AfterPublish] = []


def after_publish(hook: AfterPublish) -> None:
    """Registers what must follow every publication of committed events (a domain's live
    state kept in step with them). The composition roots register hooks at start-up, so
    every path that commits and publishes, whatever its domain, runs them."""
    if hook not in _after_publish:
        _after_publish.append(hook)


async def publish_events(redis: Redis, events: Iterable[DomainEvent]) -> None:
    published = list(events)
    for event in published:
        message = event.to_message()
        await publish(redis, EVENTS_CHANNEL, message)
        for user_id in event.recipients():
            await publish(redis, user_channel(user_id), message)
    if published:
        for hook in _after_publish:
            await hook(redis, published)


class Subscription:
    """Subscribed on entry, so nothing published after ``__aenter__`` returns is missed."""

    def __init__(self, redis: Redis, *channels: str) -> None:
        self._pubsub = redis.pubsub(ignore_subscribe_messages=True)
        self._channels = channels

    async def __aenter__(self) -> Subscription:
        await self._pubsub.subscribe(*self._channels)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._pubsub.unsubscribe(*self._channels)
        await self._pubsub.aclose()  # type: ignore[no-untyped-call]

    async def messages(self) -> AsyncIterator[dict[str, Any]]:
        """Yields each JSON object published on the channels until the caller stops."""
        while True:
            raw = await self._pubsub.get_message(timeout=1.0)
            if raw is None:
                continue
            try:
                message = json.loads(raw["data"])
            except (TypeError, ValueError):
                continue
            if isinstance(message, dict):
                yield message
