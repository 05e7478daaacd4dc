from __future__ import annotations

import asyncio
import hmac
import os
from collections.abc import Awaitable

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    generate_latest,
    multiprocess,
)
from pydantic import BaseModel

from api.deps import ResourcesDep
from api.problems import problem_responses
from infra.db import ping
from infra.errors import ServiceUnavailable, Unauthorized

router = APIRouter(tags=["operations"])

READINESS_TIMEOUT_S = 2.0


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str
    checks: dict[str, str]


@router.get("/healthz", summary="The process is alive (public, for probes)")
async def healthz() -> Health:
    return Health(status="ok")


@router.get(
    "/readyz",
    responses=problem_responses(503),
    summary="PostgreSQL and Redis answer (public, for probes)",
)
async def readyz(resources: ResourcesDep) -> Readiness:
    checks: dict[str, str] = {}

    async def check(name: str, probe: Awaitable[object]) -> None:
        try:
            await asyncio.wait_for(probe, READINESS_TIMEOUT_S)
            checks[name] = "ok"
        except Exception as exc:  # any failure means not ready; the reason is reported
            checks[name] = f"failed: {type(exc).__name__}"

    await asyncio.gather(
        check("postgresql", ping(resources.engine)),
        check("redis", resources.redis.ping()),
    )
    if all(value == "ok" for value in checks.values()):
        return Readiness(status="ready", checks=checks)
    failed = ", ".join(name for name, value in checks.items() if value != "ok")
    raise ServiceUnavailable(f"Not ready: {failed} did not answer", checks=checks)


@router.get(
    "/metrics",
    responses={
        200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text format"},
        **problem_responses(401),
    },
    summary="Prometheus metrics (bearer token when RIDECOOP_API_METRICS_TOKEN is set)",
)
async def metrics(request: Request, resources: ResourcesDep) -> Response:
    expected = resources.settings.api.metrics_token
    if expected:
        given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), expected.encode()):
            raise Unauthorized("A valid metrics token is required")
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        # Several api workers: add up what every worker process wrote.
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
