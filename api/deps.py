"""Dependencies, declared once as ``Annotated`` aliases; routes stay thin."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import Depends, Request, WebSocket
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession

from accounts.errors import InvalidToken, RoleNotAllowed
from accounts.models import Role
from accounts.revocations import SessionRevocations
from accounts.schemas import UserRead
from accounts.service import AccountService
from accounts.tokens import Principal, decode_access_token
from api.state import Resources
from governance.schemas import MembershipRead
from governance.service import MembershipService
from infra.db import transaction
from infra.events import EventBuffer
from infra.pubsub import publish_events
from infra.settings import Settings
from payments.flows import PaymentFlows
from payments.service import PaymentService


def get_resources(request: Request) -> Resources:
    resources: Resources = request.app.state.resources
    return resources


ResourcesDep = Annotated[Resources, Depends(get_resources)]


def get_settings_dep(resources: ResourcesDep) -> Settings:
    return resources.settings


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]


def get_redis(resources: ResourcesDep) -> Redis:
    return resources.redis


RedisDep = Annotated[Redis, Depends(get_redis)]


class UnitOfWork:
    """The request's transaction. Routes call ``commit()``; events leave after it."""

    def __init__(self, session: AsyncSession, redis: Redis) -> None:
        self.session = session
        self.redis = redis
        self.events = EventBuffer()

    async def commit(self) -> None:
        await self.session.commit()
        await publish_events(self.redis, self.events.drain())


async def get_session(resources: ResourcesDep) -> AsyncIterator[AsyncSession]:
    async with resources.sessionmaker() as session:
        yield session


DbSession = Annotated[AsyncSession, Depends(get_session)]


async def get_uow(session: DbSession, redis: RedisDep) -> AsyncIterator[UnitOfWork]:
    uow = UnitOfWork(session, redis)
    try:
        yield uow
    finally:
        # Whatever was not committed is dropped: no half-written request survives.
        if session.in_transaction():
            await session.rollback()
        uow.events.clear()


Uow = Annotated[UnitOfWork, Depends(get_uow)]


def get_account_service(resources: ResourcesDep, uow: Uow) -> AccountService:
    return AccountService(
        uow.session,
        resources.settings.auth,
        resources.passwords,
        resources.clock,
        uow.events,
    )


Accounts = Annotated[AccountService, Depends(get_account_service)]


def get_membership_service(resources: ResourcesDep, uow: Uow) -> MembershipService:
    return MembershipService(uow.session, resources.clock, uow.events)


Memberships = Annotated[MembershipService, Depends(get_membership_service)]

_bearer = HTTPBearer(auto_error=False, description="An access token from /v1/auth/login")


async def authenticate(token: str | None, resources: Resources) -> Principal:
    """Decodes an access token and refuses it if its session was revoked."""
    if not token:
        raise InvalidToken("An access token is required (Authorization: Bearer …)")
    principal = decode_access_token(resources.settings.auth, token)
    revocations = SessionRevocations(resources.redis, resources.settings.auth.access_token_ttl_s)
    if await revocations.is_revoked(principal.session_id):
        raise InvalidToken("This session was logged out or revoked")
    return principal


async def get_principal(
    resources: ResourcesDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    return await authenticate(credentials.credentials if credentials else None, resources)


CurrentPrincipal = Annotated[Principal, Depends(get_principal)]


def require_role(role: Role, scope: str) -> Any:
    def dependency(principal: CurrentPrincipal) -> Principal:
        if principal.role is not role or not principal.has_scope(scope):
            raise RoleNotAllowed(f"This route is for {role.value}s", required_role=role.value)
        return principal

    return Depends(dependency)


CurrentRider = Annotated[Principal, require_role(Role.rider, "rides")]
CurrentDriver = Annotated[Principal, require_role(Role.driver, "drive")]
AdminOnly = Annotated[Principal, require_role(Role.admin, "admin")]


async def get_member(driver: CurrentDriver, memberships: Memberships) -> MembershipRead:
    # Membership is checked live, not from the token: a suspension takes effect at once.
    return await memberships.require_member(driver.user_id)


CurrentMember = Annotated[MembershipRead, Depends(get_member)]


async def websocket_principal(websocket: WebSocket) -> Principal:
    """Authenticates a websocket at connect: ``Authorization: Bearer`` or, for clients that
    cannot set headers, the ``access_token`` query parameter."""
    resources: Resources = websocket.app.state.resources
    header = websocket.headers.get("authorization", "")
    scheme, _, credentials = header.partition(" ")
    token = credentials if scheme.lower() == "bearer" else None
    return await authenticate(token or websocket.query_params.get("access_token"), resources)


def get_payment_flows(resources: ResourcesDep) -> PaymentFlows:
    # Flows open their own transactions: a Stripe call never runs inside one. One for the
    # process: concurrent completions are settled together (PaymentFlows.settle_ride).
    return resources.payments


Flows = Annotated[PaymentFlows, Depends(get_payment_flows)]


def get_payment_service(resources: ResourcesDep, uow: Uow) -> PaymentService:
    return PaymentService(uow.session, resources.clock)


Payments = Annotated[PaymentService, Depends(get_payment_service)]


async def get_current_user(principal: CurrentPrincipal, resources: ResourcesDep) -> UserRead:
    """The caller's account, read in a short transaction of its own, so routes that then
    call Stripe hold no database transaction open while they wait."""
    async with transaction(resources.sessionmaker) as session:
        service = AccountService(
            session, resources.settings.auth, resources.passwords, resources.clock, EventBuffer()
        )
        user = await service.get_user(principal.user_id)
    if user is None:
        raise InvalidToken("This account no longer exists")
    return user


CurrentUser = Annotated[UserRead, Depends(get_current_user)]
