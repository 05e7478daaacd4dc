"""Tests run on real PostgreSQL + PostGIS and Redis.

One database per test run, migrated the way production migrates it; each test runs in a
transaction that is rolled back, so tests never see each other's rows. Redis uses its own
logical database (``RIDECOOP_TEST_REDIS_DB``, 15 by default), flushed before each test.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from collections.abc import AsyncIterator, Iterator

import asyncpg
import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker

from accounts.passwords import Passwords
from api.app import create_app
from api.state import Resources
from infra.clock import SystemClock
from infra.db import create_engine
from infra.deploy.services import pid_alive
from infra.fanout import Fanout
from infra.migrations import upgrade
from infra.redis import create_redis
from infra.settings import (
    AuthSettings,
    CoreSettings,
    DatabaseSettings,
    Environment,
    RedisSettings,
    Settings,
)
from payments.stripe_gateway import StripeGateway

TEST_JWT_SECRET = "test-secret-0123456789abcdef0123456789abcdef"


def _server_url() -> str:
    url = os.environ.get("RIDECOOP_DATABASE_URL", "postgresql+asyncpg://root@127.0.0.1:5432/x")
    return url.rsplit("/", 1)[0]


def _plain(url: str) -> str:
    return re.sub(r"^postgresql\+asyncpg://", "postgresql://", url)


def _redis_url() -> str:
    base = os.environ.get("RIDECOOP_REDIS_URL", "redis://127.0.0.1:6379/0")
    return base.rsplit("/", 1)[0] + "/" + os.environ.get("RIDECOOP_TEST_REDIS_DB", "15")


async def _create_test_database(name: str) -> None:
    admin = await asyncpg.connect(_plain(_server_url()) + "/postgres")
    try:
        # Databases left behind by runs that were killed are dropped here.
        for row in await admin.fetch(
            "SELECT datname FROM pg_database WHERE datname LIKE 'ridecoop_test_%'"
        ):
            pid = row["datname"].rsplit("_", 1)[-1]
            if pid.isdigit() and not pid_alive(int(pid)):
                await admin.execute(f'DROP DATABASE IF EXISTS "{row["datname"]}" WITH (FORCE)')
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()


async def _drop_test_database(name: str) -> None:
    admin = await asyncpg.connect(_plain(_server_url()) + "/postgres")
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    name = f"ridecoop_test_{os.getpid()}"
    asyncio.run(_create_test_database(name))
    url = f"{_server_url()}/{name}"
    upgrade(url)
    yield url
    asyncio.run(_drop_test_database(name))


@pytest.fixture(scope="session")
def settings(database_url: str) -> Settings:
    return Settings(
        core=CoreSettings(env=Environment.test, log_json=True, log_level="WARNING"),
        database=DatabaseSettings(url=database_url, pool_size=5),
        redis=RedisSettings(url=_redis_url()),
        # Cheap hashes: the tests check behaviour, not the cost.
        auth=AuthSettings(
            jwt_secret=TEST_JWT_SECRET,
            argon2_time_cost=1,
            argon2_memory_kib=1024,
            login_attempts_per_window=5,
        ),
    )


@pytest.fixture(scope="session")
async def engine(settings: Settings) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(settings.database)
    yield engine
    await engine.dispose()


@pytest.fixture(scope="session")
async def redis_client(settings: Settings) -> AsyncIterator[Redis]:
    client = create_redis(settings.redis)
    yield client
    await client.flushdb()
    await client.aclose()


@pytest.fixture(autouse=True)
async def _clean_redis(redis_client: Redis) -> None:
    await redis_client.flushdb()


@pytest.fixture
async def connection(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    async with engine.connect() as connection:
        transaction = await connection.begin()
        yield connection
        if transaction.is_active:
            await transaction.rollback()


@pytest.fixture
def sessionmaker(connection: AsyncConnection) -> async_sessionmaker[AsyncSession]:
    # Every session of the test shares the outer transaction; their commits only release
    # savepoints, and the test's rollback undoes everything.
    return async_sessionmaker(
        bind=connection,
        expire_on_commit=False,
        autoflush=False,
        join_transaction_mode="create_savepoint",
    )


@pytest.fixture
async def session(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> AsyncIterator[AsyncSession]:
    async with sessionmaker() as session:
        yield session


@pytest.fixture(scope="session")
def passwords(settings: Settings) -> Passwords:
    return Passwords(settings.auth)


@pytest.fixture
async def resources(
    settings: Settings,
    engine: AsyncEngine,
    sessionmaker: async_sessionmaker[AsyncSession],
    redis_client: Redis,
    passwords: Passwords,
) -> AsyncIterator[Resources]:
    # The gateway points at Stripe's real address, which these tests never reach: the
    # payments tests swap in one on the loopback fakes.
    gateway = StripeGateway(settings.stripe)
    yield Resources(
        settings=settings,
        engine=engine,
        sessionmaker=sessionmaker,
        redis=redis_client,
        passwords=passwords,
        clock=SystemClock(),
        gateway=gateway,
    )
    await gateway.aclose()


@pytest.fixture
def app(settings: Settings, resources: Resources) -> FastAPI:
    return create_app(settings, resources=resources)


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client


@pytest.fixture
async def live_server(app: FastAPI) -> AsyncIterator[str]:
    """The app behind a real uvicorn on a free loopback port, for websocket tests. The
    lifespan is off (the test owns the resources), so the process's pub/sub fan-out,
    which the lifespan would start, is started here."""
    fanout = Fanout(app.state.resources.redis)
    await fanout.start()
    app.state.fanout = fanout
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, lifespan="off")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"127.0.0.1:{port}"
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, timeout=10)
    finally:
        await fanout.stop()
