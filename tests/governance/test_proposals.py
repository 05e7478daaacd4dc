"""Proposals through every step of their life, on a frozen clock, against the real
database: co-signers, notice, the vote, the close, the timelock, applying, expiry, and
emergency changes."""

from __future__ import annotations

import uuid
from datetime import timedelta
from decimal import Decimal

import pytest
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from accounts.models import Role
from dispatch.live import LiveState
from dispatch.schemas import QuoteCreate
from dispatch.service import QuoteService
from governance.errors import (
    AuthorCannotCosign,
    CosignersMissing,
    EmergencyChangeInvalid,
    NotProposalAuthor,
    ParameterAlreadyProposed,
    ParameterChangedMeanwhile,
    ParameterOutOfBounds,
    ParameterStepTooLarge,
    ProposalNotDraft,
)
from governance.events import ProposalDecided, VotingClosesSoon, VotingOpened
from governance.schemas import EmergencyChangeCreate
from governance.service import DRAFT_TTL, GovernanceService, GovernedParameterService
from governance.voting import proposal_hash
from infra.clock import FrozenClock
from infra.events import EventBuffer
from infra.ids import new_id
from infra.settings import Settings
from payments.policies import FarePolicyService
from tests.dispatch.test_quotes import TIMES_SQUARE, UPPER_EAST_SIDE, seed_zones
from tests.governance.factories import (
    START,
    after,
    governance,
    make_members,
    make_user,
    on_notice,
    open_for_voting,
    proposal_body,
    vote,
    yes_no,
)

DAY = 86_400
RAISE_BASE_FARE = ("fare.base_fare", "300")


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(START)


@pytest.fixture
def events() -> EventBuffer:
    return EventBuffer()


@pytest.fixture
def service(session: AsyncSession, clock: FrozenClock, events: EventBuffer) -> GovernanceService:
    return governance(session, clock, events)


@pytest.fixture
async def members(session: AsyncSession, settings: Settings, clock: FrozenClock) -> list[uuid.UUID]:
    # An author, the five co-signers the founding constitution asks for, two more.
    return await make_members(session, settings, clock, 8)


async def _policy_versions(session: AsyncSession, proposal_id: uuid.UUID) -> int:
    result = await session.execute(
        text("SELECT count(*) FROM fare_policy_versions WHERE reason LIKE :reason"),
        {"reason": f"proposal {proposal_id}:%"},
    )
    return int(result.scalar_one())


async def test_a_proposal_goes_from_draft_to_applied(
    service: GovernanceService,
    session: AsyncSession,
    clock: FrozenClock,
    members: list[uuid.UUID],
) -> None:
    author, cosigners = members[0], members[1:6]
    draft = await service.draft(author, yes_no(RAISE_BASE_FARE))
    assert draft.status == "draft"
    assert draft.question["changes"] == [{"key": "fare.base_fare", "old": "250", "new": "300"}]

    noticed = await on_notice(service, yes_no(RAISE_BASE_FARE), author, cosigners)
    assert noticed.status == "notice"
    assert noticed.document is not None
    assert noticed.document_hash == proposal_hash(noticed.document)
    assert noticed.rule_class is not None
    assert noticed.rule_class["name"] == "ordinary"
    # Seven days of notice, seven of voting (the ordinary class).
    assert noticed.voting_opens_at == START + timedelta(days=7)
    assert noticed.voting_closes_at == START + timedelta(days=14)

    clock.set(after(noticed.voting_opens_at, -1))
    assert await service.advance(noticed.id, clock.now()) == []
    clock.set(after(noticed.voting_opens_at))
    assert await service.advance(noticed.id, clock.now()) == ["open_voting"]
    opened = await service.read(noticed.id, None)
    assert opened.status == "voting"
    assert opened.electorate_size == len(members)

    for member in members[:3]:
        await vote(service, noticed.id, member, vote="yes")
    await vote(service, noticed.id, members[3], vote="no")

    clock.set(after(noticed.voting_closes_at))
    assert await service.advance(noticed.id, clock.now()) == ["close", "schedule"]
    scheduled = await service.read(noticed.id, None)
    assert scheduled.status == "scheduled"
    assert scheduled.result is not None
    assert (scheduled.result["yes"], scheduled.result["no"], scheduled.result["passed"]) == (
        3,
        1,
        True,
    )
    # Two days of timelock from the close.
    assert scheduled.effective_at == after(noticed.voting_closes_at, 2 * DAY)

    clock.set(after(scheduled.effective_at))
    assert await service.advance(noticed.id, clock.now()) == ["apply"]
    applied = await service.read(noticed.id, None)
    assert applied.status == "applied"
    policy = await FarePolicyService(session).in_force(clock.now())
    assert policy.base_fare == 300
    assert await _policy_versions(session, noticed.id) == 1
    actions = [e.action for e in await service.audit_entries(0, 100, noticed.id)]
    assert actions == [
        "proposal_drafted",
        *["proposal_cosigned"] * 5,
        "proposal_noticed",
        "voting_opened",
        "voting_closed",
        "proposal_scheduled",
        "proposal_applied",
    ]


