"""Typed factories for governance: members made as the co-op makes them, a proposal taken
to any step of its life, and trips fed to the impact simulation directly."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from accounts.models import Role
from accounts.passwords import Passwords
from accounts.service import AccountService
from governance.impact import TripRecord
from governance.schemas import BallotCreate, MembershipTransition, ProposalCreate, ProposalRead
from governance.service import GovernanceService, MembershipService
from infra.clock import FrozenClock
from infra.events import EventBuffer
from infra.settings import Settings
from tests.factories import PASSWORD

# Well after the seeded fare policy (2026-01-01), on a Monday morning.
START = datetime(2030, 1, 7, 9, 0, tzinfo=UTC)
SECRET = "test-ballot-secret-0123456789abcdef0123"
SHARE = 10_000


@dataclass
class FedTrips:
    """The trip history as governance sees it, fed directly (no rides in the database)."""

    trips: Sequence[TripRecord] = ()
    online: Mapping[uuid.UUID, int] = field(default_factory=dict)

    async def between(self, start: datetime, end: datetime) -> Sequence[TripRecord]:
        return self.trips

    async def online_seconds(self, start: datetime, end: datetime) -> Mapping[uuid.UUID, int]:
        return self.online


def governance(
    session: AsyncSession,
    clock: FrozenClock,
    events: EventBuffer | None = None,
    trips: FedTrips | None = None,
) -> GovernanceService:
    return GovernanceService(
        session, clock, events or EventBuffer(), ballot_secret=SECRET, trips=trips or FedTrips()
    )


async def make_user(
    session: AsyncSession, settings: Settings, clock: FrozenClock, role: Role = Role.driver
) -> uuid.UUID:
    accounts = AccountService(
        session, settings.auth, Passwords(settings.auth), clock, EventBuffer()
    )
    user = await accounts.create_user(
        role=role,
        email=f"{role.value}.{uuid.uuid4().hex[:12]}@example.org",
        phone=f"+1202{2_000_000 + secrets.randbelow(8_000_000)}",
        full_name=f"A {role.value}",
        password=PASSWORD,
    )
    return user.id


async def make_member(session: AsyncSession, settings: Settings, clock: FrozenClock) -> uuid.UUID:
    """A driver admitted as a member, share paid, at the clock's time."""
    user_id = await make_user(session, settings, clock)
    memberships = MembershipService(session, clock, EventBuffer())
    await memberships.open_application(user_id, "registered as driver")
    await memberships.transition(
        user_id,
        MembershipTransition(
            to_status="member", reason="share paid", share_amount=SHARE, share_currency="USD"
        ),
        changed_by=None,
    )
    return user_id


async def make_members(
    session: AsyncSession, settings: Settings, clock: FrozenClock, count: int
) -> list[uuid.UUID]:
    return [await make_member(session, settings, clock) for _ in range(count)]


async def suspend(session: AsyncSession, clock: FrozenClock, user_id: uuid.UUID) -> None:
    await MembershipService(session, clock, EventBuffer()).transition(
        user_id, MembershipTransition(to_status="suspended", reason="under review"), None
    )


def yes_no(*changes: tuple[str, str], title: str = "Change the fares") -> ProposalCreate:
    return proposal_body(
        kind="yes_no", title=title, changes=[{"key": key, "new": new} for key, new in changes]
    )


def proposal_body(**fields: Any) -> ProposalCreate:
    return ProposalCreate.model_validate({"title": "A proposal", "text": "Why.", **fields})


async def on_notice(
    service: GovernanceService,
    body: ProposalCreate,
    author: uuid.UUID,
    cosigners: Sequence[uuid.UUID],
) -> ProposalRead:
    draft = await service.draft(author, body)
    for member in cosigners:
        await service.cosign(draft.id, member)
    return await service.submit(draft.id, author)


async def open_for_voting(
    service: GovernanceService,
    clock: FrozenClock,
    body: ProposalCreate,
    author: uuid.UUID,
    cosigners: Sequence[uuid.UUID],
) -> ProposalRead:
    noticed = await on_notice(service, body, author, cosigners)
    assert noticed.voting_opens_at is not None
    clock.set(noticed.voting_opens_at)
    assert await service.advance(noticed.id, clock.now()) == ["open_voting"]
    return await service.read(noticed.id, None)


async def vote(
    service: GovernanceService, proposal_id: uuid.UUID, member: uuid.UUID, **answer: Any
) -> str:
    receipt = await service.cast(proposal_id, member, BallotCreate(**answer))
    return receipt.receipt


def after(moment: datetime | None, seconds: int = 0) -> datetime:
    assert moment is not None
    return moment + timedelta(seconds=seconds)
