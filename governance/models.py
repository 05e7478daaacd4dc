from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy import text as sql_text
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Mapped, mapped_column

from infra.db import Base
from infra.ids import new_id


class MembershipStatus(StrEnum):
    applicant = "applicant"
    member = "member"
    suspended = "suspended"
    exited = "exited"


class Membership(Base):
    """A driver's membership of the co-op. Only ``member`` with a paid share may vote."""

    __tablename__ = "memberships"
    __table_args__ = (
        CheckConstraint(
            "status IN ('applicant', 'member', 'suspended', 'exited')", name="status_known"
        ),
        # A member (or a suspended one) always has a paid share and a member-since date.
        CheckConstraint(
            "status NOT IN ('member', 'suspended') OR "
            "(share_paid_at IS NOT NULL AND member_since IS NOT NULL)",
            name="member_has_share",
        ),
        CheckConstraint("share_amount IS NULL OR share_amount > 0", name="share_positive"),
        CheckConstraint(
            "(share_amount IS NULL) = (share_currency IS NULL)", name="share_currency_set"
        ),
    )

    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="RESTRICT"), primary_key=True
    )
    status: Mapped[str] = mapped_column(String(16))
    share_paid_at: Mapped[datetime | None]
    share_amount: Mapped[int | None] = mapped_column(BigInteger)
    share_currency: Mapped[str | None] = mapped_column(String(3))
    member_since: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now())


class MembershipChange(Base):
    """Who moved a membership from one status to another, when and why. Append-only."""

    __tablename__ = "membership_changes"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("memberships.user_id", ondelete="RESTRICT"), index=True
    )
    from_status: Mapped[str | None] = mapped_column(String(16))
    to_status: Mapped[str] = mapped_column(String(16))
    changed_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id"))
    reason: Mapped[str] = mapped_column(Text)
    changed_at: Mapped[datetime]


# -- Proposals, ballots and the governance record ---------------------------------------
#
# docs/governance.md says what each step means. The database guards what must hold even
# under races: one co-signature and one registry row per member and proposal, one open
# proposal per parameter (open_parameters' primary key), one ballot per chain position,
# and the ballot chain and audit log are append-only (refuse_change() triggers).


class ProposalStatus(StrEnum):
    draft = "draft"
    notice = "notice"
    voting = "voting"
    passed = "passed"
    failed = "failed"
    scheduled = "scheduled"
    applied = "applied"
    expired = "expired"


class ProposalKind(StrEnum):
    yes_no = "yes_no"
    ranked = "ranked"
    median = "median"


_PROPOSAL_STATUSES = ", ".join(f"'{s.value}'" for s in ProposalStatus)
_PROPOSAL_KINDS = ", ".join(f"'{k.value}'" for k in ProposalKind)
# Statuses whose proposal still holds its parameters (open_parameters).
OPEN_STATUSES = frozenset(
    {ProposalStatus.notice, ProposalStatus.voting, ProposalStatus.passed, ProposalStatus.scheduled}
)


class Proposal(Base):
    """A question put to the members. ``question`` is the draft's (values as text);
    ``document`` and ``document_hash`` are what notice froze, ``rule_class`` the rules it
    is decided by, ``impact`` the simulation every voter sees. ``chain_length`` and
    ``chain_head`` follow the ballot chain, so a ballot appends without reading it."""

    __tablename__ = "proposals"
    __table_args__ = (
        CheckConstraint(f"status IN ({_PROPOSAL_STATUSES})", name="status_known"),
        CheckConstraint(f"kind IN ({_PROPOSAL_KINDS})", name="kind_known"),
        CheckConstraint(
            "status = 'draft' OR status = 'expired' OR "
            "(document IS NOT NULL AND document_hash IS NOT NULL AND rule_class IS NOT NULL "
            "AND voting_opens_at IS NOT NULL AND voting_closes_at IS NOT NULL)",
            name="frozen_after_draft",
        ),
        CheckConstraint("document_hash IS NULL OR document_hash ~ '^[0-9a-f]{64}$'", name="hash"),
        CheckConstraint("chain_length >= 0", name="chain_length_non_negative"),
        Index("ix_proposals_status_opens", "status", "voting_opens_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    kind: Mapped[str] = mapped_column(String(16))
    title: Mapped[str] = mapped_column(String(200))
    text: Mapped[str] = mapped_column(Text)
    author_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id"), index=True)
    status: Mapped[str] = mapped_column(String(16))
    question: Mapped[dict[str, Any]] = mapped_column(JSONB)
    parameter_keys: Mapped[list[str]] = mapped_column(ARRAY(String(120)))
    # Set when an admin's emergency change is put to the members for ratification.
    emergency_change_id: Mapped[uuid.UUID | None]
    document: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    document_hash: Mapped[str | None] = mapped_column(String(64))
    rule_class: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    impact: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    electorate_size: Mapped[int | None] = mapped_column(Integer)
    chain_length: Mapped[int] = mapped_column(Integer, server_default=sql_text("0"))
    chain_head: Mapped[str | None] = mapped_column(String(64))
    result: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    publication: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    # What applying does, decided at close: the changes of the question or of the
    # winning alternative, or the median's one change. Values as text.
    outcome_changes: Mapped[list[dict[str, str]] | None] = mapped_column(JSONB)
    status_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    notice_at: Mapped[datetime | None]
    voting_opens_at: Mapped[datetime | None]
    voting_closes_at: Mapped[datetime | None]
    reminded_at: Mapped[datetime | None]
    closed_at: Mapped[datetime | None]
    published_at: Mapped[datetime | None]
    effective_at: Mapped[datetime | None]
    applied_at: Mapped[datetime | None]


class ProposalCosigner(Base):
    __tablename__ = "proposal_cosigners"

    proposal_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("proposals.id", ondelete="RESTRICT"), primary_key=True
    )
    member_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"), primary_key=True)
    cosigned_at: Mapped[datetime]


class OpenParameter(Base):
    """Which proposal holds a parameter from notice until it is applied, fails or
    expires: the primary key allows one open proposal per parameter."""

    __tablename__ = "open_parameters"

    parameter_key: Mapped[str] = mapped_column(String(120), primary_key=True)
    proposal_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("proposals.id", ondelete="RESTRICT"), index=True
    )
    claimed_at: Mapped[datetime]


