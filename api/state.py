"""What the api process holds for its lifetime: pools, clients, settings."""

from __future__ import annotations

from dataclasses import dataclass, field

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from accounts.passwords import Passwords
from infra.clock import Clock
from infra.settings import Settings
from payments.flows import PaymentFlows
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
    # One per process, so that concurrent requests' settlements are batched together.
    payments: PaymentFlows = field(init=False)

    def __post_init__(self) -> None:
        self.payments = PaymentFlows(self.sessionmaker, self.gateway, self.clock)
