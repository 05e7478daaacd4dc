from __future__ import annotations

import asyncio

from alembic import context
from geoalchemy2 import alembic_helpers
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from infra.settings import DatabaseSettings
from ridecoop.models import metadata

config = context.config
database_url = config.get_main_option("sqlalchemy.url") or DatabaseSettings().async_url


def _configure(connection: Connection | None = None, url: str | None = None) -> None:
    # GeoAlchemy2's helpers: spatial columns and their indexes are rendered and created
    # the way PostGIS wants (no duplicate GiST index, geometry types imported).
    context.configure(
        connection=connection,
        url=url,
        target_metadata=metadata,
        include_object=alembic_helpers.include_object,
        process_revision_directives=alembic_helpers.writer,
        render_item=alembic_helpers.render_item,
        compare_type=True,
        literal_binds=url is not None,
    )


def _run_sync(connection: Connection) -> None:
    _configure(connection=connection)
    with context.begin_transaction():
        context.run_migrations()


async def _run_online() -> None:
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run_sync)
    finally:
        await engine.dispose()


if context.is_offline_mode():
    _configure(url=database_url)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_run_online())
