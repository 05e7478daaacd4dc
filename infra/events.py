"""Domain events: recorded during a unit of work, published only after it commits."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import datetime
from enum import Enum
from typing import Any


@dataclasses.dataclass(frozen=True, kw_only=True)
class DomainEvent:
    occurred_at: datetime

    @property
    def name(self) -> str:
        return type(self).__name__

    def recipients(self) -> tuple[uuid.UUID, ...]:
        """The users to notify on their own channel; none by default."""
        return ()

    def to_message(self) -> dict[str, Any]:
        payload = {f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}
        return {"type": "event", "event": self.name, "data": payload}


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return value


class EventBuffer:
    """Collects the events of one unit of work; whoever commits drains and publishes."""

    def __init__(self) -> None:
        self._events: list[DomainEvent] = []

    def record(self, event: DomainEvent) -> None:
        self._events.append(event)

    def drain(self) -> list[DomainEvent]:
        events, self._events = self._events, []
        return events

    def clear(self) -> None:
        self._events.clear()
