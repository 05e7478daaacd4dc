"""1,000 concurrent duplicate votes by one member: exactly one counted.

    RIDECOOP_DATABASE_URL=postgresql+asyncpg://root@127.0.0.1:5432/ridecoop \\
        python -m bench.governance_votes [--votes 1000] [--connections 50]

On a scratch database: 20 members, one yes / no proposal taken through co-signing and
notice to its open vote (``governance.service.GovernanceService``, frozen clock). Then
``--votes`` casts of the same "yes" by the same member start at once, each in its own
session and transaction through ``GovernanceService.cast`` and committed, as that many
retried or double-tapped requests would; they share ``--connections`` pooled
connections, as api workers do. Then, to check the other half of "the last one counts",
the member changes their vote to "no" the same way (``--votes`` concurrent casts).

Checked: every cast of the same answer gets the same receipt; the record of who voted
has one row for the member, with one ballot per distinct answer; the chain holds one
link per distinct answer; after the close, the publication verifies and counts exactly
one vote, "no". Reported: the wall time of each burst and the casts per second.

Results go to bench/results/governance.json (section ``duplicate_votes``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from accounts.models import Role
from accounts.passwords import Passwords
from accounts.service import AccountService
from bench.harness import machine, merge_results, now_iso, progress, scratch_database
from dispatch.history import CompletedTripService
from governance.schemas import BallotCreate, MembershipTransition, ProposalCreate
from governance.service import GovernanceService, MembershipService
from governance.verify import verify_publication
from infra.clock import FrozenClock
from infra.db import create_engine
from infra.events import EventBuffer
from infra.settings import AuthSettings, DatabaseSettings

MEMBERS = 20
START = datetime(2030, 1, 7, 9, tzinfo=UTC)
SECRET = "bench-ballot-secret-0123456789abcdef"
# Cheap hashes: accounts are set-up, not what is measured.
AUTH = AuthSettings(argon2_time_cost=1, argon2_memory_kib=1024)


def service(session: AsyncSession, clock: FrozenClock) -> GovernanceService:
    return GovernanceService(
        session,
        clock,
        EventBuffer(),
        ballot_secret=SECRET,
        trips=CompletedTripService(session),
    )


async def setup(
    maker: async_sessionmaker[AsyncSession], clock: FrozenClock
) -> tuple[uuid.UUID, uuid.UUID]:
    async with maker() as session:
        accounts = AccountService(session, AUTH, Passwords(AUTH), clock, EventBuffer())
        memberships = MembershipService(session, clock, EventBuffer())
        members = []
        for i in range(MEMBERS):
            user = await accounts.create_user(
                role=Role.driver,
                email=f"member{i}@bench.example.org",
                phone=f"+1202555{i:04d}",
                full_name=f"Member {i}",
                password="correct horse battery staple",
            )
            await memberships.open_application(user.id, "registered")
            await memberships.transition(
                user.id,
                MembershipTransition(
                    to_status="member",
                    reason="share paid",
                    share_amount=10_000,
                    share_currency="USD",
                ),
                None,
            )
            members.append(user.id)
        governance = service(session, clock)
        body = ProposalCreate.model_validate(
            {
                "kind": "yes_no",
                "title": "Raise the base fare",
                "text": "Costs went up.",
                "changes": [{"key": "fare.base_fare", "new": "300"}],
            }
        )
        draft = await governance.draft(members[0], body)
        for member in members[1:6]:
            await governance.cosign(draft.id, member)
        noticed = await governance.submit(draft.id, members[0])
        assert noticed.voting_opens_at is not None
        clock.set(noticed.voting_opens_at)
        assert await governance.advance(noticed.id, clock.now()) == ["open_voting"]
        await session.commit()
    return noticed.id, members[1]


async def burst(
    maker: async_sessionmaker[AsyncSession],
    clock: FrozenClock,
    proposal_id: uuid.UUID,
    member: uuid.UUID,
    answer: str,
    votes: int,
) -> tuple[float, set[str]]:
    gate = asyncio.Event()

    async def cast() -> str:
        await gate.wait()
        async with maker() as session:
            receipt = await service(session, clock).cast(
                proposal_id,
                member,
                BallotCreate.model_validate({"vote": answer}),
            )
            await session.commit()
            return receipt.receipt

    tasks = [asyncio.create_task(cast()) for _ in range(votes)]
    await asyncio.sleep(0)
    started = time.perf_counter()
    gate.set()
    receipts = await asyncio.gather(*tasks)
    return time.perf_counter() - started, set(receipts)


async def run(url: str, votes: int, connections: int) -> dict[str, Any]:
    engine = create_engine(DatabaseSettings(url=url, pool_size=connections, max_overflow=0))
    maker = async_sessionmaker(engine, expire_on_commit=False)
    clock = FrozenClock(START)
    try:
        progress(f"{MEMBERS} members, a proposal open for voting")
        proposal_id, member = await setup(maker, clock)
        progress(f"{votes} concurrent 'yes' from one member")
        yes_seconds, yes_receipts = await burst(maker, clock, proposal_id, member, "yes", votes)
        progress(f"{votes} concurrent 'no' from the same member")
        no_seconds, no_receipts = await burst(maker, clock, proposal_id, member, "no", votes)
        async with maker() as session:
            registry = (
                await session.execute(
                    text(
                        "SELECT member_id, vote_count FROM proposal_voters WHERE proposal_id = :p"
                    ),
                    {"p": proposal_id},
                )
            ).all()
            governance = service(session, clock)
            proposal = await governance.read(proposal_id, None)
            assert proposal.voting_closes_at is not None
            clock.set(proposal.voting_closes_at)
            await governance.advance(proposal_id, clock.now())
            await session.commit()
            publication = await governance.publication(proposal_id)
            version = (await session.execute(text("SHOW server_version"))).scalar_one()
    finally:
        await engine.dispose()
    result = publication["result"]
    checks = {
        "one_receipt_per_answer": len(yes_receipts) == 1 and len(no_receipts) == 1,
        "one_registry_row": [(row[0], row[1]) for row in registry] == [(member, 2)],
        "chain_length_2": len(publication["ballots"]) == 2,
        "counted_once": (result["yes"], result["no"], result["cast"]) == (0, 1, 1),
        "publication_verifies": verify_publication(publication).ok,
    }
    return {
        "votes_per_burst": votes,
        "connections": connections,
        "yes_burst_seconds": round(yes_seconds, 3),
        "no_burst_seconds": round(no_seconds, 3),
        "casts_per_s": round(2 * votes / (yes_seconds + no_seconds), 1),
        "result": {k: result[k] for k in ("yes", "no", "abstain", "cast", "electorate_size")},
        "checks": checks,
        "postgresql": str(version),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--votes", type=int, default=1_000)
    parser.add_argument("--connections", type=int, default=50)
    args = parser.parse_args(argv)
    with scratch_database("votes") as url:
        figures = asyncio.run(run(url, args.votes, args.connections))
    postgresql = figures.pop("postgresql")
    results = {
        **figures,
        "goal": "exactly one vote counted",
        "goal_met": all(figures["checks"].values()),
        "machine": machine(postgresql),
        "date": now_iso(),
    }
    merge_results("governance", "duplicate_votes", results)
    print(json.dumps(results, indent=2))
    return 0 if results["goal_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
