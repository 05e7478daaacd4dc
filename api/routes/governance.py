"""Proposals, votes, results and the governance log for members; emergency changes for
admins; two public reads.

Public, without a token, on purpose: a closed vote's publication (anyone may recount it,
and it names no one: ballots carry keyed voter tokens) and the upcoming fare changes
(riders, and people who are not riders yet, see a price change before it applies).
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, status

from api.deps import AdminOnly, CurrentDriver, CurrentMember, CurrentPrincipal, ResourcesDep, Uow
from api.problems import problem_responses
from dispatch.history import CompletedTripService
from governance.models import ProposalStatus
from governance.schemas import (
    AuditEntryRead,
    BallotCreate,
    BallotReceipt,
    EligibilityRead,
    EmergencyChangeCreate,
    EmergencyChangeRead,
    ProposalCreate,
    ProposalRead,
    ProposalSummary,
    ResultRead,
    UpcomingFareChange,
)
from governance.service import GovernanceService

router = APIRouter(tags=["governance"])


def get_governance_service(resources: ResourcesDep, uow: Uow) -> GovernanceService:
    return GovernanceService(
        uow.session,
        resources.clock,
        uow.events,
        ballot_secret=resources.settings.governance.ballot_secret,
        trips=CompletedTripService(uow.session),
    )


Governance = Annotated[GovernanceService, Depends(get_governance_service)]


@router.post(
    "/v1/governance/proposals",
    status_code=status.HTTP_201_CREATED,
    responses=problem_responses(401, 403, 409, 413, 422),
    summary="Draft a proposal (values as text); 422 names a bound or step it breaks",
)
async def draft_proposal(
    body: ProposalCreate, member: CurrentMember, uow: Uow, governance: Governance
) -> ProposalRead:
    proposal = await governance.draft(member.user_id, body)
    await uow.commit()
    return proposal


@router.get(
    "/v1/governance/proposals",
    responses=problem_responses(401, 403, 422),
    summary="Proposals, newest first, by status, in pages (pass the last id as `after`)",
)
async def list_proposals(
    member: CurrentMember,
    governance: Governance,
    status: ProposalStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    after: uuid.UUID | None = None,
) -> list[ProposalSummary]:
    return await governance.page(status, limit, after)


@router.get(
    "/v1/governance/proposals/{proposal_id}",
    responses=problem_responses(401, 403, 404, 422),
    summary="One proposal with its frozen document and impact, and the caller's own figures",
)
async def get_proposal(
    proposal_id: uuid.UUID, member: CurrentMember, governance: Governance
) -> ProposalRead:
    return await governance.read(proposal_id, member.user_id)


@router.post(
    "/v1/governance/proposals/{proposal_id}/cosign",
    responses=problem_responses(401, 403, 404, 409, 422),
    summary="Co-sign a draft (once per member; the author does not co-sign)",
)
async def cosign_proposal(
    proposal_id: uuid.UUID, member: CurrentMember, uow: Uow, governance: Governance
) -> ProposalRead:
    proposal = await governance.cosign(proposal_id, member.user_id)
    await uow.commit()
    return proposal


@router.post(
    "/v1/governance/proposals/{proposal_id}/submit",
    responses=problem_responses(401, 403, 404, 409, 422),
    summary="Put a co-signed draft on notice: frozen, hashed, its impact simulated",
)
async def submit_proposal(
    proposal_id: uuid.UUID, member: CurrentMember, uow: Uow, governance: Governance
) -> ProposalRead:
    proposal = await governance.submit(proposal_id, member.user_id)
    await uow.commit()
    return proposal


@router.get(
    "/v1/governance/proposals/{proposal_id}/eligibility",
    responses=problem_responses(401, 404, 422),
    summary="Can I vote on this proposal, and if not, why",
)
async def eligibility(
    proposal_id: uuid.UUID, principal: CurrentPrincipal, governance: Governance
) -> EligibilityRead:
    return await governance.eligibility(proposal_id, principal.user_id)


@router.post(
    "/v1/governance/proposals/{proposal_id}/ballots",
    status_code=status.HTTP_201_CREATED,
    responses=problem_responses(401, 403, 404, 409, 413, 422),
    summary="Vote (again: the last ballot before the close counts); answers a receipt",
)
async def cast_ballot(
    proposal_id: uuid.UUID,
    body: BallotCreate,
    driver: CurrentDriver,
    uow: Uow,
    governance: Governance,
) -> BallotReceipt:
    # A driver, not CurrentMember: a suspended or late member gets the precise reason.
    ballot = await governance.cast(proposal_id, driver.user_id, body)
    await uow.commit()
    return ballot


@router.get(
    "/v1/governance/proposals/{proposal_id}/results",
    responses=problem_responses(401, 403, 404, 409, 422),
    summary="The result of a closed vote, its chain head and turnout",
)
async def results(
    proposal_id: uuid.UUID, member: CurrentMember, governance: Governance
) -> ResultRead:
    return await governance.results(proposal_id)


@router.get(
    "/v1/governance/proposals/{proposal_id}/publication",
    responses=problem_responses(404, 409, 422),
    summary="The published file of a closed vote (public): check it with "
    "`python -m governance.verify`",
)
async def publication(proposal_id: uuid.UUID, governance: Governance) -> dict[str, Any]:
    return await governance.publication(proposal_id)


@router.get(
    "/v1/governance/audit",
    responses=problem_responses(401, 403, 422),
    summary="The hash-chained log of every governance action, in order, in pages",
)
async def audit_log(
    member: CurrentMember,
    governance: Governance,
    after: Annotated[int, Query(ge=0, description="The last position already read")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
    proposal_id: uuid.UUID | None = None,
) -> list[AuditEntryRead]:
    return await governance.audit_entries(after, limit, proposal_id)


@router.post(
    "/v1/admin/governance/emergency-changes",
    status_code=status.HTTP_201_CREATED,
    responses=problem_responses(401, 403, 409, 413, 422),
    summary="Lower the surge cap or a zone surcharge now, for 1-14 days unless members ratify it",
)
async def enact_emergency_change(
    body: EmergencyChangeCreate, admin: AdminOnly, uow: Uow, governance: Governance
) -> EmergencyChangeRead:
    change = await governance.enact_emergency(admin.user_id, body)
    await uow.commit()
    return change


@router.get(
    "/v1/fares/upcoming",
    responses=problem_responses(500),
    summary="Fare changes decided and not yet in force, soonest first (public)",
)
async def upcoming_fare_changes(governance: Governance) -> list[UpcomingFareChange]:
    return await governance.upcoming_fare_changes()