class ElectorateMember(Base):
    """The electorate of a proposal, frozen when its voting opens."""

    __tablename__ = "proposal_electorates"

    proposal_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("proposals.id", ondelete="RESTRICT"), primary_key=True
    )
    member_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"), primary_key=True)


class ProposalVoter(Base):
    """Who voted on a proposal: one row per member, however often they voted. Never the
    ballot, its position or its hash: those live in ``ballots``, which names no one."""

    __tablename__ = "proposal_voters"

    proposal_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("proposals.id", ondelete="RESTRICT"), primary_key=True
    )
    member_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"), primary_key=True)
    voted_at: Mapped[datetime]
    vote_count: Mapped[int] = mapped_column(Integer, server_default=sql_text("1"))


class BallotLink(Base):
    """One link of a proposal's ballot chain. No member and no time: the ballot's voter
    token is the keyed hash governance.voting.voter_token."""

    __tablename__ = "ballots"
    __table_args__ = (
        CheckConstraint("position >= 1", name="position_positive"),
        CheckConstraint("hash ~ '^[0-9a-f]{64}$' AND prev_hash ~ '^[0-9a-f]{64}$'", name="hashes"),
        Index("ix_ballots_proposal_token", "proposal_id", "voter_token", "position"),
    )

    proposal_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("proposals.id", ondelete="RESTRICT"), primary_key=True
    )
    position: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    voter_token: Mapped[str] = mapped_column(String(64))
    ballot_json: Mapped[str] = mapped_column(Text)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64), unique=True)


class PersonalImpact(Base):
    """One member's own figures of a proposal's frozen impact, apart from the
    proposal's, so each member reads only theirs."""

    __tablename__ = "proposal_personal_impacts"

    proposal_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("proposals.id", ondelete="RESTRICT"), primary_key=True
    )
    user_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    figures: Mapped[dict[str, Any]] = mapped_column(JSONB)


class GovernedParameter(Base):
    """Values in force of governed parameters that live outside the fare policy
    (``dispatch.fairness_weight_s``, ``constitution.*``): each change a new version,
    in force from ``effective_at``; a key without a row is at its founding default."""

    __tablename__ = "governed_parameters"
    __table_args__ = (
        UniqueConstraint("parameter_key", "version"),
        CheckConstraint("version >= 1", name="version_positive"),
        Index("ix_governed_parameters_key_effective", "parameter_key", "effective_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    parameter_key: Mapped[str] = mapped_column(String(120))
    value: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer)
    effective_at: Mapped[datetime]
    proposal_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("proposals.id"))
    created_at: Mapped[datetime]


class EmergencyStatus(StrEnum):
    active = "active"
    ratified = "ratified"
    lapsed = "lapsed"


class EmergencyChange(Base):
    """A bounded temporary change an admin enacted; it lapses at ``lapses_at`` (the
    previous values come back) unless the members ratify it by the vote it opened."""

    __tablename__ = "emergency_changes"
    __table_args__ = (
        CheckConstraint("status IN ('active', 'ratified', 'lapsed')", name="status_known"),
        CheckConstraint("lapses_at > enacted_at", name="lapses_after_enacted"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    enacted_by: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"))
    reason: Mapped[str] = mapped_column(Text)
    changes: Mapped[list[dict[str, str]]] = mapped_column(JSONB)
    status: Mapped[str] = mapped_column(String(16))
    enacted_at: Mapped[datetime]
    lapses_at: Mapped[datetime]
    ended_at: Mapped[datetime | None]
    ratification_proposal_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("proposals.id"))
    fare_policy_version_id: Mapped[uuid.UUID | None]
    restored_policy_version_id: Mapped[uuid.UUID | None]


class AuditEntry(Base):
    """The governance log: every action, hash-chained (governance.audit). Append-only."""

    __tablename__ = "governance_audit_log"
    __table_args__ = (
        CheckConstraint("position >= 1", name="position_positive"),
        CheckConstraint("hash ~ '^[0-9a-f]{64}$' AND prev_hash ~ '^[0-9a-f]{64}$'", name="hashes"),
    )

    position: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    action: Mapped[str] = mapped_column(String(64))
    actor_id: Mapped[uuid.UUID | None]
    proposal_id: Mapped[uuid.UUID | None] = mapped_column(index=True)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    occurred_at: Mapped[datetime]
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64), unique=True)