async def test_applying_twice_makes_one_policy_version(
    service: GovernanceService,
    session: AsyncSession,
    clock: FrozenClock,
    members: list[uuid.UUID],
) -> None:
    proposal = await open_for_voting(
        service, clock, yes_no(RAISE_BASE_FARE), members[0], members[1:6]
    )
    for member in members[:4]:
        await vote(service, proposal.id, member, vote="yes")
    clock.set(after(proposal.voting_closes_at, 3 * DAY))
    assert await service.advance(proposal.id, clock.now()) == ["close", "schedule", "apply"]

    assert await service.advance(proposal.id, clock.now()) == []
    clock.set(after(proposal.voting_closes_at, 30 * DAY))
    assert await service.advance(proposal.id, clock.now()) == []
    assert await _policy_versions(session, proposal.id) == 1


async def test_the_next_quote_uses_the_new_policy_and_earlier_quotes_keep_theirs(
    service: GovernanceService,
    session: AsyncSession,
    settings: Settings,
    clock: FrozenClock,
    members: list[uuid.UUID],
    redis_client: Redis,
) -> None:
    await seed_zones(session, clock, prefix="gov-")
    rider = await make_user(session, settings, clock, Role.rider)
    quotes = QuoteService(session, clock, LiveState(redis_client))
    trip = QuoteCreate(pickup=TIMES_SQUARE, dropoff=UPPER_EAST_SIDE)
    proposal = await open_for_voting(
        service, clock, yes_no(RAISE_BASE_FARE), members[0], members[1:6]
    )
    for member in members[:4]:
        await vote(service, proposal.id, member, vote="yes")
    clock.set(after(proposal.voting_closes_at, 2 * DAY - 1))
    assert await service.advance(proposal.id, clock.now()) == ["close", "schedule"]
    before = await quotes.create(rider, trip)

    clock.set(after(proposal.voting_closes_at, 2 * DAY))
    assert await service.advance(proposal.id, clock.now()) == ["apply"]
    next_quote = await quotes.create(rider, trip)

    new_policy = await FarePolicyService(session).in_force(clock.now())
    assert new_policy.base_fare == 300
    assert next_quote.fare.policy_id == new_policy.id
    assert next_quote.fare.total == before.fare.total + 50
    kept = await quotes.get(before.id, rider)
    assert kept.fare.policy_id == before.fare.policy_id != new_policy.id


async def test_a_draft_needs_its_cosigners_and_the_author_does_not_count(
    service: GovernanceService, members: list[uuid.UUID]
) -> None:
    author = members[0]
    draft = await service.draft(author, yes_no(RAISE_BASE_FARE))
    with pytest.raises(AuthorCannotCosign):
        await service.cosign(draft.id, author)
    for member in members[1:5]:
        await service.cosign(draft.id, member)
    # Co-signing twice counts once.
    assert (await service.cosign(draft.id, members[1])).cosigners == 4
    with pytest.raises(CosignersMissing) as missing:
        await service.submit(draft.id, author)
    assert missing.value.extra == {"cosigners": 4, "required": 5}

    await service.cosign(draft.id, members[5])
    with pytest.raises(NotProposalAuthor):
        await service.submit(draft.id, members[1])
    assert (await service.submit(draft.id, author)).status == "notice"
    with pytest.raises(ProposalNotDraft):
        await service.cosign(draft.id, members[6])


