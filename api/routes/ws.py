from __future__ import annotations

from fastapi import APIRouter, WebSocket

from api.deps import websocket_principal
from api.websocket import Frame, deny, error_frame, serve
from infra.errors import DomainError
from infra.fanout import Fanout
from infra.pubsub import user_channel

router = APIRouter(tags=["notifications"])


@router.websocket("/v1/ws")
async def notifications(websocket: WebSocket) -> None:
    """Every signed-in user's own stream of notifications (membership changes, session
    revocations; later: rides, offers, votes). Send ``{"type": "ping"}`` for a pong."""
    try:
        principal = await websocket_principal(websocket)
    except DomainError as exc:
        await deny(websocket, exc)
        return
    # The process's one pub/sub connection, shared with every other socket it holds.
    fanout: Fanout = websocket.app.state.fanout

    async def on_message(message: Frame) -> Frame | None:
        if message["type"] == "ping":
            return {"type": "pong", "id": message.get("id")}
        return error_frame("unknown-type", f"Unknown frame type {message['type']!r}")

    async with fanout.subscribe(user_channel(principal.user_id)) as inbox:
        await serve(
            websocket,
            on_message=on_message,
            sources=[inbox.messages()],
            expires_at=principal.expires_at,
            hello={
                "type": "hello",
                "user_id": str(principal.user_id),
                "role": principal.role.value,
            },
        )
