from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Uuid, delete, func, literal, or_, select, text, update
from sqlalchemy.dialects.postgresql import distinct_on, insert
from sqlalchemy.ext.asyncio import AsyncSession

from governance.models import (
    AuditEntry,
    BallotLink,
    ElectorateMember,
    EmergencyChange,
    EmergencyStatus,
    GovernedParameter,
    Membership,
    MembershipChange,
    MembershipStatus,
    OpenParameter,
    PersonalImpact,
    Proposal,
    ProposalCosigner,
    ProposalStatus,
    ProposalVoter,
)


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


# -- Proposals, ballots, governed parameters, emergencies, the audit log ------------------

# Serialises appends to the audit log (one chain for the whole co-op). Taken last in
# every transaction that logs, after its row locks, so no two orders of locking meet.
AUDIT_LOCK_KEY = 0x676F76_61756474  # "gov" "audt"


class ProposalRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, proposal: Proposal) -> Proposal:
        self.session.add(proposal)
        await self.session.flush()
        return proposal

    async def get(self, proposal_id: uuid.UUID, *, lock: bool = False) -> Proposal | None:
        query = select(Proposal).where(Proposal.id == proposal_id)
        if lock:
            query = query.with_for_update()
        result = await self.session.execute(query.execution_options(populate_existing=True))
        return result.scalar_one_or_none()

    async def update(self, proposal_id: uuid.UUID, values: dict[str, Any]) -> None:
        await self.session.execute(
            update(Proposal).where(Proposal.id == proposal_id).values(**values)
        )

    async def page(
        self, statuses: Sequence[str] | None, limit: int, after: uuid.UUID | None
    ) -> Sequence[Proposal]:
        # Newest first; ids are time-ordered, so ``after`` pages backwards in time.
        query = select(Proposal).order_by(Proposal.id.desc()).limit(limit)
        if statuses:
            query = query.where(Proposal.status.in_(statuses))
        if after is not None:
            query = query.where(Proposal.id < after)
        result = await self.session.execute(query)
        return result.scalars().all()

    async def due(
        self, now: datetime, draft_expiry: datetime, remind_from: datetime
    ) -> list[uuid.UUID]:
        """Proposals with a timed step due at ``now``, oldest first."""
        query = (
            select(Proposal.id)
            .where(
                or_(
                    (Proposal.status == ProposalStatus.draft.value)
                    & (Proposal.created_at <= draft_expiry),
                    (Proposal.status == ProposalStatus.notice.value)
                    & (Proposal.voting_opens_at <= now),
                    (Proposal.status == ProposalStatus.voting.value)
                    & (
                        (Proposal.voting_closes_at <= now)
                        | (
                            Proposal.reminded_at.is_(None)
                            & (Proposal.voting_closes_at <= remind_from)
                        )
                    ),
                    Proposal.status == ProposalStatus.passed.value,
                    (Proposal.status == ProposalStatus.scheduled.value)
                    & (Proposal.effective_at <= now),
                )
            )
            .order_by(Proposal.id)
        )
        result = await self.session.execute(query)
        return list(result.scalars().all())

    async def scheduled(self) -> Sequence[Proposal]:
        result = await self.session.execute(
            select(Proposal)
            .where(Proposal.status == ProposalStatus.scheduled.value)
            .order_by(Proposal.effective_at, Proposal.id)
        )
        return result.scalars().all()

    # Co-signers.

    async def add_cosigner(
        self, proposal_id: uuid.UUID, member_id: uuid.UUID, at: datetime
    ) -> bool:
        """True if this member had not co-signed yet."""
        result = await self.session.execute(
            insert(ProposalCosigner)
            .values(proposal_id=proposal_id, member_id=member_id, cosigned_at=at)
            .on_conflict_do_nothing()
            .returning(ProposalCosigner.member_id)
        )
        return result.scalar_one_or_none() is not None

    async def cosigner_count(self, proposal_id: uuid.UUID) -> int:
        result = await self.session.execute(
            select(func.count()).where(ProposalCosigner.proposal_id == proposal_id)
        )
        return int(result.scalar_one())

    # One open proposal per parameter.

    async def holders(self, keys: Sequence[str]) -> dict[str, uuid.UUID]:
        result = await self.session.execute(
            select(OpenParameter.parameter_key, OpenParameter.proposal_id).where(
                OpenParameter.parameter_key.in_(keys)
            )
        )
        return {row.parameter_key: row.proposal_id for row in result}

    async def claim(self, keys: Sequence[str], proposal_id: uuid.UUID, at: datetime) -> set[str]:
        """Claims every key it can for ``proposal_id``; answers the keys it claimed. A
        concurrent claim of the same key waits for the other transaction, then loses."""
        if not keys:
            return set()
        result = await self.session.execute(
            insert(OpenParameter)
            .values(
                [{"parameter_key": k, "proposal_id": proposal_id, "claimed_at": at} for k in keys]
            )
            .on_conflict_do_nothing()
            .returning(OpenParameter.parameter_key)
        )
        return set(result.scalars().all())

    async def release(self, proposal_id: uuid.UUID) -> None:
        await self.session.execute(
            delete(OpenParameter).where(OpenParameter.proposal_id == proposal_id)
        )

    # The electorate and the record of who voted.

    async def freeze_electorate(self, proposal_id: uuid.UUID, opens_at: datetime) -> int:
        """Every member with a paid share who is not suspended and was a member when
        voting opened; answers how many."""
        eligible = select(literal(proposal_id, type_=Uuid(as_uuid=True)), Membership.user_id).where(
            Membership.status == MembershipStatus.member.value,
            Membership.share_paid_at.is_not(None),
            Membership.member_since <= opens_at,
        )
        result = await self.session.execute(
            insert(ElectorateMember)
            .from_select(["proposal_id", "member_id"], eligible)
            .on_conflict_do_nothing()
            .returning(ElectorateMember.member_id)
        )
        return len(result.scalars().all())

    async def in_electorate(self, proposal_id: uuid.UUID, member_id: uuid.UUID) -> bool:
        found = await self.session.get(ElectorateMember, (proposal_id, member_id))
        return found is not None

    async def electorate(self, proposal_id: uuid.UUID) -> list[uuid.UUID]:
        result = await self.session.execute(
            select(ElectorateMember.member_id)
            .where(ElectorateMember.proposal_id == proposal_id)
            .order_by(ElectorateMember.member_id)
        )
        return list(result.scalars().all())

    async def not_voted(self, proposal_id: uuid.UUID) -> list[uuid.UUID]:
        voted = select(ProposalVoter.member_id).where(ProposalVoter.proposal_id == proposal_id)
        result = await self.session.execute(
            select(ElectorateMember.member_id)
            .where(
                ElectorateMember.proposal_id == proposal_id,
                ElectorateMember.member_id.not_in(voted),
            )
            .order_by(ElectorateMember.member_id)
        )
        return list(result.scalars().all())

    async def record_voter(
        self, proposal_id: uuid.UUID, member_id: uuid.UUID, at: datetime
    ) -> None:
        """One row per member and proposal, however often they vote (the primary key),
        counting their ballots."""
        statement = insert(ProposalVoter).values(
            proposal_id=proposal_id, member_id=member_id, voted_at=at, vote_count=1
        )
        await self.session.execute(
            statement.on_conflict_do_update(
                index_elements=[ProposalVoter.proposal_id, ProposalVoter.member_id],
                set_={
                    "voted_at": statement.excluded.voted_at,
                    "vote_count": ProposalVoter.vote_count + 1,
                },
            )
        )

    async def has_voted(self, proposal_id: uuid.UUID, member_id: uuid.UUID) -> bool:
        found = await self.session.get(ProposalVoter, (proposal_id, member_id))
        return found is not None

    async def voter_count(self, proposal_id: uuid.UUID) -> int:
        result = await self.session.execute(
            select(func.count()).where(ProposalVoter.proposal_id == proposal_id)
        )
        return int(result.scalar_one())

    # The ballot chain.

    async def last_ballot_of(self, proposal_id: uuid.UUID, voter_token: str) -> BallotLink | None:
        result = await self.session.execute(
            select(BallotLink)
            .where(BallotLink.proposal_id == proposal_id, BallotLink.voter_token == voter_token)
            .order_by(BallotLink.position.desc())
            .limit(1)
        )
        return result.scalar_one_or_none()

    async def add_ballot(self, link: BallotLink) -> None:
        self.session.add(link)
        await self.session.flush()

    async def chain(self, proposal_id: uuid.UUID) -> Sequence[BallotLink]:
        result = await self.session.execute(
            select(BallotLink)
            .where(BallotLink.proposal_id == proposal_id)
            .order_by(BallotLink.position)
        )
        return result.scalars().all()

    # Personal impact figures.

    async def add_personal_impacts(self, rows: Sequence[dict[str, Any]]) -> None:
        for start in range(0, len(rows), 5_000):
            await self.session.execute(insert(PersonalImpact).values(rows[start : start + 5_000]))

    async def personal_impact(
        self, proposal_id: uuid.UUID, user_id: uuid.UUID
    ) -> dict[str, Any] | None:
        found = await self.session.get(PersonalImpact, (proposal_id, user_id))
        return found.figures if found is not None else None


class GovernedParameterRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def values_at(self, at: datetime) -> dict[str, str]:
        """The latest value of every stored key in force at ``at``, as text."""
        result = await self.session.execute(
            select(GovernedParameter.parameter_key, GovernedParameter.value)
            .where(GovernedParameter.effective_at <= at)
            .order_by(
                GovernedParameter.parameter_key,
                GovernedParameter.effective_at.desc(),
                GovernedParameter.version.desc(),
            )
            .ext(distinct_on(GovernedParameter.parameter_key))
        )
        return {row.parameter_key: row.value for row in result}

    async def latest_version(self, key: str) -> int:
        result = await self.session.execute(
            select(func.max(GovernedParameter.version)).where(
                GovernedParameter.parameter_key == key
            )
        )
        return int(result.scalar_one() or 0)

    async def add(self, row: GovernedParameter) -> None:
        self.session.add(row)
        await self.session.flush()


class EmergencyRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, change: EmergencyChange) -> EmergencyChange:
        self.session.add(change)
        await self.session.flush()
        return change

    async def get(self, change_id: uuid.UUID, *, lock: bool = False) -> EmergencyChange | None:
        query = select(EmergencyChange).where(EmergencyChange.id == change_id)
        if lock:
            query = query.with_for_update()
        result = await self.session.execute(query.execution_options(populate_existing=True))
        return result.scalar_one_or_none()

    async def update(self, change_id: uuid.UUID, values: dict[str, Any]) -> None:
        await self.session.execute(
            update(EmergencyChange).where(EmergencyChange.id == change_id).values(**values)
        )

    async def active(self) -> Sequence[EmergencyChange]:
        result = await self.session.execute(
            select(EmergencyChange)
            .where(EmergencyChange.status == EmergencyStatus.active.value)
            .order_by(EmergencyChange.lapses_at, EmergencyChange.id)
        )
        return result.scalars().all()


class AuditRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def lock_and_last(self) -> tuple[int, str | None]:
        """Takes the log's append lock for this transaction; answers the last position
        and hash (0 and None when the log is empty)."""
        await self.session.execute(
            text("SELECT pg_advisory_xact_lock(:key)"), {"key": AUDIT_LOCK_KEY}
        )
        result = await self.session.execute(
            select(AuditEntry.position, AuditEntry.hash)
            .order_by(AuditEntry.position.desc())
            .limit(1)
        )
        row = result.one_or_none()
        return (0, None) if row is None else (int(row.position), str(row.hash))

    async def add(self, entry: AuditEntry) -> None:
        self.session.add(entry)
        await self.session.flush()

    async def entries(
        self, after: int, limit: int, proposal_id: uuid.UUID | None = None
    ) -> Sequence[AuditEntry]:
        query = (
            select(AuditEntry)
            .where(AuditEntry.position > after)
            .order_by(AuditEntry.position)
            .limit(limit)
        )
        if proposal_id is not None:
            query = query.where(AuditEntry.proposal_id == proposal_id)
        result = await self.session.execute(query)
        return result.scalars().all()
