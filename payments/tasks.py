"""The payments domain's jobs, for ``ridecoop worker``."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from infra.clock import Clock
from infra.jobs import Handler, Job
from infra.logging import get_logger
from infra.schedule import Periodic
from payments.errors import PaymentProviderUnavailable
from payments.flows import PaymentFlows
from payments.reconciliation import run_reconciliation
from payments.stripe_gateway import GatewayProtocol
from payments.webhooks import STRIPE_EVENT_JOB, process_stripe_event, sweep_unprocessed_events

log = get_logger(__name__)

ADVANCE_EVERY_S = 10
RECONCILE_EVERY_S = 3600
SWEEP_EVERY_S = 60


class PaymentTasks:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        gateway: GatewayProtocol,
        redis: Redis,
        clock: Clock,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.gateway = gateway
        self.redis = redis
        self.clock = clock
        self.flows = PaymentFlows(sessionmaker, gateway, clock)

    async def advance_due(self, now: datetime) -> None:
        # Retries of Stripe calls that found Stripe down, and transfers that waited for a
        # driver's onboarding. Each payment's step repeats with its recorded key.
        await self.flows.advance_due()

    async def advance_ride(self, job: Job) -> None:
        await self.flows.advance(uuid.UUID(str(job.payload["ride_id"])))

    async def stripe_event(self, job: Job) -> None:
        await process_stripe_event(self.sessionmaker, self.clock, str(job.payload["id"]))

    async def sweep_events(self, now: datetime) -> None:
        # Events whose job was lost (Redis) or that waited for what they build on.
        await sweep_unprocessed_events(self.sessionmaker, self.redis, self.clock)

    def handlers(self) -> Mapping[str, Handler]:
        return {"payments.advance": self.advance_ride, STRIPE_EVENT_JOB: self.stripe_event}

    async def reconcile(self, now: datetime) -> None:
        # Hourly on purpose: a day that failed (Stripe down) is retried the next hour; a
        # day with a finished run is not run again.
        try:
            await run_reconciliation(self.sessionmaker, self.gateway, self.clock, now)
        except PaymentProviderUnavailable as down:
            # Expected now and then, and retried: a warning, not an error with a trace.
            log.warning("reconciliation_deferred", error=str(down))

    def periodic(self) -> list[Periodic]:
        return [
            Periodic("payments.advance_due", ADVANCE_EVERY_S, self.advance_due),
            Periodic("payments.reconciliation", RECONCILE_EVERY_S, self.reconcile),
            Periodic("payments.sweep_events", SWEEP_EVERY_S, self.sweep_events),
        ]
