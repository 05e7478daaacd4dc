"""The migrations are the schema: they build it from nothing, match the models, and
come down again cleanly."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import asyncpg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from geoalchemy2 import alembic_helpers
from sqlalchemy import Connection, inspect
from sqlalchemy.ext.asyncio import create_async_engine

from infra.migrations import downgrade, upgrade
from ridecoop.models import metadata
from tests.conftest import _create_test_database, _drop_test_database

T = TypeVar("T")


@pytest.fixture
def scratch_url(database_url: str) -> Iterator[str]:
    name = f"ridecoop_test_scratch_{os.getpid()}"
    asyncio.run(_create_test_database(name))
    yield database_url.rsplit("/", 1)[0] + "/" + name
    asyncio.run(_drop_test_database(name))


def _inspect(url: str, probe: Callable[[Connection], T]) -> T:
    async def run() -> T:
        engine = create_async_engine(url)
        try:
            async with engine.connect() as connection:
                return await connection.run_sync(probe)
        finally:
            await engine.dispose()

    return asyncio.run(run())


def _schema_diff(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(
        connection,
        opts={"include_object": alembic_helpers.include_object, "compare_type": True},
    )
    return list(compare_metadata(context, metadata))


def _tables(connection: Connection) -> set[str]:
    return set(inspect(connection).get_table_names()) - {"spatial_ref_sys"}


def test_models_match_the_migrations(database_url: str) -> None:
    # The session's database was built by the migrations alone.
    assert _inspect(database_url, _schema_diff) == []


def test_downgrade_to_base_and_up_again(scratch_url: str) -> None:
    upgrade(scratch_url)
    assert "users" in _inspect(scratch_url, _tables)
    downgrade(scratch_url, "base")
    assert _inspect(scratch_url, _tables) == {"alembic_version"}
    upgrade(scratch_url)
    assert _inspect(scratch_url, _schema_diff) == []


def test_0009_gives_existing_decisions_their_candidates_driver_ids(scratch_url: str) -> None:
    upgrade(scratch_url, "0008")
    rider, quote, ride, decision = (uuid.uuid4() for _ in range(4))
    first, second = uuid.uuid4(), uuid.uuid4()
    candidates = [{"driver_id": str(first), "cost": 1.0}, {"driver_id": str(second), "cost": 2.0}]

    async def seed(connection: asyncpg.Connection) -> None:
        await connection.execute(
            """
            INSERT INTO users (id, role, email, phone, full_name, password_hash, created_at,
                               updated_at)
            VALUES ($1, 'rider', 'r@example.test', '+12025550100', 'R', 'x', now(), now())
            """,
            rider,
        )
        await connection.execute(
            """
            INSERT INTO quotes (id, rider_id, pickup, dropoff, policy_version_id, total_amount,
                                currency, fare, estimated_distance_m, estimated_duration_s,
                                created_at, expires_at)
            VALUES ($1, $2, 'SRID=4326;POINT(-73.98 40.75)', 'SRID=4326;POINT(-73.97 40.76)',
                    gen_random_uuid(), 1500, 'USD', '{}', 2000, 400, now(), now())
            """,
            quote,
            rider,
        )
        await connection.execute(
            """
            INSERT INTO rides (id, rider_id, quote_id, idempotency_key, status, region, pickup,
                               dropoff, pin, requested_at)
            VALUES ($1, $2, $3, 'k', 'matching', '842a107ffffffff',
                    'SRID=4326;POINT(-73.98 40.75)', 'SRID=4326;POINT(-73.97 40.76)', '1234',
                    now())
            """,
            ride,
            rider,
            quote,
        )
        await connection.execute(
            """
            INSERT INTO match_decisions (id, ride_id, region, policy, window_at,
                                         chosen_driver_id, candidates, params)
            VALUES ($1, $2, '842a107ffffffff', 'batched', now(), $3, $4::jsonb, '{}')
            """,
            decision,
            ride,
            first,
            json.dumps(candidates),
        )

    _with_connection(scratch_url, seed)
    upgrade(scratch_url)

    async def read(connection: asyncpg.Connection) -> list[uuid.UUID]:
        ids: list[uuid.UUID] = await connection.fetchval(
            "SELECT candidate_driver_ids FROM match_decisions WHERE id = $1", decision
        )
        return ids

    assert _with_connection(scratch_url, read) == [first, second]


def _with_connection(url: str, act: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
    async def run() -> T:
        connection = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
        try:
            return await act(connection)
        finally:
            await connection.close()

    return asyncio.run(run())
