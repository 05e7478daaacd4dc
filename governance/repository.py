from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from governance.models import Membership, MembershipChange


class MembershipRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, user_id: uuid.UUID) -> Membership | None:
        return await self.session.get(Membership, user_id, populate_existing=True)

    async def add(self, membership: Membership) -> Membership:
        self.session.add(membership)
        await self.session.flush()
        return membership

    async def compare_and_set_status(
        self, user_id: uuid.UUID, expected: str, values: dict[str, Any]
    ) -> Membership | None:
        """Moves the membership only if it is still in ``expected``; None if it was not."""
        result = await self.session.execute(
            update(Membership)
            .where(Membership.user_id == user_id, Membership.status == expected)
            .values(**values)
            .returning(Membership)
            .execution_options(populate_existing=True)
        )
        return result.scalar_one_or_none()

    async def add_change(self, change: MembershipChange) -> None:
        self.session.add(change)
        await self.session.flush()

    async def history(self, user_id: uuid.UUID) -> Sequence[MembershipChange]:
        result = await self.session.execute(
            select(MembershipChange)
            .where(MembershipChange.user_id == user_id)
            .order_by(MembershipChange.changed_at, MembershipChange.id)
        )
        return result.scalars().all()

    async def list(
        self, status: str | None, limit: int, after: uuid.UUID | None
    ) -> Sequence[Membership]:
        query = select(Membership).order_by(Membership.user_id).limit(limit)
        if status is not None:
            query = query.where(Membership.status == status)
        if after is not None:
            query = query.where(Membership.user_id > after)
        result = await self.session.execute(query)
        return result.scalars().all()
