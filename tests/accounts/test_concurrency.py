"""Races between real transactions, each on its own connection, committed for real."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from accounts.errors import AccountAlreadyExists, RefreshTokenReused
from accounts.models import RefreshToken, Role, User
from accounts.passwords import Passwords
from accounts.service import AccountService, LoginIdentifier
from infra.clock import SystemClock
from infra.events import EventBuffer
from infra.settings import Settings
from tests.factories import PASSWORD

EMAIL = "race@example.org"


@pytest.fixture
async def committing(engine: AsyncEngine) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    maker = async_sessionmaker(engine, expire_on_commit=False)
    yield maker
    async with maker() as session:
        user_ids = select(User.id).where(User.email == EMAIL)
        await session.execute(delete(RefreshToken).where(RefreshToken.user_id.in_(user_ids)))
        await session.execute(delete(User).where(User.email == EMAIL))
        await session.commit()


def _service(session: AsyncSession, settings: Settings, passwords: Passwords) -> AccountService:
    return AccountService(session, settings.auth, passwords, SystemClock(), EventBuffer())


async def test_concurrent_duplicate_registrations_make_one_account(
    committing: async_sessionmaker[AsyncSession], settings: Settings, passwords: Passwords
) -> None:
    async def register(phone: str) -> str:
        async with committing() as session:
            try:
                await _service(session, settings, passwords).create_user(
                    role=Role.rider, email=EMAIL, phone=phone, full_name="Racer", password=PASSWORD
                )
                await session.commit()
                return "created"
            except AccountAlreadyExists:
                await session.rollback()
                return "conflict"

    outcomes = await asyncio.gather(*(register(f"+1202555{7000 + i}") for i in range(6)))
    assert sorted(outcomes) == ["conflict"] * 5 + ["created"]


async def test_concurrent_refreshes_of_one_token_let_one_win(
    committing: async_sessionmaker[AsyncSession], settings: Settings, passwords: Passwords
) -> None:
    async with committing() as session:
        service = _service(session, settings, passwords)
        await service.create_user(
            role=Role.rider, email=EMAIL, phone="+12025557100", full_name="R", password=PASSWORD
        )
        issued = await service.login(LoginIdentifier.parse(EMAIL), PASSWORD)
        await session.commit()

    async def refresh() -> str:
        async with committing() as session:
            try:
                await _service(session, settings, passwords).refresh(issued.refresh_token)
                await session.commit()
                return "rotated"
            except RefreshTokenReused:
                await session.commit()
                return "reused"

    outcomes = await asyncio.gather(refresh(), refresh(), refresh())
    assert sorted(outcomes) == ["reused", "reused", "rotated"]
    async with committing() as session:
        live = await session.execute(
            select(RefreshToken.id).where(
                RefreshToken.family_id == issued.session_id, RefreshToken.revoked_at.is_(None)
            )
        )
        assert live.all() == []  # the reuse revoked the winner's new token too
