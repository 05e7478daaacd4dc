"""The FastAPI application: routes, error handlers, middleware, and the process's pools."""

from __future__ import annotations

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
from infra.logging import configure_logging
from infra.pubsub import after_publish
from infra.redis import create_redis
from infra.settings import Settings, get_settings
from payments.stripe_gateway import StripeGateway

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
