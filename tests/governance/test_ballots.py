"""Ballots: who may vote, the last vote counts, one registry row per member even under a
race of real transactions, receipts, and a publication anyone can verify."""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from accounts.models import Role
from governance.errors import (
    NotEligibleToVote,
    ParameterOutOfBounds,
    ProposalClosed,
    VotingNotOpen,
)
from governance.schemas import BallotCreate
from governance.service import GovernanceService, MembershipService
from governance.verify import find_receipt, verify_publication
from infra.clock import FrozenClock
from infra.db import create_engine
from infra.events import EventBuffer
from infra.migrations import upgrade
from infra.settings import DatabaseSettings, GovernanceSettings, Settings
from ridecoop import cli
from tests.conftest import _create_test_database, _drop_test_database
from tests.governance.factories import (
    SECRET,
    START,
    after,
    governance,
    make_member,
    make_members,
    make_user,
    on_notice,
    open_for_voting,
    proposal_body,
    suspend,
    vote,
    yes_no,
)

RAISE_BASE_FARE = ("fare.base_fare", "300")


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(START)


@pytest.fixture
def service(session: AsyncSession, clock: FrozenClock) -> GovernanceService:
    return governance(session, clock)


@pytest.fixture
async def members(session: AsyncSession, settings: Settings, clock: FrozenClock) -> list[uuid.UUID]:
    return await make_members(session, settings, clock, 8)


@pytest.fixture
async def voting(
    service: GovernanceService, clock: FrozenClock, members: list[uuid.UUID]
) -> uuid.UUID:
    proposal = await open_for_voting(
        service, clock, yes_no(RAISE_BASE_FARE), members[0], members[1:6]
    )
    return proposal.id


async def _close(service: GovernanceService, clock: FrozenClock, proposal_id: uuid.UUID) -> None:
    proposal = await service.read(proposal_id, None)
    clock.set(after(proposal.voting_closes_at))
    assert (await service.advance(proposal_id, clock.now()))[0] == "close"


async def test_eligibility_says_why_not(
    service: GovernanceService,
    session: AsyncSession,
    settings: Settings,
    clock: FrozenClock,
    members: list[uuid.UUID],
) -> None:
    rider = await make_user(session, settings, clock, Role.rider)
    applicant = await make_user(session, settings, clock)
    await MembershipService(session, clock, EventBuffer()).open_application(applicant, "joined")
    suspended = await make_member(session, settings, clock)
    await suspend(session, clock, suspended)
    noticed = await on_notice(service, yes_no(RAISE_BASE_FARE), members[0], members[1:6])

    async def reason(user_id: uuid.UUID) -> str | None:
        return (await service.eligibility(noticed.id, user_id)).reason

    assert await reason(rider) == "not_a_member"
    assert await reason(applicant) == "not_a_member"
    assert await reason(suspended) == "suspended"
    before = await service.eligibility(noticed.id, members[0])
    assert (before.reason, before.can_vote, before.in_electorate) == (
        "voting_not_open",
        False,
        None,
    )

    clock.set(after(noticed.voting_opens_at, 60))
    await service.advance(noticed.id, clock.now())
    late = await make_member(session, settings, clock)
    assert await reason(late) == "joined_after_voting_opened"
    eligible = await service.eligibility(noticed.id, members[0])
    assert (eligible.can_vote, eligible.reason, eligible.in_electorate, eligible.has_voted) == (
        True,
        None,
        True,
        False,
    )
    await vote(service, noticed.id, members[0], vote="yes")
    assert (await service.eligibility(noticed.id, members[0])).has_voted is True

    clock.set(after(noticed.voting_closes_at))
    assert await reason(members[0]) == "voting_closed"


async def test_a_member_who_joined_after_voting_opened_is_refused(
    service: GovernanceService,
    session: AsyncSession,
    settings: Settings,
    clock: FrozenClock,
    voting: uuid.UUID,
) -> None:
    clock.set(after(clock.now(), 1))
    late = await make_member(session, settings, clock)
    with pytest.raises(NotEligibleToVote) as refused:
        await vote(service, voting, late, vote="yes")
    assert refused.value.extra == {"reason": "joined_after_voting_opened"}


async def test_a_non_member_is_refused(
    service: GovernanceService,
    session: AsyncSession,
    settings: Settings,
    clock: FrozenClock,
    voting: uuid.UUID,
) -> None:
    rider = await make_user(session, settings, clock, Role.rider)
    with pytest.raises(NotEligibleToVote) as refused:
        await vote(service, voting, rider, vote="yes")
    assert refused.value.reason == "not_a_member"


