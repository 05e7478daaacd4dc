from __future__ import annotations

import dataclasses
import uuid
from datetime import datetime
from typing import Any

from infra.events import DomainEvent


@dataclasses.dataclass(frozen=True, kw_only=True)
class MembershipChanged(DomainEvent):
    user_id: uuid.UUID
    from_status: str | None
    to_status: str
    changed_by: uuid.UUID | None
    reason: str

    def recipients(self) -> tuple[uuid.UUID, ...]:
        return (self.user_id,)


@dataclasses.dataclass(frozen=True, kw_only=True)
class GovernanceNotice(DomainEvent):
    """A notice to some members on their own channels. Who is told is not part of the
    message: nobody learns the electorate, or who has not voted, from it."""

    proposal_id: uuid.UUID
    title: str
    notify: tuple[uuid.UUID, ...] = ()

    def recipients(self) -> tuple[uuid.UUID, ...]:
        return self.notify

    def to_message(self) -> dict[str, Any]:
        message = super().to_message()
        del message["data"]["notify"]
        return message


@dataclasses.dataclass(frozen=True, kw_only=True)
class ProposalNoticed(GovernanceNotice):
    voting_opens_at: datetime
    voting_closes_at: datetime


@dataclasses.dataclass(frozen=True, kw_only=True)
class VotingOpened(GovernanceNotice):
    voting_closes_at: datetime


@dataclasses.dataclass(frozen=True, kw_only=True)
class VotingClosesSoon(GovernanceNotice):
    """To the members of the electorate who have not voted, a day before the close."""

    voting_closes_at: datetime


@dataclasses.dataclass(frozen=True, kw_only=True)
class ProposalDecided(GovernanceNotice):
    passed: bool
    status: str
    chain_head: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class ProposalScheduled(GovernanceNotice):
    effective_at: datetime


@dataclasses.dataclass(frozen=True, kw_only=True)
class ProposalApplied(GovernanceNotice):
    fare_policy_version_id: uuid.UUID | None


@dataclasses.dataclass(frozen=True, kw_only=True)
class ProposalExpired(GovernanceNotice):
    reason: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class EmergencyChangeEnacted(GovernanceNotice):
    emergency_change_id: uuid.UUID
    lapses_at: datetime


@dataclasses.dataclass(frozen=True, kw_only=True)
class EmergencyChangeEnded(GovernanceNotice):
    emergency_change_id: uuid.UUID
    status: str
