"""The pub/sub fan-out on a real Redis: one subscription per channel for a process's
sockets, each socket's inbox in order, nothing published after entry missed."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis

from infra.fanout import Fanout, Inbox
from infra.pubsub import publish


@pytest.fixture
async def fanout(redis_client: Redis) -> AsyncIterator[Fanout]:
    fanout = Fanout(redis_client, inbox_size=4)
    await fanout.start()
    yield fanout
    await fanout.stop()


def channel() -> str:
    return f"test:{uuid.uuid4().hex}"


async def received(inbox: Inbox, count: int) -> list[dict[str, Any]]:
    messages = inbox.messages()
    return [await asyncio.wait_for(anext(messages), 5) for _ in range(count)]


async def subscribers(redis: Redis, name: str) -> int:
    [(_, count)] = await redis.pubsub_numsub(name)
    return int(count)


async def test_what_is_published_right_after_entry_arrives(
    fanout: Fanout, redis_client: Redis
) -> None:
    name = channel()
    async with fanout.subscribe(name) as inbox:
        await publish(redis_client, name, {"n": 1})
        await publish(redis_client, name, {"n": 2})
        assert await received(inbox, 2) == [{"n": 1}, {"n": 2}]


async def test_sockets_on_one_channel_share_one_subscription(
    fanout: Fanout, redis_client: Redis
) -> None:
    name = channel()
    async with fanout.subscribe(name) as first, fanout.subscribe(name) as second:
        assert await subscribers(redis_client, name) == 1
        await publish(redis_client, name, {"n": 1})
        assert await received(first, 1) == [{"n": 1}]
        assert await received(second, 1) == [{"n": 1}]
    await asyncio.sleep(0.05)
    assert await subscribers(redis_client, name) == 0
    assert fanout.channels == 0


async def test_a_channel_stays_subscribed_while_one_socket_wants_it(
    fanout: Fanout, redis_client: Redis
) -> None:
    name = channel()
    async with fanout.subscribe(name) as staying:
        async with fanout.subscribe(name):
            pass
        await publish(redis_client, name, {"still": True})
        assert await received(staying, 1) == [{"still": True}]


async def test_each_socket_gets_only_its_channels(fanout: Fanout, redis_client: Redis) -> None:
    mine, theirs = channel(), channel()
    async with fanout.subscribe(mine) as inbox, fanout.subscribe(theirs):
        await publish(redis_client, theirs, {"for": "them"})
        await publish(redis_client, mine, {"for": "me"})
        assert await received(inbox, 1) == [{"for": "me"}]


async def test_a_full_inbox_drops_and_counts(fanout: Fanout, redis_client: Redis) -> None:
    name = channel()
    async with fanout.subscribe(name) as inbox:
        for n in range(6):
            await publish(redis_client, name, {"n": n})
        await asyncio.sleep(0.1)
        assert inbox.dropped == 2
        assert await received(inbox, 4) == [{"n": n} for n in range(4)]


async def test_subscribing_again_right_after_leaving_works(
    fanout: Fanout, redis_client: Redis
) -> None:
    name = channel()
    async with fanout.subscribe(name):
        pass
    async with fanout.subscribe(name) as inbox:
        await publish(redis_client, name, {"back": True})
        assert await received(inbox, 1) == [{"back": True}]


async def test_subscribing_before_start_is_an_error(redis_client: Redis) -> None:
    fanout = Fanout(redis_client)
    with pytest.raises(RuntimeError, match="not running"):
        async with fanout.subscribe(channel()):
            pass
