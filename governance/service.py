from __future__ import annotations

import dataclasses
import secrets
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from governance.audit import AUDIT_GENESIS, AuditRecord, audit_link, audit_time, verify_audit
from governance.constitution import (
    CONSTITUTION,
    FARE_PREFIX,
    ZONE_PREFIX,
    Constitution,
    JsonValue,
    ParameterChange,
    ParameterValue,
    RuleClass,
    apply_constitution_changes,
    apply_fare_changes,
    apply_to_values,
    change_from_json,
    changes_json,
    constitution_values,
    governed_values,
    governing_rule,
    parse_value,
    rule_from_json,
    rule_json,
    validate_changes,
    value_text,
)
from governance.errors import (
    AuthorCannotCosign,
    BallotInvalid,
    CosignersMissing,
    EmergencyChangeInvalid,
    MembershipNotFound,
    MembershipTransitionNotAllowed,
    NotAMember,
    NotEligibleToVote,
    NotProposalAuthor,
    ParameterAlreadyProposed,
    ParameterChangedMeanwhile,
    ProposalClosed,
    ProposalNotClosed,
    ProposalNotDraft,
    ProposalNotFound,
    ProposalQuestionInvalid,
    ShareNotPaid,
    VotingNotOpen,
)
from governance.events import (
    EmergencyChangeEnacted,
    EmergencyChangeEnded,
    MembershipChanged,
    ProposalApplied,
    ProposalDecided,
    ProposalExpired,
    ProposalNoticed,
    ProposalScheduled,
    VotingClosesSoon,
    VotingOpened,
)
from governance.impact import IMPACT_FORMAT, WINDOW_DAYS, TripRecord, simulate
from governance.models import (
    AuditEntry,
    BallotLink,
    EmergencyChange,
    EmergencyStatus,
    GovernedParameter,
    Membership,
    MembershipChange,
    MembershipStatus,
    Proposal,
    ProposalKind,
    ProposalStatus,
)
from governance.repository import (
    AuditRepository,
    EmergencyRepository,
    GovernedParameterRepository,
    MembershipRepository,
    ProposalRepository,
)
from governance.schemas import (
    AuditEntryRead,
    BallotCreate,
    BallotReceipt,
    ChangeCreate,
    ChangeRead,
    EligibilityRead,
    EmergencyChangeCreate,
    EmergencyChangeRead,
    MembershipChangeRead,
    MembershipRead,
    MembershipTransition,
    ProposalCreate,
    ProposalRead,
    ProposalSummary,
    ResultRead,
    UpcomingFareChange,
)
from governance.verify import build_publication, verify_publication
from governance.voting import (
    Alternative,
    Ballot,
    BallotForm,
    ChainedBallot,
    MedianBallot,
    MedianQuestion,
    MedianResult,
    Outcome,
    RankedBallot,
    RankedForm,
    RankedQuestion,
    RankedResult,
    YesNoBallot,
    YesNoForm,
    YesNoQuestion,
    YesNoResult,
    chain_append,
    chain_genesis,
    check_ballot,
    form_from_json,
    median_value,
    outcome_json,
    parse_ballot,
    proposal_document,
    proposal_hash,
    receipt,
    recount,
    voter_token,
)
from infra.clock import Clock
from infra.events import EventBuffer
from infra.ids import new_id
from payments.policies import FarePolicyService
from payments.policy import FarePolicy

S = MembershipStatus

# Which status may follow which. Exited members may apply again; a suspension is lifted
# back to member (the share stays paid), never to applicant.
ALLOWED_TRANSITIONS: dict[MembershipStatus, frozenset[MembershipStatus]] = {
    S.applicant: frozenset({S.member, S.exited}),
    S.member: frozenset({S.suspended, S.exited}),
    S.suspended: frozenset({S.member, S.exited}),
    S.exited: frozenset({S.applicant}),
}


class MembershipService:
    def __init__(self, session: AsyncSession, clock: Clock, events: EventBuffer) -> None:
        self.repository = MembershipRepository(session)
        self.clock = clock
        self.events = events

    async def open_application(self, user_id: uuid.UUID, reason: str) -> MembershipRead:
        now = self.clock.now()
        membership = await self.repository.add(
            Membership(user_id=user_id, status=S.applicant.value, created_at=now, updated_at=now)
        )
        await self._log(user_id, None, S.applicant, None, reason)
        return MembershipRead.model_validate(membership)

    async def get(self, user_id: uuid.UUID) -> MembershipRead | None:
        membership = await self.repository.get(user_id)
        return MembershipRead.model_validate(membership) if membership else None

    async def require_member(self, user_id: uuid.UUID) -> MembershipRead:
        membership = await self.get(user_id)
        if membership is None or membership.status != S.member.value:
            raise NotAMember
        return membership

    async def transition(
        self, user_id: uuid.UUID, change: MembershipTransition, changed_by: uuid.UUID | None
    ) -> MembershipRead:
        current = await self.repository.get(user_id)
        if current is None:
            raise MembershipNotFound
        source, target = S(current.status), S(change.to_status)
        if target not in ALLOWED_TRANSITIONS[source]:
            raise MembershipTransitionNotAllowed(
                f"A membership cannot go from {source.value} to {target.value}",
                from_status=source.value,
                to_status=target.value,
            )
        now = self.clock.now()
        values: dict[str, Any] = {"status": target.value, "updated_at": now}
        if source is S.applicant and target is S.member:
            if change.share_amount is None and current.share_paid_at is None:
                raise ShareNotPaid("Record the share payment (share_amount, share_currency)")
            if change.share_amount is not None:
                values |= {
                    "share_amount": change.share_amount,
                    "share_currency": change.share_currency,
                    "share_paid_at": now,
                }
            values["member_since"] = now
        if source is S.exited and target is S.applicant:
            values |= {
                "share_amount": None,
                "share_currency": None,
                "share_paid_at": None,
                "member_since": None,
            }
        updated = await self.repository.compare_and_set_status(user_id, source.value, values)
        if updated is None:
            # Someone else moved it between our read and our write.
            raise MembershipTransitionNotAllowed("The membership changed meanwhile; retry")
        await self._log(user_id, source, target, changed_by, change.reason)
        return MembershipRead.model_validate(updated)

    async def history(self, user_id: uuid.UUID) -> list[MembershipChangeRead]:
        return [
            MembershipChangeRead.model_validate(c) for c in await self.repository.history(user_id)
        ]

    async def list(
        self, status: MembershipStatus | None, limit: int, after: uuid.UUID | None
    ) -> Sequence[MembershipRead]:
        rows = await self.repository.list(status.value if status else None, limit, after)
        return [MembershipRead.model_validate(row) for row in rows]

    async def _log(
        self,
        user_id: uuid.UUID,
        source: MembershipStatus | None,
        target: MembershipStatus,
        changed_by: uuid.UUID | None,
        reason: str,
    ) -> None:
        now = self.clock.now()
        await self.repository.add_change(
            MembershipChange(
                id=new_id(),
                user_id=user_id,
                from_status=source.value if source else None,
                to_status=target.value,
                changed_by=changed_by,
                reason=reason,
                changed_at=now,
            )
        )
        self.events.record(
            MembershipChanged(
                occurred_at=now,
                user_id=user_id,
                from_status=source.value if source else None,
                to_status=target.value,
                changed_by=changed_by,
                reason=reason,
            )
        )


