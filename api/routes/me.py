from __future__ import annotations

import uuid

from fastapi import APIRouter

from api.deps import (
    Accounts,
    CurrentDriver,
    CurrentMember,
    CurrentPrincipal,
    CurrentRider,
    Memberships,
)
from api.problems import problem_responses
from api.schemas import AccountRead
from governance.schemas import MembershipChangeRead, MembershipRead
from infra.errors import NotFound

router = APIRouter(prefix="/v1", tags=["me"])


async def _account(
    user_id: uuid.UUID, accounts: Accounts, memberships: Memberships | None
) -> AccountRead:
    user = await accounts.get_user(user_id)
    if user is None:
        raise NotFound("This account no longer exists")
    membership = await memberships.get(user_id) if memberships is not None else None
    return AccountRead(user=user, membership=membership)


@router.get("/me", responses=problem_responses(401, 404), summary="Who am I")
async def me(
    principal: CurrentPrincipal, accounts: Accounts, memberships: Memberships
) -> AccountRead:
    return await _account(principal.user_id, accounts, memberships)


@router.get(
    "/riders/me", responses=problem_responses(401, 403, 404), summary="The rider's own profile"
)
async def rider_me(rider: CurrentRider, accounts: Accounts) -> AccountRead:
    return await _account(rider.user_id, accounts, None)


@router.get(
    "/drivers/me",
    responses=problem_responses(401, 403, 404),
    summary="The driver's own profile and membership",
)
async def driver_me(
    driver: CurrentDriver, accounts: Accounts, memberships: Memberships
) -> AccountRead:
    return await _account(driver.user_id, accounts, memberships)


@router.get(
    "/drivers/me/membership/history",
    responses=problem_responses(401, 403),
    summary="Every change of the driver's membership, with who made it and why",
)
async def driver_membership_history(
    driver: CurrentDriver, memberships: Memberships
) -> list[MembershipChangeRead]:
    return await memberships.history(driver.user_id)


@router.get(
    "/members/me",
    responses=problem_responses(401, 403),
    summary="The member's own membership (active members only)",
)
async def member_me(member: CurrentMember) -> MembershipRead:
    return member
