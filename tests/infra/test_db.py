"""infra.db: the units of work, and the asyncpg connection under a session."""

from __future__ import annotations

import asyncio

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from infra.db import create_sessionmaker, driver_connection


async def test_the_driver_connection_runs_in_the_sessions_transaction(
    engine: AsyncEngine,
) -> None:
    async with create_sessionmaker(engine)() as session:
        # The session's first statement: no BEGIN has been sent yet.
        driver = await driver_connection(session)
        assert driver.is_in_transaction()
        started = await driver.fetchval("SELECT now()")
        await asyncio.sleep(0.05)
        # now() is the transaction's start: the same for both, as one transaction.
        assert (await session.execute(text("SELECT now()"))).scalar_one() == started
        await session.rollback()
        assert not driver.is_in_transaction()


async def test_the_driver_connection_joins_a_transaction_already_begun(
    engine: AsyncEngine,
) -> None:
    async with create_sessionmaker(engine)() as session:
        started = (await session.execute(text("SELECT now()"))).scalar_one()
        await asyncio.sleep(0.05)
        driver = await driver_connection(session)
        assert await driver.fetchval("SELECT now()") == started
        await session.rollback()
