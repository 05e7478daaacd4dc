"""The governance log: every action, hash-chained, append-only in the database; and what
notice froze stays frozen."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Mapping
from datetime import timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from governance.audit import AUDIT_GENESIS, AuditRecord, audit_link, verify_audit
from governance.constitution import JsonValue
from infra.clock import FrozenClock
from infra.settings import Settings
from tests.governance.factories import START, governance, make_members, on_notice, yes_no


def _log(length: int) -> list[AuditRecord]:
    records: list[AuditRecord] = []
    previous = AUDIT_GENESIS
    for position in range(1, length + 1):
        record = audit_link(
            previous,
            position=position,
            action="proposal_cosigned",
            actor_id=uuid.uuid4(),
            proposal_id=uuid.uuid4(),
            payload={"n": position, "keys": ["fare.base_fare"]},
            occurred_at=START + timedelta(minutes=position),
        )
        records.append(record)
        previous = record.hash
    return records


def test_an_intact_log_verifies() -> None:
    assert verify_audit(_log(5)) == []


def test_a_changed_entry_is_found() -> None:
    log = _log(5)
    log[2] = dataclasses.replace(log[2], payload={"n": 99, "keys": ["fare.base_fare"]})
    assert verify_audit(log) == ["entry 3: the hash does not match its content"]


def test_a_removed_entry_is_found() -> None:
    log = _log(5)
    del log[1]
    problems = verify_audit(log)
    assert "entry 3 is at position 2" in problems
    assert "entry 3: prev_hash is not the previous hash" in problems


def test_a_consistently_rewritten_log_loses_the_hashes_readers_kept() -> None:
    log = _log(4)
    kept = log[2].hash
    forged = log[:1]
    for record in log[1:]:
        payload: Mapping[str, JsonValue] = (
            {"n": 0, "keys": []} if record.position == 2 else record.payload
        )
        forged.append(
            audit_link(
                forged[-1].hash,
                position=record.position,
                action=record.action,
                actor_id=record.actor_id,
                proposal_id=record.proposal_id,
                payload=payload,
                occurred_at=record.occurred_at,
            )
        )
    # Re-hashed from the change on, the forgery is a valid chain of its own...
    assert verify_audit(forged) == []
    # ...but a member who read entry 3 before no longer finds its hash.
    assert kept not in {record.hash for record in forged}


async def test_governance_actions_are_logged_in_a_chain_that_verifies(
    session: AsyncSession, settings: Settings
) -> None:
    clock = FrozenClock(START)
    members = await make_members(session, settings, clock, 6)
    service = governance(session, clock)
    noticed = await on_notice(service, yes_no(("fare.base_fare", "300")), members[0], members[1:6])
    entries = await service.audit_entries(0, 100)
    assert [e.action for e in entries][-7:] == [
        "proposal_drafted",
        *["proposal_cosigned"] * 5,
        "proposal_noticed",
    ]
    noticed_entry = entries[-1]
    assert noticed_entry.actor_id == members[0]
    assert noticed_entry.payload["document_hash"] == noticed.document_hash
    assert [e.position for e in entries] == list(range(1, len(entries) + 1))
    assert await service.audit_problems() == []


async def test_the_log_is_append_only(session: AsyncSession, settings: Settings) -> None:
    clock = FrozenClock(START)
    members = await make_members(session, settings, clock, 1)
    await governance(session, clock).draft(members[0], yes_no(("fare.base_fare", "300")))
    for statement in (
        "UPDATE governance_audit_log SET action = 'nothing'",
        "DELETE FROM governance_audit_log",
        "TRUNCATE governance_audit_log",
    ):
        with pytest.raises(DBAPIError, match="append-only"):
            async with session.begin_nested():
                await session.execute(text(statement))


async def test_what_notice_froze_cannot_be_rewritten(
    session: AsyncSession, settings: Settings
) -> None:
    clock = FrozenClock(START)
    members = await make_members(session, settings, clock, 6)
    service = governance(session, clock)
    noticed = await on_notice(service, yes_no(("fare.base_fare", "300")), members[0], members[1:6])
    for statement in (
        "UPDATE proposals SET title = 'Something else' WHERE id = :id",
        "UPDATE proposals SET impact = '{}' WHERE id = :id",
        "DELETE FROM proposals WHERE id = :id",
    ):
        with pytest.raises(DBAPIError, match="proposal"):
            async with session.begin_nested():
                await session.execute(text(statement), {"id": noticed.id})