async def test_one_open_proposal_per_parameter(
    service: GovernanceService, clock: FrozenClock, members: list[uuid.UUID]
) -> None:
    author, cosigners = members[0], members[1:6]
    rival = await service.draft(members[6], yes_no(("fare.base_fare", "280")))
    first = await on_notice(
        service, yes_no(RAISE_BASE_FARE, ("fare.per_km", "130")), author, cosigners
    )

    with pytest.raises(ParameterAlreadyProposed) as drafted:
        await service.draft(members[7], yes_no(("fare.per_km", "140")))
    assert drafted.value.extra == {"key": "fare.per_km", "proposal_id": str(first.id)}
    # A draft written before the other went on notice cannot go on notice either.
    for member in members[1:6]:
        await service.cosign(rival.id, member)
    with pytest.raises(ParameterAlreadyProposed):
        await service.submit(rival.id, members[6])

    # Once the first fails (nobody voted), the parameter is free again.
    clock.set(after(first.voting_closes_at))
    assert await service.advance(first.id, clock.now()) == ["open_voting", "close"]
    assert (await service.read(first.id, None)).status == "failed"
    assert (await service.submit(rival.id, members[6])).status == "notice"


async def test_values_outside_the_bounds_or_steps_name_the_bound(
    service: GovernanceService, members: list[uuid.UUID]
) -> None:
    with pytest.raises(ParameterOutOfBounds) as high:
        await service.draft(members[0], yes_no(("fare.commission_rate", "0.31")))
    assert high.value.extra["bound"] == "maximum"
    assert high.value.extra["maximum"] == "0.3"
    with pytest.raises(ParameterStepTooLarge) as step:
        await service.draft(members[0], yes_no(RAISE_BASE_FARE, ("fare.per_km", "200")))
    assert step.value.extra["bound"] == "max_step"
    assert step.value.extra["max_step"] == "30"


async def test_a_value_moved_before_applying_expires_the_proposal(
    service: GovernanceService,
    session: AsyncSession,
    clock: FrozenClock,
    members: list[uuid.UUID],
) -> None:
    proposal = await open_for_voting(
        service, clock, yes_no(RAISE_BASE_FARE), members[0], members[1:6]
    )
    for member in members[:4]:
        await vote(service, proposal.id, member, vote="yes")
    clock.set(after(proposal.voting_closes_at))
    await service.advance(proposal.id, clock.now())
    # Someone changes the base fare outside governance during the timelock.
    policies = FarePolicyService(session)
    current = await policies.in_force(clock.now())
    moved = current.__class__(
        **{
            **{f: getattr(current, f) for f in current.__dataclass_fields__},
            "id": new_id(),
            "version": current.version + 1,
            "effective_at": clock.now(),
            "base_fare": 260,
        }
    )
    await policies.add_version(moved, reason="set by hand")

    clock.set(after(proposal.voting_closes_at, 2 * DAY))
    # Applying finds the value moved: nothing applies, the proposal expires.
    assert await service.advance(proposal.id, clock.now()) == ["apply"]
    expired = await service.read(proposal.id, None)
    assert expired.status == "expired"
    assert (
        expired.status_reason
        == "fare.base_fare was 250 when the change was proposed and is 260 now"
    )
    assert await _policy_versions(session, proposal.id) == 0


async def test_a_draft_changed_meanwhile_is_refused_at_submit(
    service: GovernanceService,
    session: AsyncSession,
    clock: FrozenClock,
    members: list[uuid.UUID],
) -> None:
    draft = await service.draft(members[0], yes_no(("fare.per_minute", "35")))
    for member in members[1:6]:
        await service.cosign(draft.id, member)
    policies = FarePolicyService(session)
    current = await policies.in_force(clock.now())
    fields = {f: getattr(current, f) for f in current.__dataclass_fields__}
    await policies.add_version(
        current.__class__(
            **{**fields, "id": new_id(), "version": current.version + 1, "per_minute": 32}
        ),
        reason="set by hand",
    )
    with pytest.raises(ParameterChangedMeanwhile):
        await service.submit(draft.id, members[0])


async def test_drafts_not_submitted_expire(
    service: GovernanceService, clock: FrozenClock, members: list[uuid.UUID]
) -> None:
    draft = await service.draft(members[0], yes_no(RAISE_BASE_FARE))
    clock.set(START + DRAFT_TTL - timedelta(seconds=1))
    assert draft.id not in await service.due(clock.now())
    clock.set(START + DRAFT_TTL)
    assert draft.id in await service.due(clock.now())
    assert await service.advance(draft.id, clock.now()) == ["expire_draft"]
    assert (await service.read(draft.id, None)).status == "expired"


