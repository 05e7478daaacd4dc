from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, String, Text, func
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
