"""The FastAPI application: routes, error handlers, middleware, and the process's pools."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from accounts.passwords import Passwords
from api.middleware import BodySizeLimitMiddleware, RequestContextMiddleware
from api.problems import as_problem_media_type, install_problem_handlers, problem_responses
from api.routes import (
    admin,
    auth,
    dispatch_transparency,
    driver_ws,
    governance,
    health,
    me,
    payments,
    rides,
    statements,
    webhooks,
    ws,
)
from api.state import Resources
from dispatch.channel import ride_events_published
from infra.clock import Clock, SystemClock
from infra.db import create_engine, create_sessionmaker
from infra.logging import configure_logging, get_logger
from infra.pubsub import after_publish
from infra.redis import create_redis
from infra.settings import ApiSettings, Settings, get_settings
from payments.stripe_gateway import StripeGateway

log = get_logger(__name__)

DESCRIPTION = """
The ridecoop API: riders request rides, member drivers drive them, members govern prices.

Every error is `application/problem+json` (RFC 9457) with a stable `type`; see
docs/errors.md. Authenticate with `Authorization: Bearer <access token>` from
`POST /v1/auth/login`.
"""


def create_app(
    settings: Settings | None = None,
    *,
    resources: Resources | None = None,
    clock: Clock | None = None,
) -> FastAPI:
    """Builds the app. Tests pass ready ``resources`` (their own pools); otherwise the
    lifespan opens and closes the pools."""
    settings = settings or get_settings()
    configure_logging(settings.core.log_level, settings.core.log_json)
    # A ride's committed events also move its driver's live trip link and outbox.
    after_publish(ride_events_published)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if resources is not None:
            app.state.resources = resources
            yield
            return
        engine = create_engine(settings.database)
        redis = create_redis(settings.redis)
        gateway = StripeGateway(settings.stripe)
        app.state.resources = Resources(
            settings=settings,
            engine=engine,
            sessionmaker=create_sessionmaker(engine),
            redis=redis,
            passwords=Passwords(settings.auth),
            clock=clock or SystemClock(),
            gateway=gateway,
        )
        try:
            async with driver_ws.driver_channels(app.state.resources) as channels:
                app.state.driver_channels = channels
                # One Redis pub/sub connection for every socket of the process.
                app.state.fanout = channels.fanout
                freeze_start_up(settings.api)
                yield
        finally:
            await gateway.aclose()
            await redis.aclose()
            await engine.dispose()

    app = FastAPI(
        title="ridecoop",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        # Any route can fail unexpectedly; that too is a problem document.
        responses=problem_responses(500),
    )
    if resources is not None:
        app.state.resources = resources
    install_problem_handlers(app)
    for module in (
        health,
        auth,
        me,
        admin,
        payments,
        rides,
        statements,
        webhooks,
        governance,
        driver_ws,
        dispatch_transparency,
        ws,
    ):
        app.include_router(module.router)
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.api.max_body_bytes)
    app.add_middleware(RequestContextMiddleware)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = as_problem_media_type(
                get_openapi(
                    title=app.title,
                    version=app.version,
                    description=app.description,
                    routes=app.routes,
                )
            )
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def freeze_start_up(settings: ApiSettings) -> None:
    """Takes what start-up built out of the garbage collector's sight, and makes full
    collections rare. Run once the process is ready to serve, by the lifespan that opens
    the process's pools (an app given its ``resources``, as in tests, leaves the collector
    alone: a test process builds many apps, and a frozen object is never freed).

    A full collection stops the process while it walks every tracked object. An api
    process holds over 200k from start-up (modules, routes, schemas, mappers) that live
    as long as it does, and about 275 per open websocket (uvicorn's protocol, the ASGI
    call chain, the channel's tasks); with 1,500 drivers connected a full collection
    took 150-450 ms, and every offer in flight waited for it. Frozen, the start-up
    objects are never walked again; the third threshold (``RIDECOOP_API_GC_GEN2_THRESHOLD``)
    spaces out the collections that still walk the sockets' objects. Freezing alone
    would make those more frequent: besides the threshold, Python waits only until the
    objects promoted since the last full collection reach a quarter of those it kept,
    and frozen objects are no longer among them.
    """
    first, second, _ = gc.get_threshold()
    gc.set_threshold(first, second, settings.gc_gen2_threshold)
    gc.collect()
    gc.freeze()
    log.info("gc_start_up_frozen", objects=gc.get_freeze_count(), thresholds=gc.get_threshold())
