from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from governance.errors import (
    MembershipNotFound,
    MembershipTransitionNotAllowed,
    NotAMember,
    ShareNotPaid,
)
from governance.events import MembershipChanged
from governance.models import Membership, MembershipChange, MembershipStatus
from governance.repository import MembershipRepository
from governance.schemas import MembershipChangeRead, MembershipRead, MembershipTransition
from infra.clock import Clock
from infra.events import EventBuffer
from infra.ids import new_id

S = MembershipStatus

# Which status may follow which. Exited members may apply again; a suspension is lifted
# back to member (the share stays paid), never to applicant.
ALLOWED_TRANSITIONS: dict[MembershipStatus, frozenset[MembershipStatus]] = {
    S.applicant: frozenset({S.member, S.exited}),
    S.member: frozenset({S.suspended, S.exited}),
    S.suspended: frozenset({S.member, S.exited}),
    S.exited: frozenset({S.applicant}),
}


class MembershipService:
    def __init__(self, session: AsyncSession, clock: Clock, events: EventBuffer) -> None:
        self.repository = MembershipRepository(session)
        self.clock = clock
        self.events = events

    async def open_application(self, user_id: uuid.UUID, reason: str) -> MembershipRead:
        now = self.clock.now()
        membership = await self.repository.add(
            Membership(user_id=user_id, status=S.applicant.value, created_at=now, updated_at=now)
        )
        await self._log(user_id, None, S.applicant, None, reason)
        return MembershipRead.model_validate(membership)

    async def get(self, user_id: uuid.UUID) -> MembershipRead | None:
        membership = await self.repository.get(user_id)
        return MembershipRead.model_validate(membership) if membership else None

    async def require_member(self, user_id: uuid.UUID) -> MembershipRead:
        membership = await self.get(user_id)
        if membership is None or membership.status != S.member.value:
            raise NotAMember
        return membership

    async def transition(
        self, user_id: uuid.UUID, change: MembershipTransition, changed_by: uuid.UUID | None
    ) -> MembershipRead:
        current = await self.repository.get(user_id)
        if current is None:
            raise MembershipNotFound
        source, target = S(current.status), S(change.to_status)
        if target not in ALLOWED_TRANSITIONS[source]:
            raise MembershipTransitionNotAllowed(
                f"A membership cannot go from {source.value} to {target.value}",
                from_status=source.value,
                to_status=target.value,
            )
        now = self.clock.now()
        values: dict[str, Any] = {"status": target.value, "updated_at": now}
        if source is S.applicant and target is S.member:
            if change.share_amount is None and current.share_paid_at is None:
                raise ShareNotPaid("Record the share payment (share_amount, share_currency)")
            if change.share_amount is not None:
                values |= {
                    "share_amount": change.share_amount,
                    "share_currency": change.share_currency,
                    "share_paid_at": now,
                }
            values["member_since"] = now
        if source is S.exited and target is S.applicant:
            values |= {
                "share_amount": None,
                "share_currency": None,
                "share_paid_at": None,
                "member_since": None,
            }
        updated = await self.repository.compare_and_set_status(user_id, source.value, values)
        if updated is None:
            # Someone else moved it between our read and our write.
            raise MembershipTransitionNotAllowed("The membership changed meanwhile; retry")
        await self._log(user_id, source, target, changed_by, change.reason)
        return MembershipRead.model_validate(updated)

    async def history(self, user_id: uuid.UUID) -> list[MembershipChangeRead]:
        return [
            MembershipChangeRead.model_validate(c) for c in await self.repository.history(user_id)
        ]

    async def list(
        self, status: MembershipStatus | None, limit: int, after: uuid.UUID | None
    ) -> Sequence[MembershipRead]:
        rows = await self.repository.list(status.value if status else None, limit, after)
        return [MembershipRead.model_validate(row) for row in rows]

    async def _log(
        self,
        user_id: uuid.UUID,
        source: MembershipStatus | None,
        target: MembershipStatus,
        changed_by: uuid.UUID | None,
        reason: str,
    ) -> None:
        now = self.clock.now()
        await self.repository.add_change(
            MembershipChange(
                id=new_id(),
                user_id=user_id,
                from_status=source.value if source else None,
                to_status=target.value,
                changed_by=changed_by,
                reason=reason,
                changed_at=now,
            )
        )
        self.events.record(
            MembershipChanged(
                occurred_at=now,
                user_id=user_id,
                from_status=source.value if source else None,
                to_status=target.value,
                changed_by=changed_by,
                reason=reason,
            )
        )
