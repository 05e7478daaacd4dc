"""Response shapes that combine more than one domain."""

from __future__ import annotations

from pydantic import BaseModel

from accounts.schemas import UserRead
from governance.schemas import MembershipRead


class AccountRead(BaseModel):
    user: UserRead
    membership: MembershipRead | None = None
