"""The ASGI entry point uvicorn imports in each api worker process."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from infra.settings import Settings, get_settings
from ridecoop.asgi import app_factory


@pytest.fixture
def collector() -> Iterator[tuple[int, int, int]]:
    """Nothing frozen before the test; the thresholds it found, and nothing frozen, after."""
    thresholds = gc.get_threshold()
    gc.unfreeze()
    yield thresholds
    gc.unfreeze()
    gc.set_threshold(*thresholds)


async def test_the_app_uvicorn_serves_freezes_its_start_up_with_the_configured_threshold(
    settings: Settings, collector: tuple[int, int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    # As ``ridecoop api`` runs it: built by the factory from the environment, started by
    # its own lifespan.
    monkeypatch.setenv("RIDECOOP_DATABASE_URL", str(settings.database.url))
    monkeypatch.setenv("RIDECOOP_REDIS_URL", str(settings.redis.url))
    monkeypatch.setenv("RIDECOOP_LOG_LEVEL", "WARNING")
    monkeypatch.setenv("RIDECOOP_API_GC_GEN2_THRESHOLD", "555")
    get_settings.cache_clear()
    try:
        app = app_factory()
        assert gc.get_freeze_count() == 0
        async with app.router.lifespan_context(app):
            assert gc.get_threshold() == (collector[0], collector[1], 555)
            assert gc.get_freeze_count() > 0
            assert id(app) not in {id(o) for o in gc.get_objects()}
    finally:
        get_settings.cache_clear()