# -- Proposals, votes, emergencies --------------------------------------------------------
#
# The rules decided here (docs/governance.md, "Proposals step by step"):
#
# - A member drafts; other members co-sign (the author does not count); the author
#   submits once ``constitution.cosigners_required`` have co-signed: the proposal is then
#   on notice, its document, hash, rules and impact frozen. Drafts not submitted within
#   DRAFT_TTL expire.
# - One open proposal per parameter, from notice until it is applied, fails or expires
#   (open_parameters' primary key); a draft touching a held parameter is refused at once.
# - Voting opens ``notice_period_s`` after notice, freezing the electorate: members with
#   a paid share, not suspended, and members since before the opening. A ballot also
#   needs the voter to be an active member when casting it: a suspension bites at once.
# - Voting closes ``voting_window_s`` later. A day before (REMINDER_BEFORE_CLOSE) the
#   members of the electorate who have not voted are reminded.
# - At the close the chain is recounted and published; a passed proposal is scheduled
#   ``timelock_s`` after the close, and applied then, or expires if a value it changes
#   moved meanwhile.
# - An admin's emergency change only lowers the surge cap or a zone surcharge, within
#   the parameter's bounds and step, for 1 to EMERGENCY_MAX_DAYS days. It is put to the
#   members at once (a yes / no vote open from enactment to the lapse time); ratified,
#   it stays; otherwise the previous values come back when the vote closes.

DRAFT_TTL = timedelta(days=30)
REMINDER_BEFORE_CLOSE = timedelta(hours=24)
IMPACT_WINDOW = timedelta(days=WINDOW_DAYS)
EMERGENCY_MAX_DAYS = 14
EMERGENCY_KEYS = frozenset({"fare.surge_cap"})
FAIRNESS_KEY = "dispatch.fairness_weight_s"
P = ProposalStatus


class TripHistory(Protocol):
    """Where completed trips come from (dispatch.history.CompletedTripService)."""

    async def between(self, start: datetime, end: datetime) -> Sequence[TripRecord]: ...

    async def online_seconds(self, start: datetime, end: datetime) -> Mapping[uuid.UUID, int]: ...


@dataclass(frozen=True, slots=True)
class GovernedState:
    """What is in force at one moment: the fare policy, the constitution, every value."""

    policy: FarePolicy
    constitution: Constitution
    values: Mapping[str, ParameterValue]


def constitution_with(stored: Mapping[str, str]) -> Constitution:
    """The founding constitution with the stored values of its own rules applied."""
    founding = constitution_values(CONSTITUTION)
    changes = []
    for key, text in stored.items():
        if key in founding:
            value = parse_value(CONSTITUTION.spec(key), text)
            if value != founding[key]:
                changes.append(ParameterChange(key, founding[key], value))
    return apply_constitution_changes(CONSTITUTION, changes)


def _iso(moment: datetime | None) -> str | None:
    return audit_time(moment) if moment is not None else None


def _question_keys(question: Mapping[str, Any]) -> list[str]:
    if question["kind"] == "yes_no":
        return sorted({c["key"] for c in question["changes"]})
    if question["kind"] == "ranked":
        return sorted({c["key"] for a in question["alternatives"] for c in a["changes"]})
    return [str(question["key"])]


class GovernedParameterService:
    """The governed values that live outside the fare policy (``dispatch.*`` and the
    constitution's own rules), for other domains: dispatch reads its fairness weight
    here, at the time it matches."""

    def __init__(self, session: AsyncSession) -> None:
        self.repository = GovernedParameterRepository(session)

    async def stored_at(self, at: datetime) -> dict[str, str]:
        return await self.repository.values_at(at)

    async def value_at(self, key: str, at: datetime) -> ParameterValue:
        """The value of ``key`` in force at ``at``: the last one applied by a vote, or
        the founding default. Raises ``UnknownParameter``, and ``ValueError`` for a
        fare parameter (the fare policy in force holds those)."""
        if key.startswith(FARE_PREFIX):
            raise ValueError(f"{key} lives in the fare policy: payments.policies")
        spec = CONSTITUTION.spec(key)
        stored = await self.repository.values_at(at)
        return parse_value(spec, stored[key]) if key in stored else spec.default


