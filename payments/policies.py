"""Fare policy versions for other domains: which one is in force, and a given one.

Dispatch prices quotes with the version in force and final fares with the version the
quote recorded; it reaches them here, never through payments' repository.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from payments.errors import FarePolicyNotInForce
from payments.policy import FarePolicy
from payments.repository import FarePolicyRepository


class FarePolicyService:
    def __init__(self, session: AsyncSession) -> None:
        self.repository = FarePolicyRepository(session)

    async def in_force(self, at: datetime) -> FarePolicy:
        """The version in force at ``at``; raises ``FarePolicyNotInForce`` if none is."""
        return await self.repository.policy_in_force(at)

    async def by_id(self, policy_id: uuid.UUID) -> FarePolicy:
        """One version, whether in force or not. Versions are never deleted, so a
        missing one is an id that never was a policy: ``FarePolicyNotInForce``."""
        policy = await self.repository.policy_by_id(policy_id)
        if policy is None:
            raise FarePolicyNotInForce(f"there is no fare policy {policy_id}")
        return policy

    async def add_version(self, policy: FarePolicy, reason: str) -> FarePolicy:
        """Stores ``policy`` as a new version, in force from its ``effective_at`` for
        every quote made from then on; quotes made before keep the version they recorded.
        Raises ``FarePolicyVersionExists`` if its number is taken, even concurrently."""
        return await self.repository.add_policy_version(policy, reason=reason)
