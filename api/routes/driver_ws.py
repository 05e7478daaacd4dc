"""The driver channel: the websocket a driver's app keeps open while driving, and the
HTTP upload of positions kept while offline. The protocol is ``dispatch.channel``'s.

The process's ``DriverChannels`` lives in ``app.state.driver_channels``, opened and
closed with the app by :func:`driver_channels` (its ``stop`` writes the breadcrumbs still
waiting).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import APIRouter, Depends, Request, WebSocket

from accounts.errors import RoleNotAllowed
from accounts.models import Role
from accounts.tokens import Principal
from api.deps import CurrentMember, websocket_principal
from api.problems import problem_responses
from api.state import Resources
from api.websocket import deny, serve
from dispatch.channel import DriverChannels
from dispatch.schemas import LocationBatch, LocationBatchRead
from governance.service import MembershipService
from infra.db import transaction
from infra.errors import DomainError
from infra.events import EventBuffer
from infra.pubsub import user_channel

router = APIRouter(tags=["drivers"])


@asynccontextmanager
async def driver_channels(resources: Resources) -> AsyncIterator[DriverChannels]:
    """The process's driver channels, from start-up to shutdown."""
    channels = DriverChannels.create(
        resources.redis, resources.sessionmaker, resources.clock, resources.settings.dispatch
    )
    await channels.start()
    try:
        yield channels
    finally:
        await channels.stop()


def get_driver_channels(request: Request) -> DriverChannels:
    channels: DriverChannels = request.app.state.driver_channels
    return channels


DriverChannelsDep = Annotated[DriverChannels, Depends(get_driver_channels)]


async def _require_active_member(resources: Resources, principal: Principal) -> None:
    if principal.role is not Role.driver or not principal.has_scope("drive"):
        raise RoleNotAllowed("The driver channel is for drivers", required_role=Role.driver.value)
    async with transaction(resources.sessionmaker) as session:
        await MembershipService(session, resources.clock, EventBuffer()).require_member(
            principal.user_id
        )


@router.websocket("/v1/drivers/ws")
async def driver_channel(websocket: WebSocket) -> None:
    """The driver's channel (``dispatch.channel``): go online and offline, stream
    positions and heartbeats, receive offers and trip updates with message ids and
    acknowledge them, accept or decline offers. Only active members of the co-op drive:
    anyone else is refused at connect with a problem (401, 403)."""
    resources: Resources = websocket.app.state.resources
    try:
        principal = await websocket_principal(websocket)
        await _require_active_member(resources, principal)
    except DomainError as exc:
        await deny(websocket, exc)
        return
    channels: DriverChannels = websocket.app.state.driver_channels
    channel = channels.connect(principal.user_id)
    # Subscribed before the outbox is first read: no push falls between the two.
    async with channels.fanout.subscribe(user_channel(principal.user_id)) as inbox:
        try:
            await serve(
                websocket,
                on_message=channel.handle,
                sources=[channel.notifications(inbox.messages()), channel.outbox_frames()],
                expires_at=principal.expires_at,
                hello={
                    "type": "hello",
                    "driver_id": str(principal.user_id),
                    "liveness_s": channels.settings.liveness_s,
                },
            )
        finally:
            await channel.close()


@router.post(
    "/v1/drivers/me/locations",
    responses=problem_responses(401, 403, 422),
    summary="Upload up to 500 positions kept while the app was offline",
)
async def upload_locations(
    body: LocationBatch, member: CurrentMember, channels: DriverChannelsDep
) -> LocationBatchRead:
    """Each position is accepted or rejected with a reason code, in order. The newest
    accepted one becomes the live position if the driver is online and it is fresh;
    all accepted ones join the trip's breadcrumbs when the driver is on one."""
    return await channels.upload(member.user_id, body)
