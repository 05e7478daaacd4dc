from __future__ import annotations

import dataclasses
import uuid

from infra.events import DomainEvent


@dataclasses.dataclass(frozen=True, kw_only=True)
class UserRegistered(DomainEvent):
    user_id: uuid.UUID
    role: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class SessionRevoked(DomainEvent):
    user_id: uuid.UUID
    session_id: uuid.UUID
    reason: str

    def recipients(self) -> tuple[uuid.UUID, ...]:
        return (self.user_id,)