async def test_a_ranked_vote_applies_the_winner(
    service: GovernanceService,
    session: AsyncSession,
    clock: FrozenClock,
    members: list[uuid.UUID],
) -> None:
    body = proposal_body(
        kind="ranked",
        alternatives=[
            {"id": "keep", "title": "Keep the fares", "changes": []},
            {
                "id": "up",
                "title": "Raise per km",
                "changes": [{"key": "fare.per_km", "new": "130"}],
            },
            {
                "id": "more",
                "title": "Raise it more",
                "changes": [{"key": "fare.per_km", "new": "140"}],
            },
        ],
    )
    proposal = await open_for_voting(service, clock, body, members[0], members[1:6])
    rankings = [["up", "more"], ["more", "up"], ["keep"], ["up"], ["more", "up"], ["up"]]
    for member, ranking in zip(members, rankings, strict=False):
        await vote(service, proposal.id, member, ranking=ranking)
    clock.set(after(proposal.voting_closes_at, 2 * DAY))
    assert await service.advance(proposal.id, clock.now()) == ["close", "schedule", "apply"]
    applied = await service.read(proposal.id, None)
    assert applied.result is not None
    assert applied.result["winner"] == "up"
    assert (await FarePolicyService(session).in_force(clock.now())).per_km == 130


async def test_a_median_vote_moves_the_value_to_the_median(
    service: GovernanceService,
    session: AsyncSession,
    clock: FrozenClock,
    members: list[uuid.UUID],
) -> None:
    body = proposal_body(kind="median", key="fare.commission_rate")
    proposal = await open_for_voting(service, clock, body, members[0], members[1:6])
    assert proposal.document is not None
    assert proposal.document["question"]["current"] == "0.1"
    for member, value in zip(members, ["0.08", "0.11", "0.12", "0.115", "0.2"], strict=False):
        await vote(service, proposal.id, member, value=value)
    await vote(service, proposal.id, members[5], abstain=True)
    # Fundamental: 14 days of notice and of voting, 7 of timelock.
    clock.set(after(proposal.voting_closes_at, 7 * DAY))
    assert await service.advance(proposal.id, clock.now()) == ["close", "schedule", "apply"]
    applied = await service.read(proposal.id, None)
    assert applied.outcome_changes is not None
    # Two-thirds of 5 values: k = 4, band [0.11, 0.12]; the current 0.1 moves to 0.11.
    assert [c.model_dump() for c in applied.outcome_changes] == [
        {"key": "fare.commission_rate", "old": "0.1", "new": "0.11"}
    ]
    assert (await FarePolicyService(session).in_force(clock.now())).commission_rate == Decimal(
        "0.11"
    )


async def test_rules_of_the_constitution_change_by_vote(
    service: GovernanceService,
    session: AsyncSession,
    clock: FrozenClock,
    members: list[uuid.UUID],
) -> None:
    body = yes_no(("constitution.cosigners_required", "3"), ("dispatch.fairness_weight_s", "90"))
    proposal = await open_for_voting(service, clock, body, members[0], members[1:6])
    assert proposal.rule_class is not None
    assert proposal.rule_class["name"] == "ordinary+fundamental"
    for member in members[:5]:
        await vote(service, proposal.id, member, vote="yes")
    clock.set(after(proposal.voting_closes_at, 7 * DAY))
    assert await service.advance(proposal.id, clock.now()) == ["close", "schedule", "apply"]

    state = await service.state(clock.now())
    assert state.constitution.cosigners_required == 3
    assert await service.parameter_value("dispatch.fairness_weight_s", clock.now()) == 90
    # Before the change applied, the old values were in force.
    assert await service.parameter_value("dispatch.fairness_weight_s", START) == 60
    # Dispatch reads its weight through the small service meant for other domains.
    governed = GovernedParameterService(session)
    assert await governed.value_at("dispatch.fairness_weight_s", clock.now()) == 90
    with pytest.raises(ValueError, match="fare policy"):
        await governed.value_at("fare.base_fare", clock.now())


async def test_members_hear_of_the_opening_the_last_day_and_the_result(
    service: GovernanceService,
    events: EventBuffer,
    clock: FrozenClock,
    members: list[uuid.UUID],
) -> None:
    proposal = await open_for_voting(
        service, clock, yes_no(RAISE_BASE_FARE), members[0], members[1:6]
    )
    opened = [e for e in events.drain() if isinstance(e, VotingOpened)]
    assert [set(e.recipients()) for e in opened] == [set(members)]
    assert "notify" not in opened[0].to_message()["data"]

    await vote(service, proposal.id, members[0], vote="yes")
    clock.set(after(proposal.voting_closes_at, -DAY - 1))
    assert await service.advance(proposal.id, clock.now()) == []
    clock.set(after(proposal.voting_closes_at, -DAY))
    assert await service.advance(proposal.id, clock.now()) == ["remind"]
    # Reminded once, only those who have not voted.
    assert await service.advance(proposal.id, clock.now()) == []
    reminders = [e for e in events.drain() if isinstance(e, VotingClosesSoon)]
    assert [set(e.recipients()) for e in reminders] == [set(members[1:])]

    clock.set(after(proposal.voting_closes_at))
    await service.advance(proposal.id, clock.now())
    decided = [e for e in events.drain() if isinstance(e, ProposalDecided)]
    assert len(decided) == 1
    assert decided[0].passed is False
    assert set(decided[0].recipients()) == set(members)