async def test_a_member_suspended_during_the_vote_is_refused(
    service: GovernanceService,
    session: AsyncSession,
    clock: FrozenClock,
    members: list[uuid.UUID],
    voting: uuid.UUID,
) -> None:
    await suspend(session, clock, members[7])
    with pytest.raises(NotEligibleToVote) as refused:
        await vote(service, voting, members[7], vote="yes")
    assert refused.value.reason == "suspended"


async def test_voting_before_the_opening_or_after_the_close_is_a_conflict(
    service: GovernanceService, clock: FrozenClock, members: list[uuid.UUID]
) -> None:
    noticed = await on_notice(service, yes_no(RAISE_BASE_FARE), members[0], members[1:6])
    with pytest.raises(VotingNotOpen):
        await vote(service, noticed.id, members[0], vote="yes")
    clock.set(after(noticed.voting_opens_at))
    await service.advance(noticed.id, clock.now())
    # Closed at its time, even before the worker has counted it.
    clock.set(after(noticed.voting_closes_at))
    with pytest.raises(ProposalClosed):
        await vote(service, noticed.id, members[0], vote="yes")
    await service.advance(noticed.id, clock.now())
    with pytest.raises(ProposalClosed):
        await vote(service, noticed.id, members[0], vote="yes")


async def test_the_last_vote_counts(
    service: GovernanceService,
    session: AsyncSession,
    clock: FrozenClock,
    members: list[uuid.UUID],
    voting: uuid.UUID,
) -> None:
    first = await service.cast(voting, members[0], _ballot(vote="yes"))
    second = await service.cast(voting, members[0], _ballot(vote="no"))
    assert (first.replaced_earlier, second.replaced_earlier) == (False, True)
    await vote(service, voting, members[1], vote="yes")
    registry = await session.execute(
        text("SELECT vote_count FROM proposal_voters WHERE proposal_id = :p AND member_id = :m"),
        {"p": voting, "m": members[0]},
    )
    assert registry.scalars().all() == [2]

    await _close(service, clock, voting)
    results = await service.results(voting)
    assert (results.result["yes"], results.result["no"]) == (1, 1)
    assert (results.ballots_chained, results.voters) == (3, 2)


async def test_the_same_vote_again_is_chained_once(
    service: GovernanceService, members: list[uuid.UUID], voting: uuid.UUID
) -> None:
    first = await service.cast(voting, members[0], _ballot(vote="yes"))
    again = await service.cast(voting, members[0], _ballot(vote="yes"))
    assert again.receipt == first.receipt
    assert again.ballot == first.ballot
    assert (await service.read(voting, None)).electorate_size == len(members)


async def test_a_receipt_is_found_in_the_publication_which_verifies(
    service: GovernanceService,
    clock: FrozenClock,
    members: list[uuid.UUID],
    voting: uuid.UUID,
) -> None:
    replaced = await vote(service, voting, members[0], vote="no")
    receipts = [await vote(service, voting, m, vote="yes") for m in members[:4]]
    await vote(service, voting, members[4], vote="abstain")
    await _close(service, clock, voting)

    publication = await service.publication(voting)
    report = verify_publication(publication)
    assert report.ok, report.checks
    assert publication["result"]["passed"] is True
    for receipt in receipts:
        found = find_receipt(publication, receipt)
        assert found.ok
        assert "counted" in found.detail
    assert "replaced by the ballot at" in find_receipt(publication, replaced).detail
    assert publication["chain"]["head"] == (await service.results(voting)).chain_head


async def test_tampering_with_the_publication_is_detected(
    service: GovernanceService,
    clock: FrozenClock,
    members: list[uuid.UUID],
    voting: uuid.UUID,
) -> None:
    for member in members[:3]:
        await vote(service, voting, member, vote="yes")
    await vote(service, voting, members[3], vote="no")
    await _close(service, clock, voting)
    publication = await service.publication(voting)

    flipped = copy.deepcopy(publication)
    flipped["ballots"][3]["ballot"] = flipped["ballots"][3]["ballot"].replace('"no"', '"yes"')
    failed = {c.name for c in verify_publication(flipped).checks if not c.ok}
    assert "hash chain" in failed

    dropped = copy.deepcopy(publication)
    del dropped["ballots"][3]
    assert not verify_publication(dropped).ok

    inflated = copy.deepcopy(publication)
    inflated["result"]["yes"] = 4
    failed = {c.name for c in verify_publication(inflated).checks if not c.ok}
    assert failed == {"result"}


