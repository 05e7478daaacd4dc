"""One Redis pub/sub connection per process for all the websockets it holds.

A ``Subscription`` per socket holds a Redis connection per socket: the client's pool
gives out 100 by default, and a city's drivers would need tens of thousands. The fan-out
subscribes each channel once, however many of the process's sockets want it, reads every
message in one task, and hands it to each interested socket's inbox.

Pub/sub stays fire-and-forget (``infra.pubsub``): an inbox that is full drops what does
not fit (and counts it), and a broken connection loses what was published until it is
back (redis-py subscribes again on reconnect). What must arrive goes through a store the
socket reads on (re)connect, such as the driver's outbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import PubSub

from infra.logging import get_logger

log = get_logger(__name__)

INBOX_SIZE = 256
SUBSCRIBE_TIMEOUT_S = 10.0
# The reader's wait for a message; bounds how late it notices that it should stop.
READ_TIMEOUT_S = 1.0


class Inbox:
    """What one subscriber receives, in order. Messages are shared between the
    subscribers of a channel: read them, never change them."""

    def __init__(self, size: int = INBOX_SIZE) -> None:
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=size)
        self.dropped = 0

    def offer(self, message: dict[str, Any]) -> None:
        try:
            self._queue.put_nowait(message)
        except asyncio.QueueFull:
            self.dropped += 1

    async def messages(self) -> AsyncIterator[dict[str, Any]]:
        """Yields each JSON object published on the subscribed channels, until the
        caller stops."""
        while True:
            yield await self._queue.get()


class Fanout:
    """See the module docstring. ``start`` before the first ``subscribe``; ``stop`` at
    the end of the process."""

    def __init__(self, redis: Redis, inbox_size: int = INBOX_SIZE) -> None:
        self.inbox_size = inbox_size
        self._pubsub: PubSub = redis.pubsub()
        self._inboxes: dict[str, set[Inbox]] = {}
        self._confirmed: set[str] = set()
        self._waiting: dict[str, list[asyncio.Future[None]]] = {}
        # A channel of its own keeps the connection subscribed (and so readable) while
        # no socket wants anything.
        self._own_channel = f"fanout:{uuid.uuid4().hex}"
        self._reader: asyncio.Task[None] | None = None

    @property
    def channels(self) -> int:
        return len(self._inboxes)

    async def start(self) -> None:
        if self._reader is None:
            await self._pubsub.subscribe(self._own_channel)
            self._reader = asyncio.create_task(self._read(), name="pubsub-fanout")

    async def stop(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
            self._reader = None
        await self._pubsub.aclose()  # type: ignore[no-untyped-call]

    @contextlib.asynccontextmanager
    async def subscribe(self, *channels: str) -> AsyncIterator[Inbox]:
        """An inbox for ``channels``; subscribed on entry, so nothing published after
        entry is missed."""
        if self._reader is None or self._reader.done():
            raise RuntimeError("the fan-out is not running")
        inbox = Inbox(self.inbox_size)
        wanted = list(dict.fromkeys(channels))
        new = []
        for channel in wanted:
            holders = self._inboxes.setdefault(channel, set())
            if not holders:
                new.append(channel)
            holders.add(inbox)
        try:
            confirmations = [
                self._confirmation(channel) for channel in wanted if channel not in self._confirmed
            ]
            if new:
                await self._pubsub.subscribe(*new)
            if confirmations:
                await asyncio.wait_for(asyncio.gather(*confirmations), SUBSCRIBE_TIMEOUT_S)
            yield inbox
        finally:
            gone = []
            for channel in wanted:
                holders = self._inboxes.get(channel, set())
                holders.discard(inbox)
                if not holders:
                    self._inboxes.pop(channel, None)
                    self._confirmed.discard(channel)
                    gone.append(channel)
            if gone:
                with contextlib.suppress(Exception):
                    await self._pubsub.unsubscribe(*gone)

    def _confirmation(self, channel: str) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(channel, []).append(future)
        return future

    async def _read(self) -> None:
        while True:
            try:
                message = await self._pubsub.get_message(timeout=READ_TIMEOUT_S)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("pubsub_fanout_read_failed")
                await asyncio.sleep(0.5)
                continue
            if message is not None:
                self._dispatch(message)

    def _dispatch(self, message: dict[str, Any]) -> None:
        kind, channel = message.get("type"), message.get("channel")
        if not isinstance(channel, str):
            return
        if kind == "subscribe":
            if channel in self._inboxes:
                self._confirmed.add(channel)
            for future in self._waiting.pop(channel, []):
                if not future.done():
                    future.set_result(None)
            return
        if kind != "message":
            return
        holders = self._inboxes.get(channel)
        if not holders:
            return
        try:
            data = json.loads(message["data"])
        except (TypeError, ValueError):
            return
        if isinstance(data, dict):
            for inbox in holders:
                inbox.offer(data)