# Emergency changes.


def _emergency(cap: str = "1.5", days: int = 3) -> EmergencyChangeCreate:
    return EmergencyChangeCreate.model_validate(
        {
            "changes": [{"key": "fare.surge_cap", "new": cap}],
            "reason": "Storm warning: no surge beyond 1.5 while the city evacuates",
            "lapse_days": days,
        }
    )


async def test_an_emergency_change_lapses_unless_ratified(
    service: GovernanceService,
    session: AsyncSession,
    settings: Settings,
    clock: FrozenClock,
    members: list[uuid.UUID],
) -> None:
    admin = await make_user(session, settings, clock, Role.admin)
    policies = FarePolicyService(session)
    enacted = await service.enact_emergency(admin, _emergency())
    assert (await policies.in_force(clock.now())).surge_cap == Decimal("1.5")
    assert enacted.lapses_at == START + timedelta(days=3)
    assert enacted.ratification_proposal_id is not None
    vote_on_it = await service.read(enacted.ratification_proposal_id, None)
    assert vote_on_it.status == "voting"
    assert vote_on_it.voting_closes_at == enacted.lapses_at
    upcoming = await service.upcoming_fare_changes()
    assert [(u.source, u.conditional, u.effective_at) for u in upcoming] == [
        ("emergency_lapse", True, enacted.lapses_at)
    ]
    # Another proposal cannot touch the surge cap meanwhile.
    with pytest.raises(ParameterAlreadyProposed):
        await service.draft(members[0], yes_no(("fare.surge_cap", "2")))

    await vote(service, vote_on_it.id, members[0], vote="no")
    clock.set(enacted.lapses_at)
    assert await service.advance(vote_on_it.id, clock.now()) == ["close"]
    assert (await policies.in_force(clock.now())).surge_cap == Decimal("2")
    assert await service.upcoming_fare_changes() == []
    actions = [e.action for e in await service.audit_entries(0, 100, vote_on_it.id)]
    assert actions == ["emergency_enacted", "voting_opened", "voting_closed", "emergency_lapsed"]


async def test_a_ratified_emergency_change_stays(
    service: GovernanceService,
    session: AsyncSession,
    settings: Settings,
    clock: FrozenClock,
    members: list[uuid.UUID],
) -> None:
    admin = await make_user(session, settings, clock, Role.admin)
    enacted = await service.enact_emergency(admin, _emergency())
    assert enacted.ratification_proposal_id is not None
    for member in members[:4]:
        await vote(service, enacted.ratification_proposal_id, member, vote="yes")
    clock.set(enacted.lapses_at)
    steps = await service.advance(enacted.ratification_proposal_id, clock.now())
    assert steps == ["close", "schedule", "apply"]
    assert (await FarePolicyService(session).in_force(clock.now())).surge_cap == Decimal("1.5")
    # The surge cap is free for proposals again.
    assert (await service.draft(members[0], yes_no(("fare.surge_cap", "2")))).status == "draft"


async def test_an_emergency_only_lowers_the_surge_cap_or_a_surcharge_within_its_step(
    service: GovernanceService, session: AsyncSession, settings: Settings, clock: FrozenClock
) -> None:
    admin = await make_user(session, settings, clock, Role.admin)
    with pytest.raises(EmergencyChangeInvalid):
        await service.enact_emergency(admin, _emergency(cap="2.5"))
    base_fare = _emergency().model_copy(
        update={
            "changes": [
                _emergency().changes[0].model_copy(update={"key": "fare.base_fare", "new": "200"})
            ]
        }
    )
    with pytest.raises(EmergencyChangeInvalid):
        await service.enact_emergency(admin, base_fare)
    with pytest.raises(ParameterStepTooLarge):
        await service.enact_emergency(admin, _emergency(cap="1"))
