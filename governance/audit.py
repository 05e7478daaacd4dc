"""The governance audit log as a hash chain. Pure: entries in, hashes and problems out.

Every governance action (a draft, a co-signature, notice, voting opening, a close with
its result, scheduling, applying, expiry, an emergency change and its end) is one entry,
appended in order. Ballots are not: they have their own chain (governance.voting), and
logging them here would tell members who voted when.

- An entry's text is ``canonical_json`` of ``{"format", "position", "action", "actor_id",
  "proposal_id", "payload", "occurred_at"}`` (ids as text or null; the time in UTC,
  ISO 8601 with microseconds).
- ``hash[1] = sha256(genesis + "\\n" + text[1])``, ``hash[i] = sha256(hash[i-1] + "\\n" +
  text[i])`` (``governance.voting.chain_link``), with ``genesis =
  sha256("ridecoop-governance-audit/1")``. Each hash commits to every earlier entry, so a
  reader holding any hash finds a rewritten history out.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from governance.constitution import JsonValue, canonical_json, sha256_hex
from governance.voting import chain_link

AUDIT_FORMAT = "ridecoop-governance-audit/1"
AUDIT_GENESIS = sha256_hex(AUDIT_FORMAT)


@dataclass(frozen=True, slots=True)
class AuditRecord:
    position: int
    action: str
    actor_id: uuid.UUID | None
    proposal_id: uuid.UUID | None
    payload: Mapping[str, JsonValue]
    occurred_at: datetime
    prev_hash: str
    hash: str


def audit_time(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise ValueError("audit times are timezone-aware")
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def entry_text(
    *,
    position: int,
    action: str,
    actor_id: uuid.UUID | None,
    proposal_id: uuid.UUID | None,
    payload: Mapping[str, JsonValue],
    occurred_at: datetime,
) -> str:
    """The canonical text an entry's hash is taken over."""
    return canonical_json(
        {
            "format": AUDIT_FORMAT,
            "position": position,
            "action": action,
            "actor_id": str(actor_id) if actor_id else None,
            "proposal_id": str(proposal_id) if proposal_id else None,
            "payload": payload,
            "occurred_at": audit_time(occurred_at),
        }
    )


def audit_link(
    prev_hash: str,
    *,
    position: int,
    action: str,
    actor_id: uuid.UUID | None,
    proposal_id: uuid.UUID | None,
    payload: Mapping[str, JsonValue],
    occurred_at: datetime,
) -> AuditRecord:
    """The entry at ``position`` after the entry whose hash is ``prev_hash`` (the
    genesis for position 1)."""
    if position < 1:
        raise ValueError("positions start at 1")
    text = entry_text(
        position=position,
        action=action,
        actor_id=actor_id,
        proposal_id=proposal_id,
        payload=payload,
        occurred_at=occurred_at,
    )
    return AuditRecord(
        position=position,
        action=action,
        actor_id=actor_id,
        proposal_id=proposal_id,
        payload=payload,
        occurred_at=occurred_at,
        prev_hash=prev_hash,
        hash=chain_link(prev_hash, text),
    )


def verify_audit(records: Sequence[AuditRecord]) -> list[str]:
    """Problems with a log read from its first entry, in position order, each at its own
    entry: a gap, a link to anything but the previous entry's hash, content that no
    longer matches its hash. Empty when the log holds."""
    problems: list[str] = []
    previous = AUDIT_GENESIS
    for expected, record in enumerate(records, start=1):
        if record.position != expected:
            problems.append(f"entry {record.position} is at position {expected}")
        if record.prev_hash != previous:
            problems.append(f"entry {record.position}: prev_hash is not the previous hash")
        relinked = audit_link(
            record.prev_hash,
            position=record.position,
            action=record.action,
            actor_id=record.actor_id,
            proposal_id=record.proposal_id,
            payload=record.payload,
            occurred_at=record.occurred_at,
        )
        if relinked.hash != record.hash:
            problems.append(f"entry {record.position}: the hash does not match its content")
        previous = record.hash
    return problems
