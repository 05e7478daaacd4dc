"""The shape every websocket endpoint shares.

Authenticate at connect; then one reader and one writer task (and a task per source of
server pushes) run until the first of them ends, which cancels the rest. Pushes go
through a bounded queue: a client too slow to drain it is disconnected rather than
allowed to grow the server's memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import Any

from fastapi import WebSocket, WebSocketDisconnect
from starlette.websockets import WebSocketState

from api.problems import problem_response
from infra.clock import utcnow
from infra.errors import DomainError

QUEUE_SIZE = 256
CLOSE_POLICY = 1008
CLOSE_TRY_AGAIN = 1013
CLOSE_TOKEN_EXPIRED = 4401

Frame = dict[str, Any]
MessageHandler = Callable[[Frame], Awaitable[Frame | None]]


async def deny(websocket: WebSocket, error: DomainError) -> None:
    """Refuses the handshake, as an HTTP problem where the server can send one."""
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        response = problem_response(
            None, error.status, error.type, error.title, error.detail, extra=error.extra
        )
        await websocket.send_denial_response(response)
    else:
        await websocket.close(code=CLOSE_POLICY, reason=error.type)


def error_frame(code: str, detail: str, **extra: Any) -> Frame:
    return {"type": "error", "code": code, "detail": detail, **extra}


async def serve(
    websocket: WebSocket,
    *,
    on_message: MessageHandler,
    sources: list[AsyncIterator[Frame]],
    expires_at: datetime,
    hello: Frame,
) -> None:
    await websocket.accept()
    queue: asyncio.Queue[Frame] = asyncio.Queue(maxsize=QUEUE_SIZE)
    await websocket.send_json(hello)

    def push(frame: Frame) -> None:
        try:
            queue.put_nowait(frame)
        except asyncio.QueueFull as exc:
            raise _SlowConsumer from exc

    # Nothing sent or received stays referenced while a task waits for the next frame:
    # an idle connection would otherwise keep its last frames (an accepted offer's reply
    # is a whole ride) for as long as it stays open, and every full garbage collection
    # would walk them.

    async def answer(raw: str) -> None:
        try:
            message = json.loads(raw)
        except ValueError:
            push(error_frame("malformed-json", "The frame is not valid JSON"))
            return
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            push(error_frame("malformed-frame", "A frame is a JSON object with a 'type'"))
            return
        try:
            reply = await on_message(message)
        except DomainError as exc:
            reply = error_frame(exc.type, exc.detail, ref=message.get("id"), **exc.extra)
        if reply is not None:
            push(reply)

    async def reader() -> None:
        while True:
            await answer(await websocket.receive_text())

    async def writer() -> None:
        while True:
            await websocket.send_json(await queue.get())

    async def pump(source: AsyncIterator[Frame]) -> None:
        async for frame in source:
            push(frame)
            del frame

    async def expiry() -> None:
        await asyncio.sleep(max(0.0, (expires_at - utcnow()).total_seconds()))
        raise _TokenExpired

    tasks = [
        asyncio.create_task(reader()),
        asyncio.create_task(writer()),
        asyncio.create_task(expiry()),
        *(asyncio.create_task(pump(source)) for source in sources),
    ]
    close_code, reason = 1000, "bye"
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            exc = task.exception()
            if isinstance(exc, _TokenExpired):
                close_code, reason = CLOSE_TOKEN_EXPIRED, "token-expired"
            elif isinstance(exc, _SlowConsumer):
                close_code, reason = CLOSE_TRY_AGAIN, "too-slow"
            elif isinstance(exc, WebSocketDisconnect):
                close_code = 0
            elif exc is not None:
                raise exc
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if close_code and websocket.client_state is WebSocketState.CONNECTED:
            with contextlib.suppress(Exception):
                await websocket.close(code=close_code, reason=reason)


class _TokenExpired(Exception):
    pass


class _SlowConsumer(Exception):
    pass
