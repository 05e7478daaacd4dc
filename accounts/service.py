from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from accounts.contact import normalise_email, normalise_phone
from accounts.errors import AccountDisabled, InvalidCredentials, InvalidToken, RefreshTokenReused
from accounts.events import SessionRevoked, UserRegistered
from accounts.models import RefreshToken, Role, User
from accounts.passwords import Passwords
from accounts.repository import RefreshTokenRepository, UserRepository
from accounts.schemas import RegisterRequest, UserRead
from accounts.tokens import hash_refresh_token, issue_access_token, new_refresh_token
from infra.clock import Clock
from infra.events import EventBuffer
from infra.ids import new_id
from infra.settings import AuthSettings


@dataclass(frozen=True, slots=True)
class IssuedTokens:
    user_id: uuid.UUID
    session_id: uuid.UUID
    refresh_token_id: uuid.UUID
    access_token: str
    access_expires_at: datetime
    refresh_token: str
    refresh_expires_at: datetime


@dataclass(frozen=True, slots=True)
class LoginIdentifier:
    email: str | None
    phone: str | None

    @classmethod
    def parse(cls, login: str) -> LoginIdentifier:
        try:
            if "@" in login:
                return cls(email=normalise_email(login), phone=None)
            return cls(email=None, phone=normalise_phone(login))
        except ValueError:
            return cls(email=None, phone=None)

    def rate_limit_key(self, client: str) -> str:
        # Per login and client address: a stranger hammering someone's login must not
        # lock its owner out from everywhere.
        return f"ratelimit:login:{client}:{self.email or self.phone or 'unparseable'}"


class AccountService:
    def __init__(
        self,
        session: AsyncSession,
        settings: AuthSettings,
        passwords: Passwords,
        clock: Clock,
        events: EventBuffer,
    ) -> None:
        self.users = UserRepository(session)
        self.tokens = RefreshTokenRepository(session)
        self.settings = settings
        self.passwords = passwords
        self.clock = clock
        self.events = events

    async def register(self, data: RegisterRequest) -> UserRead:
        return await self.create_user(
            role=Role(data.role),
            email=data.email,
            phone=data.phone,
            full_name=data.full_name,
            password=data.password,
        )

    async def create_user(
        self, *, role: Role, email: str, phone: str | None, full_name: str, password: str
    ) -> UserRead:
        now = self.clock.now()
        user = User(
            id=new_id(),
            role=role.value,
            email=normalise_email(email),
            phone=normalise_phone(phone) if phone else None,
            full_name=full_name,
            password_hash=await self.passwords.hash(password),
            created_at=now,
            updated_at=now,
        )
        await self.users.add(user)
        self.events.record(UserRegistered(occurred_at=now, user_id=user.id, role=role.value))
        return UserRead.model_validate(user)

    async def get_user(self, user_id: uuid.UUID) -> UserRead | None:
        user = await self.users.get(user_id)
        return UserRead.model_validate(user) if user else None

    async def login(self, login: LoginIdentifier, password: str) -> IssuedTokens:
        user = await self.users.get_by_login(login.email, login.phone)
        # Verify even when nobody matched, so timing does not reveal which logins exist.
        if not await self.passwords.verify(user.password_hash if user else None, password):
            raise InvalidCredentials
        assert user is not None
        if user.disabled_at is not None:
            raise AccountDisabled
        if self.passwords.needs_rehash(user.password_hash):
            await self.users.set_password_hash(user.id, await self.passwords.hash(password))
        return await self._issue(user, family_id=new_id())

    async def refresh(self, refresh_token: str) -> IssuedTokens:
        """Rotates a refresh token. Presenting one that was already rotated means it was
        copied: the whole family is revoked (flushed, so the caller must commit before it
        raises) and ``RefreshTokenReused`` is raised."""
        now = self.clock.now()
        stored = await self.tokens.get_by_hash(hash_refresh_token(refresh_token))
        if stored is None or stored.revoked_at is not None or stored.expires_at <= now:
            raise InvalidToken("The refresh token is unknown, expired or revoked")
        if not await self.tokens.mark_used(stored.id, now):
            await self.revoke_session(stored.user_id, stored.family_id, reason="reuse")
            raise RefreshTokenReused(stored.family_id)
        user = await self.users.get(stored.user_id)
        if user is None or user.disabled_at is not None:
            raise AccountDisabled
        issued = await self._issue(user, family_id=stored.family_id)
        await self.tokens.set_replaced_by(stored.id, issued.refresh_token_id)
        return issued

    async def revoke_session(self, user_id: uuid.UUID, session_id: uuid.UUID, reason: str) -> None:
        now = self.clock.now()
        await self.tokens.revoke_family(session_id, now, reason)
        self.events.record(
            SessionRevoked(occurred_at=now, user_id=user_id, session_id=session_id, reason=reason)
        )

    async def _issue(self, user: User, family_id: uuid.UUID) -> IssuedTokens:
        now = self.clock.now()
        access, access_expires_at = issue_access_token(
            self.settings, user_id=user.id, role=Role(user.role), session_id=family_id, now=now
        )
        refresh = new_refresh_token()
        refresh_expires_at = now + timedelta(seconds=self.settings.refresh_token_ttl_s)
        row = await self.tokens.add(
            RefreshToken(
                id=new_id(),
                family_id=family_id,
                user_id=user.id,
                token_hash=hash_refresh_token(refresh),
                created_at=now,
                expires_at=refresh_expires_at,
            )
        )
        return IssuedTokens(
            user_id=user.id,
            session_id=family_id,
            refresh_token_id=row.id,
            access_token=access,
            access_expires_at=access_expires_at,
            refresh_token=refresh,
            refresh_expires_at=refresh_expires_at,
        )
