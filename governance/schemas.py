from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from governance.models import MembershipStatus

StatusName = Literal["applicant", "member", "suspended", "exited"]


class MembershipRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    user_id: uuid.UUID
    status: StatusName
    share_paid_at: datetime | None
    share_amount: int | None = Field(description="Share paid, in minor units")
    share_currency: str | None
    member_since: datetime | None
    updated_at: datetime

    @property
    def can_vote(self) -> bool:
        return self.status == MembershipStatus.member.value


class MembershipChangeRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    from_status: StatusName | None
    to_status: StatusName
    changed_by: uuid.UUID | None
    reason: str
    changed_at: datetime


class MembershipTransition(BaseModel):
    model_config = ConfigDict(extra="forbid")

    to_status: StatusName
    reason: str = Field(min_length=3, max_length=2000)
    share_amount: int | None = Field(
        default=None, gt=0, le=100_000_000, description="Share paid, in minor units"
    )
    share_currency: str | None = Field(default=None, pattern="^[A-Z]{3}$")

    @model_validator(mode="after")
    def _share_fields_together(self) -> Self:
        if (self.share_amount is None) != (self.share_currency is None):
            raise ValueError("share_amount and share_currency go together")
        return self


# -- Proposals and ballots -----------------------------------------------------------------
#
# Parameter values are text everywhere ("250", "0.15"): JSON numbers would make rates
# floats in most clients (docs/governance.md).

ProposalKindName = Literal["yes_no", "ranked", "median"]
ProposalStatusName = Literal[
    "draft", "notice", "voting", "passed", "failed", "scheduled", "applied", "expired"
]
ParameterKey = Annotated[str, Field(min_length=3, max_length=120, pattern=r"^[a-z0-9_.<>-]+$")]
ValueText = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^-?[0-9a-z_.]+$")]


class ChangeCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: ParameterKey
    new: ValueText
    old: ValueText | None = Field(
        default=None,
        description="The value the change is made from; the value in force when omitted",
    )


class AlternativeCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")
    title: str = Field(min_length=1, max_length=200)
    changes: list[ChangeCreate] = Field(
        default_factory=list, max_length=20, description="Empty keeps everything as it is"
    )


class ProposalCreate(BaseModel):
    """A draft: yes / no on ``changes``; a ranked choice among ``alternatives``; or the
    median of members' values of the parameter ``key``."""

    model_config = ConfigDict(extra="forbid")

    kind: ProposalKindName
    title: str = Field(min_length=3, max_length=200)
    text: str = Field(min_length=1, max_length=20_000)
    changes: list[ChangeCreate] | None = Field(default=None, min_length=1, max_length=20)
    alternatives: list[AlternativeCreate] | None = Field(default=None, min_length=2, max_length=10)
    key: ParameterKey | None = None

    @model_validator(mode="after")
    def _question_matches_kind(self) -> Self:
        given = {
            "changes": self.changes is not None,
            "alternatives": self.alternatives is not None,
            "key": self.key is not None,
        }
        wanted = {"yes_no": "changes", "ranked": "alternatives", "median": "key"}[self.kind]
        if not given[wanted] or any(v for k, v in given.items() if k != wanted):
            raise ValueError(f"a {self.kind} proposal gives `{wanted}` and nothing else")
        return self


class ChangeRead(BaseModel):
    key: str
    old: str
    new: str


class ProposalSummary(BaseModel):
    id: uuid.UUID
    kind: ProposalKindName
    title: str
    status: ProposalStatusName
    author_id: uuid.UUID | None
    parameter_keys: list[str]
    emergency_change_id: uuid.UUID | None
    created_at: datetime
    notice_at: datetime | None
    voting_opens_at: datetime | None
    voting_closes_at: datetime | None
    effective_at: datetime | None
    applied_at: datetime | None


