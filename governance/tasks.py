"""The governance domain's jobs, for ``ridecoop worker``.

``advance`` runs every ADVANCE_EVERY_S: it asks the database which proposals have a
timed step due (notice -> voting, the reminder, the close, scheduling, applying, draft
expiry; an emergency change ends with its ratification vote) and takes them, one
proposal per transaction, publishing the notices after each commit. Nothing is kept in
memory, so a worker that restarts (or a second one) picks up exactly where things are;
every step checks the status it moves from under the proposal's row lock, so a step is
never taken twice.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dispatch.history import CompletedTripService
from governance.service import GovernanceService
from infra.clock import Clock
from infra.db import transaction
from infra.events import EventBuffer
from infra.jobs import Handler, Job
from infra.logging import get_logger
from infra.pubsub import publish_events
from infra.schedule import Periodic
from infra.settings import GovernanceSettings

ADVANCE_EVERY_S = 10
ADVANCE_JOB = "governance.advance"

log = get_logger(__name__)


class GovernanceTasks:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        redis: Redis,
        clock: Clock,
        settings: GovernanceSettings,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.redis = redis
        self.clock = clock
        self.settings = settings

    def service(self, session: AsyncSession, events: EventBuffer) -> GovernanceService:
        return GovernanceService(
            session,
            self.clock,
            events,
            ballot_secret=self.settings.ballot_secret,
            trips=CompletedTripService(session),
        )

    async def advance(self, now: datetime) -> int:
        """Takes every step due at ``now``; answers how many proposals moved."""
        async with transaction(self.sessionmaker) as session:
            due = await self.service(session, EventBuffer()).due(now)
        moved = 0
        for proposal_id in due:
            try:
                if await self.advance_proposal(proposal_id, now):
                    moved += 1
            except Exception:
                # One proposal that cannot move (say, a fare policy version number taken
                # by a concurrent writer) must not hold up the others; it is retried on
                # the next run.
                log.exception("governance_step_failed", proposal_id=str(proposal_id))
        return moved

    async def advance_proposal(self, proposal_id: uuid.UUID, now: datetime) -> list[str]:
        events = EventBuffer()
        async with transaction(self.sessionmaker) as session:
            steps = await self.service(session, events).advance(proposal_id, now)
        if steps:
            log.info("governance_steps", proposal_id=str(proposal_id), steps=steps)
        await publish_events(self.redis, events.drain())
        return steps

    async def advance_job(self, job: Job) -> None:
        await self.advance_proposal(uuid.UUID(str(job.payload["proposal_id"])), self.clock.now())

    async def advance_due(self, now: datetime) -> None:
        await self.advance(now)

    def handlers(self) -> Mapping[str, Handler]:
        return {ADVANCE_JOB: self.advance_job}

    def periodic(self) -> list[Periodic]:
        return [Periodic("governance.advance", ADVANCE_EVERY_S, self.advance_due)]