class GovernanceService:
    def __init__(
        self,
        session: AsyncSession,
        clock: Clock,
        events: EventBuffer,
        *,
        ballot_secret: str,
        trips: TripHistory,
    ) -> None:
        self.proposals = ProposalRepository(session)
        self.parameters = GovernedParameterRepository(session)
        self.governed = GovernedParameterService(session)
        self.emergencies = EmergencyRepository(session)
        self.audit_log = AuditRepository(session)
        self.memberships = MembershipService(session, clock, events)
        self.policies = FarePolicyService(session)
        self.clock = clock
        self.events = events
        self.secret = ballot_secret.encode()
        self.trips = trips

    # What is in force.

    async def state(self, at: datetime) -> GovernedState:
        policy = await self.policies.in_force(at)
        stored = await self.governed.stored_at(at)
        constitution = constitution_with(stored)
        fairness_spec = CONSTITUTION.spec(FAIRNESS_KEY)
        fairness = parse_value(fairness_spec, stored.get(FAIRNESS_KEY, str(fairness_spec.default)))
        assert isinstance(fairness, int)
        values = governed_values(policy, constitution, fairness_weight_s=fairness)
        return GovernedState(policy, constitution, values)

    async def parameter_value(self, key: str, at: datetime) -> ParameterValue:
        """The value of a governed parameter in force at ``at`` (its spec's default for a
        zone without a surcharge). Raises ``UnknownParameter``."""
        spec = CONSTITUTION.spec(key)
        state = await self.state(at)
        return state.values.get(key, spec.default)

    # Drafting, co-signing, notice.

    async def draft(self, author_id: uuid.UUID, body: ProposalCreate) -> ProposalRead:
        await self.memberships.require_member(author_id)
        now = self.clock.now()
        state = await self.state(now)
        question = self._draft_question(body, state)
        keys = _question_keys(question)
        await self._refuse_held(keys)
        proposal = await self.proposals.add(
            Proposal(
                id=new_id(),
                kind=body.kind,
                title=body.title,
                text=body.text,
                author_id=author_id,
                status=P.draft.value,
                question=question,
                parameter_keys=keys,
                created_at=now,
                updated_at=now,
            )
        )
        await self._audit(
            "proposal_drafted",
            author_id,
            proposal.id,
            {"kind": body.kind, "title": body.title, "question": question},
            now,
        )
        return await self.read(proposal.id, author_id)

    def _change(self, body: ChangeCreate, state: GovernedState) -> ParameterChange:
        spec = state.constitution.spec(body.key)
        old = (
            parse_value(spec, body.old)
            if body.old is not None
            else state.values.get(body.key, spec.default)
        )
        return ParameterChange(body.key, old, parse_value(spec, body.new))

    def _draft_question(self, body: ProposalCreate, state: GovernedState) -> dict[str, Any]:
        if body.changes is not None:
            changes = [self._change(c, state) for c in body.changes]
            validate_changes(state.constitution, state.values, changes)
            return {"kind": "yes_no", "changes": changes_json(changes)}
        if body.alternatives is not None:
            if len({a.id for a in body.alternatives}) != len(body.alternatives):
                raise ProposalQuestionInvalid("alternative ids are distinct")
            alternatives = []
            for alternative in body.alternatives:
                changes = [self._change(c, state) for c in alternative.changes]
                validate_changes(state.constitution, state.values, changes, allow_empty=True)
                alternatives.append(
                    {
                        "id": alternative.id,
                        "title": alternative.title,
                        "changes": changes_json(changes),
                    }
                )
            if not any(a["changes"] for a in alternatives):
                raise ProposalQuestionInvalid("at least one alternative changes something")
            return {"kind": "ranked", "alternatives": alternatives}
        assert body.key is not None
        spec = state.constitution.spec(body.key)
        if spec.kind == "choice":
            raise ProposalQuestionInvalid(
                f"{body.key} takes one of {', '.join(spec.choices)}: a median needs a number",
                key=body.key,
            )
        return {"kind": "median", "key": body.key}

    def _question(
        self, proposal: Proposal, state: GovernedState
    ) -> YesNoQuestion | RankedQuestion | MedianQuestion:
        """The drafted question as it stands now, checked again against the values in
        force (a value another proposal moved since the draft: ParameterChangedMeanwhile)."""
        drafted = proposal.question
        if drafted["kind"] == "yes_no":
            changes = [change_from_json(state.constitution, c) for c in drafted["changes"]]
            validate_changes(state.constitution, state.values, changes)
            return YesNoQuestion(tuple(changes))
        if drafted["kind"] == "ranked":
            alternatives = []
            for item in drafted["alternatives"]:
                changes = [change_from_json(state.constitution, c) for c in item["changes"]]
                validate_changes(state.constitution, state.values, changes, allow_empty=True)
                alternatives.append(Alternative(item["id"], item["title"], tuple(changes)))
            return RankedQuestion(tuple(alternatives), tie_break_seed=str(proposal.id))
        spec = state.constitution.spec(drafted["key"])
        return MedianQuestion(spec, state.values.get(spec.key, spec.default))

    async def _refuse_held(self, keys: Sequence[str]) -> None:
        held = await self.proposals.holders(keys)
        if held:
            key = min(held)
            raise ParameterAlreadyProposed(key, str(held[key]))

    async def _claim(self, keys: Sequence[str], proposal_id: uuid.UUID, now: datetime) -> None:
        claimed = await self.proposals.claim(keys, proposal_id, now)
        if claimed != set(keys):
            # The request's transaction is rolled back: the keys claimed here go too.
            missing = sorted(set(keys) - claimed)
            held = await self.proposals.holders(missing)
            raise ParameterAlreadyProposed(missing[0], str(held.get(missing[0], "unknown")))

    async def cosign(self, proposal_id: uuid.UUID, member_id: uuid.UUID) -> ProposalRead:
        await self.memberships.require_member(member_id)
        proposal = await self._locked(proposal_id)
        if proposal.status != P.draft.value:
            raise ProposalNotDraft(f"The proposal is {proposal.status}: co-signing is over")
        if proposal.author_id == member_id:
            raise AuthorCannotCosign
        now = self.clock.now()
        if await self.proposals.add_cosigner(proposal.id, member_id, now):
            await self._audit("proposal_cosigned", member_id, proposal.id, {}, now)
        return await self.read(proposal.id, member_id)

    async def submit(self, proposal_id: uuid.UUID, member_id: uuid.UUID) -> ProposalRead:
        """Puts a draft on notice: its question checked again, its parameters claimed,
        its document, rules and impact frozen and hashed, its vote scheduled."""
        await self.memberships.require_member(member_id)
        proposal = await self._locked(proposal_id)
        if proposal.author_id != member_id:
            raise NotProposalAuthor
        if proposal.status != P.draft.value:
            raise ProposalNotDraft(f"The proposal is already {proposal.status}")
        now = self.clock.now()
        state = await self.state(now)
        cosigners = await self.proposals.cosigner_count(proposal.id)
        required = state.constitution.cosigners_required
        if cosigners < required:
            raise CosignersMissing(
                f"{cosigners} of the {required} co-signers needed",
                cosigners=cosigners,
                required=required,
            )
        question = self._question(proposal, state)
        keys = list(proposal.parameter_keys)
        await self._claim(keys, proposal.id, now)
        rule = governing_rule(state.constitution, keys)
        document = proposal_document(
            proposal_id=str(proposal.id),
            title=proposal.title,
            text=proposal.text,
            question=question,
            rule=rule,
        )
        opens_at = now + timedelta(seconds=rule.notice_period_s)
        closes_at = opens_at + timedelta(seconds=rule.voting_window_s)
        await self._freeze(proposal, question, document, rule, state, now, opens_at, closes_at)
        await self._audit(
            "proposal_noticed",
            member_id,
            proposal.id,
            {
                "document_hash": proposal_hash(document),
                "rule_class": rule.name,
                "voting_opens_at": _iso(opens_at),
                "voting_closes_at": _iso(closes_at),
            },
            now,
        )
        self.events.record(
            ProposalNoticed(
                occurred_at=now,
                proposal_id=proposal.id,
                title=proposal.title,
                voting_opens_at=opens_at,
                voting_closes_at=closes_at,
            )
        )
        return await self.read(proposal.id, member_id)

    async def _freeze(
        self,
        proposal: Proposal,
        question: YesNoQuestion | RankedQuestion | MedianQuestion,
        document: dict[str, JsonValue],
        rule: RuleClass,
        state: GovernedState,
        now: datetime,
        opens_at: datetime,
        closes_at: datetime,
    ) -> None:
        impact, personal = await self._impact(question, state, now)
        await self.proposals.update(
            proposal.id,
            {
                "status": P.notice.value,
                "document": document,
                "document_hash": proposal_hash(document),
                "rule_class": rule_json(rule),
                "impact": impact,
                "notice_at": now,
                "voting_opens_at": opens_at,
                "voting_closes_at": closes_at,
                "updated_at": now,
            },
        )
        await self.proposals.add_personal_impacts(
            [
                {"proposal_id": proposal.id, "user_id": user_id, "figures": figures}
                for user_id, figures in personal.items()
            ]
        )

    async def _impact(
        self,
        question: YesNoQuestion | RankedQuestion | MedianQuestion,
        state: GovernedState,
        now: datetime,
    ) -> tuple[dict[str, Any] | None, dict[uuid.UUID, dict[str, Any]]]:
        """The replay of the last IMPACT_WINDOW under each outcome that changes fares:
        the changes of a yes / no; each alternative; for a median, the furthest one vote
        can move the value down and up. None when no outcome touches a fare."""
        scenarios: list[tuple[str, list[ParameterChange]]] = []
        if isinstance(question, YesNoQuestion):
            scenarios.append(("proposal", list(question.changes)))
        elif isinstance(question, RankedQuestion):
            scenarios.extend((a.id, list(a.changes)) for a in question.alternatives)
        else:
            spec, current = question.spec, question.current
            for name, extreme in (("lowest", spec.minimum), ("highest", spec.maximum)):
                assert extreme is not None
                value = median_value([extreme], spec, current=current)
                if value != current:
                    scenarios.append((name, [ParameterChange(spec.key, current, value)]))
        priced = [
            (name, [c for c in changes if c.key.startswith(FARE_PREFIX)])
            for name, changes in scenarios
        ]
        priced = [(name, changes) for name, changes in priced if changes]
        if not priced:
            return None, {}
        start = now - IMPACT_WINDOW
        trips = list(await self.trips.between(start, now))
        online = await self.trips.online_seconds(start, now)
        results: list[dict[str, Any]] = []
        personal: dict[uuid.UUID, dict[str, Any]] = {}
        for name, changes in priced:
            proposed = apply_fare_changes(
                state.constitution,
                state.policy,
                changes,
                policy_id=state.policy.id,
                version=state.policy.version,
                effective_at=state.policy.effective_at,
            )
            impact = simulate(trips, state.policy, proposed, online_seconds=online)
            results.append({"name": name, "changes": changes_json(changes), **impact.figures})
            for user_id, figures in impact.personal.items():
                personal.setdefault(user_id, {})[name] = figures
        figures = {
            "format": IMPACT_FORMAT,
            "window": {"start": _iso(start), "end": _iso(now), "days": WINDOW_DAYS},
            "scenarios": results,
        }
        return figures, personal

    # Reading.

    async def read(self, proposal_id: uuid.UUID, viewer_id: uuid.UUID | None) -> ProposalRead:
        proposal = await self._get(proposal_id)
        state = await self.state(self.clock.now())
        mine = (
            await self.proposals.personal_impact(proposal.id, viewer_id)
            if viewer_id is not None and proposal.impact is not None
            else None
        )
        return ProposalRead(
            **ProposalSummary.model_validate(proposal, from_attributes=True).model_dump(),
            text=proposal.text,
            question=proposal.question,
            cosigners=await self.proposals.cosigner_count(proposal.id),
            cosigners_required=state.constitution.cosigners_required,
            document=proposal.document,
            document_hash=proposal.document_hash,
            rule_class=proposal.rule_class,
            impact=proposal.impact,
            my_impact=mine,
            electorate_size=proposal.electorate_size,
            result=proposal.result,
            outcome_changes=[ChangeRead(**c) for c in proposal.outcome_changes]
            if proposal.outcome_changes is not None
            else None,
            status_reason=proposal.status_reason,
            closed_at=proposal.closed_at,
        )

    async def page(
        self, status: ProposalStatus | None, limit: int, after: uuid.UUID | None
    ) -> list[ProposalSummary]:
        rows = await self.proposals.page([status.value] if status else None, limit, after)
        return [ProposalSummary.model_validate(row, from_attributes=True) for row in rows]

    async def results(self, proposal_id: uuid.UUID) -> ResultRead:
        proposal = await self._get(proposal_id)
        if proposal.result is None or proposal.closed_at is None:
            raise ProposalNotClosed
        assert proposal.electorate_size is not None
        assert proposal.document_hash is not None
        return ResultRead(
            proposal_id=proposal.id,
            status=ProposalSummary.model_validate(proposal, from_attributes=True).status,
            result=proposal.result,
            outcome_changes=[ChangeRead(**c) for c in proposal.outcome_changes]
            if proposal.outcome_changes is not None
            else None,
            electorate_size=proposal.electorate_size,
            ballots_chained=proposal.chain_length,
            voters=await self.proposals.voter_count(proposal.id),
            chain_head=proposal.chain_head or chain_genesis(proposal.document_hash),
            document_hash=proposal.document_hash,
            closed_at=proposal.closed_at,
            effective_at=proposal.effective_at,
        )

    async def publication(self, proposal_id: uuid.UUID) -> dict[str, Any]:
        """The file published at the close (governance.verify reads it)."""
        proposal = await self._get(proposal_id)
        if proposal.publication is None:
            raise ProposalNotClosed
        return proposal.publication

    async def upcoming_fare_changes(self) -> list[UpcomingFareChange]:
        """Fare changes decided and waiting for their time, and the values an active
        emergency change gives back when it lapses unless ratified, soonest first."""
        upcoming = []
        for proposal in await self.proposals.scheduled():
            fares = [c for c in proposal.outcome_changes or [] if c["key"].startswith(FARE_PREFIX)]
            if fares and proposal.emergency_change_id is None and proposal.effective_at:
                upcoming.append(
                    UpcomingFareChange(
                        effective_at=proposal.effective_at,
                        source="proposal",
                        conditional=False,
                        proposal_id=proposal.id,
                        emergency_change_id=None,
                        changes=[ChangeRead(**c) for c in fares],
                    )
                )
        for emergency in await self.emergencies.active():
            upcoming.append(
                UpcomingFareChange(
                    effective_at=emergency.lapses_at,
                    source="emergency_lapse",
                    conditional=True,
                    proposal_id=emergency.ratification_proposal_id,
                    emergency_change_id=emergency.id,
                    changes=[
                        ChangeRead(key=c["key"], old=c["new"], new=c["old"])
                        for c in emergency.changes
                    ],
                )
            )
        return sorted(upcoming, key=lambda u: u.effective_at)

    async def audit_entries(
        self, after: int, limit: int, proposal_id: uuid.UUID | None = None
    ) -> list[AuditEntryRead]:
        rows = await self.audit_log.entries(after, limit, proposal_id)
        return [AuditEntryRead.model_validate(row, from_attributes=True) for row in rows]

    async def audit_problems(self) -> list[str]:
        """governance.audit.verify_audit over the whole log."""
        records: list[AuditRecord] = []
        after = 0
        while True:
            rows = await self.audit_log.entries(after, 10_000)
            if not rows:
                return verify_audit(records)
            records.extend(
                AuditRecord(
                    position=row.position,
                    action=row.action,
                    actor_id=row.actor_id,
                    proposal_id=row.proposal_id,
                    payload=row.payload,
                    occurred_at=row.occurred_at,
                    prev_hash=row.prev_hash,
                    hash=row.hash,
                )
                for row in rows
            )
            after = rows[-1].position

    # Voting.

    async def eligibility(self, proposal_id: uuid.UUID, user_id: uuid.UUID) -> EligibilityRead:
        proposal = await self._get(proposal_id)
        membership = await self.memberships.get(user_id)
        reason, detail, in_electorate = await self._why_not(
            proposal, membership, user_id, self.clock.now()
        )
        return EligibilityRead(
            proposal_id=proposal.id,
            status=ProposalSummary.model_validate(proposal, from_attributes=True).status,
            can_vote=reason is None,
            reason=reason,
            detail=detail,
            in_electorate=in_electorate,
            has_voted=await self.proposals.has_voted(proposal.id, user_id),
            voting_opens_at=proposal.voting_opens_at,
            voting_closes_at=proposal.voting_closes_at,
        )

    async def _why_not(
        self,
        proposal: Proposal,
        membership: MembershipRead | None,
        user_id: uuid.UUID,
        now: datetime,
    ) -> tuple[str | None, str, bool | None]:
        """Why ``user_id`` may not vote on ``proposal`` now (None when they may), a
        sentence saying so, and whether they are in the frozen electorate."""
        frozen = proposal.electorate_size is not None
        in_electorate = await self.proposals.in_electorate(proposal.id, user_id) if frozen else None
        if membership is None or membership.status in (S.applicant.value, S.exited.value):
            return "not_a_member", "Only members of the co-op vote", in_electorate
        if membership.share_paid_at is None:
            return "share_not_paid", "A member votes once their share is paid", in_electorate
        if membership.status == S.suspended.value:
            return "suspended", "A suspended member does not vote", in_electorate
        if proposal.status in (P.draft.value, P.notice.value):
            return "voting_not_open", "Voting has not opened yet", in_electorate
        closes_at = proposal.voting_closes_at
        if proposal.status != P.voting.value or (closes_at is not None and now >= closes_at):
            return "voting_closed", "Voting on this proposal is closed", in_electorate
        if not in_electorate:
            opens_at = proposal.voting_opens_at
            if membership.member_since and opens_at and membership.member_since > opens_at:
                return (
                    "joined_after_voting_opened",
                    "The electorate was frozen when voting opened, before you joined",
                    in_electorate,
                )
            return (
                "not_in_electorate",
                "You were not an eligible member when voting opened",
                in_electorate,
            )
        return None, "You may vote; your last ballot before the close counts", in_electorate

    async def cast(
        self, proposal_id: uuid.UUID, member_id: uuid.UUID, body: BallotCreate
    ) -> BallotReceipt:
        """Chains the member's ballot and answers its receipt. The proposal's row lock
        serialises ballots (each link needs the previous hash) and orders them against
        the close. The same answer again, as a retried or raced request sends it, is not
        chained twice: the earlier ballot's receipt is answered."""
        proposal = await self._locked(proposal_id)
        now = self.clock.now()
        membership = await self.memberships.get(member_id)
        reason, detail, _ = await self._why_not(proposal, membership, member_id, now)
        if reason == "voting_not_open":
            raise VotingNotOpen
        if reason == "voting_closed":
            raise ProposalClosed
        if reason is not None:
            raise NotEligibleToVote(reason, detail)
        assert proposal.document is not None
        assert proposal.document_hash is not None
        assert proposal.voting_closes_at is not None
        pid = str(proposal.id)
        form = form_from_json(proposal.document["question"])
        token = voter_token(self.secret, pid, str(member_id))
        ballot = _ballot(body, form, pid, token, secrets.token_hex(16))
        check_ballot(ballot, form, proposal_id=pid)
        last = await self.proposals.last_ballot_of(proposal.id, token)
        if last is not None:
            earlier = parse_ballot(last.ballot_json, form, proposal_id=pid)
            if dataclasses.replace(earlier, nonce=ballot.nonce) == ballot:
                return BallotReceipt(
                    proposal_id=proposal.id,
                    receipt=last.hash,
                    ballot=last.ballot_json,
                    replaced_earlier=False,
                    voting_closes_at=proposal.voting_closes_at,
                )
        position = proposal.chain_length + 1
        link = chain_append(
            proposal.chain_head or chain_genesis(proposal.document_hash), position, ballot
        )
        await self.proposals.add_ballot(
            BallotLink(
                proposal_id=proposal.id,
                position=position,
                voter_token=token,
                ballot_json=link.ballot_json,
                prev_hash=link.prev_hash,
                hash=link.hash,
            )
        )
        await self.proposals.update(
            proposal.id, {"chain_length": position, "chain_head": link.hash}
        )
        await self.proposals.record_voter(proposal.id, member_id, now)
        return BallotReceipt(
            proposal_id=proposal.id,
            receipt=receipt(link),
            ballot=link.ballot_json,
            replaced_earlier=last is not None,
            voting_closes_at=proposal.voting_closes_at,
        )

    # The timed steps, for the worker (governance.tasks).

    async def due(self, now: datetime) -> list[uuid.UUID]:
        return await self.proposals.due(now, now - DRAFT_TTL, now + REMINDER_BEFORE_CLOSE)

    async def advance(self, proposal_id: uuid.UUID, now: datetime) -> list[str]:
        """Takes every step of the proposal that is due at ``now``, in order, under its
        row lock; answers the steps taken. Each step checks the status it moves from, so
        running it again (two workers, a retry after a crash) takes no step twice."""
        taken: list[str] = []
        while True:
            proposal = await self.proposals.get(proposal_id, lock=True)
            if proposal is None:
                return taken
            step = self._due_step(proposal, now)
            if step is None:
                return taken
            await step(proposal, now)
            taken.append(step.__name__.lstrip("_"))

    def _due_step(
        self, proposal: Proposal, now: datetime
    ) -> Callable[[Proposal, datetime], Awaitable[None]] | None:
        status = proposal.status
        if status == P.draft.value and proposal.created_at <= now - DRAFT_TTL:
            return self._expire_draft
        if (
            status == P.notice.value
            and proposal.voting_opens_at
            and proposal.voting_opens_at <= now
        ):
            return self._open_voting
        closes_at = proposal.voting_closes_at
        if status == P.voting.value and closes_at is not None:
            if closes_at <= now:
                return self._close
            if proposal.reminded_at is None and closes_at - REMINDER_BEFORE_CLOSE <= now:
                return self._remind
        if status == P.passed.value:
            return self._schedule
        if status == P.scheduled.value and proposal.effective_at and proposal.effective_at <= now:
            return self._apply
        return None

    async def _expire_draft(self, proposal: Proposal, now: datetime) -> None:
        reason = f"not submitted within {DRAFT_TTL.days} days"
        await self._expire(proposal, reason, now)

    async def _expire(self, proposal: Proposal, reason: str, now: datetime) -> None:
        await self.proposals.update(
            proposal.id,
            {"status": P.expired.value, "status_reason": reason, "updated_at": now},
        )
        await self.proposals.release(proposal.id)
        await self._audit("proposal_expired", None, proposal.id, {"reason": reason}, now)
        self.events.record(
            ProposalExpired(
                occurred_at=now, proposal_id=proposal.id, title=proposal.title, reason=reason
            )
        )

    async def _open_voting(self, proposal: Proposal, now: datetime) -> None:
        assert proposal.voting_opens_at is not None
        assert proposal.voting_closes_at is not None
        size = await self.proposals.freeze_electorate(proposal.id, proposal.voting_opens_at)
        await self.proposals.update(
            proposal.id,
            {"status": P.voting.value, "electorate_size": size, "updated_at": now},
        )
        await self._audit("voting_opened", None, proposal.id, {"electorate_size": size}, now)
        self.events.record(
            VotingOpened(
                occurred_at=now,
                proposal_id=proposal.id,
                title=proposal.title,
                voting_closes_at=proposal.voting_closes_at,
                notify=tuple(await self.proposals.electorate(proposal.id)),
            )
        )

    async def _remind(self, proposal: Proposal, now: datetime) -> None:
        assert proposal.voting_closes_at is not None
        await self.proposals.update(proposal.id, {"reminded_at": now})
        self.events.record(
            VotingClosesSoon(
                occurred_at=now,
                proposal_id=proposal.id,
                title=proposal.title,
                voting_closes_at=proposal.voting_closes_at,
                notify=tuple(await self.proposals.not_voted(proposal.id)),
            )
        )

    async def _close(self, proposal: Proposal, now: datetime) -> None:
        """Recounts the chain, publishes it, and decides. The publication is checked by
        the same verifier members run before anything is stored."""
        assert proposal.document is not None
        assert proposal.rule_class is not None
        assert proposal.electorate_size is not None
        pid = str(proposal.id)
        form = form_from_json(proposal.document["question"])
        chain = [
            ChainedBallot(link.position, link.ballot_json, link.prev_hash, link.hash)
            for link in await self.proposals.chain(proposal.id)
        ]
        ballots = [parse_ballot(link.ballot_json, form, proposal_id=pid) for link in chain]
        outcome = recount(
            ballots,
            form,
            proposal_id=pid,
            electorate_size=proposal.electorate_size,
            rule=rule_from_json(proposal.rule_class),
        )
        publication = build_publication(
            proposal=proposal.document,
            electorate_size=proposal.electorate_size,
            chain=chain,
            outcome=outcome,
        )
        report = verify_publication(publication)
        if not report.ok:
            failed = "; ".join(f"{c.name}: {c.detail}" for c in report.checks if not c.ok)
            raise RuntimeError(f"proposal {pid}: the publication does not verify ({failed})")
        head = publication["chain"]
        assert isinstance(head, dict)
        outcome_changes = _outcome_changes(proposal.document["question"], outcome)
        status = P.passed if outcome.passed else P.failed
        await self.proposals.update(
            proposal.id,
            {
                "status": status.value,
                "result": outcome_json(outcome),
                "publication": publication,
                "outcome_changes": outcome_changes,
                "closed_at": now,
                "published_at": now,
                "updated_at": now,
            },
        )
        if status is P.failed:
            await self.proposals.release(proposal.id)
        await self._audit(
            "voting_closed",
            None,
            proposal.id,
            {
                "passed": outcome.passed,
                "chain_head": head["head"],
                "chain_length": len(chain),
                "electorate_size": proposal.electorate_size,
                "result": outcome_json(outcome),
            },
            now,
        )
        self.events.record(
            ProposalDecided(
                occurred_at=now,
                proposal_id=proposal.id,
                title=proposal.title,
                passed=outcome.passed,
                status=status.value,
                chain_head=str(head["head"]),
                notify=tuple(await self.proposals.electorate(proposal.id)),
            )
        )
        if proposal.emergency_change_id is not None:
            await self._end_emergency(proposal.emergency_change_id, outcome.passed, now)

    async def _schedule(self, proposal: Proposal, now: datetime) -> None:
        assert proposal.voting_closes_at is not None
        assert proposal.rule_class is not None
        # From the scheduled close, not from whenever the worker closed it: the time is
        # known to everyone in advance. A ratified emergency change is in force already.
        timelock = 0 if proposal.emergency_change_id else int(proposal.rule_class["timelock_s"])
        effective_at = proposal.voting_closes_at + timedelta(seconds=timelock)
        await self.proposals.update(
            proposal.id,
            {"status": P.scheduled.value, "effective_at": effective_at, "updated_at": now},
        )
        await self._audit(
            "proposal_scheduled", None, proposal.id, {"effective_at": _iso(effective_at)}, now
        )
        self.events.record(
            ProposalScheduled(
                occurred_at=now,
                proposal_id=proposal.id,
                title=proposal.title,
                effective_at=effective_at,
            )
        )

    async def _apply(self, proposal: Proposal, now: datetime) -> None:
        """Applies the outcome in this transaction: a new fare policy version for the
        fare changes (in force from ``now`` for every new quote; quotes made before keep
        theirs), new versions of the other governed values. If a value moved since the
        vote, nothing is applied and the proposal expires."""
        state = await self.state(now)
        changes = [change_from_json(state.constitution, c) for c in proposal.outcome_changes or []]
        version_id: uuid.UUID | None = None
        if proposal.emergency_change_id is None:
            try:
                version_id = await self._apply_changes(proposal, changes, state, now)
            except ParameterChangedMeanwhile as exc:
                await self._expire(proposal, exc.detail, now)
                return
        await self.proposals.update(
            proposal.id, {"status": P.applied.value, "applied_at": now, "updated_at": now}
        )
        await self.proposals.release(proposal.id)
        await self._audit(
            "proposal_applied",
            None,
            proposal.id,
            {
                "changes": changes_json(changes),
                "fare_policy_version_id": str(version_id) if version_id else None,
            },
            now,
        )
        self.events.record(
            ProposalApplied(
                occurred_at=now,
                proposal_id=proposal.id,
                title=proposal.title,
                fare_policy_version_id=version_id,
            )
        )

    async def _apply_changes(
        self,
        proposal: Proposal,
        changes: Sequence[ParameterChange],
        state: GovernedState,
        now: datetime,
    ) -> uuid.UUID | None:
        # Every change must still start from the value in force, or none applies.
        apply_to_values(state.constitution, state.values, changes)
        fares = [c for c in changes if c.key.startswith(FARE_PREFIX)]
        version_id = None
        if fares:
            policy = apply_fare_changes(
                state.constitution,
                state.policy,
                fares,
                policy_id=new_id(),
                version=state.policy.version + 1,
                effective_at=now,
            )
            stored = await self.policies.add_version(
                policy, reason=f"proposal {proposal.id}: {proposal.title}"
            )
            version_id = stored.id
        for change in changes:
            if change.key.startswith(FARE_PREFIX):
                continue
            await self.parameters.add(
                GovernedParameter(
                    id=new_id(),
                    parameter_key=change.key,
                    value=value_text(change.new),
                    version=await self.parameters.latest_version(change.key) + 1,
                    effective_at=now,
                    proposal_id=proposal.id,
                    created_at=now,
                )
            )
        return version_id

    # Emergency changes.

    async def enact_emergency(
        self, admin_id: uuid.UUID, body: EmergencyChangeCreate
    ) -> EmergencyChangeRead:
        """Applies a bounded temporary change at once and opens the members' vote on
        it, which closes when it would lapse."""
        now = self.clock.now()
        state = await self.state(now)
        changes = [self._change(c, state) for c in body.changes]
        for change in changes:
            if change.key not in EMERGENCY_KEYS and not change.key.startswith(ZONE_PREFIX):
                raise EmergencyChangeInvalid(
                    f"{change.key}: an emergency changes only the surge cap or a zone surcharge",
                    key=change.key,
                )
            if (
                isinstance(change.new, str)
                or isinstance(change.old, str)
                or change.new >= change.old
            ):
                raise EmergencyChangeInvalid(
                    f"{change.key}: an emergency change only lowers a price "
                    f"(from {value_text(change.old)}, not to {value_text(change.new)})",
                    key=change.key,
                )
        validate_changes(state.constitution, state.values, changes)
        keys = sorted(c.key for c in changes)
        emergency_id, proposal_id = new_id(), new_id()
        lapses_at = now + timedelta(days=body.lapse_days)
        question = YesNoQuestion(tuple(changes))
        rule = governing_rule(state.constitution, keys)
        title = f"Ratify the emergency change of {', '.join(keys)}"
        document = proposal_document(
            proposal_id=str(proposal_id),
            title=title,
            text=body.reason,
            question=question,
            rule=rule,
        )
        proposal = await self.proposals.add(
            Proposal(
                id=proposal_id,
                kind=ProposalKind.yes_no.value,
                title=title,
                text=body.reason,
                author_id=None,
                status=P.draft.value,
                question={"kind": "yes_no", "changes": changes_json(changes)},
                parameter_keys=keys,
                emergency_change_id=emergency_id,
                created_at=now,
                updated_at=now,
            )
        )
        await self._claim(keys, proposal.id, now)
        # The impact of ratifying: the prices before the emergency against the new ones.
        await self._freeze(proposal, question, document, rule, state, now, now, lapses_at)
        policy = apply_fare_changes(
            state.constitution,
            state.policy,
            changes,
            policy_id=new_id(),
            version=state.policy.version + 1,
            effective_at=now,
        )
        stored = await self.policies.add_version(
            policy, reason=f"emergency change {emergency_id}: {body.reason}"
        )
        emergency = await self.emergencies.add(
            EmergencyChange(
                id=emergency_id,
                enacted_by=admin_id,
                reason=body.reason,
                changes=changes_json(changes),
                status=EmergencyStatus.active.value,
                enacted_at=now,
                lapses_at=lapses_at,
                ratification_proposal_id=proposal.id,
                fare_policy_version_id=stored.id,
            )
        )
        await self._audit(
            "emergency_enacted",
            admin_id,
            proposal.id,
            {
                "emergency_change_id": str(emergency_id),
                "reason": body.reason,
                "changes": changes_json(changes),
                "lapses_at": _iso(lapses_at),
                "fare_policy_version_id": str(stored.id),
                "document_hash": proposal_hash(document),
            },
            now,
        )
        self.events.record(
            EmergencyChangeEnacted(
                occurred_at=now,
                proposal_id=proposal.id,
                title=title,
                emergency_change_id=emergency_id,
                lapses_at=lapses_at,
            )
        )
        noticed = await self._get(proposal.id)
        await self._open_voting(noticed, now)
        return EmergencyChangeRead.model_validate(emergency, from_attributes=True)

    async def _end_emergency(self, emergency_id: uuid.UUID, ratified: bool, now: datetime) -> None:
        emergency = await self.emergencies.get(emergency_id, lock=True)
        if emergency is None or emergency.status != EmergencyStatus.active.value:
            return
        restored: list[ParameterChange] = []
        version_id: uuid.UUID | None = None
        if ratified:
            status = EmergencyStatus.ratified
        else:
            status = EmergencyStatus.lapsed
            state = await self.state(now)
            for item in emergency.changes:
                change = change_from_json(state.constitution, item)
                # The parameter was held by the ratification vote: nothing else moved it.
                if state.values.get(change.key, change.old) == change.new:
                    restored.append(ParameterChange(change.key, change.new, change.old))
            if restored:
                policy = apply_fare_changes(
                    state.constitution,
                    state.policy,
                    restored,
                    policy_id=new_id(),
                    version=state.policy.version + 1,
                    effective_at=now,
                )
                stored = await self.policies.add_version(
                    policy, reason=f"emergency change {emergency.id} lapsed"
                )
                version_id = stored.id
        await self.emergencies.update(
            emergency.id,
            {"status": status.value, "ended_at": now, "restored_policy_version_id": version_id},
        )
        await self._audit(
            f"emergency_{status.value}",
            None,
            emergency.ratification_proposal_id,
            {
                "emergency_change_id": str(emergency.id),
                "restored": changes_json(restored),
                "fare_policy_version_id": str(version_id) if version_id else None,
            },
            now,
        )
        self.events.record(
            EmergencyChangeEnded(
                occurred_at=now,
                proposal_id=emergency.ratification_proposal_id or emergency.id,
                title=emergency.reason,
                emergency_change_id=emergency.id,
                status=status.value,
            )
        )

    # Helpers.

    async def _get(self, proposal_id: uuid.UUID) -> Proposal:
        proposal = await self.proposals.get(proposal_id)
        if proposal is None:
            raise ProposalNotFound
        return proposal

    async def _locked(self, proposal_id: uuid.UUID) -> Proposal:
        proposal = await self.proposals.get(proposal_id, lock=True)
        if proposal is None:
            raise ProposalNotFound
        return proposal

    async def _audit(
        self,
        action: str,
        actor_id: uuid.UUID | None,
        proposal_id: uuid.UUID | None,
        payload: Mapping[str, JsonValue],
        now: datetime,
    ) -> None:
        position, last_hash = await self.audit_log.lock_and_last()
        record = audit_link(
            last_hash or AUDIT_GENESIS,
            position=position + 1,
            action=action,
            actor_id=actor_id,
            proposal_id=proposal_id,
            payload=payload,
            occurred_at=now,
        )
        await self.audit_log.add(
            AuditEntry(
                position=record.position,
                action=action,
                actor_id=actor_id,
                proposal_id=proposal_id,
                payload=dict(payload),
                occurred_at=now,
                prev_hash=record.prev_hash,
                hash=record.hash,
            )
        )