class ProposalRead(ProposalSummary):
    text: str
    question: dict[str, Any] = Field(description="The question as drafted; values as text")
    cosigners: int
    cosigners_required: int
    document: dict[str, Any] | None = Field(
        description="What notice froze: the text, the question and the rules (hashed)"
    )
    document_hash: str | None
    rule_class: dict[str, Any] | None
    impact: dict[str, Any] | None = Field(
        description="The impact simulation frozen at notice, the same for every voter"
    )
    my_impact: dict[str, Any] | None = Field(
        description="The caller's own figures of the frozen impact, if they had trips"
    )
    electorate_size: int | None
    result: dict[str, Any] | None
    outcome_changes: list[ChangeRead] | None
    status_reason: str | None
    closed_at: datetime | None


class EligibilityRead(BaseModel):
    proposal_id: uuid.UUID
    status: ProposalStatusName
    can_vote: bool = Field(description="Whether a ballot from the caller is accepted now")
    reason: str | None = Field(
        description="Why not: not_a_member, share_not_paid, suspended, "
        "joined_after_voting_opened, not_in_electorate, voting_not_open, voting_closed"
    )
    detail: str
    in_electorate: bool | None = Field(description="Unknown (null) until voting opens")
    has_voted: bool
    voting_opens_at: datetime | None
    voting_closes_at: datetime | None


class BallotCreate(BaseModel):
    """Exactly one of: ``vote`` (yes / no), ``ranking`` (ranked; empty abstains), or
    ``value`` (median; text, or null with ``abstain``)."""

    model_config = ConfigDict(extra="forbid")

    vote: Literal["yes", "no", "abstain"] | None = None
    ranking: list[str] | None = Field(default=None, max_length=10)
    value: ValueText | None = None
    abstain: bool = Field(default=False, description="On a median vote: propose no value")

    @model_validator(mode="after")
    def _one_answer(self) -> Self:
        answers = [self.vote is not None, self.ranking is not None, self.value is not None]
        if sum(answers) + self.abstain != 1:
            raise ValueError("give exactly one of vote, ranking, value or abstain")
        return self


class BallotReceipt(BaseModel):
    proposal_id: uuid.UUID
    receipt: str = Field(
        description="The hash of your ballot's link; find it in the publication after close"
    )
    ballot: str = Field(description="Your ballot's canonical text, as it is chained")
    replaced_earlier: bool = Field(description="Whether this ballot replaces one you cast")
    voting_closes_at: datetime


class ResultRead(BaseModel):
    proposal_id: uuid.UUID
    status: ProposalStatusName
    result: dict[str, Any]
    outcome_changes: list[ChangeRead] | None
    electorate_size: int
    ballots_chained: int
    voters: int
    chain_head: str
    document_hash: str
    closed_at: datetime
    effective_at: datetime | None


class AuditEntryRead(BaseModel):
    position: int
    action: str
    actor_id: uuid.UUID | None
    proposal_id: uuid.UUID | None
    payload: dict[str, Any]
    occurred_at: datetime
    prev_hash: str
    hash: str


class EmergencyChangeCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    changes: list[ChangeCreate] = Field(min_length=1, max_length=10)
    reason: str = Field(min_length=10, max_length=2000)
    lapse_days: int = Field(
        default=7, ge=1, le=14, description="Days until it lapses unless members ratify it"
    )


class EmergencyChangeRead(BaseModel):
    id: uuid.UUID
    enacted_by: uuid.UUID
    reason: str
    changes: list[ChangeRead]
    status: Literal["active", "ratified", "lapsed"]
    enacted_at: datetime
    lapses_at: datetime
    ended_at: datetime | None
    ratification_proposal_id: uuid.UUID | None
    fare_policy_version_id: uuid.UUID | None
    restored_policy_version_id: uuid.UUID | None


class UpcomingFareChange(BaseModel):
    effective_at: datetime
    source: Literal["proposal", "emergency_lapse"]
    conditional: bool = Field(
        description="True when it happens only if members do not ratify an emergency change"
    )
    proposal_id: uuid.UUID | None
    emergency_change_id: uuid.UUID | None
    changes: list[ChangeRead]
