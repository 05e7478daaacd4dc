from __future__ import annotations

import asyncio
import contextlib
import json
import weakref
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any, cast

import httpx
import pytest
from fastapi import FastAPI, WebSocket
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.websockets import WebSocketState
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from api.websocket import serve
from infra.clock import utcnow
from infra.pubsub import user_channel
from infra.settings import Settings
from tests.factories import make_account, make_admin


async def _next(ws: ClientConnection) -> dict[str, Any]:
    frame: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), 5.0))
    return frame


async def test_connect_without_a_token_is_refused(live_server: str) -> None:
    with pytest.raises(InvalidStatus) as refused:
        async with connect(f"ws://{live_server}/v1/ws"):
            pass
    assert refused.value.response.status_code == 401
    assert b"invalid-token" in refused.value.response.body


async def test_connect_with_a_tampered_token_is_refused(
    live_server: str, client: httpx.AsyncClient
) -> None:
    rider = await make_account(client, "rider")
    with pytest.raises(InvalidStatus) as refused:
        async with connect(f"ws://{live_server}/v1/ws?access_token={rider.access_token}x"):
            pass
    assert refused.value.response.status_code == 401


async def test_hello_ping_and_bad_frames_keep_the_connection(
    live_server: str, client: httpx.AsyncClient
) -> None:
    rider = await make_account(client, "rider")
    async with connect(f"ws://{live_server}/v1/ws", additional_headers=rider.headers) as ws:
        hello = await _next(ws)
        assert hello == {"type": "hello", "user_id": str(rider.user_id), "role": "rider"}
        await ws.send("{not json")
        assert (await _next(ws))["code"] == "malformed-json"
        await ws.send(json.dumps({"type": "launch-rockets"}))
        assert (await _next(ws))["code"] == "unknown-type"
        await ws.send(json.dumps(["no", "type"]))
        assert (await _next(ws))["code"] == "malformed-frame"
        await ws.send(json.dumps({"type": "ping", "id": 7}))
        assert await _next(ws) == {"type": "pong", "id": 7}


async def test_membership_change_is_pushed_to_the_driver(
    live_server: str, client: httpx.AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    admin = await make_admin(client, session, settings)
    driver = await make_account(client, "driver")
    url = f"ws://{live_server}/v1/ws?access_token={driver.access_token}"
    async with connect(url) as ws:
        await _next(ws)  # hello: subscribed from here on
        response = await client.post(
            f"/v1/admin/members/{driver.user_id}/transitions",
            json={
                "to_status": "member",
                "reason": "share paid",
                "share_amount": 5000,
                "share_currency": "USD",
            },
            headers=admin.headers,
        )
        assert response.status_code == 200
        event = await _next(ws)
        assert event["event"] == "MembershipChanged"
        assert event["data"]["to_status"] == "member"


async def test_logout_is_pushed_to_open_sockets(
    live_server: str, client: httpx.AsyncClient
) -> None:
    rider = await make_account(client, "rider")
    async with connect(f"ws://{live_server}/v1/ws", additional_headers=rider.headers) as ws:
        await _next(ws)
        await client.post("/v1/auth/logout", headers=rider.headers)
        event = await _next(ws)
        assert event["event"] == "SessionRevoked"
        assert event["data"]["reason"] == "logout"


async def test_sockets_share_the_processs_one_pub_sub_connection(
    live_server: str, client: httpx.AsyncClient, app: FastAPI, redis_client: Redis
) -> None:
    riders = [await make_account(client, "rider") for _ in range(3)]
    before = await redis_client.pubsub_numsub(*(user_channel(r.user_id) for r in riders))
    assert [count for _, count in before] == [0, 0, 0]
    async with contextlib.AsyncExitStack() as stack:
        for rider in riders:
            ws = await stack.enter_async_context(
                connect(f"ws://{live_server}/v1/ws", additional_headers=rider.headers)
            )
            await _next(ws)
        # Each rider's channel is subscribed once, through the process's fan-out.
        assert app.state.fanout.channels == 3
        after = await redis_client.pubsub_numsub(*(user_channel(r.user_id) for r in riders))
        assert [count for _, count in after] == [1, 1, 1]


# What a connection keeps between frames.


class _Tracked(dict[str, Any]):
    """A frame a weak reference can follow."""


class _Socket:
    """Just enough of a websocket for ``serve``: frames in through a queue, and out as
    JSON text, so that nothing here holds a frame sent."""

    def __init__(self) -> None:
        self.incoming: asyncio.Queue[str] = asyncio.Queue()
        self.sent: list[str] = []
        self.client_state = WebSocketState.CONNECTED

    async def accept(self) -> None:
        pass

    async def send_json(self, data: Any) -> None:
        self.sent.append(json.dumps(data))

    async def receive_text(self) -> str:
        return await self.incoming.get()

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        self.client_state = WebSocketState.DISCONNECTED


async def test_an_idle_connection_keeps_no_frame_it_sent() -> None:
    kept: list[weakref.ref[_Tracked]] = []

    def tracked(**frame: Any) -> _Tracked:
        made = _Tracked(frame)
        kept.append(weakref.ref(made))
        return made

    async def on_message(message: dict[str, Any]) -> dict[str, Any]:
        return tracked(type="ok", ref=message.get("id"), ride={"id": "r-1"})

    async def pushes() -> AsyncIterator[dict[str, Any]]:
        yield tracked(type="offer", offer_id="o-1")
        await asyncio.Event().wait()

    socket = _Socket()
    served = asyncio.create_task(
        serve(
            cast(WebSocket, socket),
            on_message=on_message,
            sources=[pushes()],
            expires_at=utcnow() + timedelta(hours=1),
            hello={"type": "hello"},
        )
    )
    await socket.incoming.put(json.dumps({"type": "accept", "id": 1}))
    for _ in range(100):
        if len(socket.sent) == 3:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)
    assert sorted(json.loads(text)["type"] for text in socket.sent) == ["hello", "offer", "ok"]
    # Sent, and then referenced by nothing while the connection waits for more.
    assert len(kept) == 2
    assert [ref() for ref in kept] == [None, None]
    served.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await served
