from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from accounts.errors import AccountAlreadyExists
from accounts.models import RefreshToken, User


class UserRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, user_id: uuid.UUID) -> User | None:
        return await self.session.get(User, user_id)

    async def get_by_login(self, email: str | None, phone: str | None) -> User | None:
        clauses = []
        if email is not None:
            clauses.append(User.email == email)
        if phone is not None:
            clauses.append(User.phone == phone)
        if not clauses:
            return None
        result = await self.session.execute(select(User).where(or_(*clauses)).limit(1))
        return result.scalar_one_or_none()

    async def add(self, user: User) -> User:
        """Inserts the user; a taken email or phone (even by a concurrent request) is a 409."""
        try:
            async with self.session.begin_nested():
                self.session.add(user)
                await self.session.flush()
        except IntegrityError as exc:
            raise AccountAlreadyExists from exc
        return user

    async def set_password_hash(self, user_id: uuid.UUID, password_hash: str) -> None:
        await self.session.execute(
            update(User).where(User.id == user_id).values(password_hash=password_hash)
        )


class RefreshTokenRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, token: RefreshToken) -> RefreshToken:
        self.session.add(token)
        await self.session.flush()
        return token

    async def get_by_hash(self, token_hash: str) -> RefreshToken | None:
        result = await self.session.execute(
            select(RefreshToken).where(RefreshToken.token_hash == token_hash)
        )
        return result.scalar_one_or_none()

    async def mark_used(self, token_id: uuid.UUID, now: datetime) -> bool:
        """Compare-and-set: only one caller can rotate a given token."""
        result = await self.session.execute(
            update(RefreshToken)
            .where(
                RefreshToken.id == token_id,
                RefreshToken.used_at.is_(None),
                RefreshToken.revoked_at.is_(None),
                RefreshToken.expires_at > now,
            )
            .values(used_at=now)
            .returning(RefreshToken.id)
        )
        return result.scalar_one_or_none() is not None

    async def set_replaced_by(self, token_id: uuid.UUID, replaced_by: uuid.UUID) -> None:
        await self.session.execute(
            update(RefreshToken)
            .where(RefreshToken.id == token_id)
            .values(replaced_by_id=replaced_by)
        )

    async def revoke_family(self, family_id: uuid.UUID, now: datetime, reason: str) -> int:
        result = await self.session.execute(
            update(RefreshToken)
            .where(RefreshToken.family_id == family_id, RefreshToken.revoked_at.is_(None))
            .values(revoked_at=now, revoked_reason=reason)
            .returning(RefreshToken.id)
        )
        return len(result.scalars().all())

    async def family_revoked(self, family_id: uuid.UUID) -> bool:
        result = await self.session.execute(
            select(RefreshToken.id)
            .where(RefreshToken.family_id == family_id, RefreshToken.revoked_at.is_not(None))
            .limit(1)
        )
        return result.scalar_one_or_none() is not None
