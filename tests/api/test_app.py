"""The api process's start-up: what it built is frozen out of garbage collections, and
full collections are spaced out by RIDECOOP_API_GC_GEN2_THRESHOLD."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from api.app import create_app
from api.state import Resources
from infra.settings import ApiSettings, Settings


@pytest.fixture
def collector() -> Iterator[tuple[int, int, int]]:
    """Nothing frozen before the test; the thresholds it found, and nothing frozen, after."""
    thresholds = gc.get_threshold()
    gc.unfreeze()
    yield thresholds
    gc.unfreeze()
    gc.set_threshold(*thresholds)


def test_the_default_makes_full_collections_rarer_than_pythons() -> None:
    assert ApiSettings().gc_gen2_threshold > 10


async def test_the_start_up_freezes_what_it_built_and_sets_the_third_threshold(
    settings: Settings, collector: tuple[int, int, int]
) -> None:
    # A value no one else uses, to tell it from Python's default and from ours.
    tuned = settings.model_copy(update={"api": ApiSettings(gc_gen2_threshold=777)})
    # The lifespan that opens the process's pools, as uvicorn runs it in production.
    app = create_app(tuned)
    assert gc.get_freeze_count() == 0
    async with app.router.lifespan_context(app):
        assert gc.get_threshold() == (collector[0], collector[1], 777)
        assert gc.get_freeze_count() > 0
        # The app, its routes and the pools it opened are out of every collection's
        # sight, a full one's included (get_objects lists what collections walk).
        walked = {id(o) for o in gc.get_objects()}
        assert id(app) not in walked
        assert id(app.router) not in walked
        assert id(app.state.resources) not in walked
        assert id(app.state.driver_channels) not in walked


async def test_an_app_given_its_resources_leaves_the_collector_alone(
    settings: Settings, resources: Resources, collector: tuple[int, int, int]
) -> None:
    # Tests build many apps in one process: freezing there would keep each one's
    # garbage for good.
    app = create_app(settings, resources=resources)
    async with app.router.lifespan_context(app):
        assert gc.get_freeze_count() == 0
        assert gc.get_threshold() == collector
        assert id(app) in {id(o) for o in gc.get_objects()}