def _ballot(
    body: BallotCreate, form: BallotForm, proposal_id: str, token: str, nonce: str
) -> Ballot:
    if isinstance(form, YesNoForm):
        vote = "abstain" if body.abstain else body.vote
        if vote is None:
            raise BallotInvalid("this proposal takes a vote: yes, no or abstain")
        return YesNoBallot(proposal_id, token, nonce, vote)
    if isinstance(form, RankedForm):
        if body.abstain:
            return RankedBallot(proposal_id, token, nonce, ())
        if body.ranking is None:
            raise BallotInvalid("this proposal takes a ranking of its alternatives")
        return RankedBallot(proposal_id, token, nonce, tuple(body.ranking))
    if body.abstain:
        return MedianBallot(proposal_id, token, nonce, None)
    if body.value is None:
        raise BallotInvalid("this proposal takes a value of its parameter")
    return MedianBallot(proposal_id, token, nonce, parse_value(form.spec, body.value))


def _outcome_changes(question: Mapping[str, Any], outcome: Outcome) -> list[dict[str, str]] | None:
    """What applying a passed vote changes, values as text; None when it failed."""
    if not outcome.passed:
        return None
    if isinstance(outcome, YesNoResult):
        return [dict(c) for c in question["changes"]]
    if isinstance(outcome, RankedResult):
        winner = next(a for a in question["alternatives"] if a["id"] == outcome.winner)
        return [dict(c) for c in winner["changes"]]
    assert isinstance(outcome, MedianResult)
    return [
        {"key": outcome.key, "old": value_text(outcome.current), "new": value_text(outcome.value)}
    ]
