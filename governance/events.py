from __future__ import annotations

import dataclasses
import uuid

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
