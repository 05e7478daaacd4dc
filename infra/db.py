"""Database kernel: the declarative base, engines and sessions.

Sessions are opened by the request or task boundary, which also commits; services only
``flush()``.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import DateTime, MetaData, Uuid, text
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase

from infra.settings import DatabaseSettings

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {  # noqa: RUF012 (SQLAlchemy reads it as a class attribute)
        datetime: DateTime(timezone=True),
        uuid.UUID: Uuid(as_uuid=True),
    }


def create_engine(settings: DatabaseSettings) -> AsyncEngine:
    return create_async_engine(
        settings.async_url,
        pool_size=settings.pool_size,
        max_overflow=settings.max_overflow,
        pool_pre_ping=True,
        connect_args={
            "server_settings": {
                "statement_timeout": str(settings.statement_timeout_ms),
                "application_name": "ridecoop",
            }
        },
    )


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


@asynccontextmanager
async def transaction(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> AsyncIterator[AsyncSession]:
    """A unit of work for tasks and scripts: commit on success, roll back on error."""
    async with sessionmaker() as session:
        try:
            yield session
            await session.commit()
        except BaseException:
            await session.rollback()
            raise


async def insert_unless_present(session: AsyncSession, row: Base) -> bool:
    """Inserts ``row`` unless one with the same primary key exists (perhaps just inserted
    by a concurrent transaction, which this waits for); True if this call inserted it.
    Columns left unset take their server defaults."""
    mapper = sa_inspect(type(row))
    values = {c.key: getattr(row, c.key) for c in mapper.columns}
    values = {key: value for key, value in values.items() if value is not None}
    inserted = await session.execute(
        pg_insert(type(row))
        .values(**values)
        .on_conflict_do_nothing(index_elements=list(mapper.primary_key))
        .returning(*mapper.primary_key)
    )
    return inserted.first() is not None


async def driver_connection(session: AsyncSession) -> Any:
    """The asyncpg connection under ``session``, inside the session's transaction. For
    the few statements on a path where SQLAlchemy's own work per call (about a
    millisecond for a statement of many array parameters) is worth saving: they take
    ``$1``-style parameters, and asyncpg's errors, not SQLAlchemy's, which roll the
    session's transaction back all the same."""
    connection = await session.connection()
    raw = await connection.get_raw_connection()
    driver = raw.driver_connection
    if driver is None:
        raise RuntimeError("the session's connection is closed")
    if not driver.is_in_transaction():
        # SQLAlchemy's asyncpg adapter sends BEGIN with the session's first statement:
        # without one yet, asyncpg would run this statement on its own, committed.
        await session.execute(text("SELECT 1"))
    return driver


async def ping(engine: AsyncEngine) -> None:
    async with engine.connect() as connection:
        await connection.execute(text("SELECT 1"))
