from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI
from redis.asyncio import Redis

from api.app import create_app
from api.state import Resources
from infra.settings import ApiSettings, Settings


async def test_healthz(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_when_postgres_and_redis_answer(client: httpx.AsyncClient) -> None:
    response = await client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["checks"] == {"postgresql": "ok", "redis": "ok"}


@pytest.fixture
async def app_without_redis(settings: Settings, resources: Resources) -> AsyncIterator[FastAPI]:
    # Nothing listens on port 1: Redis "is down".
    dead = Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5)
    yield create_app(settings, resources=dataclasses.replace(resources, redis=dead))
    await dead.aclose()


async def test_readyz_is_a_503_problem_when_redis_is_down(app_without_redis: FastAPI) -> None:
    transport = httpx.ASGITransport(app=app_without_redis)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        response = await client.get("/readyz")
    assert response.status_code == 503
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["checks"]["postgresql"] == "ok"
    assert body["checks"]["redis"].startswith("failed")


async def test_metrics_in_prometheus_format(client: httpx.AsyncClient) -> None:
    await client.get("/healthz")
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert 'ridecoop_http_requests_total{method="GET",route="/healthz",status="200"}' in (
        response.text
    )


async def test_metrics_need_the_token_when_one_is_set(
    settings: Settings, resources: Resources
) -> None:
    guarded = settings.model_copy(
        update={"api": ApiSettings(metrics_token="scrape-token-0123456789")}
    )
    app = create_app(guarded, resources=dataclasses.replace(resources, settings=guarded))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        assert (await client.get("/metrics")).status_code == 401
        wrong = {"Authorization": "Bearer wrong-token-0123456789"}
        assert (await client.get("/metrics", headers=wrong)).status_code == 401
        right = {"Authorization": "Bearer scrape-token-0123456789"}
        assert (await client.get("/metrics", headers=right)).status_code == 200
