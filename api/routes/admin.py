from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import AdminOnly, Memberships, Uow
from api.problems import problem_responses
from governance.errors import MembershipNotFound
from governance.models import MembershipStatus
from governance.schemas import MembershipChangeRead, MembershipRead, MembershipTransition

router = APIRouter(prefix="/v1/admin", tags=["admin"])


@router.get(
    "/members",
    responses=problem_responses(401, 403, 422),
    summary="Memberships, by status, in pages (pass the last user_id as `after`)",
)
async def list_members(
    admin: AdminOnly,
    memberships: Memberships,
    status: MembershipStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    after: uuid.UUID | None = None,
) -> list[MembershipRead]:
    return list(await memberships.list(status, limit, after))


@router.get(
    "/members/{user_id}",
    responses=problem_responses(401, 403, 404, 422),
    summary="One membership",
)
async def get_member(
    user_id: uuid.UUID, admin: AdminOnly, memberships: Memberships
) -> MembershipRead:
    membership = await memberships.get(user_id)
    if membership is None:
        raise MembershipNotFound
    return membership


@router.get(
    "/members/{user_id}/history",
    responses=problem_responses(401, 403, 422),
    summary="Every change of one membership",
)
async def member_history(
    user_id: uuid.UUID, admin: AdminOnly, memberships: Memberships
) -> list[MembershipChangeRead]:
    return await memberships.history(user_id)


@router.post(
    "/members/{user_id}/transitions",
    responses=problem_responses(401, 403, 404, 409, 413, 422),
    summary="Move a membership (admit with the share paid, suspend, reinstate, exit)",
)
async def transition_member(
    user_id: uuid.UUID,
    body: MembershipTransition,
    admin: AdminOnly,
    uow: Uow,
    memberships: Memberships,
) -> MembershipRead:
    membership = await memberships.transition(user_id, body, changed_by=admin.user_id)
    await uow.commit()
    return membership