async def test_ballots_name_no_one_and_the_registry_holds_no_ballot(
    service: GovernanceService,
    session: AsyncSession,
    members: list[uuid.UUID],
    voting: uuid.UUID,
) -> None:
    await vote(service, voting, members[0], vote="yes")
    columns = await session.execute(
        text(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_name IN ('ballots', 'proposal_voters')"
        )
    )
    by_table: dict[str, set[str]] = {}
    for table, column in columns:
        by_table.setdefault(table, set()).add(column)
    assert by_table["ballots"] == {
        "proposal_id",
        "position",
        "voter_token",
        "ballot_json",
        "prev_hash",
        "hash",
    }
    assert by_table["proposal_voters"] == {"proposal_id", "member_id", "voted_at", "vote_count"}
    chained = await session.execute(text("SELECT ballot_json FROM ballots"))
    assert all(str(members[0]) not in ballot for ballot in chained.scalars())


async def test_the_ballot_chain_is_append_only(
    service: GovernanceService,
    session: AsyncSession,
    members: list[uuid.UUID],
    voting: uuid.UUID,
) -> None:
    await vote(service, voting, members[0], vote="yes")
    with pytest.raises(DBAPIError, match="append-only"):
        async with session.begin_nested():
            await session.execute(text("UPDATE ballots SET ballot_json = '{}'"))
    with pytest.raises(DBAPIError, match="append-only"):
        async with session.begin_nested():
            await session.execute(text("DELETE FROM ballots"))


async def test_a_median_value_outside_the_bounds_names_the_bound(
    service: GovernanceService, clock: FrozenClock, members: list[uuid.UUID]
) -> None:
    proposal = await open_for_voting(
        service, clock, proposal_body(kind="median", key="fare.base_fare"), members[0], members[1:6]
    )
    with pytest.raises(ParameterOutOfBounds) as refused:
        await vote(service, proposal.id, members[0], value="2500")
    assert (refused.value.extra["bound"], refused.value.extra["maximum"]) == ("maximum", "2000")


def _ballot(**answer: object) -> BallotCreate:
    return BallotCreate.model_validate(answer)


# Real transactions racing, on a database of their own: ballots are append-only, so these
# committed rows could not be cleaned out of the shared test database.


@pytest.fixture
def scratch_url(database_url: str) -> Iterator[str]:
    name = f"ridecoop_test_ballots_{os.getpid()}"
    asyncio.run(_create_test_database(name))
    url = database_url.rsplit("/", 1)[0] + "/" + name
    upgrade(url)
    yield url
    asyncio.run(_drop_test_database(name))


@pytest.fixture
async def scratch_engine(scratch_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(DatabaseSettings(url=scratch_url, pool_size=20, max_overflow=10))
    yield engine
    await engine.dispose()


async def test_concurrent_duplicate_votes_count_once(
    scratch_url: str, scratch_engine: AsyncEngine, settings: Settings, tmp_path: Path
) -> None:
    clock = FrozenClock(START)
    maker = async_sessionmaker(scratch_engine, expire_on_commit=False)
    async with maker() as session:
        members = await make_members(session, settings, clock, 6)
        service = governance(session, clock)
        proposal = await open_for_voting(
            service, clock, yes_no(RAISE_BASE_FARE), members[0], members[1:6]
        )
        await session.commit()

    async def cast() -> str:
        async with maker() as session:
            receipt = await governance(session, clock).cast(
                proposal.id, members[0], _ballot(vote="yes")
            )
            await session.commit()
            return receipt.receipt

    receipts = await asyncio.gather(*(cast() for _ in range(40)))
    assert len(set(receipts)) == 1
    async with maker() as session:
        registry = await session.execute(
            text("SELECT member_id, vote_count FROM proposal_voters WHERE proposal_id = :p"),
            {"p": proposal.id},
        )
        assert [tuple(row) for row in registry] == [(members[0], 1)]
        clock.set(after(proposal.voting_closes_at))
        await governance(session, clock).advance(proposal.id, clock.now())
        await session.commit()
        publication = await governance(session, clock).publication(proposal.id)
    assert (publication["result"]["yes"], publication["result"]["cast"]) == (1, 1)

    # `ridecoop governance verify PROPOSAL` reads the publication from the database.
    scratch_settings = settings.model_copy(
        update={
            "database": DatabaseSettings(url=scratch_url, pool_size=1),
            "governance": GovernanceSettings(ballot_secret=SECRET),
        }
    )
    args = argparse.Namespace(proposal=str(proposal.id), file=None, receipt=receipts[0], json=False)
    assert await asyncio.to_thread(cli._governance_verify, scratch_settings, args) == 0
    saved = tmp_path / "published.json"
    saved.write_text(json.dumps(publication))
    assert cli.main(["governance", "verify", "--file", str(saved)]) == 0
    publication["ballots"][0]["ballot"] = publication["ballots"][0]["ballot"].replace(
        '"yes"', '"no"'
    )
    saved.write_text(json.dumps(publication))
    assert cli.main(["governance", "verify", "--file", str(saved)]) == 1
    assert cli.main(["governance", "verify", str(uuid.uuid4()), "--file", str(saved)]) == 2
