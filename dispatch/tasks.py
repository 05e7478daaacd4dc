"""The dispatch domain's periodic jobs, for ``ridecoop worker``."""

from __future__ import annotations

from datetime import datetime

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dispatch.flows import RideFlows
from dispatch.live import LiveState
from infra.clock import Clock
from infra.schedule import Periodic
from payments.flows import PaymentFlows

PROMOTE_EVERY_S = 5
DROP_STALE_EVERY_S = 10


class DispatchTasks:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        payment_flows: PaymentFlows,
        redis: Redis,
        clock: Clock,
    ) -> None:
        self.rides = RideFlows(sessionmaker, payment_flows, clock, redis)
        self.live = LiveState(redis)

    async def promote_authorized(self, now: datetime) -> None:
        # Rides whose card hold came through after Stripe was down go to matching; those
        # declined, or still unauthorized after the timeout, fail.
        await self.rides.promote_authorized()

    async def drop_stale(self, now: datetime) -> None:
        # Queries already skip silent drivers; this keeps the geo sets small.
        await self.live.drop_stale(now)

    def periodic(self) -> list[Periodic]:
        return [
            Periodic("dispatch.promote_authorized", PROMOTE_EVERY_S, self.promote_authorized),
            Periodic("dispatch.drop_stale", DROP_STALE_EVERY_S, self.drop_stale),
        ]
