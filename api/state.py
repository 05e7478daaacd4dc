"""What the api process holds for its lifetime: pools, clients, settings."""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from accounts.passwords import Passwords
from infra.clock import Clock
from infra.settings import Settings
from payments.stripe_gateway import GatewayProtocol


@dataclass
class Resources:
    settings: Settings
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    redis: Redis
    passwords: Passwords
    clock: Clock
    gateway: GatewayProtocol
