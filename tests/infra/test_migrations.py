"""The migrations are the schema: they build it from nothing, match the models, and
come down again cleanly."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

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
