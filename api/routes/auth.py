from __future__ import annotations

from fastapi import APIRouter, Request, status

from accounts.errors import LoginRateLimited, RefreshTokenReused
from accounts.models import Role
from accounts.revocations import SessionRevocations
from accounts.schemas import LoginRequest, RefreshRequest, RegisterRequest, TokenPair
from accounts.service import IssuedTokens, LoginIdentifier
from api.deps import Accounts, CurrentPrincipal, Memberships, RedisDep, SettingsDep, Uow
from api.problems import problem_responses
from api.schemas import AccountRead
from infra import ratelimit

router = APIRouter(prefix="/v1/auth", tags=["auth"])


def _pair(issued: IssuedTokens, access_ttl_s: int) -> TokenPair:
    return TokenPair(
        access_token=issued.access_token,
        refresh_token=issued.refresh_token,
        expires_in=access_ttl_s,
        refresh_expires_at=issued.refresh_expires_at,
    )


@router.post(
    "/register",
    status_code=status.HTTP_201_CREATED,
    responses=problem_responses(409, 413, 422),
    summary="Create a rider or driver account",
)
async def register(
    body: RegisterRequest, uow: Uow, accounts: Accounts, memberships: Memberships
) -> AccountRead:
    user = await accounts.register(body)
    membership = None
    if user.role == Role.driver.value:
        # Every driver is an applicant member from the start: the co-op is theirs to join.
        membership = await memberships.open_application(user.id, reason="registered as driver")
    await uow.commit()
    return AccountRead(user=user, membership=membership)


@router.post(
    "/login",
    responses=problem_responses(401, 403, 413, 422, 429),
    summary="Exchange a login and password for tokens",
)
async def login(
    body: LoginRequest,
    request: Request,
    uow: Uow,
    accounts: Accounts,
    redis: RedisDep,
    settings: SettingsDep,
) -> TokenPair:
    identifier = LoginIdentifier.parse(body.login)
    limit_key = identifier.rate_limit_key(request.client.host if request.client else "unknown")
    limit = await ratelimit.hit(
        redis,
        limit_key,
        settings.auth.login_attempts_per_window,
        settings.auth.login_window_s,
    )
    if not limit.allowed:
        raise LoginRateLimited(retry_after_s=limit.retry_after_s)
    issued = await accounts.login(identifier, body.password)
    await uow.commit()
    await ratelimit.reset(redis, limit_key)
    return _pair(issued, settings.auth.access_token_ttl_s)


@router.post(
    "/refresh",
    responses=problem_responses(401, 403, 413, 422),
    summary="Rotate a refresh token: the old one stops working",
)
async def refresh(
    body: RefreshRequest, uow: Uow, accounts: Accounts, redis: RedisDep, settings: SettingsDep
) -> TokenPair:
    try:
        issued = await accounts.refresh(body.refresh_token)
    except RefreshTokenReused as reused:
        # The revocation of the family must survive the error response.
        await uow.commit()
        await SessionRevocations(redis, settings.auth.access_token_ttl_s).revoke(reused.session_id)
        raise
    await uow.commit()
    return _pair(issued, settings.auth.access_token_ttl_s)


@router.post(
    "/logout",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=problem_responses(401),
    summary="End this session: its refresh and access tokens stop working",
)
async def logout(
    principal: CurrentPrincipal,
    uow: Uow,
    accounts: Accounts,
    redis: RedisDep,
    settings: SettingsDep,
) -> None:
    await accounts.revoke_session(principal.user_id, principal.session_id, reason="logout")
    await uow.commit()
    await SessionRevocations(redis, settings.auth.access_token_ttl_s).revoke(principal.session_id)
