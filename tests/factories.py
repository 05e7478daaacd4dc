"""Typed factories: accounts made through the real API, as a client would make them."""

from __future__ import annotations

import itertools
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncSession

from accounts.models import Role
from accounts.passwords import Passwords
from accounts.service import AccountService
from infra.clock import SystemClock
from infra.events import EventBuffer
from infra.settings import Settings

PASSWORD = "correct horse battery staple"
_counter = itertools.count(1)


@dataclass(frozen=True)
class Account:
    user_id: uuid.UUID
    email: str
    phone: str
    role: str
    access_token: str
    refresh_token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}


def registration(role: str = "rider", **overrides: Any) -> dict[str, Any]:
    n = next(_counter)
    body: dict[str, Any] = {
        "role": role,
        "email": f"person{n}.{uuid.uuid4().hex[:8]}@example.org",
        "phone": f"+1202555{n % 10000:04d}",
        "full_name": f"Person {n}",
        "password": PASSWORD,
    }
    body.update(overrides)
    return body


async def login(client: httpx.AsyncClient, login: str, password: str = PASSWORD) -> dict[str, Any]:
    response = await client.post("/v1/auth/login", json={"login": login, "password": password})
    assert response.status_code == 200, response.text
    tokens: dict[str, Any] = response.json()
    return tokens


async def make_account(client: httpx.AsyncClient, role: str = "rider", **overrides: Any) -> Account:
    body = registration(role, **overrides)
    response = await client.post("/v1/auth/register", json=body)
    assert response.status_code == 201, response.text
    user = response.json()["user"]
    tokens = await login(client, user["email"])
    return Account(
        user_id=uuid.UUID(user["id"]),
        email=user["email"],
        phone=user["phone"],
        role=user["role"],
        access_token=tokens["access_token"],
        refresh_token=tokens["refresh_token"],
    )


async def make_admin(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings
) -> Account:
    """Admins are not self-registered; they are made as `ridecoop create-admin` makes them."""
    service = AccountService(
        session, settings.auth, Passwords(settings.auth), SystemClock(), EventBuffer()
    )
    n = next(_counter)
    user = await service.create_user(
        role=Role.admin,
        email=f"admin{n}.{uuid.uuid4().hex[:8]}@example.org",
        phone=None,
        full_name=f"Admin {n}",
        password=PASSWORD,
    )
    await session.commit()
    tokens = await login(client, user.email)
    return Account(
        user_id=user.id,
        email=user.email,
        phone="",
        role="admin",
        access_token=tokens["access_token"],
        refresh_token=tokens["refresh_token"],
    )
