from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal, Self

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
